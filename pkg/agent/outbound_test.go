package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// pushDevice is an MLLP receiver that a push reaches: it answers every
// message with the codes of reply, in order, unless hold is set, in which
// case it keeps the message until release.
type pushDevice struct {
	addr    string
	accepts atomic.Int32
	reply   []hl7.AckCode
	hold    bool
	release chan struct{}
}

func startPushDevice(t *testing.T, hold bool, reply ...hl7.AckCode) *pushDevice {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &pushDevice{addr: ln.Addr().String(), reply: reply, hold: hold, release: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.accepts.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { d.serve(c) })
		}
	})
	return d
}

func (d *pushDevice) serve(c net.Conn) {
	rd := mllp.NewReader(c, 0)
	for {
		p, err := rd.ReadFrame()
		if err != nil {
			return
		}
		m, err := hl7.Parse(string(p))
		if err != nil {
			return
		}
		if d.hold {
			<-d.release
		}
		for _, code := range d.reply {
			if mllp.WriteFrame(c, []byte(hl7.BuildAck(m, code, hl7.AckOptions{}).String())) != nil {
				return
			}
		}
	}
}

func (d *pushDevice) url(query string) string {
	if query != "" {
		return "mllp://" + d.addr + "?" + query
	}
	return "mllp://" + d.addr
}

// pushReq is a server push of body to remote.
func pushReq(remote, body, returnAck string) *protocol.Message {
	return &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: remote, ContentType: protocol.ContentTypeHL7,
		Body: body, ReturnAck: returnAck}
}

func pingReq(remote, body string) *protocol.Message {
	return &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: remote, ContentType: protocol.ContentTypePing, Body: body}
}

// summary is what the tests compare of an answer: the ACK code of an HL7
// body instead of the whole ACK, whose MSH-7 and MSH-10 vary.
type summary struct {
	Type, Callback, Remote, ContentType string
	StatusCode                          int
	Body                                string
}

func summarize(t *testing.T, r *protocol.Message) summary {
	t.Helper()
	s := summary{Type: r.Type, Callback: r.Callback, Remote: r.Remote, ContentType: r.ContentType, StatusCode: r.StatusCode, Body: r.Body}
	if r.ContentType == protocol.ContentTypeHL7 {
		m, err := hl7.Parse(r.Body)
		if err != nil {
			t.Fatalf("ACK %q: %v", r.Body, err)
		}
		s.Body = ackOf(m)
	}
	return s
}

// Scenarios 29–33: pushes through the server's agent:transmit:request.
func TestPush(t *testing.T) {
	e := newEnv(t)
	e.start()
	aa := startPushDevice(t, false, hl7.AA)
	enhanced := startPushDevice(t, false, hl7.CA, hl7.AA)
	refused := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	noID := "MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5\rPID|1"

	tests := []struct {
		name string
		req  *protocol.Message
		want summary
	}{
		{"29 ACK from the device", pushReq(aa.url(""), adt("P1"), ""),
			summary{protocol.TypeTransmitResponse, "X", aa.url(""), protocol.ContentTypeHL7, 200, "AA P1"}},
		{"30 missing MSH-10", pushReq(aa.url(""), noID, ""),
			summary{protocol.TypeTransmitResponse, "X", aa.url(""), protocol.ContentTypeText, 400, "MSH.10 is missing but required"}},
		{"31 invalid returnAck", pushReq(aa.url(""), adt("P2"), "bogus"),
			summary{protocol.TypeTransmitResponse, "X", aa.url(""), protocol.ContentTypeText, 400,
				"Invalid value for returnAck; expected: 'first' or 'application', received: bogus"}},
		{"32 first takes the commit ACK", pushReq(enhanced.url(""), adt("P3"), "first"),
			summary{protocol.TypeTransmitResponse, "X", enhanced.url(""), protocol.ContentTypeHL7, 200, "CA P3"}},
		{"32 application waits for the application ACK", pushReq(enhanced.url(""), adt("P4"), "application"),
			summary{protocol.TypeTransmitResponse, "X", enhanced.url(""), protocol.ContentTypeHL7, 200, "AA P4"}},
		{"32 defaultReturnAck on the device URL", pushReq(enhanced.url("defaultReturnAck=application"), adt("P5"), ""),
			summary{protocol.TypeTransmitResponse, "X", enhanced.url("defaultReturnAck=application"), protocol.ContentTypeHL7, 200, "AA P5"}},
		{"32 the message's returnAck wins", pushReq(enhanced.url("defaultReturnAck=application"), adt("P6"), "first"),
			summary{protocol.TypeTransmitResponse, "X", enhanced.url("defaultReturnAck=application"), protocol.ContentTypeHL7, 200, "CA P6"}},
		{"33 connection refused", pushReq("mllp://"+refused, adt("P7"), ""),
			summary{protocol.TypeTransmitResponse, "X", "mllp://" + refused, protocol.ContentTypeText, 400, "connect ECONNREFUSED " + refused}},
		{"missing remote", pushReq("", adt("P8"), ""),
			summary{Type: protocol.TypeError, Callback: "X", Body: "Missing remote address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Callback = "X"
			got := summarize(t, e.request(tt.req))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	// 33: the failed client is discarded; without keepAlive every push that
	// reached a device left its own client: one to aa, four to enhanced.
	if n := e.stats().HL7ClientCount; n != 5 {
		t.Errorf("hl7ClientCount = %d, want 5", n)
	}
}

// Scenario 34 through the Agent settings: keepAlive keeps one connection
// per remote; without it each sequential push gets its own client up to
// maxClientsPerRemote, and idle ones are closed on heartbeat ticks.
func TestPushSettings(t *testing.T) {
	tests := []struct {
		name        string
		settings    []fhir.AgentSetting
		wantAccepts int32
	}{
		{"keepAlive", []fhir.AgentSetting{boolSetting("keepAlive", true)}, 1},
		{"default", nil, 3},
		{"maxClientsPerRemote", []fhir.AgentSetting{intSetting("maxClientsPerRemote", 2)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.setAgent("active", tt.settings)
			e.start()
			d := startPushDevice(t, false, hl7.AA)
			for i := range 3 {
				if r := e.request(pushReq(d.url(""), adt(fmt.Sprint("K", i)), "")); r.StatusCode != 200 {
					t.Fatalf("push %d: %d %s", i, r.StatusCode, r.Body)
				}
			}
			if got := d.accepts.Load(); got != tt.wantAccepts {
				t.Errorf("device accepted %d connections, want %d", got, tt.wantAccepts)
			}
			if got := e.stats().HL7ClientCount; got != int(tt.wantAccepts) {
				t.Errorf("hl7ClientCount = %d, want %d", got, tt.wantAccepts)
			}
		})
	}
	t.Run("idle clients released", func(t *testing.T) {
		e := newEnv(t)
		e.start()
		d := startPushDevice(t, false, hl7.AA)
		if r := e.request(pushReq(d.url(""), adt("I1"), "")); r.StatusCode != 200 {
			t.Fatalf("push: %d %s", r.StatusCode, r.Body)
		}
		// The release countdown is 10 s; the bound leaves room for it.
		deadline := time.Now().Add(30 * time.Second)
		for e.stats().HL7ClientCount != 0 {
			if time.Now().After(deadline) {
				t.Fatal("idle client still open")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// Scenarios 35–40: pings through the server's agent:transmit:request.
func TestPing(t *testing.T) {
	e := newEnv(t)
	e.start()
	tests := []struct {
		name, remote, body string
		status             int
		contentType        string
		bodyHas            string
		mainLogHas         string
	}{
		{"35 IPv4", "127.0.0.1", "PING", 200, protocol.ContentTypePing, "ping statistics", ""},
		{"36 host name", "localhost", "PING", 200, protocol.ContentTypePing, "ping statistics", ""},
		{"37 URL", "https://localhost:3001", "PING", 400, protocol.ContentTypeText, "Attempted to ping an invalid host.", ""},
		{"38 unused body", "127.0.0.1", "Hello, Medplum!", 200, protocol.ContentTypePing, "ping statistics", "Message body present but unused"},
		{"39 count not a number", "127.0.0.1", "PING JOHN", 400, protocol.ContentTypeText, `"JOHN" is not a number.`, ""},
		{"40 command fails", "127.0.0.1", "PING 0", 400, protocol.ContentTypeText, "Command failed: ping -c 0 127.0.0.1", ""},
	}
	_, noPing := exec.LookPath("ping")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.bodyHas, "Command failed: ping") && noPing != nil && os.Getenv("E2E_REQUIRE_PEERS") != "1" {
				t.Skip("the system ping is not installed; the native fallback words this differently")
			}
			req := pingReq(tt.remote, tt.body)
			req.Callback = "P"
			r := e.request(req)
			if r.Type != protocol.TypeTransmitResponse || r.Callback != "P" || r.Remote != tt.remote ||
				r.StatusCode != tt.status || r.ContentType != tt.contentType || !strings.Contains(r.Body, tt.bodyHas) {
				t.Errorf("answer %s %q %q %d %s %q, want %d %s containing %q",
					r.Type, r.Callback, r.Remote, r.StatusCode, r.ContentType, r.Body, tt.status, tt.contentType, tt.bodyHas)
			}
			if tt.mainLogHas != "" {
				e.waitMainLog(tt.mainLogHas)
			}
		})
	}
}

// Scenario 43 after a push: clientStats has the pool's RTT under its stats
// key.
func TestStatsClients(t *testing.T) {
	e := newEnv(t)
	e.start()
	d := startPushDevice(t, false, hl7.AA)
	if r := e.request(pushReq(d.url(""), adt("S1"), "")); r.StatusCode != 200 {
		t.Fatalf("push: %d %s", r.StatusCode, r.Body)
	}
	r := e.request(&protocol.Message{Type: protocol.TypeStatsRequest})
	var s struct {
		HL7ClientCount int `json:"hl7ClientCount"`
		ClientStats    map[string]struct {
			RTT map[string]float64 `json:"rtt"`
		} `json:"clientStats"`
	}
	if err := json.Unmarshal(r.Stats, &s); err != nil {
		t.Fatal(err)
	}
	key := "mllp://" + d.addr + "?encoding=utf-8"
	rtt, ok := s.ClientStats[key]
	if s.HL7ClientCount != 1 || !ok || rtt.RTT["count"] != 1 || rtt.RTT["pendingCount"] != 0 {
		t.Errorf("stats %s, want hl7ClientCount 1 and one sample under %q", r.Stats, key)
	}
}

// Requests beyond maxOutbound, and those arriving while the agent stops,
// are answered 503 at once.
func TestOutboundRefusals(t *testing.T) {
	var got []summary
	reply := func(m *protocol.Message) { got = append(got, summarize(t, m)) }
	o := newOutbound(slog.New(slog.DiscardHandler))
	for range maxOutbound {
		o.sem <- struct{}{}
	}
	req := pushReq("mllp://127.0.0.1:1", adt("R1"), "")
	req.Callback = "R"
	o.handle(req, reply)
	for range maxOutbound {
		<-o.sem
	}
	o.close(context.Background())
	o.handle(req, reply)
	want := []summary{
		{protocol.TypeTransmitResponse, "R", "mllp://127.0.0.1:1", protocol.ContentTypeText, http.StatusServiceUnavailable,
			"Too many pushes and pings in progress (64); try again later"},
		{protocol.TypeTransmitResponse, "R", "mllp://127.0.0.1:1", protocol.ContentTypeText, http.StatusServiceUnavailable,
			"Agent is stopping"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
}

// Stop lets a push in progress get its ACK and delivers the answer before
// the link closes.
func TestStopFinishesPush(t *testing.T) {
	e := newEnv(t)
	e.start()
	d := startPushDevice(t, true, hl7.AA)
	answer := make(chan *protocol.Message, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		r, _ := e.ds.Request(ctx, testAgentID, pushReq(d.url(""), adt("H1"), ""))
		answer <- r
	}()
	eventually(t, "push in progress", func() bool { return d.accepts.Load() == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- e.agent.Stop(context.Background()) }()
	eventually(t, "stopping", e.agent.draining)
	close(d.release)
	r := <-answer
	if r == nil || r.StatusCode != 200 || summarize(t, r).Body != "AA H1" {
		t.Fatalf("answer %+v", r)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// Scenario 45: the manifest an upgrader left is reported once the new
// process is connected, and deleted. As in a real upgrade the old process
// stays connected meanwhile; it carries the server's request, whose
// callback the manifest holds, and ignores the error it is sent.
func TestUpgradeManifest(t *testing.T) {
	tests := []struct {
		name, target string
		want         summary
	}{
		{"version matches", "5.1.28",
			summary{Type: protocol.TypeUpgradeResponse, Callback: "cb-match", StatusCode: 200}},
		{"version differs", "5.2.0",
			summary{Type: protocol.TypeError, Callback: "cb-differs",
				Body: "Failed to upgrade to version 5.2.0. Agent still running with version " + testVersion}},
	}
	e := newEnv(t)
	e.start()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := tt.want.Callback
			answer := make(chan *protocol.Message, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				r, _ := e.ds.Request(ctx, testAgentID, &protocol.Message{Type: protocol.TypeError, Body: "upgrading " + cb, Callback: cb})
				answer <- r
			}()
			e.waitMainLog(`"body":"upgrading ` + cb + `"`) // the request is pending now

			e.dataDir = t.TempDir()
			path := filepath.Join(e.dataDir, upgradeFileName)
			manifest := fmt.Sprintf(`{"previousVersion":"5.1.27","targetVersion":%q,"callback":%q}`, tt.target, cb)
			if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
				t.Fatal(err)
			}
			next := e.newAgent(e.ds.BaseURL())
			if err := next.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { next.Stop(context.Background()) })
			r := <-answer
			if r == nil {
				t.Fatal("no answer to the upgrade request")
			}
			if diff := cmp.Diff(tt.want, summarize(t, r)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("manifest still there: %v", err)
			}
		})
	}
}
