package agent

import "github.com/medplum-agent/medplum-agent/pkg/protocol"

// Kinds of inbound message, as the durable queue labels its rows.
const (
	kindBytes = "bytes"
	kindASTM  = "astm"
)

// intake takes one complete inbound message from a channel. It is the one
// seam where the durable queue will persist a message, under kind: a
// channel acknowledges the device (an ASTM final ACK; not an autoRespond
// echo, which is wire-level) only after intake returned nil. Until then it
// queues the message for the server.
func (a *Agent) intake(kind, channel, remote, contentType, body string) error {
	return a.deliver(&protocol.Message{
		Type:        protocol.TypeTransmitRequest,
		Channel:     channel,
		Remote:      remote,
		ContentType: contentType,
		Body:        body,
		Callback:    a.newCallback(),
	})
}
