package mllp

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
)

// DefaultEncoding is the wire charset used when none is configured.
const DefaultEncoding = "utf-8"

// DefaultWriteTimeout bounds each frame write when no timeout is configured.
const DefaultWriteTimeout = 30 * time.Second

// Conn is one MLLP connection, accepted by a Server or dialled by a Client.
// Send and WriteFrame are safe for concurrent use: each frame goes out in one
// write under a mutex, bounded by a write deadline.
type Conn struct {
	nc           net.Conn
	remote       string
	writeTimeout time.Duration // <= 0: none
	encoding     atomic.Pointer[string]

	wmu  sync.Mutex
	wbuf []byte // reused frame buffer, guarded by wmu

	closed   atomic.Bool // Close was called: a read error is not a failure
	stopping atomic.Bool // server shutdown: read no further frames
}

func newConn(nc net.Conn, remote, encoding string, writeTimeout time.Duration) *Conn {
	c := &Conn{nc: nc, remote: remote, writeTimeout: writeTimeout}
	c.encoding.Store(&encoding)
	return c
}

// RemoteAddr returns the peer as "ip:port", the form the reference agent uses
// as the routing key ("remote") on the wire: the host and port joined by a
// colon with no brackets, even for IPv6 ("fe80::1:51234"). On a server
// listening on an IPv6 wildcard (dual-stack, e.g. ":2575"), IPv4 peers are
// shown IPv4-mapped ("::ffff:10.0.0.5:51234") exactly as Node reports them;
// on an IPv4 listener they are plain ("10.0.0.5:51234").
func (c *Conn) RemoteAddr() string { return c.remote }

// Encoding returns the charset used to encode and decode frames.
func (c *Conn) Encoding() string { return *c.encoding.Load() }

// SetEncoding changes the charset for frames sent and received from now on.
func (c *Conn) SetEncoding(name string) error {
	if _, err := charset.Lookup(name); err != nil {
		return err
	}
	c.encoding.Store(&name)
	return nil
}

// Send encodes m in the connection's charset and writes it as one frame.
func (c *Conn) Send(m *hl7.Message) error {
	b, err := charset.Encode(c.Encoding(), m.String())
	if err != nil {
		return err
	}
	return c.WriteFrame(b)
}

// WriteFrame writes payload as one frame.
func (c *Conn) WriteFrame(payload []byte) error {
	return c.writeFrame(payload, time.Time{})
}

// writeFrame writes one frame, giving up at the write timeout or at
// deadline (if set), whichever comes first.
func (c *Conn) writeFrame(payload []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	if c.writeTimeout > 0 {
		if d := time.Now().Add(c.writeTimeout); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	if !deadline.IsZero() {
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return err
		}
	}
	c.wbuf = AppendFrame(c.wbuf[:0], payload)
	_, err := c.nc.Write(c.wbuf)
	if cap(c.wbuf) > readBufSize {
		c.wbuf = nil // do not pin the buffer of one large message
	}
	return err
}

// Close closes the connection at once; a write in progress fails. Closing
// an already closed connection returns nil.
func (c *Conn) Close() error {
	first := !c.closed.Swap(true)
	if err := c.nc.Close(); first {
		return err
	}
	return nil
}

// closeAfterWrite closes the connection once a write in progress (if any)
// has finished, so a reply being sent during shutdown is not cut short.
func (c *Conn) closeAfterWrite() {
	c.closed.Store(true)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.Close()
}

// decode turns a frame payload into a message using the connection charset.
func (c *Conn) decode(payload []byte) (*hl7.Message, error) {
	text, err := charset.Decode(c.Encoding(), payload)
	if err != nil {
		return nil, err
	}
	return hl7.Parse(text)
}
