package wslink

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// newUnitLink returns a Link that is never started and a detached session,
// to drive handleFrame without a socket.
func newUnitLink(t testing.TB, invalidate func()) (*Link, *session) {
	t.Helper()
	l, err := New(Config{
		BaseURL:    "https://example.com/",
		AgentID:    "agent-1",
		Version:    testVersion,
		Token:      func(context.Context) (string, error) { return "tok-secret-1", nil },
		Invalidate: invalidate,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, newSession(context.Background(), nil)
}

func TestHandleFrame(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		wantHandled *protocol.Message
		wantCtrl    []*protocol.Message
		wantOut     []*protocol.Message
		wantLive    bool
		wantForce   bool
	}{
		{name: "connect response", in: `{"type":"agent:connect:response"}`, wantLive: true},
		{name: "legacy connected", in: `{"type":"connected"}`, wantLive: true},
		{name: "heartbeat request", in: `{"type":"agent:heartbeat:request"}`,
			wantOut: []*protocol.Message{{Type: protocol.TypeHeartbeatResponse, Version: testVersion}}},
		{name: "heartbeat response", in: `{"type":"agent:heartbeat:response","version":"4.0.0"}`},
		{name: "unknown type echoes callback", in: `{"type":"unknown","callback":"cb-1"}`,
			wantCtrl: []*protocol.Message{{Type: protocol.TypeError, Callback: "cb-1", Body: "Unknown message type: unknown"}}},
		{name: "unknown type without callback", in: `{"type":"agent:connect:request"}`,
			wantCtrl: []*protocol.Message{{Type: protocol.TypeError, Body: "Unknown message type: agent:connect:request"}}},
		{name: "server error is handled, not answered", in: `{"type":"agent:error","body":"details"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeError, Body: "details"}},
		{name: "invalid access token reconnects", in: `{"type":"agent:error","body":"Invalid access token"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeError, Body: "Invalid access token"}, wantForce: true},
		{name: "legacy push", in: `{"type":"push","remote":"mllp://h:1","body":"MSH","callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://h:1", Body: "MSH", Callback: "c"}},
		{name: "legacy transmit", in: `{"type":"transmit","channel":"ch","statusCode":200,"callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: "ch", StatusCode: 200, Callback: "c"}},
		{name: "reload", in: `{"type":"agent:reloadconfig:request","callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeReloadConfigRequest, Callback: "c"}},
		{name: "upgrade", in: `{"type":"agent:upgrade:request","version":"5.0.0","force":true,"callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeUpgradeRequest, Version: "5.0.0", Force: true, Callback: "c"}},
		{name: "logs", in: `{"type":"agent:logs:request","limit":10,"callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeLogsRequest, Limit: []byte("10"), Callback: "c"}},
		{name: "stats", in: `{"type":"agent:stats:request","callback":"c"}`,
			wantHandled: &protocol.Message{Type: protocol.TypeStatsRequest, Callback: "c"}},
		{name: "not JSON", in: `hello`,
			wantCtrl: []*protocol.Message{{Type: protocol.TypeError,
				Body: "WebSocket error on incoming message: invalid character 'h' looking for beginning of value"}}},
		{name: "bad field type keeps callback", in: `{"type":"push","callback":"cb-2","statusCode":"x"}`,
			wantCtrl: []*protocol.Message{{Type: protocol.TypeError, Callback: "cb-2",
				Body: "WebSocket error on incoming message: json: cannot unmarshal string into Go struct field Message.statusCode of type int"}}},
		{name: "no type", in: `{"callback":"cb-3"}`,
			wantCtrl: []*protocol.Message{{Type: protocol.TypeError, Callback: "cb-3",
				Body: "WebSocket error on incoming message: message has no type"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			invalidated := 0
			l, s := newUnitLink(t, func() { invalidated++ })
			got := l.handleFrame(s, []byte(tt.in))
			if d := cmp.Diff(tt.wantHandled, got); d != "" {
				t.Errorf("handled message (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantCtrl, l.ctrl); d != "" {
				t.Errorf("control replies (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantOut, s.out); d != "" {
				t.Errorf("session frames (-want +got):\n%s", d)
			}
			if l.Live() != tt.wantLive {
				t.Errorf("Live() = %v, want %v", l.Live(), tt.wantLive)
			}
			forced := len(l.force) == 1
			wantInvalidated := 0
			if tt.wantForce {
				wantInvalidated = 1
			}
			if forced != tt.wantForce || invalidated != wantInvalidated {
				t.Errorf("forced reconnect = %v, Invalidate calls = %d; want %v, %d", forced, invalidated, tt.wantForce, wantInvalidated)
			}
		})
	}
}

func TestHeartbeatResetsOutstanding(t *testing.T) {
	for _, in := range []string{`{"type":"agent:heartbeat:request"}`, `{"type":"agent:heartbeat:response"}`} {
		l, s := newUnitLink(t, nil)
		l.outstanding = 2
		l.handleFrame(s, []byte(in))
		if got := l.OutstandingHeartbeats(); got != 0 {
			t.Errorf("%s: OutstandingHeartbeats() = %d, want 0", in, got)
		}
	}
}

// TestInboundRepliesBounded checks that a flood of bad frames cannot grow the
// reply buffers without limit while the writer is stuck.
func TestInboundRepliesBounded(t *testing.T) {
	l, s := newUnitLink(t, nil)
	for range 3 * maxControl {
		l.handleFrame(s, []byte(`{"type":"agent:heartbeat:request"}`))
		l.handleFrame(s, []byte(`{"type":"nope"}`))
	}
	if len(l.ctrl) != maxControl || len(s.out) != maxSessionFrames {
		t.Errorf("buffers = %d control, %d session; want %d, %d", len(l.ctrl), len(s.out), maxControl, maxSessionFrames)
	}
}

func FuzzInbound(f *testing.F) {
	for _, seed := range []string{
		`{"type":"agent:connect:response"}`,
		`{"type":"agent:heartbeat:request"}`,
		`{"type":"agent:heartbeat:response","version":"1"}`,
		`{"type":"agent:error","body":"Invalid access token"}`,
		`{"type":"push","remote":"mllp://h:1","body":"MSH|^~\\&","callback":"c"}`,
		`{"type":"agent:logs:request","limit":"x"}`,
		`{"type":"x","callback":{"a":1}}`,
		`[1,2]`, `null`, `"s"`, ``, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	known := map[string]bool{
		protocol.TypeError: true, protocol.TypeTransmitRequest: true, protocol.TypeTransmitResponse: true,
		protocol.TypeReloadConfigRequest: true, protocol.TypeUpgradeRequest: true,
		protocol.TypeLogsRequest: true, protocol.TypeStatsRequest: true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, s := newUnitLink(t, func() {})
		m := l.handleFrame(s, data)
		if m != nil && !known[m.Type] {
			t.Fatalf("dispatched unexpected type %q", m.Type)
		}
		for _, r := range l.ctrl {
			if r.Type != protocol.TypeError || !(strings.HasPrefix(r.Body, "Unknown message type: ") ||
				strings.HasPrefix(r.Body, "WebSocket error on incoming message: ")) {
				t.Fatalf("unexpected reply %+v", r)
			}
		}
	})
}
