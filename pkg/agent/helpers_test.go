package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/config"
	"github.com/medplum-agent/medplum-agent/pkg/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/logging"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// waitFor bounds every wait in these tests; it is a safety net against
// hangs, not a measurement.
const waitFor = 10 * time.Second

const (
	testAgentID = devserver.DefaultAgentID
	testVersion = "5.1.28-abcdef0"
)

// freePort returns a port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		// The kernel may offer a closed port again; a test that binds two
		// of them later would find them the same.
		if _, dup := portsGiven.LoadOrStore(port, true); !dup {
			return port
		}
	}
}

var portsGiven sync.Map

func mllpAddr(port int, query string) string {
	s := fmt.Sprintf("mllp://127.0.0.1:%d", port)
	if query != "" {
		s += "?" + query
	}
	return s
}

// ch describes one Agent.channel and its Endpoint.
type ch struct {
	name, address, status string
}

// env is a dev server plus one agent configured against it.
type env struct {
	t       testing.TB
	ds      *devserver.Server
	agent   *Agent
	dataDir string
	logDir  string
	mainLog *logging.Logger
	chLog   *capture
	// heartbeat is the agent's heartbeat period; short, so that stats.ping
	// is measured soon.
	heartbeat time.Duration
}

func newEnv(t testing.TB, chans ...ch) *env {
	t.Helper()
	cfg := devserver.DefaultConfig()
	cfg.Agents[0].Channels = nil
	ds, err := devserver.New(devserver.Options{Listen: "127.0.0.1:0", Config: cfg, HeartbeatInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	e := &env{t: t, ds: ds, dataDir: t.TempDir(), logDir: t.TempDir(), chLog: &capture{}, heartbeat: 200 * time.Millisecond}
	e.setAgent("active", nil, chans...)
	e.mainLog, err = logging.New(logging.Options{Dir: e.logDir, Name: "main", Level: "DEBUG"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.mainLog.Close() })
	e.agent = e.newAgent(ds.BaseURL())
	return e
}

func (e *env) newAgent(baseURL string) *Agent {
	e.t.Helper()
	a, err := New(Options{
		Config: &config.Config{
			BaseURL:      baseURL,
			ClientID:     devserver.DefaultClientID,
			ClientSecret: devserver.DefaultClientSecret,
			AgentID:      testAgentID,
			DataDir:      e.dataDir,
		},
		Version:         testVersion,
		MainLog:         e.mainLog,
		ChannelLog:      slog.New(e.chLog),
		HeartbeatPeriod: e.heartbeat,
		ShutdownTimeout: 3 * time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// setAgent replaces the Agent resource and its Endpoints on the server.
func (e *env) setAgent(status string, settings []fhir.AgentSetting, chans ...ch) {
	e.t.Helper()
	agent := fhir.Agent{ResourceType: "Agent", ID: testAgentID, Name: "test", Status: status, Setting: settings}
	for _, c := range chans {
		id := "ep-" + c.name
		e.put(fhir.Endpoint{ResourceType: "Endpoint", ID: id, Status: c.status, Address: c.address})
		agent.Channel = append(agent.Channel, fhir.AgentChannel{
			Name:            c.name,
			Endpoint:        fhir.Reference{Reference: "Endpoint/" + id},
			TargetReference: fhir.Reference{Reference: "Bot/ack"},
		})
	}
	e.put(agent)
}

func (e *env) put(v any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.ds.PutResource(b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start() {
	e.t.Helper()
	if err := e.agent.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { e.agent.Stop(context.Background()) })
	e.waitConnected()
}

func (e *env) waitConnected() {
	e.t.Helper()
	eventually(e.t, "agent connected", func() bool { return e.ds.Connected(testAgentID) && e.agent.link.Live() })
}

// request sends m to the agent and returns its answer.
func (e *env) request(m *protocol.Message) *protocol.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := e.ds.Request(ctx, testAgentID, m)
	if err != nil {
		e.t.Fatalf("request %s: %v", m.Type, err)
	}
	return r
}

func (e *env) reload() *protocol.Message {
	e.t.Helper()
	return e.request(&protocol.Message{Type: protocol.TypeReloadConfigRequest})
}

func (e *env) stats() stats {
	e.t.Helper()
	r := e.request(&protocol.Message{Type: protocol.TypeStatsRequest})
	var s stats
	if err := json.Unmarshal(r.Stats, &s); err != nil {
		e.t.Fatalf("stats %s: %v", r.Stats, err)
	}
	return s
}

// channels returns the running channels by name.
func (e *env) channels() map[string]channel {
	e.agent.applyMu.Lock()
	defer e.agent.applyMu.Unlock()
	out := map[string]channel{}
	for k, v := range e.agent.channels {
		out[k] = v
	}
	return out
}

// mainLogText returns everything the main log wrote so far.
func (e *env) mainLogText() string {
	e.t.Helper()
	if err := e.mainLog.Flush(); err != nil {
		e.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(e.logDir, "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

func (e *env) waitMainLog(substr string) {
	e.t.Helper()
	eventually(e.t, "main log contains "+substr, func() bool { return strings.Contains(e.mainLogText(), substr) })
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// capture is an slog handler that keeps every record as "msg k=v ...".
type capture struct {
	mu    sync.Mutex
	lines []string
	attrs []slog.Attr
	root  *capture
}

func (c *capture) store() *capture {
	if c.root != nil {
		return c.root
	}
	return c
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }

func (c *capture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range c.attrs {
		add(a)
	}
	r.Attrs(add)
	s := c.store()
	s.mu.Lock()
	s.lines = append(s.lines, b.String())
	s.mu.Unlock()
	return nil
}

func (c *capture) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &capture{root: c.store(), attrs: append(append([]slog.Attr{}, c.attrs...), attrs...)}
}

func (c *capture) WithGroup(string) slog.Handler { return c }

func (c *capture) text() string {
	s := c.store()
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func (c *capture) wait(t testing.TB, substr string) {
	t.Helper()
	eventually(t, "channel log contains "+substr, func() bool { return strings.Contains(c.text(), substr) })
}

// device is an MLLP peer talking to a channel.
type device struct {
	t  testing.TB
	c  net.Conn
	rd *mllp.Reader
}

func dial(t testing.TB, port int) *device {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &device{t: t, c: c, rd: mllp.NewReader(c, 0)}
}

func (d *device) send(text string) {
	d.t.Helper()
	if err := mllp.WriteFrame(d.c, []byte(text)); err != nil {
		d.t.Fatal(err)
	}
}

// recv returns the next message from the agent.
func (d *device) recv() *hl7.Message {
	d.t.Helper()
	d.c.SetReadDeadline(time.Now().Add(waitFor))
	p, err := d.rd.ReadFrame()
	if err != nil {
		d.t.Fatalf("device read: %v", err)
	}
	m, err := hl7.Parse(string(p))
	if err != nil {
		d.t.Fatalf("device got non-HL7 %q: %v", p, err)
	}
	return m
}

// ackOf summarises an ACK as "CODE id".
func ackOf(m *hl7.Message) string { return string(hl7.AckCodeOf(m)) + " " + m.Get("MSA-2") }

func adt(id string) string {
	return "MSH|^~\\&|ADT1|HOSP|RCV|FAC|20240101120000||ADT^A01^ADT_A01|" + id + "|P|2.5\r" +
		"PID|1||123^^^HOSP^MR||DOE^JOHN"
}

// transmits collects the agent:transmit:requests the server receives.
type transmits struct {
	mu   sync.Mutex
	msgs []*protocol.Message
}

func (e *env) recordTransmits() *transmits {
	tr := &transmits{}
	e.ds.OnTransmit(func(_ string, m *protocol.Message) {
		tr.mu.Lock()
		tr.msgs = append(tr.msgs, m)
		tr.mu.Unlock()
	})
	return tr
}

func (tr *transmits) wait(t testing.TB, n int) []*protocol.Message {
	t.Helper()
	var out []*protocol.Message
	eventually(t, fmt.Sprintf("%d transmits", n), func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		out = append(out[:0], tr.msgs...)
		return len(out) >= n
	})
	return out
}

// holdBot makes the server keep every transmit instead of answering it; the
// test answers later with respond.
type holdBot struct {
	reqs chan *protocol.Message
}

func (e *env) holdBot() *holdBot {
	h := &holdBot{reqs: make(chan *protocol.Message, 100)}
	e.ds.SetBotOverride(func(_ string, m *protocol.Message) *protocol.Message {
		h.reqs <- m
		return nil
	})
	return h
}

func (h *holdBot) next(t testing.TB) *protocol.Message {
	t.Helper()
	select {
	case m := <-h.reqs:
		return m
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for a transmit")
		return nil
	}
}

// ackResponse answers req with an ACK of the given code.
func ackResponse(t testing.TB, req *protocol.Message, code hl7.AckCode) *protocol.Message {
	t.Helper()
	m, err := hl7.Parse(req.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.Message{
		Type: protocol.TypeTransmitResponse, Channel: req.Channel, Remote: req.Remote, Callback: req.Callback,
		ContentType: protocol.ContentTypeHL7, StatusCode: 200, Body: hl7.BuildAck(m, code, hl7.AckOptions{}).String(),
	}
}

func (e *env) sendToAgent(m *protocol.Message) {
	e.t.Helper()
	if err := e.ds.SendToAgent(testAgentID, m); err != nil {
		e.t.Fatal(err)
	}
}

// inMemory turns the durable queue off (durableQueue=false).
var inMemory = []fhir.AgentSetting{{Name: "durableQueue", ValueBoolean: new(false)}}
