package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

// transport is what a TCP connection and a serial port have in common.
type transport interface {
	io.ReadWriteCloser
	SetReadDeadline(t time.Time) error
}

// link is the connection as the replay sees it: it counts bytes, splits
// writes for --chunk and remembers whether the last write was a lone EOT.
// It is an astm.Conn, used by one goroutine at a time.
type link struct {
	t          transport
	ctx        context.Context
	chunk      int
	chunkDelay time.Duration

	sent, received int64
	lastEOT        bool
}

func (l *link) Read(b []byte) (int, error) {
	n, err := l.t.Read(b)
	l.received += int64(n)
	return n, err
}

func (l *link) Write(b []byte) (int, error) {
	l.lastEOT = false
	eot := len(b) == 1 && b[0] == astm.EOT
	written := 0
	for len(b) > 0 {
		n := len(b)
		if l.chunk > 0 && n > l.chunk {
			n = l.chunk
		}
		if written > 0 && l.chunkDelay > 0 {
			if err := sleep(l.ctx, l.chunkDelay); err != nil {
				return written, err
			}
		}
		k, err := l.t.Write(b[:n])
		written += k
		l.sent += int64(k)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	l.lastEOT = eot
	return written, nil
}

func (l *link) SetReadDeadline(t time.Time) error { return l.t.SetReadDeadline(t) }

// SetWriteDeadline bounds writes where the transport can (TCP); a serial
// port drains at line speed anyway.
func (l *link) SetWriteDeadline(t time.Time) error {
	if wd, ok := l.t.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return wd.SetWriteDeadline(t)
	}
	return nil
}

func (l *link) Close() error { return l.t.Close() }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dial opens the TCP connection or the serial port.
func (o *Options) dial(ctx context.Context) (transport, error) {
	if o.Serial != nil {
		p, err := serialport.Open(*o.Serial)
		if err != nil {
			return nil, cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("could not open %s: %w", o.Serial.Device, err))
		}
		return p, nil
	}
	d := net.Dialer{Timeout: o.ConnectTimeout}
	c, err := d.DialContext(ctx, "tcp", o.target())
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil {
		return nil, cmdutil.ErrInterrupted
	}
	code := cmdutil.ExitConnect
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = cmdutil.ExitTimeout
	}
	return nil, cmdutil.WithCode(code, fmt.Errorf("could not connect to %s: %w", o.target(), err))
}

// classify gives a failed transmission or script its exit code: the peer
// said no (3), did not answer in time (124) or the connection failed (5).
func classify(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return cmdutil.ErrInterrupted
	}
	err = fmt.Errorf("%s: %w", what, err)
	var expect *astm.ExpectError
	switch {
	case errors.Is(err, astm.ErrTimeout):
		return cmdutil.WithCode(cmdutil.ExitTimeout, err)
	case errors.Is(err, astm.ErrNAKLimit), errors.Is(err, astm.ErrBusy), errors.Is(err, astm.ErrContention),
		errors.Is(err, astm.ErrInterrupted), errors.As(err, &expect):
		return cmdutil.WithCode(cmdutil.ExitRejected, err)
	}
	return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("%w (connection lost)", err))
}
