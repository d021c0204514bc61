package devserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// WebSocket limits.
const (
	maxFrameSize = 16 << 20
	sendQueueLen = 256
	writeTimeout = 10 * time.Second
)

// Server-side error texts, as the Medplum server sends them (no callback).
const (
	errMissingToken   = "Missing access token"
	errMissingAgentID = "Missing agent ID"
	errInvalidToken   = "Invalid access token"
	errNotConnected   = "Not connected"
	errMissingChannel = "Missing channel"
	errMissingBody    = "Missing body"
	errNoChannel      = "Channel not found"
	errUnknownMsgType = "Unknown message type: "
)

// ErrAgentNotConnected is returned when no socket of the agent is open.
var ErrAgentNotConnected = errors.New("Agent not connected")

// ErrClosed is returned by Request once the server is closing.
var ErrClosed = errors.New("devserver: closed")

var upgrader = websocket.Upgrader{
	ReadBufferSize:  16 << 10,
	WriteBufferSize: 16 << 10,
	// Agents are not browsers; Medplum accepts any origin here too.
	CheckOrigin: func(*http.Request) bool { return true },
}

// agentConn is one agent socket. The reader runs in the HTTP handler
// goroutine. Frames queued on out are written by the writer goroutine;
// answers of the built-in bots are written at once by the reader (no
// goroutine hand-off on the hot path). wmu serialises the two writers.
type agentConn struct {
	s       *Server
	ws      *websocket.Conn
	fc      *flushConn
	out     chan []byte
	wmu     sync.Mutex
	done    chan struct{}
	once    sync.Once
	agentID string // guarded by s.mu; "" until a successful connect
}

// agentStatus is what $status reports for an agent.
type agentStatus struct {
	status      string
	version     string
	lastUpdated time.Time
}

// track runs f in a goroutine Close waits for, unless the server is closing.
func (s *Server) track(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Server) handleWebSocket(w http.ResponseWriter, r *http.Request) {
	hw := &hijackFlush{ResponseWriter: w}
	ws, err := upgrader.Upgrade(hw, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	ws.SetReadLimit(maxFrameSize)
	c := &agentConn{s: s, ws: ws, fc: hw.conn, out: make(chan []byte, sendQueueLen), done: make(chan struct{})}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if !s.track(c.writer) || !s.track(c.reader) {
		c.close()
		s.forget(c)
	}
}

func (c *agentConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}

func (c *agentConn) writer() {
	for {
		select {
		case b := <-c.out:
			if !c.write(b, true) {
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *agentConn) reader() {
	defer func() {
		c.close()
		c.s.forget(c)
	}()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		c.handle(data)
	}
}

// write sends one frame; a failure closes the socket. Without flush the
// frame waits in the connection until the reader next blocks (answers to
// frames that arrived together then leave in one write).
func (c *agentConn) write(b []byte, flush bool) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := c.ws.WriteMessage(websocket.TextMessage, b)
	if err == nil && flush {
		err = c.fc.Flush()
	}
	if err != nil {
		c.s.log.Debug("agent socket write failed", "err", err)
		c.close()
		return false
	}
	return true
}

// send queues a frame; it blocks while the queue is full and reports false
// once the socket is closed.
func (c *agentConn) send(m *protocol.Message) bool {
	b, err := protocol.Encode(m)
	if err != nil {
		c.s.log.Error("cannot encode message", "type", m.Type, "err", err)
		return false
	}
	return c.sendRaw(b)
}

func (c *agentConn) sendRaw(b []byte) bool {
	select {
	case c.out <- b:
		return true
	case <-c.done:
		return false
	}
}

func (c *agentConn) sendError(text string) {
	c.send(&protocol.Message{Type: protocol.TypeError, Body: text})
}

// serverType maps the legacy names an old agent may send to current ones.
func serverType(t string) string {
	switch t {
	case "connect":
		return protocol.TypeConnectRequest
	case "transmit":
		return protocol.TypeTransmitRequest
	}
	return t
}

func (c *agentConn) handle(data []byte) {
	var m protocol.Message
	if err := json.Unmarshal(data, &m); err != nil {
		c.sendError(err.Error())
		return
	}
	s := c.s
	switch m.Type = serverType(m.Type); m.Type {
	case protocol.TypeConnectRequest:
		c.connect(&m)
	case protocol.TypeHeartbeatRequest:
		c.send(&protocol.Message{Type: protocol.TypeHeartbeatResponse, Version: s.opt.Version, Callback: m.Callback})
	case protocol.TypeHeartbeatResponse:
		if id := s.agentOf(c); id != "" {
			s.setStatus(id, "connected", m.Version)
		}
	case protocol.TypeTransmitRequest:
		c.transmit(&m)
	case protocol.TypeTransmitResponse, protocol.TypeReloadConfigResp, protocol.TypeUpgradeResponse,
		protocol.TypeLogsResponse, protocol.TypeStatsResponse, protocol.TypeError:
		s.deliver(&m)
	default:
		c.sendError(errUnknownMsgType + m.Type)
	}
}

func (c *agentConn) connect(m *protocol.Message) {
	s := c.s
	switch {
	case m.AccessToken == "":
		c.sendError(errMissingToken)
	case m.AgentID == "":
		c.sendError(errMissingAgentID)
	case !s.tokens.valid(m.AccessToken):
		c.sendError(errInvalidToken)
	default:
		if _, err := s.store.get("Agent", m.AgentID); err != nil {
			c.sendError(err.Error())
			return
		}
		s.bind(c, m.AgentID)
		s.log.Info("agent connected", "agentId", m.AgentID)
		c.send(&protocol.Message{Type: protocol.TypeConnectResponse, Callback: m.Callback})
	}
}

// transmit validates an inbound message as the Medplum server does, then
// runs the channel's Bot in its own goroutine.
func (c *agentConn) transmit(m *protocol.Message) {
	s := c.s
	agentID := s.agentOf(c)
	switch {
	case agentID == "":
		c.sendError(errNotConnected)
		return
	case m.AccessToken == "":
		c.sendError(errMissingToken)
		return
	case m.Channel == "":
		c.sendError(errMissingChannel)
		return
	case m.Body == "":
		c.sendError(errMissingBody)
		return
	case !s.tokens.valid(m.AccessToken):
		c.sendError(errInvalidToken)
		return
	}
	agent, err := s.agents.get(s.store, "Agent", agentID)
	if err != nil {
		c.sendError(err.Error())
		return
	}
	i := slices.IndexFunc(agent.Channel, func(ch fhir.AgentChannel) bool { return ch.Name == m.Channel })
	if i < 0 {
		c.sendError(errNoChannel)
		return
	}
	s.record(agentID, m)
	s.mu.Lock()
	observe, override := s.onTransmit, s.botOverride
	s.mu.Unlock()
	if observe != nil {
		observe(agentID, m)
	}
	bot := agent.Channel[i].TargetReference.Reference
	if override == nil {
		if _, kind, err := s.botKind(bot); err != nil || kind.name != "exec" {
			// Built-in bots answer in microseconds: run them here, in order.
			if b, err := protocol.Encode(s.runBot(agentID, bot, m)); err == nil {
				c.write(b, false)
			}
			return
		}
	}
	select {
	case s.bots <- struct{}{}:
	case <-c.done:
		return
	}
	if !s.track(func() {
		defer func() { <-s.bots }()
		var resp *protocol.Message
		if override != nil {
			resp = override(agentID, m)
		} else {
			resp = s.runBot(agentID, bot, m)
		}
		if resp != nil {
			c.send(resp)
		}
	}) {
		<-s.bots
	}
}

func (s *Server) bind(c *agentConn, agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unbindLocked(c)
	c.agentID = agentID
	set := s.byAgent[agentID]
	if set == nil {
		set = map[*agentConn]struct{}{}
		s.byAgent[agentID] = set
	}
	set[c] = struct{}{}
	s.setStatusLocked(agentID, "connected", "")
}

func (s *Server) unbindLocked(c *agentConn) {
	id := c.agentID
	if id == "" {
		return
	}
	c.agentID = ""
	delete(s.byAgent[id], c)
	if len(s.byAgent[id]) == 0 {
		delete(s.byAgent, id)
		s.setStatusLocked(id, "disconnected", "")
	}
}

// forget drops a closed socket.
func (s *Server) forget(c *agentConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := c.agentID; id != "" {
		s.log.Info("agent disconnected", "agentId", id)
	}
	s.unbindLocked(c)
	delete(s.conns, c)
}

func (s *Server) agentOf(c *agentConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.agentID
}

func (s *Server) setStatus(agentID, status, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStatusLocked(agentID, status, version)
}

// setStatusLocked updates an agent's record; an empty version keeps the
// last one reported.
func (s *Server) setStatusLocked(agentID, status, version string) {
	st := s.status[agentID]
	if st == nil {
		st = &agentStatus{version: "unknown"}
		s.status[agentID] = st
	}
	st.status = status
	if version != "" {
		st.version = version
	}
	st.lastUpdated = time.Now()
}

// agentConns returns the open sockets bound to an agent.
func (s *Server) agentConns(agentID string) []*agentConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*agentConn, 0, len(s.byAgent[agentID]))
	for c := range s.byAgent[agentID] {
		out = append(out, c)
	}
	return out
}

// heartbeats sends agent:heartbeat:request to every connected agent.
func (s *Server) heartbeats() {
	defer s.wg.Done()
	t := time.NewTicker(s.opt.HeartbeatInterval)
	defer t.Stop()
	b, _ := protocol.Encode(&protocol.Message{Type: protocol.TypeHeartbeatRequest})
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		for c := range s.conns {
			if c.agentID == "" {
				continue
			}
			select { // a socket with a full queue skips this beat
			case c.out <- b:
			default:
			}
		}
		s.mu.Unlock()
	}
}

// deliver hands a response from an agent to the request waiting for its
// callback, if any.
func (s *Server) deliver(m *protocol.Message) {
	s.mu.Lock()
	ch := s.pending[m.Callback]
	s.mu.Unlock()
	if ch == nil {
		if m.Type == protocol.TypeError {
			s.log.Warn("agent error", "body", m.Body, "callback", m.Callback)
		} else {
			s.log.Debug("response without a waiting request", "type", m.Type, "callback", m.Callback)
		}
		return
	}
	select {
	case ch <- m:
	default: // another socket of the same agent answered first
	}
}

// SendToAgent publishes m to every open socket of the agent, as the Medplum
// server publishes to the agent's channel.
func (s *Server) SendToAgent(agentID string, m *protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	sent := false
	for _, c := range s.agentConns(agentID) {
		if c.sendRaw(b) {
			sent = true
		}
	}
	if !sent {
		return ErrAgentNotConnected
	}
	return nil
}

// Request sends m to the agent with a fresh callback (unless m has one) and
// waits for the message that echoes it: a response type or agent:error.
func (s *Server) Request(ctx context.Context, agentID string, m *protocol.Message) (*protocol.Message, error) {
	req := *m
	if req.Callback == "" {
		req.Callback = newCallback()
	}
	ch := make(chan *protocol.Message, 1)
	s.mu.Lock()
	s.pending[req.Callback] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, req.Callback)
		s.mu.Unlock()
	}()
	if err := s.SendToAgent(agentID, &req); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
}

// newCallback returns a correlation id in the form newer Medplum servers use.
func newCallback() string { return "agent:cb:dev-server:" + uuid.NewString() }

// OnTransmit sets a function called, in order, with every accepted
// agent:transmit:request before its Bot runs. It must not block. nil removes it.
func (s *Server) OnTransmit(f func(agentID string, m *protocol.Message)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onTransmit = f
}

// SetBotOverride replaces Bot execution: f's result is sent to the agent
// as-is (nil sends nothing), and no AuditEvent is written. f runs in its own
// goroutine per message, so it may block or sleep. nil restores the Bots.
func (s *Server) SetBotOverride(f func(agentID string, m *protocol.Message) *protocol.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.botOverride = f
}

// DisconnectAgents closes every agent socket, as a server restart would.
func (s *Server) DisconnectAgents() {
	s.mu.Lock()
	conns := make([]*agentConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
		s.forget(c) // now, so that Connected is false on return
	}
}

// Connected reports whether the agent has at least one open socket.
func (s *Server) Connected(agentID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byAgent[agentID]) > 0
}

// hijackFlush hands the WebSocket upgrader a flushConn instead of the raw
// hijacked connection.
type hijackFlush struct {
	http.ResponseWriter
	conn *flushConn
}

func (h *hijackFlush) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("devserver: connection cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &flushConn{Conn: nc}
	return h.conn, brw, err
}

// flushConn collects writes and sends them when flushed, and flushes itself
// before every read: the reader answers each frame of a read at once, and
// the answers go out together just before it waits for more.
type flushConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

func (c *flushConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *flushConn) Read(p []byte) (int, error) {
	if err := c.Flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Flush writes what was collected.
func (c *flushConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
