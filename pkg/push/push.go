// Package push delivers server-originated HL7 v2 messages to devices
// (agent:transmit:request from the server, §4.1 of the protocol spec) over
// outbound MLLP connections, keeping one client pool per remote URL (§4.2).
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/agent/rtt"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Defaults applied to zero (or negative) Settings fields.
const (
	DefaultMaxClientsPerRemote = 5
	// DefaultResponseTimeout is the longest a server waits for a push result
	// ($push waitTimeout is capped at 55 s); waiting longer helps nobody.
	DefaultResponseTimeout = 55 * time.Second
	// DefaultIdleRelease is the reference's CLIENT_RELEASE_COUNTDOWN_MS.
	DefaultIdleRelease = 10 * time.Second
)

// defaultMaxPools bounds the distinct remote strings held at once, so a
// server that sends ever-new remote URLs cannot grow memory without limit.
// Pools without clients are evicted, least recently used first, to make room.
const defaultMaxPools = 1024

// Texts the reference agent sends; clients match on them.
const (
	errMissingRemote = "Missing remote address"
	errIncoming      = "WebSocket error on incoming message: "
	errInvalidURL    = "Invalid URL"
	errPoolClosed    = "Cannot get new client, pool is closed"
)

// Settings are the Agent settings that shape the pools.
type Settings struct {
	// KeepAlive is the Agent setting keepAlive: persistent connections with
	// TCP keep-alive probes. Without it idle clients are closed by Tick.
	KeepAlive bool
	// MaxClientsPerRemote is the Agent setting maxClientsPerRemote; 0 means
	// DefaultMaxClientsPerRemote, or 1 with KeepAlive.
	MaxClientsPerRemote int
	// ResponseTimeout bounds the wait for the device's ACK once the message
	// is sent; the reference has none. Agent setting pushResponseTimeoutMs
	// (valueInteger, milliseconds); 0 means DefaultResponseTimeout.
	ResponseTimeout time.Duration
	// IdleRelease is how long a client may stay unused before Tick closes
	// it when KeepAlive is off; 0 means DefaultIdleRelease.
	IdleRelease time.Duration
}

func (s Settings) normalized() Settings {
	if s.MaxClientsPerRemote <= 0 {
		s.MaxClientsPerRemote = DefaultMaxClientsPerRemote
		if s.KeepAlive {
			s.MaxClientsPerRemote = 1
		}
	}
	if s.ResponseTimeout <= 0 {
		s.ResponseTimeout = DefaultResponseTimeout
	}
	if s.IdleRelease <= 0 {
		s.IdleRelease = DefaultIdleRelease
	}
	return s
}

// Pools holds one client pool per remote string. It is safe for concurrent
// use; Handle may run for many requests at once.
type Pools struct {
	log      *slog.Logger
	now      func() time.Time
	maxPools int
	base     context.Context // bounds dials; cancelled by Close
	stop     context.CancelFunc
	wg       sync.WaitGroup // one goroutine per client: dial, then wait for the close

	mu       sync.Mutex
	set      Settings
	pools    map[string]*pool        // by exact remote string
	trackers map[string]*rtt.Tracker // by stats key, shared by pools with the same key
	closed   bool
}

// pool is the set of clients for one remote string. Guarded by Pools.mu.
type pool struct {
	remote   string
	target   target
	rtt      *rtt.Tracker
	clients  []*client
	next     int // round-robin position
	lastUsed time.Time
}

// client is one pooled connection. Guarded by Pools.mu; mc and err are set
// once, before ready is closed.
type client struct {
	ready    chan struct{}
	mc       *mllp.Client
	err      error
	busy     int // pushes holding the client, including those waiting for the dial
	lastUsed time.Time
	gone     bool // removed from its pool; the connection is being closed
}

// NewPools returns empty pools. logger may be nil.
func NewPools(s Settings, logger *slog.Logger) *Pools {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base, stop := context.WithCancel(context.Background())
	return &Pools{
		log:      logger,
		now:      time.Now,
		maxPools: defaultMaxPools,
		base:     base,
		stop:     stop,
		set:      s.normalized(),
		pools:    make(map[string]*pool),
		trackers: make(map[string]*rtt.Tracker),
	}
}

// Apply takes new settings. A keepAlive change closes every pool, as in the
// reference; a lower maxClientsPerRemote closes idle clients above the new
// limit at once and busy ones when their push finishes.
func (ps *Pools) Apply(s Settings) {
	s = s.normalized()
	var closing []*client
	ps.mu.Lock()
	old := ps.set
	ps.set = s
	switch {
	case s.KeepAlive != old.KeepAlive:
		for _, p := range ps.pools {
			for len(p.clients) > 0 {
				closing = append(closing, ps.dropLocked(p, p.clients[0]))
			}
		}
		clear(ps.pools)
		clear(ps.trackers)
	case s.MaxClientsPerRemote < old.MaxClientsPerRemote:
		for _, p := range ps.pools {
			for _, c := range slices.Clone(p.clients) {
				if len(p.clients) > s.MaxClientsPerRemote && c.busy == 0 {
					closing = append(closing, ps.dropLocked(p, c))
				}
			}
		}
	}
	ps.mu.Unlock()
	closeAll(closing)
	if s.KeepAlive != old.KeepAlive && len(closing) > 0 {
		ps.log.Info("keepAlive setting changed; closed outbound clients", "count", len(closing))
	}
}

// Handle executes one push and returns the message to send back, never nil:
// an agent:transmit:response with the device's ACK (200) or an error text
// (400 text/plain), or agent:error for a request the reference rejects that
// way (missing remote, a remote that is not a URL, a body that is not HL7).
func (ps *Pools) Handle(ctx context.Context, req *protocol.Message) *protocol.Message {
	if req.Remote == "" {
		ps.log.Error(errMissingRemote, "callback", req.Callback)
		return protocol.ErrorMessage(req.Callback, errMissingRemote)
	}
	t, err := parseRemote(req.Remote)
	if err != nil {
		if errors.Is(err, errURL) {
			ps.log.Error(errIncoming+err.Error(), "remote", req.Remote)
			return protocol.ErrorMessage(req.Callback, errIncoming+err.Error())
		}
		return ps.fail(req, err.Error())
	}
	// Precedence: the message's returnAck, then the device URL's
	// defaultReturnAck, then first. Only the message's value can fail.
	mode := mllp.ReturnAckFirst
	if req.ReturnAck != "" {
		if mode, err = mllp.ParseReturnAck(req.ReturnAck); err != nil {
			return ps.fail(req, err.Error())
		}
	} else if t.defaultAck != "" {
		if m, err := mllp.ParseReturnAck(t.defaultAck); err != nil {
			ps.log.Warn(err.Error()+" - falling back to default return ACK behavior of 'first'.", "remote", req.Remote)
		} else {
			mode = m
		}
	}
	msg, err := hl7.Parse(req.Body)
	if err != nil {
		ps.log.Error(errIncoming+err.Error(), "remote", req.Remote)
		return protocol.ErrorMessage(req.Callback, errIncoming+err.Error())
	}
	id := msg.ControlID()
	if id == "" {
		return ps.fail(req, mllp.ErrMissingControlID.Error())
	}

	p, c, set, err := ps.acquire(req.Remote, t)
	if err != nil {
		return ps.fail(req, err.Error())
	}
	ps.log.Info("Pushing message to device", "remote", req.Remote, "id", id, "returnAck", mode.String())
	ack, broken, err := ps.send(ctx, p, c, set, msg, mode)
	ps.release(p, c, broken)
	if err != nil {
		return ps.fail(req, errorText(err, t.addr, set.ResponseTimeout))
	}
	ps.log.Info("Device acknowledged push", "remote", req.Remote, "id", id, "code", string(hl7.AckCodeOf(ack)))
	return protocol.TransmitResponse(req, http.StatusOK, protocol.ContentTypeHL7, ack.String())
}

// fail logs and builds a 400 text/plain transmit response.
func (ps *Pools) fail(req *protocol.Message, text string) *protocol.Message {
	ps.log.Error("HL7 error: "+text, "remote", req.Remote, "callback", req.Callback)
	return protocol.TransmitResponse(req, http.StatusBadRequest, protocol.ContentTypeText, text)
}

// errNoAck is the context cause of the response timeout.
var errNoAck = errors.New("no ACK within the response timeout")

// send waits for the client's connection, then sends msg and waits for its
// ACK, recording the round trip. broken says whether the client must be
// force-closed: after any failure except a caller giving up before the
// connection was there and a duplicate control id, which both leave
// nothing on the wire.
func (ps *Pools) send(ctx context.Context, p *pool, c *client, set Settings, msg *hl7.Message, mode mllp.ReturnAck) (ack *hl7.Message, broken bool, err error) {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("connecting to %s: %w", p.target.addr, ctx.Err())
	}
	if c.err != nil {
		return nil, true, dialError{c.err}
	}
	id := msg.ControlID()
	sctx, cancel := context.WithTimeoutCause(ctx, set.ResponseTimeout, errNoAck)
	defer cancel()
	p.rtt.Sent(id)
	ack, err = c.mc.SendAndWait(sctx, msg, mode)
	switch {
	case err == nil:
		p.rtt.Acked(id)
		return ack, false, nil
	case errors.Is(err, mllp.ErrDuplicateControlID):
		// The id is pending on this client already; its entry is not ours.
		return nil, false, err
	case context.Cause(sctx) == errNoAck:
		err = errNoAck
	}
	p.rtt.Forget(id)
	return nil, true, err
}

// dialError marks a connection failure, whose text is rendered as the
// reference renders socket errors.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// errorText is the response body for a failed push.
func errorText(err error, addr string, timeout time.Duration) string {
	var de dialError
	switch {
	case errors.Is(err, errNoAck):
		return fmt.Sprintf("No ACK from %s within %s", addr, timeout)
	case errors.As(err, &de):
		return socketErrorText(de.err)
	}
	return err.Error()
}

// nodeErrnos are the socket errors rendered Node-style ("connect
// ECONNREFUSED 127.0.0.1:2575"), so texts match what the reference reports.
var nodeErrnos = []struct {
	errno syscall.Errno
	name  string
}{
	{syscall.ECONNREFUSED, "ECONNREFUSED"},
	{syscall.ECONNRESET, "ECONNRESET"},
	{syscall.EHOSTUNREACH, "EHOSTUNREACH"},
	{syscall.ENETUNREACH, "ENETUNREACH"},
	{syscall.ETIMEDOUT, "ETIMEDOUT"},
	{syscall.EADDRNOTAVAIL, "EADDRNOTAVAIL"},
}

func socketErrorText(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return "getaddrinfo ENOTFOUND " + dns.Name
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Addr == nil {
		return err.Error()
	}
	for _, e := range nodeErrnos {
		if errors.Is(err, e.errno) {
			return "connect " + e.name + " " + op.Addr.String()
		}
	}
	if op.Timeout() {
		return "connect ETIMEDOUT " + op.Addr.String()
	}
	return err.Error()
}

// acquire returns the pool for remote and a client from it, holding the
// client (busy) until release. A new client starts dialling at once.
func (ps *Pools) acquire(remote string, t target) (*pool, *client, Settings, error) {
	now := ps.now()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, nil, Settings{}, errors.New(errPoolClosed)
	}
	set := ps.set
	p := ps.pools[remote]
	if p == nil {
		if len(ps.pools) >= ps.maxPools && !ps.evictLocked() {
			return nil, nil, Settings{}, fmt.Errorf("Too many remotes in use; at most %d are kept at once", ps.maxPools)
		}
		tr := ps.trackers[t.key]
		if tr == nil {
			tr = rtt.New(rtt.Options{Now: ps.now})
			ps.trackers[t.key] = tr
		}
		p = &pool{remote: remote, target: t, rtt: tr}
		ps.pools[remote] = p
		ps.log.Info("Client pool created for remote '"+remote+"'",
			"keepAlive", set.KeepAlive, "maxClients", set.MaxClientsPerRemote, "encoding", t.encoding)
	}
	p.lastUsed = now
	// A connection the device closed is replaced rather than handed out;
	// run drops it too, but may not have run yet.
	for _, c := range slices.Clone(p.clients) {
		if c.mc != nil && isDone(c.mc) {
			ps.dropLocked(p, c)
		}
	}
	var c *client
	if len(p.clients) < set.MaxClientsPerRemote {
		c = &client{ready: make(chan struct{})}
		p.clients = append(p.clients, c)
		ps.wg.Add(1)
		go ps.run(p, c, mllp.ClientOptions{Encoding: t.encoding, KeepAlive: set.KeepAlive})
	} else {
		p.next %= len(p.clients)
		c = p.clients[p.next]
		p.next = (p.next + 1) % len(p.clients)
	}
	c.busy++
	c.lastUsed = now
	return p, c, set, nil
}

func isDone(mc *mllp.Client) bool {
	select {
	case <-mc.Done():
		return true
	default:
		return false
	}
}

// evictLocked removes the least recently used pool that has no clients.
func (ps *Pools) evictLocked() bool {
	var victim *pool
	for _, p := range ps.pools {
		if len(p.clients) == 0 && (victim == nil || p.lastUsed.Before(victim.lastUsed)) {
			victim = p
		}
	}
	if victim == nil {
		return false
	}
	delete(ps.pools, victim.remote)
	for _, p := range ps.pools {
		if p.target.key == victim.target.key {
			return true
		}
	}
	delete(ps.trackers, victim.target.key)
	return true
}

// run dials c and, once connected, waits for its connection to end so the
// client leaves the pool as soon as it is gone.
func (ps *Pools) run(p *pool, c *client, opt mllp.ClientOptions) {
	defer ps.wg.Done()
	mc, err := mllp.Dial(ps.base, p.target.addr, opt)
	ps.mu.Lock()
	c.mc, c.err = mc, err
	close(c.ready)
	gone := c.gone
	if err != nil {
		ps.dropLocked(p, c)
	}
	ps.mu.Unlock()
	if err != nil {
		return
	}
	if gone { // dropped while dialling
		mc.Close()
	}
	<-mc.Done()
	ps.mu.Lock()
	member := !c.gone
	ps.dropLocked(p, c)
	keepAlive := ps.set.KeepAlive
	ps.mu.Unlock()
	if member && keepAlive {
		ps.log.Info("Persistent connection to remote 'mllp://" + p.target.addr + "' closed")
	}
}

// release returns c after a push. A broken client is force-closed, as is
// one above a lowered limit once idle.
func (ps *Pools) release(p *pool, c *client, broken bool) {
	ps.mu.Lock()
	c.busy--
	c.lastUsed = ps.now()
	var closing *client
	switch {
	case broken:
		closing = ps.dropLocked(p, c)
	case c.busy == 0 && len(p.clients) > ps.set.MaxClientsPerRemote:
		closing = ps.dropLocked(p, c)
	}
	ps.mu.Unlock()
	if closing != nil {
		closeAll([]*client{closing})
	}
}

// dropLocked removes c from p and marks it gone; it returns c for closeAll
// to close outside the lock.
func (ps *Pools) dropLocked(p *pool, c *client) *client {
	c.gone = true
	for i, x := range p.clients {
		if x == c {
			p.clients = append(p.clients[:i], p.clients[i+1:]...)
			break
		}
	}
	return c
}

// closeAll closes the connections of dropped clients. A client still
// dialling is closed by its run goroutine when the dial returns.
func closeAll(cs []*client) {
	for _, c := range cs {
		select {
		case <-c.ready:
			if c.mc != nil {
				c.mc.Close()
			}
		default:
		}
	}
}

// Tick runs on every heartbeat: without keepAlive it closes clients unused
// for IdleRelease, and it ages out RTT entries that never got an ACK.
func (ps *Pools) Tick(now time.Time) {
	var closing []*client
	var keys []string
	ps.mu.Lock()
	set := ps.set
	if !set.KeepAlive {
		for _, p := range ps.pools {
			for _, c := range slices.Clone(p.clients) {
				if c.busy == 0 && c.mc != nil && now.Sub(c.lastUsed) >= set.IdleRelease {
					closing = append(closing, ps.dropLocked(p, c))
					keys = append(keys, p.target.key)
				}
			}
		}
	}
	trackers := maps.Clone(ps.trackers)
	ps.mu.Unlock()
	closeAll(closing)
	for _, key := range keys {
		ps.log.Info("Closing client for remote '" + key + "' and removing it from the pool...")
	}
	for key, t := range trackers {
		if dropped := t.GC(); len(dropped) > 0 {
			ps.log.Warn("Cleaning up pending pushes; never got an ACK", "remote", key, "count", len(dropped))
		}
	}
}

// ClientCount is hl7ClientCount: the clients across all pools, including
// those still connecting.
func (ps *Pools) ClientCount() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := 0
	for _, p := range ps.pools {
		n += len(p.clients)
	}
	return n
}

// Stats returns the RTT statistics per pool, keyed
// "mllp://host:port?encoding=<encoding or utf-8>" (clientStats; the caller
// wraps each value as {rtt: ...}).
func (ps *Pools) Stats() map[string]rtt.Stats {
	ps.mu.Lock()
	trackers := maps.Clone(ps.trackers)
	ps.mu.Unlock()
	out := make(map[string]rtt.Stats, len(trackers))
	for k, t := range trackers {
		out[k] = t.Stats()
	}
	return out
}

// Close closes every client and waits for their goroutines. Pushes in
// flight fail; later ones get a 400.
func (ps *Pools) Close() {
	var closing []*client
	ps.mu.Lock()
	ps.closed = true
	for _, p := range ps.pools {
		for len(p.clients) > 0 {
			closing = append(closing, ps.dropLocked(p, p.clients[0]))
		}
	}
	clear(ps.pools)
	ps.mu.Unlock()
	ps.stop()
	closeAll(closing)
	ps.wg.Wait()
}

// target is what a remote URL says about the device.
type target struct {
	addr       string // host:port to dial
	key        string // stats key
	encoding   string // wire charset; "" means the default
	defaultAck string // defaultReturnAck parameter, unvalidated
}

// errURL marks a remote that is not a usable URL; the reference fails
// those while parsing the request, hence agent:error.
var errURL = errors.New(errInvalidURL)

// parseRemote reads a device URL such as
// "mllp://10.0.0.5:2575?encoding=utf-8&defaultReturnAck=application". The
// scheme is not checked, as in the reference.
func parseRemote(remote string) (target, error) {
	u, err := url.Parse(remote)
	if err != nil || u.Hostname() == "" {
		return target{}, errURL
	}
	host := strings.ToLower(u.Hostname())
	if u.Port() == "" {
		return target{}, fmt.Errorf("Missing port in remote address '%s'", remote)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil || port > 65535 {
		return target{}, errURL
	}
	q := u.Query()
	if enc := q.Get("encoding"); enc != "" {
		if _, err := charset.Lookup(enc); err != nil {
			return target{}, err
		}
	}
	t := target{
		addr:       net.JoinHostPort(host, strconv.Itoa(port)),
		encoding:   q.Get("encoding"),
		defaultAck: q.Get("defaultReturnAck"),
	}
	keyEnc := mllp.DefaultEncoding
	if q.Has("encoding") {
		keyEnc = t.encoding
	}
	t.key = "mllp://" + t.addr + "?encoding=" + keyEnc
	return t, nil
}
