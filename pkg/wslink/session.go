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
		// A frame may itself end the session (an "Invalid access token"
		// error forces a reconnect): hand it over first while there is
		// room, so the Handler still sees it.
		select {
		case l.inbound <- m:
			continue
		default:
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

// writeLoop is the socket's only writer. It takes what is ready as one
// batch, writes it with one system call, and only then removes the frames
// from their buffers, so a failure leaves them at the head for the next
// socket and OnSent means the bytes reached the socket.
func (l *Link) writeLoop(s *session) {
	defer s.wg.Done()
	if !l.sendConnect(s) {
		return
	}
	bc := batchConnOf(s.ws.NetConn())
	paused := false // queue drain stopped until the next wake-up
	for {
		batch := l.nextBatch(s, paused)
		if len(batch) == 0 {
			select {
			case <-s.kick:
				paused = false
			case <-s.ctx.Done():
				return
			}
			continue
		}
		held := bc != nil && len(batch) > 1
		if held {
			bc.hold()
		}
		done := 0 // frames written (or dropped as unencodable), in order
		for _, p := range batch {
			frame := p.m
			if p.src == fromQueue && p.m.Type == protocol.TypeTransmitRequest {
				tok, err := l.cfg.Token(s.ctx)
				if err != nil {
					l.log.Warn("Cannot send queued message: no access token", "err", err)
					paused = true
					break
				}
				stamped := *p.m
				stamped.AccessToken = tok
				frame = &stamped
			}
			data, err := protocol.Encode(frame)
			if err != nil {
				// Enqueue and Send validated it, so the caller changed it since.
				l.log.Error("Dropping outbound message that cannot be encoded", "type", p.m.Type, "callback", p.m.Callback, "err", err)
			} else if err := write(s, data); err != nil {
				l.log.Warn("Failed to send message to Medplum server", "type", p.m.Type, "err", err)
				s.abort()
				return
			}
			done++
		}
		if held {
			if err := bc.flush(); err != nil {
				l.log.Warn("Failed to send messages to Medplum server", "frames", done, "err", err)
				s.abort()
				return
			}
		}
		l.settleBatch(batch[:done])
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

// nextBatch picks what to write next, in priority order: heartbeats, then
// held control replies (only after the connect request), then queued data
// (only while live). Heartbeats leave their buffer at once (they die with
// the socket); control replies and data stay until settleBatch.
func (l *Link) nextBatch(s *session, paused bool) []pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	var batch []pending
	for _, m := range s.out {
		batch = append(batch, pending{m, fromSession})
	}
	clear(s.out)
	s.out = s.out[:0]
	room := func() bool { return len(batch) < maxBatchFrames }
	if s.connectSent {
		for i := 0; i < len(l.ctrl) && room(); i++ {
			batch = append(batch, pending{l.ctrl[i], fromControl})
		}
	}
	if l.live && !paused {
		size := 0
		for i := 0; i < len(l.queue) && room() && size < maxBatchBytes; i++ {
			batch = append(batch, pending{l.queue[i], fromQueue})
			size += len(l.queue[i].Body)
		}
	}
	return batch
}

// settleBatch removes written (or unsendable) frames from the heads of their
// buffers and reports data frames to OnSent. Only the single writer removes
// entries, so the heads are still those frames.
func (l *Link) settleBatch(batch []pending) {
	var ctrl, queue int
	for _, p := range batch {
		switch p.src {
		case fromControl:
			ctrl++
		case fromQueue:
			queue++
		}
	}
	if ctrl+queue > 0 {
		l.mu.Lock()
		clear(l.ctrl[:ctrl])
		l.ctrl = l.ctrl[ctrl:]
		clear(l.queue[:queue])
		l.queue = l.queue[queue:]
		l.notifyLocked()
		l.mu.Unlock()
	}
	if l.cfg.OnSent != nil {
		for _, p := range batch {
			if p.src == fromQueue {
				l.cfg.OnSent(p.m)
			}
		}
	}
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
