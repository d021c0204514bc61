package push

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/medplum-agent/medplum-agent/pkg/agent/rtt"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// testDeadline bounds every blocking step so a broken test fails instead of
// hanging; it is never a performance assertion.
const testDeadline = 10 * time.Second

var ackTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func msgText(id string) string {
	return "MSH|^~\\&|SEND|FAC|RECV|FAC|20240102030405||ADT^A01^ADT_A01|" + id + "|P|2.5.1\rPID|1||12345^^^MRN||DOE^JOHN"
}

// ackFor is the deterministic ACK the test device sends.
func ackFor(m *hl7.Message, code hl7.AckCode) *hl7.Message {
	return hl7.BuildAck(m, code, hl7.AckOptions{ControlID: "ACK-" + string(code), Now: ackTime})
}

func ackText(t *testing.T, body string, code hl7.AckCode) string {
	t.Helper()
	m, err := hl7.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	return ackFor(m, code).String()
}

func replyAA(c *mllp.Conn, m *hl7.Message) { c.Send(ackFor(m, hl7.AA)) }

func replyCAThenAA(c *mllp.Conn, m *hl7.Message) {
	c.Send(ackFor(m, hl7.CA))
	c.Send(ackFor(m, hl7.AA))
}

func replyNever(*mllp.Conn, *hl7.Message) {}

// device is an MLLP listener standing in for an HL7 receiver. It counts
// connections and remembers which connection carried each control id.
type device struct {
	addr    string
	accepts atomic.Int32
	gone    chan struct{} // one value per closed connection

	mu sync.Mutex
	on map[string]string // control id → peer address of the connection
}

func startDevice(t *testing.T, reply func(*mllp.Conn, *hl7.Message)) *device {
	t.Helper()
	d := &device{gone: make(chan struct{}, 64), on: make(map[string]string)}
	srv := &mllp.Server{
		Handler: func(c *mllp.Conn, m *hl7.Message) {
			d.mu.Lock()
			d.on[m.ControlID()] = c.RemoteAddr()
			d.mu.Unlock()
			reply(c, m)
		},
		OnConnect:    func(*mllp.Conn) { d.accepts.Add(1) },
		OnDisconnect: func(*mllp.Conn, error) { d.gone <- struct{}{} },
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	d.addr = srv.Addr().String()
	return d
}

// waitGone waits until n connections have closed on the device side.
func (d *device) waitGone(t *testing.T, n int) {
	t.Helper()
	timer := time.NewTimer(testDeadline)
	defer timer.Stop()
	for range n {
		select {
		case <-d.gone:
		case <-timer.C:
			t.Fatalf("device connections not closed")
		}
	}
}

// waitFor polls cond until it holds; the bound only keeps a broken test from
// hanging.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(testDeadline); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not reached")
		}
	}
}

func (d *device) connOf(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.on[id]
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newPools(t *testing.T, s Settings) *Pools {
	t.Helper()
	ps := NewPools(s, nil)
	t.Cleanup(ps.Close)
	return ps
}

func push(t *testing.T, ps *Pools, remote, id, returnAck string) *protocol.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	return ps.Handle(ctx, &protocol.Message{
		Type: protocol.TypeTransmitRequest, Remote: remote, ContentType: protocol.ContentTypeHL7,
		Body: msgText(id), Callback: "cb-" + id, ReturnAck: returnAck,
	})
}

func TestHandle(t *testing.T) {
	const body = "MSH|^~\\&|SEND|FAC|RECV|FAC|20240102030405||ADT^A01^ADT_A01|MSG00001|P|2.5.1\rPID|1||12345^^^MRN||DOE^JOHN"
	const noID = "MSH|^~\\&|SEND|FAC|RECV|FAC|20240102030405||ADT^A01^ADT_A01||P|2.5.1\rPID|1"
	_, notHL7 := hl7.Parse("hello")
	_, badCharset := charset.Lookup("klingon")
	fixed := func(r string) func(string) string { return func(string) string { return r } }
	ok := func(code hl7.AckCode) func(t *testing.T, remote string) *protocol.Message {
		return func(t *testing.T, remote string) *protocol.Message {
			return &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: "dev", Remote: remote, Callback: "X",
				ContentType: protocol.ContentTypeHL7, StatusCode: 200, Body: ackText(t, body, code)}
		}
	}
	fail := func(text string) func(t *testing.T, remote string) *protocol.Message {
		return func(t *testing.T, remote string) *protocol.Message {
			u := strings.TrimPrefix(remote, "mllp://")
			addr, _, _ := strings.Cut(u, "?")
			return &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: "dev", Remote: remote, Callback: "X",
				ContentType: protocol.ContentTypeText, StatusCode: 400, Body: strings.ReplaceAll(text, "{addr}", addr)}
		}
	}
	agentError := func(text string) func(t *testing.T, remote string) *protocol.Message {
		return func(*testing.T, string) *protocol.Message { return protocol.ErrorMessage("X", text) }
	}

	tests := []struct {
		name      string
		reply     func(*mllp.Conn, *hl7.Message) // nil: nobody listens
		query     string                         // appended to mllp://<addr>
		remote    func(addr string) string       // overrides the device URL
		returnAck string
		body      string
		timeout   time.Duration
		want      func(t *testing.T, remote string) *protocol.Message
		wantConns int    // clients left in the pool
		wantLog   string // a line the log must contain
	}{
		{name: "AA", reply: replyAA, want: ok(hl7.AA), wantConns: 1},
		{name: "encoding in URL", reply: replyAA, query: "?encoding=iso-8859-1", want: ok(hl7.AA), wantConns: 1},
		{name: "missing MSH-10", reply: replyAA, body: noID, want: fail("MSH.10 is missing but required")},
		{name: "bogus returnAck", reply: replyAA, returnAck: "bogus",
			want: fail("Invalid value for returnAck; expected: 'first' or 'application', received: bogus")},
		{name: "first returns CA", reply: replyCAThenAA, returnAck: "first", want: ok(hl7.CA), wantConns: 1},
		{name: "application returns AA", reply: replyCAThenAA, returnAck: "application", want: ok(hl7.AA), wantConns: 1},
		{name: "returnAck ignores case", reply: replyCAThenAA, returnAck: "APPLICATION", want: ok(hl7.AA), wantConns: 1},
		{name: "no returnAck returns first", reply: replyCAThenAA, want: ok(hl7.CA), wantConns: 1},
		{name: "URL defaultReturnAck", reply: replyCAThenAA, query: "?defaultReturnAck=application", want: ok(hl7.AA), wantConns: 1},
		{name: "message beats URL", reply: replyCAThenAA, query: "?defaultReturnAck=application", returnAck: "first",
			want: ok(hl7.CA), wantConns: 1},
		{name: "invalid URL default warns only", reply: replyCAThenAA, query: "?defaultReturnAck=bogus", want: ok(hl7.CA), wantConns: 1,
			wantLog: "Invalid value for returnAck; expected: 'first' or 'application', received: bogus - falling back to default return ACK behavior of 'first'."},
		{name: "refused", want: fail("connect ECONNREFUSED {addr}")},
		{name: "no ACK", reply: replyNever, timeout: 50 * time.Millisecond, want: fail("No ACK from {addr} within 50ms")},
		{name: "unknown encoding", reply: replyAA, query: "?encoding=klingon", want: fail(badCharset.Error())},
		{name: "missing remote", remote: fixed(""), reply: replyAA, want: agentError("Missing remote address")},
		{name: "remote not a URL", remote: fixed("not a url"), want: agentError("WebSocket error on incoming message: Invalid URL")},
		{name: "bad port", remote: fixed("mllp://127.0.0.1:99999"), want: agentError("WebSocket error on incoming message: Invalid URL")},
		{name: "missing port", remote: fixed("mllp://127.0.0.1"), want: fail("Missing port in remote address 'mllp://127.0.0.1'")},
		{name: "body not HL7", reply: replyAA, body: "hello", want: agentError("WebSocket error on incoming message: " + notHL7.Error())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := refusedAddr(t)
			if tc.reply != nil {
				addr = startDevice(t, tc.reply).addr
			}
			remote := "mllp://" + addr + tc.query
			if tc.remote != nil {
				remote = tc.remote(addr)
			}
			b := body
			if tc.body != "" {
				b = tc.body
			}
			var logs bytes.Buffer
			ps := NewPools(Settings{ResponseTimeout: tc.timeout}, slog.New(slog.NewTextHandler(&logs, nil)))
			t.Cleanup(ps.Close)
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			got := ps.Handle(ctx, &protocol.Message{
				Type: protocol.TypeTransmitRequest, Channel: "dev", Remote: remote, Callback: "X",
				ContentType: protocol.ContentTypeHL7, Body: b, ReturnAck: tc.returnAck,
			})
			if diff := cmp.Diff(tc.want(t, remote), got); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
			if n := ps.ClientCount(); n != tc.wantConns {
				t.Errorf("ClientCount = %d, want %d", n, tc.wantConns)
			}
			if want := strconv.Quote(tc.wantLog); tc.wantLog != "" && !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %s:\n%s", want, logs.String())
			}
		})
	}
}

func TestNoAckClosesClient(t *testing.T) {
	d := startDevice(t, replyNever)
	ps := newPools(t, Settings{ResponseTimeout: 20 * time.Millisecond})
	got := push(t, ps, "mllp://"+d.addr, "1", "")
	if got.StatusCode != 400 {
		t.Fatalf("status %d, body %q", got.StatusCode, got.Body)
	}
	d.waitGone(t, 1) // the device sees the connection end
	if n := ps.ClientCount(); n != 0 {
		t.Errorf("ClientCount = %d, want 0", n)
	}
	key := "mllp://" + d.addr + "?encoding=utf-8"
	want := rtt.Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1}
	if diff := cmp.Diff(map[string]rtt.Stats{key: want}, ps.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

// fakeClock is an injected time source for idle release.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestConnectionReuseAndIdleRelease(t *testing.T) {
	tests := []struct {
		name        string
		set         Settings
		pushes      int
		wantAccepts int32
		// Clients left after Tick at 9 s and at 10 s past the last push.
		wantAt9, wantAt10 int
	}{
		{name: "keepAlive reuses one connection", set: Settings{KeepAlive: true}, pushes: 4,
			wantAccepts: 1, wantAt9: 1, wantAt10: 1},
		{name: "keepAlive with an explicit limit", set: Settings{KeepAlive: true, MaxClientsPerRemote: 2}, pushes: 4,
			wantAccepts: 2, wantAt9: 2, wantAt10: 2},
		{name: "no keepAlive grows to the limit, then idles out", set: Settings{}, pushes: 7,
			wantAccepts: 5, wantAt9: 5, wantAt10: 0},
		{name: "custom idle release", set: Settings{MaxClientsPerRemote: 1, IdleRelease: 5 * time.Second}, pushes: 2,
			wantAccepts: 1, wantAt9: 0, wantAt10: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := startDevice(t, replyAA)
			ps := newPools(t, tc.set)
			clock := &fakeClock{t: ackTime}
			ps.now = clock.now
			for i := range tc.pushes {
				if got := push(t, ps, "mllp://"+d.addr, "ID"+string(rune('A'+i)), ""); got.StatusCode != 200 {
					t.Fatalf("push %d: %d %q", i, got.StatusCode, got.Body)
				}
			}
			if got := d.accepts.Load(); got != tc.wantAccepts {
				t.Errorf("connections accepted = %d, want %d", got, tc.wantAccepts)
			}
			ps.Tick(clock.now().Add(9 * time.Second))
			if n := ps.ClientCount(); n != tc.wantAt9 {
				t.Errorf("ClientCount after 9 s = %d, want %d", n, tc.wantAt9)
			}
			ps.Tick(clock.now().Add(10 * time.Second))
			if n := ps.ClientCount(); n != tc.wantAt10 {
				t.Errorf("ClientCount after 10 s = %d, want %d", n, tc.wantAt10)
			}
			d.waitGone(t, int(tc.wantAccepts)-tc.wantAt10)
		})
	}
}

func TestRoundRobinAndResize(t *testing.T) {
	d := startDevice(t, replyAA)
	ps := newPools(t, Settings{MaxClientsPerRemote: 2})
	remote := "mllp://" + d.addr
	for _, id := range []string{"A", "B", "C", "D", "E"} {
		if got := push(t, ps, remote, id, ""); got.StatusCode != 200 {
			t.Fatalf("push %s: %d %q", id, got.StatusCode, got.Body)
		}
	}
	// A and B open one connection each; C, D, E then alternate over them.
	got := []bool{d.connOf("C") == d.connOf("A"), d.connOf("D") == d.connOf("B"), d.connOf("E") == d.connOf("A"),
		d.connOf("A") != d.connOf("B")}
	if diff := cmp.Diff([]bool{true, true, true, true}, got); diff != "" {
		t.Errorf("round robin (-want +got):\n%s", diff)
	}

	ps.Apply(Settings{MaxClientsPerRemote: 1})
	d.waitGone(t, 1)
	if n := ps.ClientCount(); n != 1 {
		t.Errorf("ClientCount after shrinking = %d, want 1", n)
	}
	ps.Apply(Settings{MaxClientsPerRemote: 3})
	for _, id := range []string{"F", "G"} {
		if got := push(t, ps, remote, id, ""); got.StatusCode != 200 {
			t.Fatalf("push %s: %d %q", id, got.StatusCode, got.Body)
		}
	}
	if n, a := ps.ClientCount(), d.accepts.Load(); n != 3 || a != 4 {
		t.Errorf("after growing: ClientCount = %d, accepts = %d; want 3, 4", n, a)
	}

	// Changing keepAlive closes every pool, stats included.
	ps.Apply(Settings{KeepAlive: true})
	d.waitGone(t, 3)
	if n, s := ps.ClientCount(), len(ps.Stats()); n != 0 || s != 0 {
		t.Errorf("after keepAlive change: ClientCount = %d, pools in Stats = %d; want 0, 0", n, s)
	}
}

func TestConcurrentPushesShareOneConnection(t *testing.T) {
	// The device answers only once both messages are in, in reverse order,
	// so both pushes must be in flight on the single connection at once.
	var mu sync.Mutex
	var held []*hl7.Message
	d := startDevice(t, func(c *mllp.Conn, m *hl7.Message) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, m)
		if len(held) == 2 {
			c.Send(ackFor(held[1], hl7.AA))
			c.Send(ackFor(held[0], hl7.AA))
		}
	})
	ps := newPools(t, Settings{KeepAlive: true})
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i, id := range []string{"P1", "P2"} {
		wg.Go(func() { codes[i] = push(t, ps, "mllp://"+d.addr, id, "").StatusCode })
	}
	wg.Wait()
	if diff := cmp.Diff([]int{200, 200}, codes); diff != "" {
		t.Errorf("status codes (-want +got):\n%s", diff)
	}
	if a := d.accepts.Load(); a != 1 {
		t.Errorf("connections accepted = %d, want 1", a)
	}
}

func TestKeepAliveReplacesClosedConnection(t *testing.T) {
	// The device hangs up after every ACK.
	d := startDevice(t, func(c *mllp.Conn, m *hl7.Message) {
		c.Send(ackFor(m, hl7.AA))
		c.Close()
	})
	ps := newPools(t, Settings{KeepAlive: true})
	for i, id := range []string{"K1", "K2", "K3"} {
		if got := push(t, ps, "mllp://"+d.addr, id, ""); got.StatusCode != 200 {
			t.Fatalf("push %s: %d %q", id, got.StatusCode, got.Body)
		}
		d.waitGone(t, 1)
		waitFor(t, func() bool { return ps.ClientCount() == 0 }) // the pool noticed the hang-up
		if a := d.accepts.Load(); a != int32(i+1) {
			t.Errorf("after %s: connections accepted = %d, want %d", id, a, i+1)
		}
	}
}

func TestStats(t *testing.T) {
	d := startDevice(t, replyAA)
	ps := newPools(t, Settings{KeepAlive: true})
	clock := &fakeClock{t: ackTime}
	ps.now = clock.now
	// Two remote strings with the same stats key share one entry.
	for _, r := range []string{"mllp://" + d.addr, "mllp://" + d.addr + "?defaultReturnAck=first"} {
		if got := push(t, ps, r, "S-"+r, ""); got.StatusCode != 200 {
			t.Fatalf("push: %d %q", got.StatusCode, got.Body)
		}
	}
	want := map[string]rtt.Stats{
		"mllp://" + d.addr + "?encoding=utf-8": {Count: 2},
	}
	if diff := cmp.Diff(want, ps.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if n := ps.ClientCount(); n != 2 {
		t.Errorf("ClientCount = %d, want 2 (one per remote string)", n)
	}
}

func TestClosedPools(t *testing.T) {
	d := startDevice(t, replyAA)
	ps := NewPools(Settings{}, nil)
	if got := push(t, ps, "mllp://"+d.addr, "1", ""); got.StatusCode != 200 {
		t.Fatalf("push: %d %q", got.StatusCode, got.Body)
	}
	ps.Close()
	d.waitGone(t, 1)
	got := push(t, ps, "mllp://"+d.addr, "2", "")
	want := &protocol.Message{Type: protocol.TypeTransmitResponse, Remote: "mllp://" + d.addr, Callback: "cb-2",
		ContentType: protocol.ContentTypeText, StatusCode: 400, Body: "Cannot get new client, pool is closed"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

func TestPoolLimit(t *testing.T) {
	d := startDevice(t, replyAA)
	refused := "mllp://" + refusedAddr(t)
	ps := newPools(t, Settings{KeepAlive: true})
	ps.maxPools = 2
	clock := &fakeClock{t: ackTime}
	ps.now = clock.now
	steps := []struct {
		remote     string
		wantStatus int
		wantPools  []string // Stats keys afterwards
	}{
		{refused + "?a", 400, []string{refused + "?encoding=utf-8"}},
		{"mllp://" + d.addr, 200, []string{refused + "?encoding=utf-8", "mllp://" + d.addr + "?encoding=utf-8"}},
		// The refused pool has no client, so it makes room; the live one stays.
		{refused + "?b", 400, []string{refused + "?encoding=utf-8", "mllp://" + d.addr + "?encoding=utf-8"}},
		{"mllp://" + d.addr + "?x", 200, []string{"mllp://" + d.addr + "?encoding=utf-8"}},
		// Both pools now hold a live client: nothing can be evicted.
		{refused + "?c", 400, []string{"mllp://" + d.addr + "?encoding=utf-8"}},
	}
	for i, st := range steps {
		clock.advance(time.Second)
		got := push(t, ps, st.remote, "L"+string(rune('0'+i)), "")
		if got.StatusCode != st.wantStatus {
			t.Errorf("step %d: status %d (%q), want %d", i, got.StatusCode, got.Body, st.wantStatus)
		}
		var keys []string
		for k := range ps.Stats() {
			keys = append(keys, k)
		}
		if diff := cmp.Diff(st.wantPools, keys, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
			t.Errorf("step %d: pools (-want +got):\n%s", i, diff)
		}
	}
	if got := push(t, ps, refused+"?d", "L9", ""); got.Body != "Too many remotes in use; at most 2 are kept at once" {
		t.Errorf("body %q", got.Body)
	}
}

func TestParseRemote(t *testing.T) {
	tests := []struct {
		remote string
		want   target
	}{
		{"mllp://10.0.0.5:2575", target{addr: "10.0.0.5:2575", key: "mllp://10.0.0.5:2575?encoding=utf-8"}},
		{"mllp://Device.Local:02575?encoding=latin1&defaultReturnAck=application",
			target{addr: "device.local:2575", key: "mllp://device.local:2575?encoding=latin1", encoding: "latin1", defaultAck: "application"}},
		{"mllp://[::1]:2575?encoding=", target{addr: "[::1]:2575", key: "mllp://[::1]:2575?encoding="}},
		{"tcp://h:1", target{addr: "h:1", key: "mllp://h:1?encoding=utf-8"}},
	}
	for _, tc := range tests {
		got, err := parseRemote(tc.remote)
		if err != nil {
			t.Errorf("parseRemote(%q): %v", tc.remote, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(target{})); diff != "" {
			t.Errorf("parseRemote(%q) (-want +got):\n%s", tc.remote, diff)
		}
	}
}

func TestSocketErrorText(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5},
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		err  error
		want string
	}{
		{refused, "connect ECONNREFUSED 10.0.0.1:5"},
		{&net.DNSError{Name: "nohost.invalid", Err: "no such host", IsNotFound: true}, "getaddrinfo ENOTFOUND nohost.invalid"},
		{context.Canceled, "context canceled"},
	}
	for _, tc := range tests {
		if got := socketErrorText(tc.err); got != tc.want {
			t.Errorf("socketErrorText(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
