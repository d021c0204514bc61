package wslink

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

func TestWebsocketURL(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{in: "https://example.com/", want: "wss://example.com/ws/agent"},
		{in: "https://api.medplum.com/fhir/R4/", want: "wss://api.medplum.com/ws/agent"},
		{in: "http://localhost:8103/api?x=1#f", want: "ws://localhost:8103/ws/agent"},
		{in: "HTTPS://user:pw@example.com:8443", want: "wss://example.com:8443/ws/agent"},
		{in: "http://[::1]:8103/", want: "ws://[::1]:8103/ws/agent"},
		{in: "ws://example.com/", err: true},
		{in: "ftp://example.com/", err: true},
		{in: "example.com", err: true},
		{in: "https:///path", err: true},
		{in: "http://bad host/", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := websocketURL(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("websocketURL(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tok := func(context.Context) (string, error) { return "t", nil }
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"valid", Config{BaseURL: "https://x/", AgentID: "a", Token: tok}, true},
		{"bad scheme", Config{BaseURL: "wss://x/", AgentID: "a", Token: tok}, false},
		{"no agent", Config{BaseURL: "https://x/", Token: tok}, false},
		{"no token", Config{BaseURL: "https://x/", AgentID: "a"}, false},
		{"insecure TLS", Config{BaseURL: "https://x/", AgentID: "a", Token: tok, TLSConfig: &tls.Config{InsecureSkipVerify: true}}, false},
		{"negative queue", Config{BaseURL: "https://x/", AgentID: "a", Token: tok, MaxQueue: -1}, false},
	}
	for _, tt := range tests {
		l, err := New(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: New error = %v, want ok %v", tt.name, err, tt.ok)
		}
		if tt.ok && (l.Ping() != -1 || l.Live() || l.QueueDepth() != 0) {
			t.Errorf("%s: fresh link ping=%d live=%v depth=%d", tt.name, l.Ping(), l.Live(), l.QueueDepth())
		}
	}
}

func TestDefaultReconnectDelayJittered(t *testing.T) {
	for range 50 {
		l, _ := newUnitLink(t, nil)
		if d := l.cfg.ReconnectDelay; d < time.Second || d >= 5*time.Second {
			t.Fatalf("ReconnectDelay = %v, want within [1s, 5s)", d)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{base: time.Second, max: 10 * time.Second}
	var got []time.Duration
	for range 11 {
		got = append(got, b.next())
	}
	want := []time.Duration{
		1000 * time.Millisecond, 1300 * time.Millisecond, 1690 * time.Millisecond, 2197 * time.Millisecond,
		2856100 * time.Microsecond, 3712930 * time.Microsecond, 4826809 * time.Microsecond, 6274851700 * time.Nanosecond,
		8157307210 * time.Nanosecond, 10 * time.Second, 10 * time.Second,
	}
	round := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	if d := cmp.Diff(want, got, cmp.Transformer("round", round)); d != "" {
		t.Errorf("delays (-want +got):\n%s", d)
	}
	b.reset()
	if d := b.next(); d != time.Second {
		t.Errorf("after reset next() = %v, want 1s", d)
	}
}

// Scenario 1: URL mapping and the connect frame, over plain and verified TLS.
func TestConnectRequestFirst(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			fs := newFakeServer(t, serverOpts{tls: useTLS})
			l, rec := newTestLink(t, fs.URL+"/base/path/", func(c *Config) {
				if useTLS {
					c.TLSConfig = caConfig(t, fs)
				}
			})
			if want := map[bool]string{false: "ws://", true: "wss://"}[useTLS]; !strings.HasPrefix(l.url, want) {
				t.Errorf("url = %s, want scheme %s", l.url, want)
			}
			l.Start(context.Background())
			c := fs.nextConn(t)
			if p := recv(t, fs.paths, "a request path"); p != "/ws/agent" {
				t.Errorf("path = %q, want /ws/agent", p)
			}
			f := c.next(t)
			if f.binary {
				t.Error("connect request sent as a binary frame")
			}
			want := `{"type":"agent:connect:request","accessToken":"tok-secret-1","agentId":"agent-1"}`
			if string(f.data) != want {
				t.Errorf("first frame = %s, want %s", f.data, want)
			}
			if l.Live() {
				t.Error("live before agent:connect:response")
			}
			c.send(`{"type":"agent:connect:response"}`)
			if !rec.nextLive(t) || !l.Live() {
				t.Error("not live after agent:connect:response")
			}
		})
	}
}

// caConfig writes the test server's certificate to a file and loads it the
// way --ca-file does.
func caConfig(t *testing.T, fs *fakeServer) *tls.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	der := fs.Certificate().Raw
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := TLSConfigFromCAFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTLSConfigFromCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing.pem"), notPEM} {
		if _, err := TLSConfigFromCAFile(p); err == nil {
			t.Errorf("TLSConfigFromCAFile(%s) succeeded", p)
		}
	}
}

func TestTLSUnknownAuthorityRejected(t *testing.T) {
	fs := newFakeServer(t, serverOpts{tls: true})
	l, rec := newTestLink(t, fs.URL, nil)
	l.Start(context.Background())
	waitFor(t, "a certificate verification failure in the log", func() bool {
		return strings.Contains(rec.logs.String(), "certificate")
	})
	select {
	case <-fs.conns:
		t.Fatal("agent connected to a server with an unknown certificate authority")
	default:
	}
}

// Scenario 2: heartbeat request answered with the agent version.
func TestHeartbeatReply(t *testing.T) {
	fs := newFakeServer(t, serverOpts{})
	l, rec := newTestLink(t, fs.URL, nil)
	c := connectLive(t, l, fs, rec)
	c.send(`{"type":"agent:heartbeat:request"}`)
	want := `{"type":"agent:heartbeat:response","version":"` + testVersion + `"}`
	if got := string(c.next(t).data); got != want {
		t.Errorf("reply = %s, want %s", got, want)
	}
}

// Scenario 3: periodic heartbeats while live; responses update Ping.
func TestPeriodicHeartbeatUpdatesPing(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true, autoHeartbeat: true})
	l, rec := newTestLink(t, fs.URL, func(c *Config) { c.HeartbeatPeriod = 50 * time.Millisecond })
	c := connectLive(t, l, fs, rec)
	for range 3 {
		if got := c.nextMsg(t); !cmp.Equal(got, map[string]any{"type": protocol.TypeHeartbeatRequest}) {
			t.Fatalf("frame = %v, want a bare heartbeat request", got)
		}
	}
	waitFor(t, "a ping sample", func() bool { return l.Ping() >= 0 })
	if n := l.OutstandingHeartbeats(); n > 1 {
		t.Errorf("OutstandingHeartbeats() = %d with a responsive server", n)
	}
}

// Scenario 4: the server drops the socket (also refusing some attempts);
// the agent reconnects and sends a fresh connect request.
func TestReconnectAfterServerClose(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	c1 := connectLive(t, l, fs, rec)
	rec.token.Store("tok-secret-2")
	fs.refuse.Store(3)
	c1.closeNormal()
	if rec.nextLive(t) {
		t.Fatal("OnLive(true) after the server closed")
	}
	c2 := fs.nextConn(t)
	want := map[string]any{"type": protocol.TypeConnectRequest, "accessToken": "tok-secret-2", "agentId": "agent-1"}
	if d := cmp.Diff(want, c2.nextMsg(t)); d != "" {
		t.Errorf("connect request on the new socket (-want +got):\n%s", d)
	}
	if !rec.nextLive(t) {
		t.Error("not live again after reconnecting")
	}
	if n := fs.refuse.Load(); n >= 0 {
		t.Errorf("refused upgrades left = %d; the agent did not retry", n+1)
	}
}

// Scenario 5: two unanswered heartbeats, then a forced reconnect on the
// third tick.
func TestMissedHeartbeatsForceReconnect(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, func(c *Config) { c.HeartbeatPeriod = 50 * time.Millisecond })
	c1 := connectLive(t, l, fs, rec)
	err := c1.waitClosed(t)
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server saw %v, want a normal close", err)
	}
	heartbeats := 0
	for len(c1.frames) > 0 {
		if f := <-c1.frames; strings.Contains(string(f.data), protocol.TypeHeartbeatRequest) {
			heartbeats++
		}
	}
	if heartbeats != 2 {
		t.Errorf("heartbeats before the forced reconnect = %d, want 2", heartbeats)
	}
	c2 := fs.nextConn(t)
	if got := c2.nextMsg(t)["type"]; got != protocol.TypeConnectRequest {
		t.Errorf("first frame on the new socket = %v", got)
	}
	if !strings.Contains(rec.logs.String(), "Disconnected from Medplum server. Attempting to reconnect...") {
		t.Error("missing reconnect log line")
	}
}

// A socket that never goes live (no connect response, or no token) is
// replaced after three ticks.
func TestNotLiveForcesReconnect(t *testing.T) {
	tests := []struct {
		name      string
		tokenErrs int32 // Token failures before it succeeds
		wantFirst int   // frames on the first socket
	}{
		{name: "no connect response", wantFirst: 1},
		{name: "token unavailable", tokenErrs: 1, wantFirst: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, serverOpts{})
			var fails atomic.Int32
			fails.Store(tt.tokenErrs)
			l, rec := newTestLink(t, fs.URL, func(c *Config) {
				c.HeartbeatPeriod = 50 * time.Millisecond
				c.Token = func(context.Context) (string, error) {
					if fails.Add(-1) >= 0 {
						return "", errors.New("login refused")
					}
					return "tok-secret-1", nil
				}
			})
			l.Start(context.Background())
			c1 := fs.nextConn(t)
			c1.waitClosed(t)
			if n := len(c1.frames); n != tt.wantFirst {
				t.Errorf("frames on the abandoned socket = %d, want %d", n, tt.wantFirst)
			}
			c2 := fs.nextConn(t)
			if got := c2.nextMsg(t)["type"]; got != protocol.TypeConnectRequest {
				t.Errorf("first frame on the new socket = %v", got)
			}
			if tt.tokenErrs > 0 && !strings.Contains(rec.logs.String(), "Failed to login") {
				t.Error("missing login failure log line")
			}
		})
	}
}

// Scenarios 6–8 end to end, plus binary frames and legacy aliases. Each case
// is followed by a probe whose error reply must come next, which proves that
// cases expecting no reply sent none.
func TestInboundOverSocket(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	c := connectLive(t, l, fs, rec)
	tests := []struct {
		name        string
		in          string
		binary      bool
		wantReply   map[string]any
		wantPrefix  string // body prefix of an agent:error reply
		wantHandled string // type passed to Handler
	}{
		{name: "unknown type", in: `{"type":"unknown","callback":"cb-6"}`,
			wantReply: map[string]any{"type": "agent:error", "callback": "cb-6", "body": "Unknown message type: unknown"}},
		{name: "server error", in: `{"type":"agent:error","body":"details"}`, wantHandled: protocol.TypeError},
		{name: "not JSON", in: `not json`, wantPrefix: "WebSocket error on incoming message:"},
		{name: "binary heartbeat", in: `{"type":"agent:heartbeat:request"}`, binary: true,
			wantReply: map[string]any{"type": "agent:heartbeat:response", "version": testVersion}},
		{name: "binary push", in: `{"type":"push","remote":"mllp://h:1","callback":"c"}`, binary: true,
			wantHandled: protocol.TypeTransmitRequest},
		{name: "legacy transmit", in: `{"type":"transmit","callback":"c","statusCode":200}`,
			wantHandled: protocol.TypeTransmitResponse},
		{name: "legacy connected", in: `{"type":"connected"}`},
	}
	probe := map[string]any{"type": "agent:error", "callback": "probe", "body": "Unknown message type: probe"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mt := websocket.TextMessage
			if tt.binary {
				mt = websocket.BinaryMessage
			}
			c.sendRaw(mt, tt.in)
			c.send(`{"type":"probe","callback":"probe"}`)
			switch {
			case tt.wantReply != nil:
				if d := cmp.Diff(tt.wantReply, c.nextMsg(t)); d != "" {
					t.Errorf("reply (-want +got):\n%s", d)
				}
			case tt.wantPrefix != "":
				got := c.nextMsg(t)
				if body, _ := got["body"].(string); got["type"] != protocol.TypeError || !strings.HasPrefix(body, tt.wantPrefix) {
					t.Errorf("reply = %v, want agent:error with body prefix %q", got, tt.wantPrefix)
				}
			}
			if d := cmp.Diff(probe, c.nextMsg(t)); d != "" {
				t.Errorf("expected only the probe reply next (-want +got):\n%s", d)
			}
			if tt.wantHandled != "" {
				if m := rec.nextHandled(t); m.Type != tt.wantHandled {
					t.Errorf("Handler got %s, want %s", m.Type, tt.wantHandled)
				}
			}
			if len(rec.handled) != 0 {
				t.Errorf("Handler got %d unexpected messages", len(rec.handled))
			}
		})
	}
}

func TestInvalidAccessTokenReconnects(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	var invalidated atomic.Int32
	l, rec := newTestLink(t, fs.URL, func(c *Config) {
		c.Invalidate = func() { invalidated.Add(1) }
	})
	c1 := connectLive(t, l, fs, rec)
	rec.token.Store("tok-secret-2")
	c1.send(`{"type":"agent:error","body":"Invalid access token"}`)
	if m := rec.nextHandled(t); m.Body != "Invalid access token" {
		t.Errorf("Handler got %+v", m)
	}
	c2 := fs.nextConn(t)
	if got := c2.nextMsg(t)["accessToken"]; got != "tok-secret-2" {
		t.Errorf("new connect request token = %v", got)
	}
	if n := invalidated.Load(); n != 1 {
		t.Errorf("Invalidate calls = %d, want 1", n)
	}
}

// Messages queued while disconnected: control replies go right after the
// connect request, data only once live, in order, with the token current
// at send time.
func TestQueuedWhileDisconnected(t *testing.T) {
	fs := newFakeServer(t, serverOpts{})
	l, rec := newTestLink(t, fs.URL, nil)
	var data []*protocol.Message
	for i := range 5 {
		m := &protocol.Message{Type: protocol.TypeTransmitRequest, AccessToken: "placeholder",
			Channel: "ch", Body: fmt.Sprint("msg-", i), Callback: fmt.Sprint("cb-", i)}
		if i == 2 {
			m = &protocol.Message{Type: protocol.TypeTransmitResponse, Body: "ack", StatusCode: 200, Callback: "push-1"}
		}
		data = append(data, m)
		if err := l.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Send(&protocol.Message{Type: protocol.TypeReloadConfigResp, StatusCode: 200, Callback: "reload-1"}); err != nil {
		t.Fatal(err)
	}
	if l.QueueDepth() != 5 {
		t.Errorf("QueueDepth() = %d, want 5", l.QueueDepth())
	}
	l.Start(context.Background())
	c := fs.nextConn(t)
	if got := c.nextMsg(t)["accessToken"]; got != "tok-secret-1" {
		t.Errorf("connect token = %v", got)
	}
	if d := cmp.Diff(map[string]any{"type": "agent:reloadconfig:response", "statusCode": 200.0, "callback": "reload-1"}, c.nextMsg(t)); d != "" {
		t.Errorf("held control reply (-want +got):\n%s", d)
	}
	// Not live yet: a heartbeat exchange goes through, data does not.
	c.send(`{"type":"agent:heartbeat:request"}`)
	if got := c.nextMsg(t)["type"]; got != protocol.TypeHeartbeatResponse {
		t.Fatalf("frame before live = %v, want heartbeat response", got)
	}
	rec.token.Store("tok-secret-2")
	c.send(`{"type":"agent:connect:response"}`)
	for i, m := range data {
		want := map[string]any{"type": m.Type, "body": m.Body, "callback": m.Callback}
		if m.Type == protocol.TypeTransmitRequest {
			want["accessToken"] = "tok-secret-2"
			want["channel"] = "ch"
		} else {
			want["statusCode"] = 200.0
		}
		if d := cmp.Diff(want, c.nextMsg(t)); d != "" {
			t.Errorf("data frame %d (-want +got):\n%s", i, d)
		}
		if got := recv(t, rec.sent, "OnSent"); got != m {
			t.Errorf("OnSent %d got %+v, want the enqueued message", i, got)
		}
	}
	if data[0].AccessToken != "placeholder" {
		t.Errorf("caller's message was modified: accessToken %q", data[0].AccessToken)
	}
	waitFor(t, "an empty queue", func() bool { return l.QueueDepth() == 0 })
}

// A queued transmit whose token cannot be obtained stays at the head and is
// retried on the next wake-up, keeping order.
func TestQueueTokenFailureKeepsOrder(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	var fail atomic.Bool
	l, rec := newTestLink(t, fs.URL, func(c *Config) {
		c.Token = func(context.Context) (string, error) {
			if fail.Load() {
				return "", errors.New("token endpoint down")
			}
			return "tok-secret-1", nil
		}
	})
	c := connectLive(t, l, fs, rec)
	fail.Store(true)
	for _, b := range []string{"a", "b"} {
		if err := l.Enqueue(&protocol.Message{Type: protocol.TypeTransmitRequest, Body: b}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the token failure", func() bool { return strings.Contains(rec.logs.String(), "no access token") })
	if l.QueueDepth() != 2 {
		t.Fatalf("QueueDepth() = %d, want 2", l.QueueDepth())
	}
	fail.Store(false)
	if err := l.Enqueue(&protocol.Message{Type: protocol.TypeTransmitRequest, Body: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		if got := c.nextMsg(t)["body"]; got != b {
			t.Errorf("body = %v, want %s", got, b)
		}
	}
}

func TestEnqueueLimitsAndErrors(t *testing.T) {
	l, _ := newTestLink(t, "http://127.0.0.1:1/", func(c *Config) { c.MaxQueue = 2 })
	m := func() *protocol.Message { return &protocol.Message{Type: protocol.TypeTransmitRequest} }
	for i := range 2 {
		if err := l.Enqueue(m()); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
	}
	if err := l.Enqueue(m()); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Enqueue beyond MaxQueue = %v, want ErrQueueFull", err)
	}
	if err := l.Enqueue(nil); err == nil {
		t.Error("Enqueue(nil) succeeded")
	}
	bad := &protocol.Message{Type: protocol.TypeStatsResponse, Stats: []byte("{not json")}
	if err := l.Send(bad); err == nil {
		t.Error("Send accepted a message that cannot be encoded")
	}
	for range maxControl {
		if err := l.Send(&protocol.Message{Type: protocol.TypeError}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Send(&protocol.Message{Type: protocol.TypeError}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Send beyond its buffer = %v, want ErrQueueFull", err)
	}
	if l.QueueDepth() != 2 {
		t.Errorf("QueueDepth() = %d, want 2", l.QueueDepth())
	}
	err := l.Stop(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("Stop with unsent messages = %v", err)
	}
	if err := l.Enqueue(m()); !errors.Is(err, ErrStopped) {
		t.Errorf("Enqueue after Stop = %v, want ErrStopped", err)
	}
}

// Stop flushes what is queued, closes with 1000 and leaves no goroutines
// (the cleanup in newTestLink checks the latter).
func TestStopFlushesAndClosesNormally(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	c := connectLive(t, l, fs, rec)
	const n = 50
	for i := range n {
		if err := l.Enqueue(&protocol.Message{Type: protocol.TypeTransmitResponse, Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for i := range n {
		if got := c.nextMsg(t)["body"]; got != fmt.Sprint(i) {
			t.Fatalf("frame %d body = %v", i, got)
		}
	}
	if err := c.waitClosed(t); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server saw %v, want close 1000", err)
	}
	if l.Live() {
		t.Error("live after Stop")
	}
	if g := linkGoroutines(); g != "" {
		t.Errorf("goroutines left after Stop:\n%s", g)
	}
}

func TestStopBeforeStart(t *testing.T) {
	l, _ := newTestLink(t, "http://127.0.0.1:1/", nil)
	if err := l.Stop(context.Background()); err != nil {
		t.Errorf("Stop = %v", err)
	}
	l.Start(context.Background())
	if g := linkGoroutines(); g != "" {
		t.Errorf("Start after Stop started goroutines:\n%s", g)
	}
}

func TestStartContextCancelled(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	ctx, cancel := context.WithCancel(context.Background())
	l.Start(ctx)
	c := fs.nextConn(t)
	if !rec.nextLive(t) {
		t.Fatal("not live")
	}
	cancel()
	if err := c.waitClosed(t); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server saw %v, want close 1000", err)
	}
	if rec.nextLive(t) {
		t.Error("still live after the start context ended")
	}
}

func TestReconnectMethod(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	c1 := connectLive(t, l, fs, rec)
	l.Reconnect()
	if err := c1.waitClosed(t); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("old socket closed with %v, want 1000", err)
	}
	c2 := fs.nextConn(t)
	if got := c2.nextMsg(t)["type"]; got != protocol.TypeConnectRequest {
		t.Errorf("first frame on the new socket = %v", got)
	}
}

func TestReadLimit(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, func(c *Config) { c.ReadLimit = 1024 })
	c1 := connectLive(t, l, fs, rec)
	c1.send(`{"type":"agent:transmit:response","body":"` + strings.Repeat("x", 2048) + `"}`)
	if err := c1.waitClosed(t); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Errorf("server saw %v, want close 1009", err)
	}
	fs.nextConn(t)
	if len(rec.handled) != 0 {
		t.Error("oversized frame reached the Handler")
	}
}

// A message enqueued as the socket breaks is neither lost nor duplicated:
// whether the write fails or the link notices first, it goes out once on
// the next socket.
func TestQueueSurvivesBrokenSocket(t *testing.T) {
	fs := newFakeServer(t, serverOpts{autoConnect: true})
	l, rec := newTestLink(t, fs.URL, nil)
	c1 := connectLive(t, l, fs, rec)
	l.mu.Lock()
	_ = l.sess.ws.NetConn().Close()
	l.mu.Unlock()
	m := &protocol.Message{Type: protocol.TypeTransmitRequest, Body: "survivor"}
	if err := l.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	c1.waitClosed(t)
	c2 := fs.nextConn(t)
	if got := c2.nextMsg(t)["type"]; got != protocol.TypeConnectRequest {
		t.Fatalf("first frame = %v", got)
	}
	if got := c2.nextMsg(t)["body"]; got != "survivor" {
		t.Errorf("body = %v, want survivor", got)
	}
	if got := recv(t, rec.sent, "OnSent"); got != m {
		t.Errorf("OnSent got %+v", got)
	}
	if n := len(c1.frames); n != 0 {
		t.Errorf("broken socket received %d frames", n)
	}
	if n := len(rec.sent); n != 0 {
		t.Errorf("OnSent called %d extra times", n)
	}
}
