package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/listener"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// readChunk is how much one read from a device takes.
const readChunk = 4096

// streamConn is a device link: a TCP connection or a serial port.
type streamConn interface {
	astm.Conn
	io.Closer
}

// deviceConn is one live device link of a byte-stream channel. Replies of
// the read loop and server responses may be written concurrently; each
// write is whole and bounded.
type deviceConn struct {
	streamConn
	remote string
	// hangUp ends the link after a failed write; nil when the read loop
	// notices a failed device by itself (serial ports).
	hangUp func()

	wmu sync.Mutex
}

func (d *deviceConn) Write(b []byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if wd, ok := d.streamConn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		if err := wd.SetWriteDeadline(time.Now().Add(deviceWriteTimeout)); err != nil {
			return 0, err
		}
	}
	return d.streamConn.Write(b)
}

// send writes b to the device; after a failure the link is hung up, since
// the device may have seen part of b.
func (d *deviceConn) send(b []byte) error {
	_, err := d.Write(b)
	if err != nil && d.hangUp != nil {
		d.hangUp()
	}
	return err
}

// streamChannel is what tcp:// and serial:// channels share: parameters,
// the live device links by remote, serving one link in raw or ASTM mode,
// and writing server responses back.
type streamChannel struct {
	a      *Agent
	name   string // fixed: a renamed channel is a new channel
	log    *slog.Logger
	chLog  *slog.Logger
	params atomic.Pointer[byteStreamParams]

	mu    sync.Mutex
	conns map[string]*deviceConn
}

func newStreamChannel(a *Agent, name string, p *byteStreamParams) *streamChannel {
	c := &streamChannel{
		a:     a,
		name:  name,
		log:   a.log.With("channel", name),
		chLog: a.chLog.With("channel", name),
		conns: map[string]*deviceConn{},
	}
	c.params.Store(p)
	return c
}

// links counts the device links being served.
func (c *streamChannel) links() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// serve runs one device link until it ends or ctx is done. The mode is
// fixed for the life of the link.
func (c *streamChannel) serve(ctx context.Context, d *deviceConn) error {
	c.mu.Lock()
	c.conns[d.remote] = d
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.conns[d.remote] == d {
			delete(c.conns, d.remote)
		}
		c.mu.Unlock()
	}()
	if p := c.params.Load(); p.astm {
		return c.serveASTM(ctx, d, p)
	}
	return c.serveRaw(ctx, d)
}

// serveRaw frames a raw byte stream. autoRespond answers go out before the
// message they end is handed over, because they are wire-level echoes that
// promise nothing about storage. Parameters are read per chunk, so a
// reconfiguration applies to live links.
func (c *streamChannel) serveRaw(ctx context.Context, d *deviceConn) error {
	stop := context.AfterFunc(ctx, func() { _ = d.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var f rawFramer
	buf := make([]byte, readChunk)
	var out []byte
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		err := d.send(out)
		out = out[:0]
		return err
	}
	for {
		n, rerr := d.Read(buf)
		p := c.params.Load()
		if p.astm {
			return nil // switched mode: the link is being closed
		}
		for _, b := range buf[:n] {
			response, msg := f.step(p, b)
			out = append(out, response...)
			if msg != nil {
				if err := flush(); err != nil {
					return err
				}
				c.submitRaw(d, p, msg)
			}
		}
		if err := flush(); err != nil {
			return err
		}
		c.reportFraming(d, &f, p)
		switch {
		case rerr == nil:
		case ctx.Err() != nil, errors.Is(rerr, io.EOF):
			return nil
		default:
			return rerr
		}
	}
}

func (c *streamChannel) reportFraming(d *deviceConn, f *rawFramer, p *byteStreamParams) {
	if f.ignored > 0 {
		c.log.Debug("Bytes outside a message ignored", "remote", d.remote, "count", f.ignored)
		f.ignored = 0
	}
	if f.oversized > 0 {
		c.log.Warn("Message longer than maxMessageBytes discarded", "remote", d.remote, "count", f.oversized, "maxMessageBytes", p.maxMessage)
		f.oversized = 0
	}
}

// submitRaw hands a framed message over. Nothing was promised to the
// device, so a refusal can only be logged.
func (c *streamChannel) submitRaw(d *deviceConn, p *byteStreamParams, msg []byte) {
	msg = p.clean(msg)
	if len(msg) == 0 {
		// The reference sends these with an empty body; a Bot can do
		// nothing with them.
		c.log.Debug("Empty message ignored", "remote", d.remote)
		return
	}
	body := p.encodeBody(msg)
	c.chLog.LogAttrs(context.Background(), slog.LevelInfo, "Received",
		slog.String("remote", d.remote), slog.String("body", body))
	if err := c.a.intake(spool.KindBytes, c.name, d.remote, protocol.ContentTypeOctet, body); err != nil {
		c.log.Error("Message not accepted; it is lost", "remote", d.remote, "err", err)
	}
}

// sameLink reports whether links started under p can go on under q: the
// mode and the ASTM receiver options are fixed for the life of a link.
func (p *byteStreamParams) sameLink(q *byteStreamParams) bool {
	a, b := p.receiver, q.receiver
	return p.astm == q.astm && a.SilentEOT == b.SilentEOT && a.StrictFrameNumbers == b.StrictFrameNumbers &&
		a.IdleTimeout == b.IdleTimeout && a.MaxFrame == b.MaxFrame && a.MaxSession == b.MaxSession
}

// closeAll hangs up every live link that can be hung up.
func (c *streamChannel) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.conns {
		if d.hangUp != nil {
			d.hangUp()
		}
	}
}

func (c *streamChannel) conn(remote string) *deviceConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[remote]
}

// handleResponse writes a server response to the device it answers,
// decoded per bodyEncoding. Empty bodies (a Bot that returns nothing, the
// dev server's ack Bot for ASTM) are not written.
func (c *streamChannel) handleResponse(m *protocol.Message) error {
	_, err := c.relay(m)
	return err
}

// relay writes m as handleResponse does and reports whether it reached the
// device; a response the channel does not write counts as delivered.
func (c *streamChannel) relay(m *protocol.Message) (spool.AckOutcome, error) {
	p := c.params.Load()
	if m.Body == "" || p.ignoreResponse {
		return spool.AckDelivered, nil
	}
	data, err := p.decodeResponse(m.Body)
	if err != nil {
		return spool.AckUndelivered, err
	}
	d := c.conn(m.Remote)
	if d == nil {
		c.log.Warn("Attempted to send message to disconnected remote: " + m.Remote)
		return spool.AckUndelivered, nil
	}
	c.chLog.LogAttrs(context.Background(), slog.LevelInfo, "Sending response",
		slog.String("remote", m.Remote), slog.String("body", m.Body))
	if err := d.send(data); err != nil {
		c.log.Warn("Failed to send to device", "remote", m.Remote, "err", err)
		return spool.AckUndelivered, nil
	}
	return spool.AckDelivered, nil
}

// tcpStreamChannel is a tcp:// listener.
type tcpStreamChannel struct {
	*streamChannel
	cfg channelSpec // touched under the agent's apply lock only

	ln     net.Listener
	ctx    context.Context // cancelled by stop: ends every read loop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and one per connection
}

func openByteStream(a *Agent, s channelSpec) channel {
	ctx, cancel := context.WithCancel(context.Background())
	return &tcpStreamChannel{
		streamChannel: newStreamChannel(a, s.name, s.params.(*byteStreamParams)),
		cfg:           s,
		ctx:           ctx,
		cancel:        cancel,
	}
}

func (ch *tcpStreamChannel) spec() channelSpec { return ch.cfg }

func (ch *tcpStreamChannel) start() error {
	ln, err := net.Listen("tcp", listenAddr(ch.cfg.port))
	if err != nil {
		return bindError(ch.cfg.name, ch.cfg.port, err)
	}
	ch.ln = ln
	ch.wg.Add(1)
	go ch.accept()
	ch.log.Info("Channel started", "address", ch.cfg.address)
	return nil
}

func (ch *tcpStreamChannel) accept() {
	defer ch.wg.Done()
	err := listener.Serve(ch.ln, nil, func(nc net.Conn) {
		if ch.a.draining() {
			nc.Close()
			return
		}
		ch.wg.Add(1) // safe: this goroutine's own count keeps wg above zero
		go ch.serveConn(nc)
	}, func(err error, delay time.Duration) {
		ch.log.Warn("Cannot accept connections", "err", err, "retryIn", delay)
	})
	if err != nil {
		ch.log.Error("Channel stopped accepting connections", "err", err)
	}
}

func (ch *tcpStreamChannel) serveConn(nc net.Conn) {
	defer ch.wg.Done()
	defer nc.Close()
	d := &deviceConn{streamConn: nc, remote: protocol.RemoteAddr(nc.RemoteAddr(), ch.ln.Addr()), hangUp: func() { nc.Close() }}
	ch.log.Info("Byte stream connection established", "remote", d.remote)
	err := ch.serve(ch.ctx, d)
	if err != nil && ch.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		ch.log.Warn("Byte stream connection error", "remote", d.remote, "err", err)
	}
	ch.log.Info("Closing connection", "remote", d.remote)
}

// reconfigure applies new parameters to live connections. A new mode or
// new ASTM receiver options close them, since a connection takes those
// when it is accepted: devices reconnect under the new ones.
func (ch *tcpStreamChannel) reconfigure(s channelSpec) error {
	old, p := ch.params.Load(), s.params.(*byteStreamParams)
	ch.cfg = s
	ch.params.Store(p)
	ch.log.Info("Channel reconfigured", "address", s.address)
	if !old.sameLink(p) {
		ch.closeAll()
	}
	return nil
}

// stop stops accepting and ends every read loop; a loop finishes the chunk
// it read, including handing messages over. Links still busy when ctx ends
// are closed.
func (ch *tcpStreamChannel) stop(ctx context.Context) {
	ch.ln.Close()
	ch.cancel()
	done := make(chan struct{})
	go func() {
		ch.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		ch.log.Warn("Closing connections with exchanges still in progress")
		ch.closeAll()
	}
	ch.log.Info("Channel stopped")
}
