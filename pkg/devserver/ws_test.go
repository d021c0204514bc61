package devserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// lockedBuffer is a Record writer the test can read while the server writes.
type lockedBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() ([]string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.SplitAfter(strings.TrimSuffix(b.buf.String(), "\n"), "\n"), b.writes
}

// botConfig has one channel per Bot, named after it.
func botConfig() *Config {
	c := DefaultConfig()
	c.Bots = append(c.Bots,
		BotConfig{ID: "upper", Kind: "exec:tr a-z A-Z"},
		BotConfig{ID: "fail", Kind: "exec:echo oops >&2; exit 3"},
		BotConfig{ID: "silent", Kind: "exec:echo quiet >&2"},
		BotConfig{ID: "env", Kind: `exec:printf '%s %s' "$MEDPLUM_CHANNEL" "$MEDPLUM_REMOTE"`},
		BotConfig{ID: "broken", Kind: "ack"},
	)
	for _, b := range c.Bots {
		c.Agents[0].Channels = append(c.Agents[0].Channels, ChannelConfig{Name: b.ID, Address: "mllp://0.0.0.0:0", Bot: b.ID})
	}
	return c
}

func transmit(tok, channel, contentType, body, callback string) protocol.Message {
	return protocol.Message{
		Type: protocol.TypeTransmitRequest, AccessToken: tok, Channel: channel, Remote: "10.1.2.3:5000",
		ContentType: contentType, Body: body, Callback: callback,
	}
}

func TestTransmitHL7(t *testing.T) {
	rec := &lockedBuffer{}
	s := start(t, Options{Record: rec})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)

	a.send(protocol.Message{Type: protocol.TypeHeartbeatRequest})
	if got := a.recv(); got.Type != protocol.TypeHeartbeatResponse || got.Version != DefaultVersion {
		t.Errorf("heartbeat answer = %+v", got)
	}

	callback := "Agent/" + DefaultAgentID + "-1"
	a.send(transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, callback))
	got := a.recv()
	ack, err := hl7.Parse(got.Body)
	if err != nil {
		t.Fatalf("answer body: %v: %q", err, got.Body)
	}
	got.Body = ""
	want := protocol.Message{
		Type: protocol.TypeTransmitResponse, Channel: "hl7", Remote: "10.1.2.3:5000", Callback: callback,
		ContentType: protocol.ContentTypeHL7, StatusCode: 200,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
	if code, id, typ := hl7.AckCodeOf(ack), ack.Get("MSA-2"), ack.Get("MSH-9"); code != hl7.AA || id != "MSG00001" || typ != "ACK^A01" {
		t.Errorf("ACK = %s %s %s", code, id, typ)
	}

	// The execution is audited, with the Agent and the Bot as entities.
	r := mustDo(t, s, http.MethodGet, "fhir/R4/AuditEvent?entity=Agent/"+DefaultAgentID, tok, "", nil)
	var b fhir.Bundle
	if err := json.Unmarshal(r.body, &b); err != nil || b.Total == nil || *b.Total != 1 {
		t.Fatalf("AuditEvents: %s", r.body)
	}
	var ae struct {
		Outcome string `json:"outcome"`
		Entity  []struct {
			What fhir.Reference `json:"what"`
		} `json:"entity"`
	}
	_ = json.Unmarshal(b.Entry[0].Resource, &ae)
	refs := []string{ae.Entity[0].What.Reference, ae.Entity[1].What.Reference}
	if diff := cmp.Diff([]string{"Agent/" + DefaultAgentID, "Bot/ack"}, refs); diff != "" || ae.Outcome != "0" {
		t.Errorf("outcome %q, entities (-want +got):\n%s", ae.Outcome, diff)
	}

	// The record has one line per accepted transmit, each from one Write.
	a.send(transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, "second"))
	a.recv()
	lines, writes := rec.lines()
	if len(lines) != 2 || writes != 2 {
		t.Fatalf("record: %d lines in %d writes: %q", len(lines), writes, lines)
	}
	var line map[string]string
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["time"] == "" {
		t.Error("record line without time")
	}
	delete(line, "time")
	wantLine := map[string]string{
		"agentId": DefaultAgentID, "channel": "hl7", "remote": "10.1.2.3:5000",
		"contentType": protocol.ContentTypeHL7, "body": hl7Message, "callback": callback,
	}
	if diff := cmp.Diff(wantLine, line); diff != "" {
		t.Errorf("record line (-want +got):\n%s", diff)
	}
}

func TestBots(t *testing.T) {
	s := start(t, Options{Config: botConfig()})
	if err := s.PutResource(json.RawMessage(`{"resourceType":"Bot","id":"broken","name":"broken"}`)); err != nil {
		t.Fatal(err)
	}
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)

	failure := func(text string) string {
		b, _ := json.Marshal(fhir.Outcome("error", "processing", text))
		return string(b)
	}
	tests := []struct {
		channel, contentType, body string
		wantStatus                 int
		wantContentType            string
		wantAck                    hl7.AckCode // when set, the body is checked as an HL7 ACK
		wantBody                   string
	}{
		{"ack", protocol.ContentTypeHL7, hl7Message, 200, protocol.ContentTypeHL7, hl7.AA, ""},
		{"reject", protocol.ContentTypeHL7, hl7Message, 200, protocol.ContentTypeHL7, hl7.AE, ""},
		{"ack", protocol.ContentTypeOctet, "0248454c4c4f03", 200, protocol.ContentTypeOctet, "", "06"},
		{"reject", protocol.ContentTypeOctet, "0248454c4c4f03", 200, protocol.ContentTypeOctet, "", "15"},
		{"ack", protocol.ContentTypeASTM, "H|\\^&\n", 200, protocol.ContentTypeASTM, "", ""},
		{"reject", protocol.ContentTypeASTM, "H|\\^&\n", 400, protocol.ContentTypeJSON, "", failure("Rejected by bot")},
		{"ack", protocol.ContentTypeHL7, "not hl7", 400, protocol.ContentTypeJSON, "", failure("invalid HL7 message: does not start with MSH")},
		{"echo", protocol.ContentTypeJSON, `{"a":1}`, 200, protocol.ContentTypeJSON, "", `{"a":1}`},
		{"upper", protocol.ContentTypeText, "hello", 200, protocol.ContentTypeText, "", "HELLO"},
		{"fail", protocol.ContentTypeText, "hello", 400, protocol.ContentTypeJSON, "", failure("oops")},
		{"silent", protocol.ContentTypeText, "hello", 200, protocol.ContentTypeText, "", "Bot execution logs:\nquiet\n"},
		{"env", protocol.ContentTypeText, "hello", 200, protocol.ContentTypeText, "", "env 10.1.2.3:5000"},
		{"broken", protocol.ContentTypeText, "hello", 400, protocol.ContentTypeJSON, "", failure("Bot/broken has no identifier with system " + BotKindSystem)},
	}
	failures := 0
	for _, tt := range tests {
		t.Run(tt.channel+" "+tt.contentType, func(t *testing.T) {
			a.send(transmit(tok, tt.channel, tt.contentType, tt.body, "cb-"+tt.channel))
			got := a.recv()
			if got.StatusCode != tt.wantStatus || got.ContentType != tt.wantContentType || got.Callback != "cb-"+tt.channel || got.Channel != tt.channel {
				t.Errorf("answer = %+v", got)
			}
			if tt.wantAck != "" {
				ack, err := hl7.Parse(got.Body)
				if err != nil || hl7.AckCodeOf(ack) != tt.wantAck || ack.Get("MSA-2") != "MSG00001" {
					t.Errorf("ACK %q: %v", got.Body, err)
				}
			} else if got.Body != tt.wantBody {
				t.Errorf("body = %q, want %q", got.Body, tt.wantBody)
			}
		})
		if tt.wantStatus >= 400 {
			failures++
		}
	}

	var outcomes []string
	for _, raw := range s.Resources("AuditEvent") {
		var ae struct{ Outcome string }
		_ = json.Unmarshal(raw, &ae)
		if ae.Outcome == "4" {
			outcomes = append(outcomes, ae.Outcome)
		}
	}
	if n := len(s.Resources("AuditEvent")); n != len(tests) || len(outcomes) != failures {
		t.Errorf("%d AuditEvents with %d failures, want %d with %d", n, len(outcomes), len(tests), failures)
	}
}

func TestSocketErrors(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := dial(t, s)
	connectMsg := func(tok, agentID string) protocol.Message {
		return protocol.Message{Type: protocol.TypeConnectRequest, AccessToken: tok, AgentID: agentID, Callback: "cb"}
	}
	before := []struct {
		name string
		send protocol.Message
		want string
	}{
		{"transmit before connect", transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, "cb"), "Not connected"},
		{"connect without token", connectMsg("", DefaultAgentID), "Missing access token"},
		{"connect without agent", connectMsg(tok, ""), "Missing agent ID"},
		{"connect with bad token", connectMsg("x.y.z", DefaultAgentID), "Invalid access token"},
		{"connect to unknown agent", connectMsg(tok, "nobody"), "Not found"},
		{"unknown type", protocol.Message{Type: "agent:foo", Callback: "cb"}, "Unknown message type: agent:foo"},
	}
	after := []struct {
		name string
		send protocol.Message
		want string
	}{
		{"transmit without token", transmit("", "hl7", protocol.ContentTypeHL7, hl7Message, "cb"), "Missing access token"},
		{"transmit without channel", transmit(tok, "", protocol.ContentTypeHL7, hl7Message, "cb"), "Missing channel"},
		{"transmit without body", transmit(tok, "hl7", protocol.ContentTypeHL7, "", "cb"), "Missing body"},
		{"transmit with bad token", transmit("x.y.z", "hl7", protocol.ContentTypeHL7, hl7Message, "cb"), "Invalid access token"},
		{"transmit on unknown channel", transmit(tok, "nope", protocol.ContentTypeHL7, hl7Message, "cb"), "Channel not found"},
	}
	check := func(name string, send protocol.Message, want string) {
		t.Run(name, func(t *testing.T) {
			a.send(send)
			got := a.recv()
			if diff := cmp.Diff(protocol.Message{Type: protocol.TypeError, Body: want}, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	for _, tt := range before {
		check(tt.name, tt.send, tt.want)
	}
	a.send(connectMsg(tok, DefaultAgentID))
	if got := a.recv(); got.Type != protocol.TypeConnectResponse || got.Callback != "cb" {
		t.Fatalf("connect answer = %+v", got)
	}
	for _, tt := range after {
		check(tt.name, tt.send, tt.want)
	}

	t.Run("not JSON", func(t *testing.T) {
		if err := a.ws.WriteMessage(websocket.TextMessage, []byte("{")); err != nil {
			t.Fatal(err)
		}
		if got := a.recv(); got.Type != protocol.TypeError || got.Body != "unexpected end of JSON input" {
			t.Errorf("answer = %+v", got)
		}
	})
	t.Run("legacy transmit in a binary frame", func(t *testing.T) {
		m := transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, "legacy")
		m.Type = "transmit"
		b, _ := json.Marshal(m)
		if err := a.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
		if got := a.recv(); got.Type != protocol.TypeTransmitResponse || got.StatusCode != 200 || got.Callback != "legacy" {
			t.Errorf("answer = %+v", got)
		}
	})
}

func TestHooks(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)
	b := connect(t, s, tok, DefaultAgentID)

	observed := make(chan string, 10)
	s.OnTransmit(func(agentID string, m *protocol.Message) { observed <- agentID + " " + m.Callback })
	s.SetBotOverride(func(agentID string, m *protocol.Message) *protocol.Message {
		if m.Callback == "withhold" {
			return nil
		}
		return &protocol.Message{Type: protocol.TypeTransmitResponse, Callback: m.Callback, StatusCode: 400, Body: "Something bad happened"}
	})
	a.send(transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, "withhold"))
	a.send(transmit(tok, "hl7", protocol.ContentTypeHL7, hl7Message, "answer"))
	want := protocol.Message{Type: protocol.TypeTransmitResponse, Callback: "answer", StatusCode: 400, Body: "Something bad happened"}
	if diff := cmp.Diff(want, a.recv()); diff != "" {
		t.Errorf("override answer (-want +got):\n%s", diff)
	}
	if got := []string{<-observed, <-observed}; !cmp.Equal(got, []string{DefaultAgentID + " withhold", DefaultAgentID + " answer"}) {
		t.Errorf("observed %q", got)
	}
	if n := len(s.Resources("AuditEvent")); n != 0 {
		t.Errorf("%d AuditEvents with an override", n)
	}

	// SendToAgent reaches every socket of the agent.
	if err := s.SendToAgent(DefaultAgentID, &protocol.Message{Type: protocol.TypeReloadConfigRequest, Callback: "both"}); err != nil {
		t.Fatal(err)
	}
	for _, ag := range []*fakeAgent{a, b} {
		if got := ag.recv(); got.Callback != "both" {
			t.Errorf("got %+v", got)
		}
	}
	if err := s.SendToAgent("nobody", &protocol.Message{Type: protocol.TypeStatsRequest}); !errors.Is(err, ErrAgentNotConnected) {
		t.Errorf("SendToAgent to an absent agent: %v", err)
	}

	// Request waits for the reply that echoes its callback; the first wins.
	done := make(chan *protocol.Message, 1)
	go func() {
		reply, err := s.Request(context.Background(), DefaultAgentID, &protocol.Message{Type: protocol.TypeStatsRequest})
		if err != nil {
			reply = &protocol.Message{Body: err.Error()}
		}
		done <- reply
	}()
	reqA, reqB := a.recv(), b.recv()
	if reqA.Callback == "" || reqA.Callback != reqB.Callback {
		t.Fatalf("requests %+v %+v", reqA, reqB)
	}
	a.send(protocol.Message{Type: protocol.TypeError, Callback: reqA.Callback, Body: "no stats"})
	if got := <-done; got.Type != protocol.TypeError || got.Body != "no stats" {
		t.Errorf("Request reply = %+v", got)
	}
	// A late reply from the other socket finds no waiter and is dropped.
	b.send(protocol.Message{Type: protocol.TypeStatsResponse, Callback: reqA.Callback, StatusCode: 200})
	b.sync()

	s.DisconnectAgents()
	if s.Connected(DefaultAgentID) {
		t.Error("still connected after DisconnectAgents")
	}
	if _, err := s.Request(context.Background(), DefaultAgentID, &protocol.Message{Type: protocol.TypeStatsRequest}); !errors.Is(err, ErrAgentNotConnected) {
		t.Errorf("Request after disconnect: %v", err)
	}
}
