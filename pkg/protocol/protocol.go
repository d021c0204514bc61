// Package protocol defines the JSON messages exchanged with a Medplum server on
// the agent WebSocket (/ws/agent). Every frame is one JSON object tagged by
// "type"; absent fields are omitted, unknown fields are ignored.
package protocol

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
)

// Message types. The agent always emits these names.
const (
	TypeConnectRequest      = "agent:connect:request"
	TypeConnectResponse     = "agent:connect:response"
	TypeHeartbeatRequest    = "agent:heartbeat:request"
	TypeHeartbeatResponse   = "agent:heartbeat:response"
	TypeTransmitRequest     = "agent:transmit:request"
	TypeTransmitResponse    = "agent:transmit:response"
	TypeReloadConfigRequest = "agent:reloadconfig:request"
	TypeReloadConfigResp    = "agent:reloadconfig:response"
	TypeUpgradeRequest      = "agent:upgrade:request"
	TypeUpgradeResponse     = "agent:upgrade:response"
	TypeLogsRequest         = "agent:logs:request"
	TypeLogsResponse        = "agent:logs:response"
	TypeStatsRequest        = "agent:stats:request"
	TypeStatsResponse       = "agent:stats:response"
	TypeError               = "agent:error"
)

// Legacy type names a server may still send to an agent.
const (
	legacyConnected = "connected"
	legacyTransmit  = "transmit"
	legacyPush      = "push"
)

// Content types carried in the contentType field.
const (
	ContentTypeHL7      = "x-application/hl7-v2+er7"
	ContentTypeOctet    = "application/octet-stream"
	ContentTypeASTM     = "x-application/astm-e1394"
	ContentTypeJSON     = "application/json"
	ContentTypeFHIRJSON = "application/fhir+json"
	ContentTypeText     = "text/plain"
	ContentTypePing     = "x-application/ping"
	ContentTypeDICOM    = "application/dicom"
)

// Message is the envelope of every frame. It is flat on purpose: the reference
// uses one object shape per type, and a flat struct keeps encoding cheap.
type Message struct {
	Type        string `json:"type"`
	Callback    string `json:"callback,omitempty"`
	AccessToken string `json:"accessToken,omitempty"`
	AgentID     string `json:"agentId,omitempty"`

	Channel     string `json:"channel,omitempty"`
	Remote      string `json:"remote,omitempty"`
	ContentType string `json:"contentType,omitempty"`
	Body        string `json:"body,omitempty"`
	StatusCode  int    `json:"statusCode,omitempty"`
	ReturnAck   string `json:"returnAck,omitempty"`

	// Heartbeat responses carry the sender's version; upgrade requests the target.
	Version string `json:"version,omitempty"`
	Force   bool   `json:"force,omitempty"`

	// Logs requests: limit may arrive as a number or (invalid) as a string, so
	// it is kept raw and validated by the handler. before is an opaque cursor.
	Limit      json.RawMessage `json:"limit,omitempty"`
	Before     string          `json:"before,omitempty"`
	Logs       json.RawMessage `json:"logs,omitempty"`
	HasMore    *bool           `json:"hasMore,omitempty"`
	NextBefore string          `json:"nextBefore,omitempty"`

	Stats json.RawMessage `json:"stats,omitempty"`
}

// Decode parses one frame and maps legacy type aliases to their current names.
// A frame without a type is an error.
func Decode(data []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m.Type == "" {
		return &m, fmt.Errorf("message has no type")
	}
	m.Type = Canonical(m.Type)
	return &m, nil
}

// Canonical maps a legacy message type received by an agent to the current
// name; other names are returned unchanged.
func Canonical(t string) string {
	switch t {
	case legacyConnected:
		return TypeConnectResponse
	case legacyTransmit:
		return TypeTransmitResponse
	case legacyPush:
		return TypeTransmitRequest
	}
	return t
}

// Encode marshals a message. It cannot fail for this struct shape except on
// invalid raw JSON fields, which is a programming error reported as such.
func Encode(m *Message) ([]byte, error) {
	return json.Marshal(m)
}

// Validate reports whether Encode would fail, without encoding: only the raw
// JSON fields can make it fail (string fields always encode). Senders check
// at enqueue time and encode once, at send time.
func Validate(m *Message) error {
	for _, raw := range []json.RawMessage{m.Limit, m.Logs, m.Stats} {
		if len(raw) > 0 && !json.Valid(raw) {
			return fmt.Errorf("invalid raw JSON field in %s message", m.Type)
		}
	}
	return nil
}

// TransmitResponse builds the agent:transmit:response answering req (a push
// or ping from the server), echoing its channel, remote and callback.
func TransmitResponse(req *Message, status int, contentType, body string) *Message {
	return &Message{
		Type:        TypeTransmitResponse,
		Channel:     req.Channel,
		Remote:      req.Remote,
		Callback:    req.Callback,
		ContentType: contentType,
		StatusCode:  status,
		Body:        body,
	}
}

// ErrorMessage builds an agent:error reply echoing a callback.
func ErrorMessage(callback, body string) *Message {
	return &Message{Type: TypeError, Callback: callback, Body: body}
}

// RemoteAddr renders a device's address for the remote field the way the
// reference (Node) does: "ip:port" without IPv6 brackets, and IPv4 peers of
// a dual-stack listener (one bound to every interface) in IPv4-mapped form,
// "::ffff:10.0.0.5:51234". The server round-trips the value and responses
// are routed by it, so it must be stable per connection.
func RemoteAddr(peer, listener net.Addr) string {
	ta, ok := peer.(*net.TCPAddr)
	if !ok {
		if peer == nil {
			return ""
		}
		return peer.String()
	}
	host := ta.IP.String()
	if ta.Zone != "" {
		host += "%" + ta.Zone
	}
	if la, ok := listener.(*net.TCPAddr); ok && la.IP.To4() == nil && ta.IP.To4() != nil {
		host = "::ffff:" + ta.IP.To4().String()
	}
	return host + ":" + strconv.Itoa(ta.Port)
}
