package serialport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
)

var _ astm.Conn = (*Conn)(nil) // the ASTM link layer runs over a port as is

// ptyPair is a virtual null-modem: socat links two pseudo-terminals, and
// the paths a and b name their ends.
type ptyPair struct {
	a, b string
	cmd  *exec.Cmd
	done chan struct{}
}

// socat finds socat, or skips (fails when E2E_REQUIRE_PEERS=1, like the
// end-to-end tests).
func socat(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("socat")
	if err == nil {
		return p
	}
	if os.Getenv("E2E_REQUIRE_PEERS") == "1" {
		t.Fatal("socat is not installed")
	}
	t.Skip("socat is not installed")
	return ""
}

// startPTYs starts socat with links in dir and waits until it relays.
func startPTYs(t *testing.T, dir string) *ptyPair {
	t.Helper()
	p := &ptyPair{a: filepath.Join(dir, "a"), b: filepath.Join(dir, "b"), done: make(chan struct{})}
	p.cmd = exec.Command(socat(t), "-d", "-d", "pty,raw,echo=0,link="+p.a, "pty,raw,echo=0,link="+p.b)
	var log lockedBuffer
	p.cmd.Stderr = &log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "starting data transfer loop") {
		if time.Now().After(deadline) {
			t.Fatalf("socat did not start:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// stop ends socat with SIGTERM, which also removes the links.
func (p *ptyPair) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Error("socat did not stop on SIGTERM")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openEnd(t *testing.T, dev string) *Conn {
	t.Helper()
	c, err := Open(NewConfig(dev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readN reads exactly n bytes within a generous bound.
func readN(t *testing.T, c *Conn, n int) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return buf
}

func TestConnOverPTYPair(t *testing.T) {
	p := startPTYs(t, t.TempDir())
	a, b := openEnd(t, p.a), openEnd(t, p.b)

	msg := []byte("\x05\x021H|\\^&\r\x03AB\r\n\x04")
	if _, err := a.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, b, len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("b read %q, want %q", got, msg)
	}

	// A deadline in the past fails the read at once.
	_ = b.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}

	// A read with no deadline returns once another goroutine sets one.
	_ = b.SetReadDeadline(time.Time{})
	go func() { time.Sleep(50 * time.Millisecond); _ = b.SetReadDeadline(time.Unix(1, 0)) }()
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read cancelled by a deadline: %v, want os.ErrDeadlineExceeded", err)
	}

	// Close interrupts a waiting read.
	_ = b.SetReadDeadline(time.Time{})
	go func() { time.Sleep(50 * time.Millisecond); _ = b.Close() }()
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}

func TestConnReportsUnplug(t *testing.T) {
	p := startPTYs(t, t.TempDir())
	a := openEnd(t, p.a)
	p.stop(t)
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("read after the other end went away: %v, want ErrDisconnected", err)
	}
}

// Keep picks the device up again after it disappears and comes back.
func TestKeepReopensAfterUnplug(t *testing.T) {
	dir := t.TempDir()
	var served lockedBuffer
	var retries atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kept := make(chan error, 1)
	go func() {
		kept <- Keep(ctx, NewConfig(filepath.Join(dir, "a")), KeepOptions{
			RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond,
			OnRetry: func(error, time.Duration) { retries.Add(1) },
		}, func(ctx context.Context, c *Conn) error {
			_, err := io.Copy(&served, c)
			return err
		})
	}()

	for _, word := range []string{"one", "two"} {
		p := startPTYs(t, dir)
		b := openEnd(t, p.b)
		// Keep may still be waiting to reopen: send until the word arrives.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(served.String(), word) {
			if time.Now().After(deadline) {
				t.Fatalf("%q never reached the kept port; got %q", word, served.String())
			}
			if _, err := b.Write([]byte(word)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		p.stop(t)
		b.Close()
	}
	if retries.Load() == 0 {
		t.Error("OnRetry was never called")
	}
	cancel()
	select {
	case err := <-kept:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Keep returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Keep did not return after cancel")
	}
}
