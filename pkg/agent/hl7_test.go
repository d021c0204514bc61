package agent

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/agent/rtt"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Scenario 20: original mode round trip through the server's Bot.
func TestHL7OriginalModeRoundTrip(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	tr := e.recordTransmits()
	e.start()

	d := dial(t, port)
	d.send(adt("MSG00001"))
	ack := d.recv()
	if code, _, _ := ack.Type(); code != "ACK" || len(ack.Segments()) != 2 || ack.Segments()[1].Name() != "MSA" {
		t.Errorf("device got %q, want a 2-segment ACK with MSA", ack.String())
	}
	if got := ackOf(ack); got != "AA MSG00001" {
		t.Errorf("ACK = %q, want AA MSG00001", got)
	}

	req := tr.wait(t, 1)[0]
	local := d.c.LocalAddr().String() // 127.0.0.1:port
	got := fmt.Sprintf("%s|%s|%s|%s|%t|%t", req.Type, req.Channel, req.ContentType, req.Body,
		strings.HasSuffix(req.Remote, local), strings.HasPrefix(req.Callback, "Agent/"+testAgentID+"-"))
	want := fmt.Sprintf("%s|test|%s|%s|true|true", protocol.TypeTransmitRequest, protocol.ContentTypeHL7, adt("MSG00001"))
	if got != want {
		t.Errorf("transmit request\n got %s\nwant %s (remote %q)", got, want, req.Remote)
	}
	e.chLog.wait(t, "Received channel=test remote="+req.Remote+" id=MSG00001")
	if strings.Contains(e.mainLogText(), "DOE^JOHN") {
		t.Error("message content reached the main log")
	}
}

// Scenario 21: an error response is logged and nothing reaches the device.
// Scenario 22: a response without callback is still delivered.
func TestHL7ResponseStatusAndCallback(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	// The in-memory path; durable_test.go covers the queue.
	e.setAgent("active", inMemory, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()
	d := dial(t, port)

	d.send(adt("M1"))
	req := bot.next(t)
	resp := ackResponse(t, req, hl7.AA)
	resp.StatusCode, resp.ContentType, resp.Body = 400, protocol.ContentTypeJSON, "Something bad happened"
	e.sendToAgent(resp)
	e.chLog.wait(t, "Error during handling transmit request: Something bad happened")
	e.waitMainLog(`"msg":"Error during handling transmit request"`)

	d.send(adt("M2"))
	resp = ackResponse(t, bot.next(t), hl7.AA)
	resp.Callback = ""
	e.sendToAgent(resp)
	// M1 got nothing: the first frame the device sees answers M2.
	if got := ackOf(d.recv()); got != "AA M2" {
		t.Errorf("device got %q, want AA M2", got)
	}
	e.waitMainLog("Transmit response missing callback")
	if strings.Contains(e.mainLogText(), "Something bad happened") {
		t.Error("error response body reached the main log")
	}
}

// Scenarios 23 and 26: immediate ACKs and which application ACKs are
// forwarded, per enhanced mode and appLevelAck.
func TestHL7AckModes(t *testing.T) {
	tests := []struct {
		query string
		// immediate is the code sent on receipt, "" for none.
		immediate hl7.AckCode
		// forwarded lists which application ACKs reach the device.
		forwarded []hl7.AckCode
	}{
		{query: "", forwarded: []hl7.AckCode{hl7.AA, hl7.AE, hl7.AR}},
		{query: "appLevelAck=NE", forwarded: []hl7.AckCode{hl7.AA, hl7.AE, hl7.AR}},
		{query: "enhanced=true", immediate: hl7.CA, forwarded: []hl7.AckCode{hl7.AA, hl7.AE, hl7.AR}},
		{query: "enhanced=true&appLevelAck=AL", immediate: hl7.CA, forwarded: []hl7.AckCode{hl7.AA, hl7.AE, hl7.AR}},
		{query: "enhanced=true&appLevelAck=ne", immediate: hl7.CA},
		{query: "enhanced=true&appLevelAck=ER", immediate: hl7.CA, forwarded: []hl7.AckCode{hl7.AE, hl7.AR}},
		{query: "enhanced=true&appLevelAck=SU", immediate: hl7.CA, forwarded: []hl7.AckCode{hl7.AA}},
		{query: "enhanced=aa", immediate: hl7.AA},
		{query: "enhanced=AA&appLevelAck=AL", immediate: hl7.AA},
	}
	codes := []hl7.AckCode{hl7.AA, hl7.AE, hl7.AR}
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	// The in-memory path; durable_test.go covers the queue.
	e.setAgent("active", inMemory, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e.setAgent("active", inMemory, ch{name: "test", address: mllpAddr(port, tt.query)})
			if r := e.reload(); r.Type != protocol.TypeReloadConfigResp {
				t.Fatalf("reload: %s %s", r.Type, r.Body)
			}
			d := dial(t, port)
			var want []string
			for i, code := range codes {
				id := fmt.Sprint(i)
				d.send(adt(id))
				e.sendToAgent(botAck(t, bot.next(t), code))
				if tt.immediate != "" {
					want = append(want, fmt.Sprintf("agent %s %s", tt.immediate, id))
				}
				if slices.Contains(tt.forwarded, code) {
					want = append(want, fmt.Sprintf("bot %s %s", code, id))
				}
			}
			// A commit ACK from the Bot is no application ACK: it is
			// forwarded in every mode, so it marks the end.
			d.send(adt("end"))
			e.sendToAgent(botAck(t, bot.next(t), hl7.CA))
			if tt.immediate != "" {
				want = append(want, fmt.Sprintf("agent %s end", tt.immediate))
			}
			want = append(want, "bot CA end")

			var got []string
			for !slices.Contains(got, "bot CA end") {
				m := d.recv()
				from := "agent"
				if m.Get("MSA-3") == "bot" {
					from = "bot"
				}
				got = append(got, from+" "+ackOf(m))
			}
			// Agent and Bot ACKs travel on different paths; only the order
			// within each path is fixed.
			slices.SortStableFunc(got, func(a, b string) int { return strings.Compare(a[:3], b[:3]) })
			slices.SortStableFunc(want, func(a, b string) int { return strings.Compare(a[:3], b[:3]) })
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("device received (-want +got):\n%s", diff)
			}
		})
	}
}

// botAck answers req with an ACK of the given code whose MSA-3 is "bot".
func botAck(t *testing.T, req *protocol.Message, code hl7.AckCode) *protocol.Message {
	t.Helper()
	r := ackResponse(t, req, code)
	m, _ := hl7.Parse(req.Body)
	r.Body = hl7.BuildAck(m, code, hl7.AckOptions{Text: "bot"}).String()
	return r
}

// Scenarios 24 and 25: messagesPerMin spaces out consecutive messages of a
// connection; an invalid value is a warning and the channel still starts.
func TestHL7MessagesPerMin(t *testing.T) {
	port, other := freePort(t), freePort(t)
	e := newEnv(t,
		ch{name: "slow", address: mllpAddr(port, "enhanced=true&messagesPerMin=600")},
		ch{name: "bad", address: mllpAddr(other, "enhanced=true&messagesPerMin=abc")})
	e.start()
	e.holdBot() // only the agent's CAs reach the devices
	e.waitMainLog("[HL7:bad] Invalid messagesPerMin: 'abc'; must be a valid integer.")

	d := dial(t, port)
	start := time.Now()
	d.send(adt("1"))
	d.send(adt("2"))
	got := []string{ackOf(d.recv()), ackOf(d.recv())}
	// 600 per minute is one per 100 ms: the second CA cannot come sooner.
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("two messages acknowledged after %v, want at least 100ms", elapsed)
	}
	if diff := cmp.Diff([]string{"CA 1", "CA 2"}, got); diff != "" {
		t.Errorf("ACKs (-want +got):\n%s", diff)
	}

	d = dial(t, other)
	d.send(adt("3"))
	if got := ackOf(d.recv()); got != "CA 3" {
		t.Errorf("channel with invalid messagesPerMin answered %q", got)
	}
}

// Scenario 27: assignSeqNo numbers messages from 0; a renamed channel is a
// new channel and starts again at 0.
func TestHL7AssignSeqNo(t *testing.T) {
	port := freePort(t)
	addr := mllpAddr(port, "assignSeqNo=true&enhanced=true")
	e := newEnv(t, ch{name: "a", address: addr})
	tr := e.recordTransmits()
	e.start()

	d := dial(t, port)
	for i := range 3 {
		d.send(adt(fmt.Sprint(i)))
		d.recv()
	}
	tr.wait(t, 3) // the server must know channel "a" until it has them
	e.setAgent("active", nil, ch{name: "b", address: addr})
	if r := e.reload(); r.Type != protocol.TypeReloadConfigResp {
		t.Fatalf("reload: %s %s", r.Type, r.Body)
	}
	d = dial(t, port)
	d.send(adt("3"))
	d.recv()

	var got []string
	for _, m := range tr.wait(t, 4) {
		msg, err := hl7.Parse(m.Body)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Channel+":"+msg.Get("MSH-13"))
	}
	if diff := cmp.Diff([]string{"a:0", "a:1", "a:2", "b:0"}, got); diff != "" {
		t.Errorf("channel:MSH-13 (-want +got):\n%s", diff)
	}
}

// Scenario 28: RTT statistics pair a message with the response for it.
func TestHL7RTTStats(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()

	empty := rtt.Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1}
	if diff := cmp.Diff(empty, e.stats().ChannelStats["test"].RTT); diff != "" {
		t.Errorf("RTT before any message (-want +got):\n%s", diff)
	}
	d := dial(t, port)
	d.send(adt("1"))
	req := bot.next(t)
	s := e.stats()
	if got := [2]int{s.ChannelStats["test"].RTT.Count, s.ChannelStats["test"].RTT.PendingCount}; got != [2]int{0, 1} {
		t.Errorf("count, pending with the ACK withheld = %v, want [0 1]", got)
	}
	if s.HL7ConnectionsOpen != 1 {
		t.Errorf("hl7ConnectionsOpen = %d, want 1", s.HL7ConnectionsOpen)
	}
	e.sendToAgent(ackResponse(t, req, hl7.AA))
	d.recv()
	r := e.stats().ChannelStats["test"].RTT
	if r.Count != 1 || r.PendingCount != 0 || r.Min < 0 || r.Min != r.Max || r.P50 != r.Min {
		t.Errorf("RTT after the ACK = %+v, want one sample and nothing pending", r)
	}
}

// Many devices on one channel: each gets the answers to its own messages.
func TestHL7ManyDevices(t *testing.T) {
	const devices, perDevice = 50, 5
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.start()

	var wg sync.WaitGroup
	errs := make(chan string, devices)
	for i := range devices {
		d := dial(t, port)
		wg.Go(func() {
			for j := range perDevice {
				id := fmt.Sprintf("d%d-m%d", i, j)
				d.send(adt(id))
				d.c.SetReadDeadline(time.Now().Add(waitFor))
				p, err := d.rd.ReadFrame()
				if err != nil {
					errs <- fmt.Sprintf("%s: %v", id, err)
					return
				}
				m, err := hl7.Parse(string(p))
				if err != nil || ackOf(m) != "AA "+id {
					errs <- fmt.Sprintf("%s: got %q", id, p)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := e.stats()
	if s.HL7ConnectionsOpen != devices || s.ChannelStats["test"].RTT.Count != devices*perDevice {
		t.Errorf("stats: %d connections, %d samples; want %d, %d",
			s.HL7ConnectionsOpen, s.ChannelStats["test"].RTT.Count, devices, devices*perDevice)
	}
}

// A response body that is not HL7 is reported back to the server.
func TestHL7InvalidResponseBody(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()
	d := dial(t, port)
	d.send(adt("1"))
	resp := ackResponse(t, bot.next(t), hl7.AA)
	resp.Body = "Bot execution logs:\nnothing"
	resp.Callback = "cb-invalid"
	r := e.request(resp)
	if got := r.Type + " " + r.Body; got != protocol.TypeError+" WebSocket error on incoming message: Invalid HL7 message" {
		t.Errorf("answer = %q", got)
	}
}

// A response for a device that has gone is dropped with a warning.
func TestHL7ResponseToDisconnectedRemote(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()
	d := dial(t, port)
	d.send(adt("1"))
	req := bot.next(t)
	d.c.Close()
	eventually(t, "connection closed", func() bool { return e.stats().HL7ConnectionsOpen == 0 })
	e.sendToAgent(ackResponse(t, req, hl7.AA))
	e.waitMainLog("Attempted to send message to disconnected remote: " + req.Remote)
}

// The channel charset applies both ways; undecodable frames are logged and
// skipped without ending the connection.
func TestHL7EncodingAndBadFrames(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "encoding=iso-8859-1")})
	tr := e.recordTransmits()
	e.start()
	e.ds.SetBotOverride(func(_ string, m *protocol.Message) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: m.Channel, Remote: m.Remote,
			Callback: m.Callback, ContentType: m.ContentType, StatusCode: 200, Body: m.Body} // echo
	})
	d := dial(t, port)
	d.send("not hl7 at all")
	d.send("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|L1|P|2.5\rPID|1||1||M\xfcller")
	d.c.SetReadDeadline(time.Now().Add(waitFor))
	p, err := d.rd.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(p), "M\xfcller") {
		t.Errorf("echo in iso-8859-1 = %q", p)
	}
	if body := tr.wait(t, 1)[0].Body; !strings.HasSuffix(body, "Müller") {
		t.Errorf("body sent to the server = %q", body)
	}
	e.waitMainLog("HL7 error occurred - check channel logs")
	e.chLog.wait(t, "payload=not hl7 at all")
}

// idleTimeout (seconds) closes silent connections; a change applies to the
// live connections, which stay open.
func TestHL7IdleTimeout(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "idleTimeout=1")})
	e.start()
	closedByAgent := func(d *device) {
		t.Helper()
		d.c.SetReadDeadline(time.Now().Add(waitFor))
		if _, err := d.rd.ReadFrame(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle connection not closed by the agent: %v", err)
		}
	}
	closedByAgent(dial(t, port))

	d := dial(t, port)
	e.setAgent("active", nil, ch{name: "test", address: mllpAddr(port, "idleTimeout=0")})
	e.reloadOK()
	time.Sleep(1500 * time.Millisecond) // longer than the old timeout
	d.send(adt("1"))
	if got := ackOf(d.recv()); got != "AA 1" {
		t.Errorf("after changing idleTimeout got %q", got)
	}

	e.setAgent("active", nil, ch{name: "test", address: mllpAddr(port, "idleTimeout=1")})
	e.reloadOK()
	closedByAgent(d)
}
