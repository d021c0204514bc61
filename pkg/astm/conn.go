package astm

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Conn is the byte stream the link layer runs over. Every wait for the peer
// is bounded through SetReadDeadline, which net.Conn provides; wrap anything
// else (a serial port, a pipe) with WithReadDeadline. If the Conn also has
// SetWriteDeadline, writes are bounded too.
type Conn interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// writeWithin writes b to w, bounded by d when w supports write deadlines.
func writeWithin(w io.Writer, b []byte, d time.Duration) error {
	if wd, ok := w.(writeDeadliner); ok && d > 0 {
		if err := wd.SetWriteDeadline(time.Now().Add(d)); err != nil {
			return err
		}
	}
	_, err := w.Write(b)
	return err
}

// isTimeout reports whether err is an expired deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// WithReadDeadline returns rw itself if it is already a Conn. Otherwise it
// returns a Conn that reads rw on a helper goroutine so that reads can honour
// deadlines. Close the returned Conn when done with it: that closes rw (if rw
// is an io.Closer) and releases the goroutine, which holds at most one
// unread chunk.
func WithReadDeadline(rw io.ReadWriter) Conn {
	if c, ok := rw.(Conn); ok {
		return c
	}
	return &pumpConn{
		rw:      rw,
		results: make(chan pumpResult),
		wake:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

type pumpResult struct {
	b   []byte
	err error
}

type pumpConn struct {
	rw      io.ReadWriter
	start   sync.Once
	results chan pumpResult
	done    chan struct{}
	closed  sync.Once

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed and replaced when the deadline changes

	// Owned by the reading goroutine.
	pending []byte
	err     error // sticky once the underlying reader failed
}

func (c *pumpConn) pump() {
	for {
		buf := make([]byte, 4096)
		n, err := c.rw.Read(buf)
		select {
		case c.results <- pumpResult{buf[:n], err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *pumpConn) Read(b []byte) (int, error) {
	c.start.Do(func() { go c.pump() })
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.err != nil {
		return 0, c.err
	}
	for {
		if n, err, woken := c.await(b); !woken {
			return n, err
		}
	}
}

// await waits for one chunk, the deadline or a deadline change (woken).
func (c *pumpConn) await(b []byte) (n int, err error, woken bool) {
	c.mu.Lock()
	deadline, wake := c.deadline, c.wake
	c.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return 0, os.ErrDeadlineExceeded, false
		}
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	select {
	case r := <-c.results:
		c.err = r.err
		n = copy(b, r.b)
		c.pending = r.b[n:]
		if n == 0 {
			return 0, r.err, false
		}
		return n, nil, false
	case <-expired:
		return 0, os.ErrDeadlineExceeded, false
	case <-wake:
		return 0, nil, true
	case <-c.done:
		return 0, net.ErrClosed, false
	}
}

func (c *pumpConn) Write(b []byte) (int, error) { return c.rw.Write(b) }

func (c *pumpConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

// SetWriteDeadline forwards to the wrapped stream when it supports write
// deadlines; otherwise writes are unbounded.
func (c *pumpConn) SetWriteDeadline(t time.Time) error {
	if wd, ok := c.rw.(writeDeadliner); ok {
		return wd.SetWriteDeadline(t)
	}
	return nil
}

// Close closes the wrapped stream if it is an io.Closer and stops the
// helper goroutine once its pending read returns.
func (c *pumpConn) Close() error {
	c.release()
	if cl, ok := c.rw.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// release stops the helper goroutine once its pending read returns,
// leaving the wrapped stream open.
func (c *pumpConn) release() {
	c.closed.Do(func() { close(c.done) })
}
