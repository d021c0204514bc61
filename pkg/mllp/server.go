package mllp

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/listener"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// ErrIdleTimeout is reported to Server.OnDisconnect when a connection was
// closed because no bytes arrived for Server.IdleTimeout.
var ErrIdleTimeout = errors.New("mllp: connection idle timeout")

// errServerClosed is returned by Listen after Shutdown or Close.
var errServerClosed = errors.New("mllp: server closed")

// errStopping ends a connection's read loop during Shutdown.
var errStopping = errors.New("mllp: server shutting down")

// Server accepts MLLP connections and runs one goroutine per connection. The
// messages of one connection are handed to Handler sequentially, in arrival
// order, on that goroutine; a slow handler therefore throttles its sender,
// which is intended. Configure the exported fields before Listen.
type Server struct {
	// Handler receives every decoded message.
	Handler func(c *Conn, m *hl7.Message)
	// OnBadFrame, if set, receives frames that are not HL7 or not decodable
	// in the connection charset; payload is only valid during the call. The
	// frames around it are processed normally.
	OnBadFrame func(c *Conn, payload []byte, err error)
	// OnConnect, if set, is called on the connection goroutine before reading.
	OnConnect func(c *Conn)
	// OnDisconnect, if set, is called after the connection is closed. err is
	// nil for a clean close (peer EOF, Close, Shutdown); otherwise it is
	// ErrFrameTooLarge, ErrIdleTimeout, io.ErrUnexpectedEOF (the stream ended
	// inside a frame) or the network error.
	OnDisconnect func(c *Conn, err error)
	// Encoding is the default wire charset; empty means "utf-8".
	Encoding string
	// MaxFrameSize caps a payload; <= 0 means DefaultMaxFrameSize.
	MaxFrameSize int
	// IdleTimeout closes a connection that receives no bytes for this long;
	// 0 disables it. Time spent in Handler does not count. SetIdleTimeout
	// changes it later.
	IdleTimeout time.Duration
	// WriteTimeout bounds each frame write; 0 means DefaultWriteTimeout,
	// negative disables it.
	WriteTimeout time.Duration

	mu       sync.Mutex
	ln       net.Listener
	laddr    net.Addr     // the bound address: decides how peers are rendered
	encoding string       // set by SetEncoding, overrides Encoding
	idle     atomic.Int64 // IdleTimeout from Listen on, then SetIdleTimeout
	conns    map[string]*Conn
	closing  bool
	serving  bool
	wg       sync.WaitGroup // connection goroutines
}

// Listen binds addr ("host:port", or ":port" for all interfaces). It fails at
// once if the port is taken; the error satisfies
// errors.Is(err, syscall.EADDRINUSE).
func (s *Server) Listen(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errServerClosed
	case s.ln != nil:
		return errors.New("mllp: server already listening")
	}
	if _, err := charset.Lookup(s.defaultEncoding()); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.laddr = ln.Addr()
	s.conns = make(map[string]*Conn)
	s.idle.Store(int64(s.IdleTimeout))
	return nil
}

// Serve accepts connections until Shutdown or Close, then returns nil. It
// must be called once, after Listen.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	switch {
	case ln == nil:
		s.mu.Unlock()
		return errors.New("mllp: Serve called before Listen")
	case s.serving:
		s.mu.Unlock()
		return errors.New("mllp: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	return listener.Serve(ln, s.isClosing, s.start, nil)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// defaultEncoding is the charset for new connections; s.mu must be held.
func (s *Server) defaultEncoding() string {
	switch {
	case s.encoding != "":
		return s.encoding
	case s.Encoding != "":
		return s.Encoding
	}
	return DefaultEncoding
}

func (s *Server) start(nc net.Conn) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	wt := s.WriteTimeout
	if wt == 0 {
		wt = DefaultWriteTimeout
	}
	c := newConn(nc, protocol.RemoteAddr(nc.RemoteAddr(), s.laddr), s.defaultEncoding(), wt)
	s.conns[c.remote] = c
	// Added under mu with closing false, so never after Shutdown's Wait began.
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c)
}

func (s *Server) serveConn(c *Conn) {
	defer s.wg.Done()
	if s.OnConnect != nil {
		s.OnConnect(c)
	}
	r := NewReader(idleReader{c: c, idle: &s.idle}, s.MaxFrameSize)
	var err error
	for !c.stopping.Load() {
		var p []byte
		if p, err = r.ReadFrame(); err != nil {
			break
		}
		m, derr := c.decode(p)
		if derr != nil {
			if s.OnBadFrame != nil {
				s.OnBadFrame(c, p, derr)
			}
			continue
		}
		if s.Handler != nil {
			s.Handler(c, m)
		}
	}
	err = s.disconnectCause(c, err)
	c.closeAfterWrite()
	s.mu.Lock()
	if s.conns[c.remote] == c {
		delete(s.conns, c.remote)
	}
	s.mu.Unlock()
	if s.OnDisconnect != nil {
		s.OnDisconnect(c, err)
	}
}

// disconnectCause maps the error that ended a read loop to what
// OnDisconnect reports.
func (s *Server) disconnectCause(c *Conn, err error) error {
	switch {
	case err == nil, err == io.EOF, c.stopping.Load(), c.closed.Load():
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded): // only idle reads have one
		return ErrIdleTimeout
	}
	return err
}

// idleReader arms the idle deadline before every read, so the timeout
// measures silence on the wire rather than the age of a frame, and refuses to
// read once the server is stopping.
type idleReader struct {
	c    *Conn
	idle *atomic.Int64
}

func (r idleReader) Read(p []byte) (int, error) {
	if idle := time.Duration(r.idle.Load()); idle > 0 {
		if err := r.c.nc.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return 0, err
		}
	}
	// Checked after arming the deadline: Shutdown sets stopping before it
	// moves the deadline to the past, so one of the two always ends the read.
	if r.c.stopping.Load() {
		return 0, errStopping
	}
	return r.c.nc.Read(p)
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Conn returns the live connection whose RemoteAddr is remote, or nil.
func (s *Server) Conn(remote string) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[remote]
}

// Conns returns the live connections, ordered by remote address.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	cs := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	slices.SortFunc(cs, func(a, b *Conn) int { return strings.Compare(a.remote, b.remote) })
	return cs
}

// SetEncoding sets the charset for new connections and switches every live
// connection to it.
func (s *Server) SetEncoding(name string) error {
	if _, err := charset.Lookup(name); err != nil {
		return err
	}
	s.mu.Lock()
	s.encoding = name
	for _, c := range s.conns {
		c.encoding.Store(&name)
	}
	s.mu.Unlock()
	return nil
}

// SetIdleTimeout changes the idle timeout of every connection, counted
// from now for the ones waiting for bytes; 0 disables it.
func (s *Server) SetIdleTimeout(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle.Store(int64(d))
	if s.closing {
		return // Shutdown owns the deadlines now
	}
	var deadline time.Time
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	for _, c := range s.conns {
		_ = c.nc.SetReadDeadline(deadline)
	}
}

// beginClose stops accepting and returns the live connections.
func (s *Server) beginClose() ([]*Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	var err error
	if s.ln != nil {
		if err = s.ln.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	cs := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		c.stopping.Store(true)
		cs = append(cs, c)
	}
	return cs, err
}

// Shutdown stops accepting, lets handlers in progress and writes in flight
// finish, and closes every connection once its handler has returned; frames
// not yet handed to Handler are dropped unacknowledged. If ctx ends first the
// remaining connections are closed at once and ctx.Err() is returned;
// goroutines whose handler is still running exit when it returns.
func (s *Server) Shutdown(ctx context.Context) error {
	cs, err := s.beginClose()
	for _, c := range cs {
		// Wake a goroutine blocked in Read; one inside Handler sees stopping
		// when it returns.
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		for _, c := range cs {
			c.Close()
		}
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	cs, err := s.beginClose()
	for _, c := range cs {
		c.Close()
	}
	return err
}
