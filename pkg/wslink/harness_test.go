package wslink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// waitTimeout guards against hangs; it is never an expectation on speed.
const waitTimeout = 10 * time.Second

// serverOpts scripts the fake Medplum server.
type serverOpts struct {
	autoConnect   bool // answer agent:connect:request with agent:connect:response
	autoHeartbeat bool // answer agent:heartbeat:request with agent:heartbeat:response
	tls           bool
}

type fakeServer struct {
	*httptest.Server
	conns   chan *fakeConn
	paths   chan string
	refuse  atomic.Int32 // upgrade attempts still to refuse with 503
	mu      sync.Mutex
	all     []*fakeConn
	opts    serverOpts
	upgrade websocket.Upgrader
}

type frame struct {
	binary bool
	data   []byte
}

type fakeConn struct {
	ws     *websocket.Conn
	frames chan frame
	closed chan struct{}
	err    error // read error, valid after closed
	wmu    sync.Mutex
}

func newFakeServer(t *testing.T, opts serverOpts) *fakeServer {
	t.Helper()
	fs := &fakeServer{
		conns: make(chan *fakeConn, 256),
		paths: make(chan string, 16),
		opts:  opts,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case fs.paths <- r.URL.Path:
		default:
		}
		if fs.refuse.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/ws/agent" {
			http.NotFound(w, r)
			return
		}
		ws, err := fs.upgrade.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &fakeConn{ws: ws, frames: make(chan frame, 1024), closed: make(chan struct{})}
		fs.mu.Lock()
		fs.all = append(fs.all, c)
		fs.mu.Unlock()
		go c.read(opts)
		fs.conns <- c
	})
	fs.Server = httptest.NewUnstartedServer(h)
	// Rejected handshakes are expected in some tests; keep them off stderr.
	fs.Config.ErrorLog = log.New(io.Discard, "", 0)
	if opts.tls {
		fs.StartTLS()
	} else {
		fs.Start()
	}
	t.Cleanup(func() {
		fs.mu.Lock()
		for _, c := range fs.all {
			_ = c.ws.Close()
			<-c.closed
		}
		fs.mu.Unlock()
		fs.Close()
	})
	return fs
}

func (c *fakeConn) read(opts serverOpts) {
	defer close(c.closed)
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		c.frames <- frame{binary: mt == websocket.BinaryMessage, data: data}
		var m protocol.Message
		_ = json.Unmarshal(data, &m)
		switch {
		case opts.autoConnect && m.Type == protocol.TypeConnectRequest:
			c.sendRaw(websocket.TextMessage, `{"type":"agent:connect:response"}`)
		case opts.autoHeartbeat && m.Type == protocol.TypeHeartbeatRequest:
			c.sendRaw(websocket.TextMessage, `{"type":"agent:heartbeat:response","version":"server-1"}`)
		}
	}
}

func (c *fakeConn) sendRaw(mt int, s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(waitTimeout))
	_ = c.ws.WriteMessage(mt, []byte(s))
}

func (c *fakeConn) send(s string) { c.sendRaw(websocket.TextMessage, s) }

// closeNormal sends a close frame and drops the TCP connection.
func (c *fakeConn) closeNormal() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
}

func (c *fakeConn) next(t *testing.T) frame {
	t.Helper()
	return recv(t, c.frames, "a frame from the agent")
}

// nextMsg returns the next frame decoded as a generic JSON object, so tests
// compare exactly the keys on the wire.
func (c *fakeConn) nextMsg(t *testing.T) map[string]any {
	t.Helper()
	f := c.next(t)
	var m map[string]any
	if err := json.Unmarshal(f.data, &m); err != nil {
		t.Fatalf("agent sent non-JSON frame %q: %v", f.data, err)
	}
	return m
}

// waitClosed waits until the agent side closed the socket and returns the
// read error the server saw.
func (c *fakeConn) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case <-c.closed:
		return c.err
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for the agent to close the socket")
		return nil
	}
}

func (fs *fakeServer) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	return recv(t, fs.conns, "the agent to connect")
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recorder captures the Link's callbacks.
type recorder struct {
	token   atomic.Value // string
	handled chan *protocol.Message
	live    chan bool
	sent    chan *protocol.Message
	logs    *syncBuffer
}

const testVersion = "5.1.28-1a2b3c4"

// newTestLink builds a Link against base with short reconnect delays and a
// one-hour heartbeat (tests that need ticks shorten it). Cleanup stops the
// link, checks that no link goroutine survives and that no token was logged.
func newTestLink(t *testing.T, base string, mod func(*Config)) (*Link, *recorder) {
	t.Helper()
	rec := &recorder{
		handled: make(chan *protocol.Message, 1024),
		live:    make(chan bool, 1024),
		sent:    make(chan *protocol.Message, 1024),
		logs:    &syncBuffer{},
	}
	rec.token.Store("tok-secret-1")
	tokens := []string{"tok-secret-1", "tok-secret-2"}
	cfg := Config{
		BaseURL: base,
		AgentID: "agent-1",
		Version: testVersion,
		Token: func(context.Context) (string, error) {
			return rec.token.Load().(string), nil
		},
		Handler:           func(m *protocol.Message) { rec.handled <- m },
		OnLive:            func(v bool) { rec.live <- v },
		OnSent:            func(m *protocol.Message) { rec.sent <- m },
		Logger:            slog.New(slog.NewTextHandler(rec.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HeartbeatPeriod:   time.Hour,
		ReconnectDelay:    10 * time.Millisecond,
		MaxReconnectDelay: 50 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := l.Stop(ctx); err != nil {
			for _, tok := range tokens {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("Stop error contains an access token: %v", err)
				}
			}
		}
		if g := linkGoroutines(); g != "" {
			t.Errorf("goroutines left after Stop:\n%s", g)
		}
		logs := rec.logs.String()
		for _, tok := range tokens {
			if strings.Contains(logs, tok) {
				t.Errorf("log contains access token %q:\n%s", tok, logs)
			}
		}
	})
	return l, rec
}

// linkGoroutines returns the stacks of goroutines running Link code. A
// goroutine may still be unwinding right after its WaitGroup.Done, so it
// retries for a while before reporting.
func linkGoroutines() string {
	deadline := time.Now().Add(waitTimeout)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var out []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "wslink.(*Link)") {
				out = append(out, g)
			}
		}
		if len(out) == 0 || time.Now().After(deadline) {
			return strings.Join(out, "\n\n")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv receives from ch, failing the test if nothing arrives.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func (r *recorder) nextHandled(t *testing.T) *protocol.Message {
	t.Helper()
	return recv(t, r.handled, "Handler")
}

func (r *recorder) nextLive(t *testing.T) bool {
	t.Helper()
	return recv(t, r.live, "OnLive")
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connectLive starts l against fs and completes the handshake, returning the
// server side of the socket after the connect request was consumed.
func connectLive(t *testing.T, l *Link, fs *fakeServer, rec *recorder) *fakeConn {
	t.Helper()
	l.Start(context.Background())
	c := fs.nextConn(t)
	if got := c.nextMsg(t)["type"]; got != protocol.TypeConnectRequest {
		t.Fatalf("first frame type = %v, want %s", got, protocol.TypeConnectRequest)
	}
	if !fs.opts.autoConnect {
		c.send(`{"type":"agent:connect:response"}`)
	}
	if !rec.nextLive(t) {
		t.Fatal("OnLive(false) before going live")
	}
	return c
}
