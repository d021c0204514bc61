package wslink

import (
	"encoding/json"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// handleFrame processes one inbound frame on s. Connect and heartbeat
// messages are consumed here, frames that cannot be processed are answered
// with agent:error, and anything for the agent is returned for the Handler.
func (l *Link) handleFrame(s *session, data []byte) *protocol.Message {
	m, err := protocol.Decode(data)
	if err != nil {
		body := "WebSocket error on incoming message: " + err.Error()
		l.log.Error(body)
		l.reply(protocol.ErrorMessage(callbackOf(data), body))
		return nil
	}
	switch m.Type {
	case protocol.TypeConnectResponse:
		l.setLive(true)
	case protocol.TypeHeartbeatRequest:
		l.mu.Lock()
		l.outstanding = 0
		l.pushLocked(s, &protocol.Message{Type: protocol.TypeHeartbeatResponse, Version: l.cfg.Version})
		l.mu.Unlock()
	case protocol.TypeHeartbeatResponse:
		l.mu.Lock()
		l.outstanding = 0
		if !l.hbSent.IsZero() {
			l.ping = time.Since(l.hbSent).Milliseconds()
		}
		l.mu.Unlock()
	case protocol.TypeError:
		l.log.Warn("Received error from Medplum server", "body", m.Body, "callback", m.Callback)
		if m.Body == invalidTokenBody {
			if l.cfg.Invalidate != nil {
				l.cfg.Invalidate()
			}
			l.Reconnect()
		}
		return m
	case protocol.TypeTransmitRequest, protocol.TypeTransmitResponse,
		protocol.TypeReloadConfigRequest, protocol.TypeUpgradeRequest,
		protocol.TypeLogsRequest, protocol.TypeStatsRequest:
		return m
	default:
		body := "Unknown message type: " + m.Type
		l.log.Error(body)
		l.reply(protocol.ErrorMessage(m.Callback, body))
	}
	return nil
}

// callbackOf extracts a callback from a frame that failed to decode as a
// whole, so the error reply can still be correlated when possible.
func callbackOf(data []byte) string {
	var v struct {
		Callback string `json:"callback"`
	}
	_ = json.Unmarshal(data, &v) // best effort: fields decoded before an error are kept
	return v.Callback
}

func (l *Link) reply(m *protocol.Message) {
	if err := l.Send(m); err != nil {
		l.log.Warn("Cannot reply to Medplum server", "type", m.Type, "err", err)
	}
}
