package wslink

import (
	"context"
	"crypto/tls"
	"net"
	"sync"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Batch bounds: how many frames, and roughly how many bytes, one socket write
// may carry.
const (
	maxBatchFrames = 256
	maxBatchBytes  = 256 << 10
)

// batchConn lets the writer put several WebSocket frames on the wire with one
// system call: while held, writes collect in a buffer that flush sends at
// once. Under load this halves the agent's write calls; when idle a batch is
// a single frame and nothing is held.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// flush writes what was held and stops holding.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 4*maxBatchBytes {
		c.buf = nil // do not keep a buffer grown by one huge frame
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// dialBatch is the dialer's TCP dial, wrapping every connection (under TLS
// too) in a batchConn.
func dialBatch(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

// batchConnOf finds the batchConn under a WebSocket's connection, nil if the
// socket was not dialled through dialBatch.
func batchConnOf(c net.Conn) *batchConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	bc, _ := c.(*batchConn)
	return bc
}

// pending is one frame of a batch and the buffer it came from.
type pending struct {
	m   *protocol.Message
	src source
}
