package serialport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"
)

// ErrDisconnected reports that the device went away (unplugged, or the
// other end of a pseudo-terminal closed) or failed in a way that only
// reopening can cure.
var ErrDisconnected = errors.New("serialport: device disconnected")

// pollInterval bounds each blocking read of the driver, so that a deadline
// moved by another goroutine (to cancel a wait) is noticed this soon.
const pollInterval = 100 * time.Millisecond

// Conn is an open serial port. It satisfies astm.Conn: reads honour
// SetReadDeadline and fail with os.ErrDeadlineExceeded when it passes.
// Writes have no deadline: with flow control off, a UART drains at line
// speed, so a write always ends. Use one reader at a time.
type Conn struct {
	port   serial.Port
	cfg    Config
	closed atomic.Bool

	mu       sync.Mutex
	deadline time.Time

	readMu sync.Mutex // the driver's timeout is per port, not per call
}

var parities = map[string]serial.Parity{
	"none": serial.NoParity, "odd": serial.OddParity, "even": serial.EvenParity,
	"mark": serial.MarkParity, "space": serial.SpaceParity,
}

var stopBits = map[string]serial.StopBits{
	"1": serial.OneStopBit, "1.5": serial.OnePointFiveStopBits, "2": serial.TwoStopBits,
}

// Open opens the port with cfg's line settings, raw, without flow control.
func Open(cfg Config) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p, err := serial.Open(cfg.Device, &serial.Mode{
		BaudRate: cfg.Baud,
		DataBits: cfg.DataBits,
		Parity:   parities[cfg.Parity],
		StopBits: stopBits[cfg.StopBits],
	})
	if err != nil {
		return nil, fmt.Errorf("serialport: open %s: %w", cfg.Device, err)
	}
	return &Conn{port: p, cfg: cfg}, nil
}

// Read reads what has arrived, waiting until the read deadline at most.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil // the driver reads an empty buffer as a hang-up
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		c.mu.Lock()
		deadline := c.deadline
		c.mu.Unlock()
		wait := pollInterval
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			wait = min(wait, left)
		}
		if err := c.port.SetReadTimeout(wait); err != nil {
			return 0, c.fail("read", err)
		}
		n, err := c.port.Read(b)
		if n > 0 || err != nil {
			return n, c.fail("read", err)
		}
	}
}

// Write writes all of b to the port.
func (c *Conn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n, err := c.port.Write(b[written:])
		written += n
		if err == nil && n == 0 {
			err = io.ErrShortWrite // a blocking write that wrote nothing would spin
		}
		if err != nil {
			return written, c.fail("write", err)
		}
	}
	return written, nil
}

// SetReadDeadline bounds current and later reads; the zero time removes
// the bound. A read already waiting sees the change within pollInterval.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// Close closes the port; a read in progress returns net.ErrClosed.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.port.Close()
}

// fail classifies a driver error: after Close it is net.ErrClosed,
// otherwise the device is taken to be gone.
func (c *Conn) fail(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case c.closed.Load():
		return net.ErrClosed
	}
	return fmt.Errorf("%w: %s %s: %w", ErrDisconnected, op, c.cfg.Device, err)
}
