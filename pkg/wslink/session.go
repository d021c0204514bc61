package wslink

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// session is one open socket with its reader and writer goroutines.
type session struct {
	ws         *websocket.Conn
	ctx        context.Context // cancelled when the session is torn down
	cancel     context.CancelFunc
	kick       chan struct{}
	readerDone chan struct{}
	opened     time.Time
	wg         sync.WaitGroup

	// Guarded by Link.mu.
	out         []*protocol.Message // heartbeat frames: dropped with the socket
	connectSent bool
}

func newSession(ctx context.Context, ws *websocket.Conn) *session {
	sctx, cancel := context.WithCancel(ctx)
	return &session{
		ws:         ws,
		ctx:        sctx,
		cancel:     cancel,
		kick:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		opened:     time.Now(),
	}
}

func (s *session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// abort tears the socket down without a close handshake; the reader then
// fails and the supervisor notices.
func (s *session) abort() {
	s.cancel()
	_ = s.ws.Close()
}

// dial opens a socket and starts its goroutines; nil on failure.
func (l *Link) dial(ctx context.Context) *session {
	dctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := l.dialer.DialContext(dctx, l.url, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		args := []any{"url", l.url, "err", err}
		if resp != nil {
			args = append(args, "status", resp.StatusCode)
		}
		l.log.Warn("Failed to connect to Medplum server", args...)
		return nil
	}
	ws.SetReadLimit(l.cfg.ReadLimit)
	s := newSession(ctx, ws)
	l.mu.Lock()
	l.sess = s
	l.notifyLocked()
	l.mu.Unlock()
	l.log.Info("Connected to Medplum server WebSocket", "url", l.url)
	s.wg.Add(2)
	go l.readLoop(s)
	go l.writeLoop(s)
	return s
}

// closeSession ends s and waits for its goroutines. With graceful set it
// waits briefly for the server to answer the close frame, so the server sees
// a clean 1000 close rather than a reset.
func (l *Link) closeSession(s *session, graceful bool) {
	select {
	case <-s.readerDone:
	default:
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = s.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
		if graceful {
			t := time.NewTimer(closeGrace)
			select {
			case <-s.readerDone:
			case <-t.C:
			}
			t.Stop()
		}
	}
	s.abort()
	s.wg.Wait()
	l.mu.Lock()
	l.sess = nil
	l.notifyLocked()
	l.mu.Unlock()
}

func (l *Link) readLoop(s *session) {
	defer s.wg.Done()
	defer close(s.readerDone)
	defer l.setLive(false)
	for {
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			l.logReadError(s, err)
			return
		}
		m := l.handleFrame(s, data)
		if m == nil {
			continue
		}
		select {
		case l.inbound <- m:
		case <-s.ctx.Done():
			return
		}
	}
}

func (l *Link) logReadError(s *session, err error) {
	var ce *websocket.CloseError
	switch {
	case s.ctx.Err() != nil:
		l.log.Debug("WebSocket closed", "err", err)
	case errors.Is(err, websocket.ErrReadLimit):
		l.log.Warn("Inbound WebSocket frame exceeds the size limit; disconnecting", "limit", l.cfg.ReadLimit)
	case errors.As(err, &ce):
		l.log.Info("Medplum server closed the WebSocket", "code", ce.Code, "reason", ce.Text)
	default:
		l.log.Info("WebSocket connection lost", "err", err)
	}
}

// source says which buffer a frame came from, i.e. how to settle it.
type source int

const (
	fromSession source = iota + 1
	fromControl
	fromQueue
)

// writeLoop is the socket's only writer. Buffered frames are peeked and only
// removed after a successful write, so a failure leaves them at the head for
// the next socket.
func (l *Link) writeLoop(s *session) {
	defer s.wg.Done()
	if !l.sendConnect(s) {
		return
	}
	paused := false // queue drain stopped until the next wake-up
	for {
		m, src := l.nextFrame(s, paused)
		if m == nil {
			select {
			case <-s.kick:
				paused = false
			case <-s.ctx.Done():
				return
			}
			continue
		}
		frame := m
		if src == fromQueue && m.Type == protocol.TypeTransmitRequest {
			tok, err := l.cfg.Token(s.ctx)
			if err != nil {
				l.log.Warn("Cannot send queued message: no access token", "err", err)
				paused = true
				continue
			}
			stamped := *m
			stamped.AccessToken = tok
			frame = &stamped
		}
		data, err := protocol.Encode(frame)
		if err != nil {
			// Enqueue and Send validated m, so the caller changed it since.
			l.log.Error("Dropping outbound message that cannot be encoded", "type", m.Type, "callback", m.Callback, "err", err)
			l.settle(src)
			continue
		}
		if err := write(s, data); err != nil {
			l.log.Warn("Failed to send message to Medplum server", "type", m.Type, "err", err)
			s.abort()
			return
		}
		l.settle(src)
		if src == fromQueue && l.cfg.OnSent != nil {
			l.cfg.OnSent(m)
		}
	}
}

// sendConnect writes the connect request; a missing token leaves the socket
// open but not live, and the heartbeat tick replaces it. It returns false
// when the socket failed.
func (l *Link) sendConnect(s *session) bool {
	tok, err := l.cfg.Token(s.ctx)
	if err != nil {
		if s.ctx.Err() == nil {
			l.log.Error("Failed to login; connect request not sent", "err", err)
		}
		return true
	}
	data, err := protocol.Encode(&protocol.Message{Type: protocol.TypeConnectRequest, AccessToken: tok, AgentID: l.cfg.AgentID})
	if err == nil {
		err = write(s, data)
	}
	if err != nil {
		l.log.Warn("Failed to send connect request", "err", err)
		s.abort()
		return false
	}
	l.mu.Lock()
	s.connectSent = true
	l.mu.Unlock()
	return true
}

func write(s *session, data []byte) error {
	if err := s.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return s.ws.WriteMessage(websocket.TextMessage, data)
}

// nextFrame picks what to write next: heartbeats, then held control replies
// (only after the connect request), then queued data (only while live).
func (l *Link) nextFrame(s *session, paused bool) (*protocol.Message, source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case len(s.out) > 0:
		m := s.out[0]
		s.out[0] = nil
		s.out = s.out[1:]
		return m, fromSession
	case s.connectSent && len(l.ctrl) > 0:
		return l.ctrl[0], fromControl
	case l.live && !paused && len(l.queue) > 0:
		return l.queue[0], fromQueue
	}
	return nil, 0
}

// settle removes a written (or unsendable) frame from the head of its buffer.
// Only the single writer removes entries, so the head is still that frame.
func (l *Link) settle(src source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch src {
	case fromControl:
		l.ctrl[0] = nil
		l.ctrl = l.ctrl[1:]
	case fromQueue:
		l.queue[0] = nil
		l.queue = l.queue[1:]
	}
	l.notifyLocked()
}

// pushLocked queues a heartbeat frame on s. l.mu must be held.
func (l *Link) pushLocked(s *session, m *protocol.Message) {
	if s == nil {
		return
	}
	if len(s.out) >= maxSessionFrames {
		l.log.Debug("Dropping heartbeat frame: writer busy", "type", m.Type)
		return
	}
	s.out = append(s.out, m)
	s.wake()
}
