package assoc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// logBuffer collects a Server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls cond; the deadline only bounds a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// contains reports whether the log has a line with every one of parts.
func (l *logBuffer) contains(parts ...string) bool {
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// startServer listens on 127.0.0.1:0, serves, and shuts down at cleanup.
func startServer(t testing.TB, s *Server) (addr string, logs *logBuffer) {
	t.Helper()
	logs = &logBuffer{}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.Addr().String(), logs
}

// rawConn is a test peer speaking PDUs by hand.
type rawConn struct {
	t  testing.TB
	nc net.Conn
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second)) // bounds a broken test only
	return &rawConn{t: t, nc: nc}
}

func (r *rawConn) send(p pdu.PDU) {
	r.t.Helper()
	if err := pdu.Write(r.nc, p); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) read() pdu.PDU {
	r.t.Helper()
	p, err := pdu.Read(r.nc, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// rest returns everything the peer sends until it closes.
func (r *rawConn) rest() []byte {
	r.t.Helper()
	b, err := io.ReadAll(r.nc)
	if err != nil {
		r.t.Fatalf("reading until close: %v", err)
	}
	return b
}

func echoRQ(calling, called string, contexts ...pdu.PresentationContextRQ) *pdu.AssociateRQ {
	if len(contexts) == 0 {
		contexts = []pdu.PresentationContextRQ{{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}}}
	}
	return &pdu.AssociateRQ{
		ProtocolVersion: 1, CallingAE: calling, CalledAE: called, ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: contexts,
		UserInfo:             pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3"},
	}
}

// fakeAcceptor accepts one connection on 127.0.0.1:0 and runs fn on it.
func fakeAcceptor(t *testing.T, fn func(r *rawConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		fn(&rawConn{t: goroutineTB{t}, nc: nc})
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// goroutineTB makes Fatal usable off the test goroutine: it reports the
// error and ends only the calling goroutine.
type goroutineTB struct{ testing.TB }

func (g goroutineTB) Fatal(args ...any) {
	g.TB.Helper()
	g.TB.Error(args...)
	runtime.Goexit()
}

func (g goroutineTB) Fatalf(format string, args ...any) {
	g.TB.Helper()
	g.TB.Errorf(format, args...)
	runtime.Goexit()
}
