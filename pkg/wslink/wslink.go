// Package wslink maintains the agent's WebSocket link to a Medplum server
// (/ws/agent): the in-band connect handshake, application-level heartbeats,
// jittered reconnects, and an ordered outbound queue that drains only while
// the link is live.
package wslink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Defaults follow the reference agent where it has a value.
const (
	DefaultHeartbeatPeriod   = 10 * time.Second
	DefaultDialTimeout       = 4 * time.Second
	DefaultMaxQueue          = 100_000
	DefaultReadLimit         = 64 << 20
	DefaultMaxReconnectDelay = 10 * time.Second
)

const (
	writeTimeout = 10 * time.Second
	// closeGrace bounds the wait for the server's answer to our close frame.
	closeGrace = time.Second
	// stableUptime is how long a socket must stay open to reset the backoff.
	stableUptime = 5 * time.Second
	// The reference tolerates one unanswered heartbeat and two not-live ticks.
	maxMissedHeartbeats  = 1
	maxNotLiveHeartbeats = 2
	// maxControl bounds control-plane replies held while the socket is down;
	// their callers time out long before this many pile up.
	maxControl = 1000
	// maxSessionFrames bounds heartbeat frames waiting for the writer, so a
	// server flooding heartbeat requests cannot grow memory.
	maxSessionFrames = 16
	// inboundBuffer decouples socket reads (and thus heartbeat handling) from
	// a Handler that is briefly slow.
	inboundBuffer    = 256
	invalidTokenBody = "Invalid access token"
)

// ErrQueueFull is returned by Enqueue when MaxQueue messages are waiting and
// by Send when its hold buffer is full.
var ErrQueueFull = errors.New("wslink: outbound queue full")

// ErrStopped is returned by Enqueue and Send once Stop has been called.
var ErrStopped = errors.New("wslink: link stopped")

// Config configures a Link. Zero durations and sizes mean the default.
type Config struct {
	// BaseURL is the Medplum server base URL (http or https). Its path is
	// replaced by /ws/agent and the scheme mapped to ws or wss.
	BaseURL string
	AgentID string
	// Version is reported in agent:heartbeat:response.
	Version string
	// Token returns the current access token. It is called for each connect
	// request and for each queued agent:transmit:request, at send time.
	Token func(ctx context.Context) (string, error)
	// Invalidate, if set, is called when the server answers
	// "Invalid access token"; the link then reconnects with a fresh token.
	Invalidate func()
	// TLSConfig verifies the server; nil means the system roots.
	// InsecureSkipVerify is rejected.
	TLSConfig *tls.Config
	// Handler receives every inbound message except connect and heartbeat
	// types, with legacy aliases mapped. Calls are sequential, on one
	// goroutine; a Handler that blocks delays inbound processing, and it
	// must not call Stop.
	Handler func(m *protocol.Message)
	// OnLive, if set, is told about live state changes. It is called on the
	// socket reader goroutine and must neither block nor call Stop.
	OnLive func(live bool)
	// OnSent, if set, is called on the writer goroutine after a message
	// handed to Enqueue was written to the socket. It must not block.
	OnSent func(m *protocol.Message)
	Logger *slog.Logger

	HeartbeatPeriod time.Duration // default 10 s
	DialTimeout     time.Duration // default 4 s, covers TCP, TLS and the upgrade
	MaxQueue        int           // default 100 000 outbound data messages
	ReadLimit       int64         // max inbound frame size, default 64 MiB
	// ReconnectDelay is the first retry delay; default random in [1 s, 5 s)
	// so that a fleet of agents does not reconnect in lockstep.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the exponential backoff; default 10 s.
	MaxReconnectDelay time.Duration
}

// Link is the agent's connection to the server. It reconnects on its own
// between Start and Stop. All methods are safe for concurrent use.
type Link struct {
	cfg    Config
	url    string
	dialer *websocket.Dialer
	log    *slog.Logger

	inbound chan *protocol.Message
	force   chan struct{}
	wg      sync.WaitGroup

	mu          sync.Mutex
	started     bool
	stopped     bool
	cancel      context.CancelFunc
	sess        *session // current socket, nil while disconnected
	live        bool
	outstanding int
	notLive     int
	hbSent      time.Time
	ping        int64
	queue       []*protocol.Message // data plane, sent only while live
	ctrl        []*protocol.Message // control plane, sent after the connect request
	changed     chan struct{}       // closed on progress; created on demand by Stop
}

// New validates cfg and returns a Link that is not yet connecting.
func New(cfg Config) (*Link, error) {
	u, err := websocketURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.AgentID == "":
		return nil, errors.New("wslink: agent id is required")
	case cfg.Token == nil:
		return nil, errors.New("wslink: token source is required")
	case cfg.TLSConfig != nil && cfg.TLSConfig.InsecureSkipVerify:
		return nil, errors.New("wslink: TLS certificate verification cannot be disabled")
	case cfg.MaxQueue < 0 || cfg.ReadLimit < 0:
		return nil, errors.New("wslink: negative queue or read limit")
	}
	cfg.HeartbeatPeriod = orDefault(cfg.HeartbeatPeriod, DefaultHeartbeatPeriod)
	cfg.DialTimeout = orDefault(cfg.DialTimeout, DefaultDialTimeout)
	cfg.MaxReconnectDelay = orDefault(cfg.MaxReconnectDelay, DefaultMaxReconnectDelay)
	cfg.ReconnectDelay = orDefault(cfg.ReconnectDelay, time.Second+rand.N(4*time.Second))
	cfg.MaxQueue = orDefault(cfg.MaxQueue, DefaultMaxQueue)
	cfg.ReadLimit = orDefault(cfg.ReadLimit, DefaultReadLimit)
	if cfg.Handler == nil {
		cfg.Handler = func(*protocol.Message) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var tlsConf *tls.Config
	if cfg.TLSConfig != nil {
		tlsConf = cfg.TLSConfig.Clone()
	}
	return &Link{
		cfg: cfg,
		url: u,
		dialer: &websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			NetDialContext:   dialBatch,
			HandshakeTimeout: cfg.DialTimeout,
			TLSClientConfig:  tlsConf,
		},
		log:     cfg.Logger,
		inbound: make(chan *protocol.Message, inboundBuffer),
		force:   make(chan struct{}, 1),
		ping:    -1,
	}, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// websocketURL maps a base URL to the agent endpoint the way the reference
// does: https → wss, http → ws, and the whole path replaced by /ws/agent.
// User info and query are dropped so the URL is safe to log.
func websocketURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("wslink: invalid base URL: %w", err)
	}
	var scheme string
	switch u.Scheme {
	case "https":
		scheme = "wss"
	case "http":
		scheme = "ws"
	default:
		return "", fmt.Errorf("wslink: base URL scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("wslink: base URL has no host")
	}
	return (&url.URL{Scheme: scheme, Host: u.Host, Path: "/ws/agent"}).String(), nil
}

// Start begins connecting in the background and returns immediately.
// Cancelling ctx tears the link down without flushing; Stop must still be
// called to wait for it. Later calls are no-ops.
func (l *Link) Start(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopped {
		return
	}
	l.started = true
	runCtx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	l.wg.Add(2)
	go l.dispatch()
	go l.run(runCtx)
}

// Stop stops reconnecting, lets the current socket flush queued messages
// until ctx is done, closes it with a normal close frame and waits for all
// goroutines, including an in-progress Handler call. It reports messages
// left unsent; they are lost unless the caller persisted them.
func (l *Link) Stop(ctx context.Context) error {
	l.mu.Lock()
	first := !l.stopped
	l.stopped = true
	cancel := l.cancel
	l.mu.Unlock()
	var err error
	if first {
		err = l.flush(ctx)
	}
	if cancel != nil {
		cancel()
		l.wg.Wait()
	}
	return err
}

// flush waits until nothing is pending, the socket is gone, or ctx is done.
func (l *Link) flush(ctx context.Context) error {
	for {
		l.mu.Lock()
		pending := len(l.queue) + len(l.ctrl)
		connected := l.sess != nil
		changed := l.changedLocked()
		l.mu.Unlock()
		switch {
		case pending == 0:
			return nil
		case !connected:
			return fmt.Errorf("wslink: %d messages not sent: not connected", pending)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wslink: %d messages not sent: %w", pending, ctx.Err())
		}
	}
}

// Enqueue appends m to the data-plane FIFO. Messages are written strictly in
// order, only while live; an agent:transmit:request gets the current access
// token stamped into a copy at send time. The Link owns m afterwards.
func (l *Link) Enqueue(m *protocol.Message) error {
	if err := validate(m); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return ErrStopped
	case len(l.queue) >= l.cfg.MaxQueue:
		return ErrQueueFull
	}
	l.queue = append(l.queue, m)
	l.kickLocked()
	return nil
}

// Send writes a control-plane reply as soon as the socket is open; while it
// is not, the reply is held and written right after the next connect
// request. The Link owns m afterwards.
func (l *Link) Send(m *protocol.Message) error {
	if err := validate(m); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return ErrStopped
	case len(l.ctrl) >= maxControl:
		return ErrQueueFull
	}
	l.ctrl = append(l.ctrl, m)
	l.kickLocked()
	return nil
}

// validate rejects messages that cannot be encoded now, so that a bad message
// is reported to its producer instead of blocking the queue later.
func validate(m *protocol.Message) error {
	if m == nil {
		return errors.New("wslink: nil message")
	}
	if err := protocol.Validate(m); err != nil {
		return fmt.Errorf("wslink: cannot encode %s: %w", m.Type, err)
	}
	return nil
}

// Live reports whether the server has acknowledged the current socket.
func (l *Link) Live() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

// Ping returns the last heartbeat round-trip time in milliseconds, -1 if none.
func (l *Link) Ping() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ping
}

// OutstandingHeartbeats returns the number of unanswered heartbeat requests.
func (l *Link) OutstandingHeartbeats() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outstanding
}

// QueueDepth returns the number of data-plane messages not yet written.
func (l *Link) QueueDepth() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// Reconnect drops the current socket, if any, and connects again at once
// with the backoff reset.
func (l *Link) Reconnect() {
	select {
	case l.force <- struct{}{}:
	default:
	}
}

// run owns the socket lifecycle: dialing, backoff, heartbeat ticks and the
// final close. Sessions never overlap, so one writer owns the queue head.
func (l *Link) run(ctx context.Context) {
	defer l.wg.Done()
	defer close(l.inbound) // after the last reader is gone
	tick := time.NewTicker(l.cfg.HeartbeatPeriod)
	defer tick.Stop()
	retry := time.NewTimer(0) // the first attempt is immediate
	defer retry.Stop()
	bo := backoff{base: l.cfg.ReconnectDelay, max: l.cfg.MaxReconnectDelay}
	var s *session

	connect := func() {
		if l.isStopped() {
			return
		}
		if s = l.dial(ctx); s == nil {
			retry.Reset(bo.next())
		}
	}
	reconnect := func() {
		if s != nil {
			l.closeSession(s, false)
			s = nil
		}
		retry.Stop()
		bo.reset()
		connect()
	}

	for {
		var closed <-chan struct{}
		if s != nil {
			closed = s.readerDone
		}
		select {
		case <-ctx.Done():
			if s != nil {
				l.closeSession(s, true)
			}
			return
		case <-closed:
			l.closeSession(s, false)
			if time.Since(s.opened) >= stableUptime {
				bo.reset()
			}
			s = nil
			if !l.isStopped() {
				d := bo.next()
				l.log.Info("Reconnecting to Medplum server", "url", l.url, "delay", d)
				retry.Reset(d)
			}
		case <-retry.C:
			connect()
		case <-l.force:
			l.log.Info("Reconnecting to Medplum server", "url", l.url)
			reconnect()
		case <-tick.C:
			if l.heartbeat() {
				reconnect()
			}
		}
	}
}

// heartbeat runs one tick of §2.5 and reports whether to force a reconnect.
func (l *Link) heartbeat() (reconnect bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.live {
		l.notLive++
		if l.notLive <= maxNotLiveHeartbeats {
			return false
		}
		l.notLive = 0
		l.log.Warn("Not connected to Medplum server. Attempting to reconnect...")
		return true
	}
	if l.outstanding > maxMissedHeartbeats {
		l.outstanding = 0
		l.log.Warn("Disconnected from Medplum server. Attempting to reconnect...")
		return true
	}
	l.outstanding++
	l.hbSent = time.Now()
	l.pushLocked(l.sess, &protocol.Message{Type: protocol.TypeHeartbeatRequest})
	return false
}

func (l *Link) dispatch() {
	defer l.wg.Done()
	for m := range l.inbound {
		l.cfg.Handler(m)
	}
}

func (l *Link) isStopped() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

func (l *Link) setLive(v bool) {
	l.mu.Lock()
	changed := l.live != v
	l.live = v
	if v {
		l.outstanding, l.notLive = 0, 0
		l.kickLocked()
	}
	l.notifyLocked()
	l.mu.Unlock()
	if changed && l.cfg.OnLive != nil {
		l.cfg.OnLive(v)
	}
}

// kickLocked wakes the current writer, if any. l.mu must be held.
func (l *Link) kickLocked() {
	if l.sess != nil {
		l.sess.wake()
	}
}

// changedLocked returns a channel closed at the next notifyLocked. It is only
// allocated while someone waits, keeping the per-message path cheap.
func (l *Link) changedLocked() <-chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

func (l *Link) notifyLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}
