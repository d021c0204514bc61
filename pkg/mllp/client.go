package mllp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// ReturnAck selects which ACK resolves SendAndWait.
type ReturnAck int

const (
	// ReturnAckFirst resolves on the first ACK for the control id, whatever
	// its code (a commit-level CA counts).
	ReturnAckFirst ReturnAck = iota
	// ReturnAckApplication skips CA and resolves on any other code: AA, AE,
	// AR, and also CE and CR, after which no application ACK would follow.
	ReturnAckApplication
)

// ParseReturnAck parses "first" or "application", ignoring case. The error
// text is the one the reference agent returns to the server.
func ParseReturnAck(s string) (ReturnAck, error) {
	switch strings.ToLower(s) {
	case "first":
		return ReturnAckFirst, nil
	case "application":
		return ReturnAckApplication, nil
	}
	return 0, fmt.Errorf("Invalid value for returnAck; expected: 'first' or 'application', received: %s", s)
}

// String returns "first" or "application".
func (r ReturnAck) String() string {
	switch r {
	case ReturnAckFirst:
		return "first"
	case ReturnAckApplication:
		return "application"
	}
	return "ReturnAck(" + strconv.Itoa(int(r)) + ")"
}

// DefaultConnectTimeout bounds Dial when ClientOptions.ConnectTimeout is 0.
const DefaultConnectTimeout = 30 * time.Second

// ClientOptions configures Dial.
type ClientOptions struct {
	Encoding       string        // wire charset; empty means "utf-8"
	ConnectTimeout time.Duration // 0 means DefaultConnectTimeout; negative: only ctx bounds the dial
	MaxFrameSize   int           // <= 0 means DefaultMaxFrameSize
	KeepAlive      bool          // enable TCP keep-alive probes (off by default, as in the reference)
}

var (
	// ErrMissingControlID is returned by SendAndWait for a message without
	// MSH-10; the text is the one the reference agent reports.
	ErrMissingControlID = errors.New("MSH.10 is missing but required")
	// ErrClosed is wrapped, together with its cause (io.EOF, a reset,
	// net.ErrClosed after Close), by the error of every SendAndWait that was
	// pending or started after the connection went away.
	ErrClosed = errors.New("connection closed before an ACK arrived")
	// ErrDuplicateControlID is returned by SendAndWait when a message with
	// the same MSH-10 is still waiting for its ACK on this client.
	ErrDuplicateControlID = errors.New("mllp: a message with this control id is already waiting for an ACK")
)

// Client is one outbound MLLP connection. Any number of SendAndWait calls
// may be in flight at once; ACKs are matched to them by MSA-2 = MSH-10, in
// whatever order they arrive.
type Client struct {
	conn *Conn
	r    *Reader

	mu          sync.Mutex
	pending     map[string]*call
	err         error         // set once, when the connection is gone
	gone        chan struct{} // closed together with setting err
	onUnmatched func(*hl7.Message)
	onCommitAck func(*hl7.Message)
	onBadFrame  func([]byte, error)

	done chan struct{} // closed when the read goroutine has exited
}

type call struct {
	mode ReturnAck
	ack  chan *hl7.Message // buffered: the reader never blocks on a caller
}

// Dial connects to addr ("host:port"). Connection errors are returned as is,
// so a *net.OpError stays in the chain.
func Dial(ctx context.Context, addr string, opt ClientOptions) (*Client, error) {
	enc := opt.Encoding
	if enc == "" {
		enc = DefaultEncoding
	}
	if _, err := charset.Lookup(enc); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: opt.ConnectTimeout, KeepAlive: -1}
	switch {
	case opt.ConnectTimeout == 0:
		d.Timeout = DefaultConnectTimeout
	case opt.ConnectTimeout < 0:
		d.Timeout = 0
	}
	if opt.KeepAlive {
		d.KeepAlive = 0 // Go's default probe interval
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := newConn(nc, protocol.RemoteAddr(nc.RemoteAddr(), nil), enc, DefaultWriteTimeout)
	c := &Client{
		conn:    conn,
		r:       NewReader(nc, opt.MaxFrameSize),
		pending: make(map[string]*call),
		gone:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

// SendAndWait sends m and waits for its ACK, which it returns whatever its
// code: a negative ACK is not an error. It fails with ErrMissingControlID
// without MSH-10, with ErrDuplicateControlID when that id is already pending,
// with an error wrapping ctx.Err() when ctx ends first, and with an error
// wrapping ErrClosed when the connection goes away before the ACK arrives.
func (c *Client) SendAndWait(ctx context.Context, m *hl7.Message, mode ReturnAck) (*hl7.Message, error) {
	id := m.ControlID()
	if id == "" {
		return nil, ErrMissingControlID
	}
	payload, err := charset.Encode(c.conn.Encoding(), m.String())
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mllp: control id %s not sent: %w", id, err)
	}
	cl := &call{mode: mode, ack: make(chan *hl7.Message, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if _, dup := c.pending[id]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrDuplicateControlID, id)
	}
	c.pending[id] = cl
	c.mu.Unlock()

	deadline, _ := ctx.Deadline()
	if err := c.conn.writeFrame(payload, deadline); err != nil {
		// Part of the frame may be on the wire; the stream is unusable.
		c.fail(err)
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil, fmt.Errorf("mllp: sending control id %s: %w (%w)", id, context.DeadlineExceeded, c.closedErr())
		}
		return nil, c.closedErr()
	}
	select {
	case ack := <-cl.ack:
		return ack, nil
	case <-c.gone:
		select {
		case ack := <-cl.ack: // delivered just before the close
			return ack, nil
		default:
			return nil, c.closedErr()
		}
	case <-ctx.Done():
		c.mu.Lock()
		if c.pending[id] == cl {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		select {
		case ack := <-cl.ack:
			return ack, nil
		default:
			return nil, fmt.Errorf("mllp: no ACK for control id %s: %w", id, ctx.Err())
		}
	}
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		p, err := c.r.ReadFrame()
		if err != nil {
			c.fail(err)
			return
		}
		m, err := c.conn.decode(p)
		if err != nil {
			c.mu.Lock()
			hook := c.onBadFrame
			c.mu.Unlock()
			if hook != nil {
				hook(p, err)
			}
			continue
		}
		c.dispatch(m)
	}
}

// dispatch resolves the call an ACK answers, or hands it to a hook.
func (c *Client) dispatch(m *hl7.Message) {
	id := m.Get("MSA-2")
	code := hl7.AckCodeOf(m)
	c.mu.Lock()
	cl := c.pending[id]
	var hook func(*hl7.Message)
	switch {
	case cl == nil:
		hook = c.onUnmatched
	case cl.mode == ReturnAckApplication && code.Commit() && code.Positive():
		hook = c.onCommitAck
	default:
		delete(c.pending, id)
		cl.ack <- m
	}
	c.mu.Unlock()
	if hook != nil {
		hook(m)
	}
}

// fail records why the connection is gone, wakes every pending call and
// closes the socket. Only the first cause is kept.
func (c *Client) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	c.pending = nil
	close(c.gone)
	c.mu.Unlock()
	c.conn.Close()
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// OnUnmatched sets a hook for inbound messages that answer no pending call:
// an ACK whose MSA-2 matches nothing (e.g. it arrived after its caller gave
// up) or a message without MSA. It runs on the read goroutine and must not
// block.
func (c *Client) OnUnmatched(f func(m *hl7.Message)) {
	c.mu.Lock()
	c.onUnmatched = f
	c.mu.Unlock()
}

// OnCommitAck sets a hook for CA acknowledgements skipped by calls in
// ReturnAckApplication mode. It runs on the read goroutine and must not
// block.
func (c *Client) OnCommitAck(f func(m *hl7.Message)) {
	c.mu.Lock()
	c.onCommitAck = f
	c.mu.Unlock()
}

// OnBadFrame sets a hook for inbound frames that are not HL7 or not
// decodable in the client charset; they are otherwise ignored. payload is
// only valid during the call, which runs on the read goroutine.
func (c *Client) OnBadFrame(f func(payload []byte, err error)) {
	c.mu.Lock()
	c.onBadFrame = f
	c.mu.Unlock()
}

// RemoteAddr returns the peer as "ip:port" (no brackets for IPv6).
func (c *Client) RemoteAddr() string { return c.conn.remote }

// Done returns a channel closed once the connection is gone and its read
// goroutine has exited.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection; pending calls fail with an error wrapping
// ErrClosed and net.ErrClosed.
func (c *Client) Close() error {
	c.fail(net.ErrClosed)
	return nil
}
