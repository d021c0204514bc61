package mllp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// testDeadline bounds every blocking step so a broken test fails instead of
// hanging; it is never a performance assertion.
const testDeadline = 10 * time.Second

func msgText(id string) string {
	return "MSH|^~\\&|SEND|FAC|RECV|FAC|20240102030405||ADT^A01^ADT_A01|" + id + "|P|2.5.1\rPID|1||12345^^^MRN||DOE^JOHN"
}

func frame(s string) string { return "\x0b" + s + "\x1c\r" }

func mustParse(t testing.TB, s string) *hl7.Message {
	t.Helper()
	m, err := hl7.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return m
}

// ackAA answers every message with AA.
func ackAA(c *Conn, m *hl7.Message) {
	c.Send(hl7.BuildAck(m, hl7.AA, hl7.AckOptions{}))
}

// startServer listens on loopback, serves in the background and shuts the
// server down when the test ends.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.Addr().String()
}

// peer is the raw far end of a connection: it writes bytes and reads frames.
type peer struct {
	net.Conn
	r *Reader
}

func dialPeer(t testing.TB, addr string) *peer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, testDeadline)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(testDeadline))
	t.Cleanup(func() { nc.Close() })
	return &peer{Conn: nc, r: NewReader(nc, 0)}
}

func (p *peer) write(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(p.Conn, s); err != nil {
		t.Fatal(err)
	}
}

// readMSA reads one frame and returns its MSA-1 and MSA-2.
func (p *peer) readMSA(t testing.TB) string {
	t.Helper()
	b, err := p.r.ReadFrame()
	if err != nil {
		t.Fatalf("reading ACK: %v", err)
	}
	m := mustParse(t, string(b))
	return string(hl7.AckCodeOf(m)) + " " + m.Get("MSA-2")
}

// expectClosed reads until the server closes the connection.
func (p *peer) expectClosed(t testing.TB) {
	t.Helper()
	if _, err := io.Copy(io.Discard, p.Conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("waiting for the server to close: %v", err)
	}
}

type badFrame struct {
	Payload string
	Err     string
}

func TestServerFramesAreIndependent(t *testing.T) {
	tests := []struct {
		name     string
		encoding string
		input    string
		wantAcks []string
		wantBad  []string // payloads reported to OnBadFrame
	}{
		{
			// The reference drops C7 and C8 because of the frame between them.
			name:     "bad frame between valid ones in one write",
			input:    frame(msgText("C7")) + frame("PID|1") + frame(msgText("C8")),
			wantAcks: []string{"AA C7", "AA C8"},
			wantBad:  []string{"PID|1"},
		},
		{
			name:     "junk and CRLF between frames",
			input:    "garbage" + frame(msgText("1")) + "\r\n" + frame(msgText("2")) + "\r\n",
			wantAcks: []string{"AA 1", "AA 2"},
		},
		{
			name:     "empty frame",
			input:    frame("") + frame(msgText("3")),
			wantAcks: []string{"AA 3"},
			wantBad:  []string{""},
		},
		{
			name:     "invalid UTF-8 is reported, not replaced",
			input:    frame(msgText("4")+"\rNTE|1||M\xfcller") + frame(msgText("5")),
			wantAcks: []string{"AA 5"},
			wantBad:  []string{msgText("4") + "\rNTE|1||M\xfcller"},
		},
		{
			name:     "same bytes in windows-1252",
			encoding: "windows-1252",
			input:    frame(msgText("4")+"\rNTE|1||M\xfcller") + frame(msgText("5")),
			wantAcks: []string{"AA 4", "AA 5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var bad []string
			s := &Server{
				Handler:  ackAA,
				Encoding: tt.encoding,
				OnBadFrame: func(c *Conn, payload []byte, err error) {
					mu.Lock()
					bad = append(bad, string(payload))
					mu.Unlock()
				},
			}
			p := dialPeer(t, startServer(t, s))
			p.write(t, tt.input) // one write, as in the reference data-loss report
			var acks []string
			for range tt.wantAcks {
				acks = append(acks, p.readMSA(t))
			}
			if diff := cmp.Diff(tt.wantAcks, acks); diff != "" {
				t.Errorf("ACKs (-want +got):\n%s", diff)
			}
			// Bad frames sort before the last ACK on the same goroutine, so
			// they have all been reported by now.
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(tt.wantBad, bad); diff != "" {
				t.Errorf("bad frames (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServerEncodingRoundTrip(t *testing.T) {
	got := make(chan string, 1)
	s := &Server{
		Encoding: "latin1",
		Handler: func(c *Conn, m *hl7.Message) {
			got <- m.Get("NTE-3")
			c.Send(hl7.BuildAck(m, hl7.AA, hl7.AckOptions{Text: "Grüße"}))
		},
	}
	p := dialPeer(t, startServer(t, s))
	p.write(t, frame(msgText("1")+"\rNTE|1||M\xfcller"))
	b, err := p.r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "Müller" {
		t.Errorf("decoded NTE-3 = %q, want Müller", v)
	}
	if !strings.HasSuffix(string(b), "|Gr\xfc\xdfe") {
		t.Errorf("ACK not encoded in latin1: %q", b)
	}
	if err := s.SetEncoding("no-such-charset"); err == nil {
		t.Error("SetEncoding accepted an unknown charset")
	}
	if err := s.SetEncoding("utf-8"); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Conns() {
		if c.Encoding() != "utf-8" {
			t.Errorf("live conn encoding = %q after SetEncoding", c.Encoding())
		}
	}
}

func TestServerDisconnectCause(t *testing.T) {
	tests := []struct {
		name     string
		idle     time.Duration
		maxFrame int
		input    string
		close    bool // the peer closes after writing
		want     error
	}{
		{name: "peer closes cleanly", input: frame(msgText("1")), close: true, want: nil},
		{name: "peer closes mid-frame", input: "\x0bMSH|", close: true, want: io.ErrUnexpectedEOF},
		{name: "idle", idle: 50 * time.Millisecond, want: ErrIdleTimeout},
		{name: "idle with a partial frame", idle: 50 * time.Millisecond, input: "\x0bMSH|", want: ErrIdleTimeout},
		{name: "frame too large", maxFrame: 100, input: frame(strings.Repeat("x", 101)), want: ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			causes := make(chan error, 1)
			s := &Server{
				IdleTimeout:  tt.idle,
				MaxFrameSize: tt.maxFrame,
				OnDisconnect: func(c *Conn, err error) { causes <- err },
			}
			p := dialPeer(t, startServer(t, s))
			p.write(t, tt.input)
			if tt.close {
				p.Close()
			} else {
				p.expectClosed(t)
			}
			select {
			case err := <-causes:
				if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
					t.Errorf("OnDisconnect err = %v, want %v", err, tt.want)
				}
			case <-time.After(testDeadline):
				t.Fatal("OnDisconnect not called")
			}
			if n := len(s.Conns()); n != 0 {
				t.Errorf("%d connections still listed after disconnect", n)
			}
		})
	}
}

// An idle timeout set later also reaches a connection waiting for bytes.
func TestServerSetIdleTimeout(t *testing.T) {
	causes := make(chan error, 1)
	s := &Server{OnDisconnect: func(c *Conn, err error) { causes <- err }}
	p := dialPeer(t, startServer(t, s))
	s.SetIdleTimeout(50 * time.Millisecond)
	p.expectClosed(t)
	select {
	case err := <-causes:
		if !errors.Is(err, ErrIdleTimeout) {
			t.Errorf("OnDisconnect err = %v, want %v", err, ErrIdleTimeout)
		}
	case <-time.After(testDeadline):
		t.Fatal("OnDisconnect not called")
	}
}

func TestServerShutdownWaitsForHandler(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s := &Server{Handler: func(c *Conn, m *hl7.Message) {
		close(entered)
		<-release
		ackAA(c, m)
	}}
	addr := startServer(t, s)
	p := dialPeer(t, addr)
	idle := dialPeer(t, addr) // a connection with nothing in progress
	p.write(t, frame(msgText("S1"))+frame(msgText("S2")))
	<-entered

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(context.Background()) }()
	idle.expectClosed(t) // closed without waiting for the busy one
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a handler was running", err)
	default:
	}
	close(release)
	if got := p.readMSA(t); got != "AA S1" {
		t.Errorf("in-flight reply = %q, want AA S1", got)
	}
	p.expectClosed(t) // S2 was never handed to the handler
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("server still accepting after Shutdown")
	}
}

func TestServerShutdownContextExpires(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	s := &Server{Handler: func(c *Conn, m *hl7.Message) {
		close(entered)
		<-release
	}}
	p := dialPeer(t, startServer(t, s))
	p.write(t, frame(msgText("1")))
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	p.expectClosed(t)
}

func TestServerBusyPort(t *testing.T) {
	first := &Server{}
	addr := startServer(t, first)
	second := &Server{}
	err := second.Listen(addr)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a busy port = %v, want EADDRINUSE", err)
	}
	if err := second.Serve(); err == nil {
		t.Error("Serve without a listener returned nil")
	}
}

func TestServerListenValidatesEncoding(t *testing.T) {
	s := &Server{Encoding: "klingon"}
	if err := s.Listen("127.0.0.1:0"); err == nil {
		s.Close()
		t.Fatal("Listen accepted an unknown encoding")
	}
}

func TestServerManyConnections(t *testing.T) {
	const conns, perConn = 50, 20
	var mu sync.Mutex
	handled := 0
	s := &Server{Handler: func(c *Conn, m *hl7.Message) {
		mu.Lock()
		handled++
		mu.Unlock()
		ackAA(c, m)
	}}
	addr := startServer(t, s)
	peers := make([]*peer, conns)
	for i := range peers {
		peers[i] = dialPeer(t, addr)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var all strings.Builder
			for j := range perConn {
				all.WriteString(frame(msgText(fmt.Sprintf("%d-%d", i, j))))
			}
			if _, err := io.WriteString(p, all.String()); err != nil {
				errs <- err
				return
			}
			for j := range perConn {
				b, err := p.r.ReadFrame()
				if err != nil {
					errs <- err
					return
				}
				m, err := hl7.Parse(string(b))
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%d-%d", i, j); m.Get("MSA-2") != want {
					errs <- fmt.Errorf("conn %d: ACK %d answers %q, want %q", i, j, m.Get("MSA-2"), want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if handled != conns*perConn {
		t.Errorf("handled %d messages, want %d", handled, conns*perConn)
	}
	if n := len(s.Conns()); n != conns {
		t.Errorf("Conns() has %d entries, want %d", n, conns)
	}
	for _, p := range peers {
		remote := protocol.RemoteAddr(p.LocalAddr(), nil)
		if c := s.Conn(remote); c == nil || c.RemoteAddr() != remote {
			t.Errorf("Conn(%q) = %v", remote, c)
		}
	}
}
