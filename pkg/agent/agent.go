// Package agent is the daemon core: it logs in, keeps the WebSocket link to
// the Medplum server, loads and applies the remote configuration
// all-or-nothing, runs the device-facing channels, and routes messages
// between them. It knows nothing about terminals or process exit; the run
// command wires it to signals and the service manager.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/medplum-agent/medplum-agent/pkg/auth"
	"github.com/medplum-agent/medplum-agent/pkg/config"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/logging"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/wslink"
)

// Options configures an Agent.
type Options struct {
	Config     *config.Config
	Version    string
	TLSConfig  *tls.Config
	HTTPClient *http.Client
	// MainLog is the main log (no message content); it also serves
	// agent:logs requests. nil discards.
	MainLog *logging.Logger
	// ChannelLog receives message content. nil discards.
	ChannelLog *slog.Logger
	// HeartbeatPeriod is the link heartbeat and housekeeping tick; 0 → 10 s.
	HeartbeatPeriod time.Duration
	// ShutdownTimeout bounds how long Stop waits for the responses to
	// messages in progress, and then how long it lets queued messages reach
	// the server; 0 → 10 s.
	ShutdownTimeout time.Duration
	// QueueResponseTimeout bounds the wait for the server's answer to one
	// dispatch of a durably queued message; 0 → 60 s.
	QueueResponseTimeout time.Duration
	// UpgradeRestart restarts the process after a self-upgrade replaced
	// the executable (through the service manager, or by re-executing
	// it). nil: agent:upgrade:request is refused.
	UpgradeRestart func(context.Context) error
}

const (
	defaultHeartbeatPeriod = 10 * time.Second
	defaultShutdownTimeout = 10 * time.Second
	// reloadTimeout bounds a reload the server asked for; the server gives
	// up after 5 s anyway.
	reloadTimeout = 30 * time.Second
	// channelStopGrace bounds how long a reload waits for a removed
	// channel's exchanges in progress.
	channelStopGrace = 2 * time.Second
	// maxQueuedOps bounds server operations (reload, logs) waiting to run.
	maxQueuedOps = 8
)

const errAgentOff = "Agent.status is currently set to off"

// Agent is the daemon core. Create it with New, then Start and Stop it once.
type Agent struct {
	opt      Options
	cfg      *config.Config
	log      *slog.Logger
	chLog    *slog.Logger
	creds    *auth.ClientCredentials
	fhir     *fhir.Client
	link     *wslink.Link
	cbPrefix string // "Agent/{id}-"

	out *outbound // pushes and pings the server asks for

	ready     chan struct{} // closed once the first config is applied
	startDone chan struct{} // closed when Start returns
	running   atomic.Bool   // Start succeeded
	started   atomic.Bool
	stopOnce  sync.Once
	drainCh   chan struct{} // closed when Stop begins: no new intake

	ctx    context.Context // background work; cancelled when Stop begins
	cancel context.CancelFunc
	bg     sync.WaitGroup
	ops    chan func() // server operations, run one at a time

	active       atomic.Bool // Agent.status is active; false until applied
	inflight     atomic.Int64
	chans        atomic.Pointer[map[string]channel] // published for routing
	statsEvery   atomic.Int64                       // logStatsFreqSecs as a Duration
	statsKick    chan struct{}
	fromSnapshot atomic.Bool // booted from the snapshot; reload when live

	q        atomic.Pointer[durable] // the durable queue, once a plan opened it
	useQueue atomic.Bool             // the running plan routes intake through q

	applyMu  sync.Mutex // serialises apply, reload and the final stop
	channels map[string]channel
	lastGood *plan

	upgradeURL atomic.Pointer[string] // the applied upgradeManifestUrl setting
	upgrading  atomic.Bool
	lock       *dirLock
}

// New checks the options and builds an agent; it does no I/O.
func New(opt Options) (*Agent, error) {
	cfg := opt.Config
	switch {
	case cfg == nil:
		return nil, errors.New("agent: no config")
	case cfg.BaseURL == "" || cfg.ClientID == "" || cfg.ClientSecret == "" || cfg.AgentID == "":
		return nil, errors.New("agent: base URL, client id, client secret and agent id are required")
	case cfg.DataDir == "":
		return nil, errors.New("agent: no data dir")
	}
	if opt.HeartbeatPeriod <= 0 {
		opt.HeartbeatPeriod = defaultHeartbeatPeriod
	}
	if opt.ShutdownTimeout <= 0 {
		opt.ShutdownTimeout = defaultShutdownTimeout
	}
	a := &Agent{
		opt:       opt,
		cfg:       cfg,
		log:       slog.New(slog.DiscardHandler),
		chLog:     opt.ChannelLog,
		cbPrefix:  "Agent/" + cfg.AgentID + "-",
		ready:     make(chan struct{}),
		startDone: make(chan struct{}),
		drainCh:   make(chan struct{}),
		ops:       make(chan func(), maxQueuedOps),
		statsKick: make(chan struct{}, 1),
		channels:  map[string]channel{},
	}
	if opt.MainLog != nil {
		a.log = opt.MainLog.Slog()
	}
	if a.chLog == nil {
		a.chLog = slog.New(slog.DiscardHandler)
	}
	a.creds = &auth.ClientCredentials{
		BaseURL: cfg.BaseURL, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, HTTPClient: opt.HTTPClient,
		Logger: a.log,
	}
	a.fhir = fhir.NewClient(cfg.BaseURL, a.creds.Token, opt.HTTPClient)
	link, err := wslink.New(wslink.Config{
		BaseURL:         cfg.BaseURL,
		AgentID:         cfg.AgentID,
		Version:         opt.Version,
		Token:           a.creds.Token,
		Invalidate:      a.creds.Invalidate,
		TLSConfig:       opt.TLSConfig,
		Handler:         a.handle,
		OnLive:          a.onLive,
		OnSent:          a.onSent,
		Logger:          a.log,
		HeartbeatPeriod: opt.HeartbeatPeriod,
	})
	if err != nil {
		return nil, err
	}
	a.link = link
	a.out = newOutbound(a.log)
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.publish()
	return a, nil
}

// Ready is closed once the first configuration has been applied and every
// listener is bound.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Start locks the data dir, logs in, starts the link and applies the
// configuration. It returns once every listener is bound. A network failure
// at login is retried until ctx ends, unless a last-good snapshot exists,
// in which case the agent starts from it and the link keeps retrying. A
// configuration the server serves but that is invalid falls back to the
// snapshot too; without one Start returns a *ConfigError.
func (a *Agent) Start(ctx context.Context) (err error) {
	if a.started.Swap(true) {
		return errors.New("agent: Start called twice")
	}
	defer close(a.startDone)
	// Stop cancels a.ctx; that must also end a Start still in progress.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.ctx, cancel)()

	if a.lock, err = lockDataDir(a.cfg.DataDir); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			a.abortStart()
		}
	}()
	a.log.Info("Medplum agent starting", "version", a.opt.Version, "agentId", a.cfg.AgentID, "baseUrl", a.cfg.BaseURL)
	upgrade := a.takeUpgradeManifest()
	snap := a.loadSnapshot()
	if err := a.login(ctx, snap != nil); err != nil {
		return err
	}
	// The link outlives ctx: Stop flushes and closes it.
	a.link.Start(context.Background())
	if err := a.boot(ctx, snap); err != nil {
		return err
	}
	a.running.Store(true)
	a.bg.Go(a.runOps)
	a.bg.Go(a.periodic)
	if upgrade != nil {
		// Held by the link until the socket is open, then sent right after
		// the connect request.
		a.sendControl(a.upgradeResult(upgrade))
	}
	close(a.ready)
	a.log.Info("Medplum agent started")
	return nil
}

// login gets a first token. Wrong credentials fail at once; network
// failures are retried with backoff, or end the wait if a snapshot can be
// used instead.
func (a *Agent) login(ctx context.Context, haveSnapshot bool) error {
	bo := auth.Backoff{Base: a.opt.HeartbeatPeriod / 10, Max: a.opt.HeartbeatPeriod, Factor: 2, Jitter: 0.2}
	for {
		_, err := a.creds.Token(ctx)
		switch {
		case err == nil:
			return nil
		case auth.IsCredentialsError(err):
			return fmt.Errorf("login: %w", err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		a.log.Error("Failed to login", "err", err)
		if haveSnapshot {
			return nil
		}
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// boot applies the server's configuration, or the snapshot if that fails.
func (a *Agent) boot(ctx context.Context, snap *plan) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	p, err := a.loadPlan(ctx)
	if err == nil {
		if err = a.apply(p, true); err == nil {
			a.saveSnapshot(p)
			return nil
		}
	}
	if snap == nil || ctx.Err() != nil {
		return err
	}
	a.log.Warn("Cannot apply the server's config; starting from the last-good snapshot", "err", err)
	if serr := a.apply(snap, false); serr != nil {
		a.log.Error("Cannot apply the last-good snapshot either", "err", serr)
		return err
	}
	a.fromSnapshot.Store(true)
	if a.link.Live() { // went live before the flag was set: onLive missed it
		a.queueSnapshotReload()
	}
	return nil
}

// abortStart undoes a failed Start.
func (a *Agent) abortStart() {
	a.applyMu.Lock()
	a.stopChannels(context.Background())
	a.applyMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.out.close(ctx)
	_ = a.link.Stop(ctx) // nothing was delivered yet
	a.closeQueue(ctx)
	_ = a.lock.release()
}

// Reload fetches, validates and applies the configuration, as
// agent:reloadconfig:request does. On failure nothing changes and the error
// (a *ConfigError for invalid configurations) lists every problem.
func (a *Agent) Reload(ctx context.Context) error {
	// Stop must not wait for a reload stuck on the network.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.ctx, cancel)()
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	switch {
	case a.ctx.Err() != nil:
		return errors.New("agent is stopping")
	case !a.running.Load():
		return errors.New("agent is not running")
	}
	a.log.Info("Reloading config...")
	p, err := a.loadPlan(ctx)
	if err == nil {
		err = a.apply(p, true)
	}
	if err != nil {
		a.log.Error("Reloading config failed", "err", err)
		return err
	}
	a.saveSnapshot(p)
	a.fromSnapshot.Store(false)
	a.log.Info("Config reloaded")
	return nil
}

// Stop stops intake on every channel, lets exchanges in progress finish
// (the server's responses reach their devices, pushes their ACKs, and
// queued messages reach the server) for up to ShutdownTimeout, then closes
// the channels, the outbound clients and the link and releases the data
// dir.
func (a *Agent) Stop(ctx context.Context) error {
	first := false
	a.stopOnce.Do(func() {
		first = true
		close(a.drainCh)
		a.cancel()
	})
	if !first || !a.started.Load() {
		return nil
	}
	<-a.startDone
	if !a.running.Load() {
		return nil
	}
	a.log.Info("Medplum agent stopping...")
	a.bg.Wait()
	wctx, wcancel := context.WithTimeout(ctx, a.opt.ShutdownTimeout)
	a.waitInflight(wctx)
	a.out.close(wctx)
	wcancel()

	// A response that never came must not cost the messages still queued
	// their chance to reach the server: the flush has a budget of its own.
	ctx, cancel := context.WithTimeout(ctx, a.opt.ShutdownTimeout)
	defer cancel()
	a.applyMu.Lock()
	a.stopChannels(ctx)
	a.applyMu.Unlock()
	if err := a.link.Stop(ctx); err != nil {
		a.log.Warn("Messages left unsent at shutdown", "err", err)
	}
	// After the link, so that rows it wrote while flushing are recorded
	// as sent; with a budget of its own, since the flush may use all of
	// ctx's.
	qctx, qcancel := context.WithTimeout(context.Background(), a.opt.ShutdownTimeout)
	a.closeQueue(qctx)
	qcancel()
	err := a.lock.release()
	a.log.Info("Medplum agent stopped")
	return err
}

// waitInflight waits until every delivered message has had its response,
// or ctx ends. With the durable queue it claims nothing new and waits for
// the rows in flight to settle, so a restart does not send them again.
func (a *Agent) waitInflight(ctx context.Context) {
	q := a.q.Load()
	if q != nil {
		q.disp.Quiesce()
	}
	pending := func() int64 {
		n := a.inflight.Load()
		if q != nil {
			n += int64(q.disp.InFlight())
		}
		return n
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for pending() > 0 {
		select {
		case <-ctx.Done():
			a.log.Warn("Stopping with exchanges still in progress", "count", pending())
			return
		case <-t.C:
		}
	}
}

func (a *Agent) draining() bool {
	select {
	case <-a.drainCh:
		return true
	default:
		return false
	}
}

// deliver hands an inbound device message to the server on the in-memory
// path (durableQueue=false).
func (a *Agent) deliver(m *protocol.Message) error {
	// Counted before queueing, so a fast response cannot settle it first.
	a.inflight.Add(1)
	if err := a.link.Enqueue(m); err != nil {
		a.inflight.Add(-1)
		return err
	}
	return nil
}

// settle counts a response; unsolicited responses never drive it negative.
func (a *Agent) settle() {
	for {
		v := a.inflight.Load()
		if v <= 0 || a.inflight.CompareAndSwap(v, v-1) {
			return
		}
	}
}

func (a *Agent) newCallback() string { return a.cbPrefix + uuid.NewString() }

// reply queues an agent-originated message behind the data already queued,
// as the reference does for transmit results and "agent off" errors.
func (a *Agent) reply(m *protocol.Message) {
	if err := a.link.Enqueue(m); err != nil {
		a.log.Warn("Cannot queue message for the server", "type", m.Type, "err", err)
	}
}

// sendControl sends a control-plane reply directly.
func (a *Agent) sendControl(m *protocol.Message) {
	if err := a.link.Send(m); err != nil {
		a.log.Warn("Cannot reply to the server", "type", m.Type, "err", err)
	}
}

// channel returns the running channel called name, or nil.
func (a *Agent) channel(name string) channel { return (*a.chans.Load())[name] }

// publish makes the current channel set visible to the routing path.
func (a *Agent) publish() {
	m := maps.Clone(a.channels)
	a.chans.Store(&m)
}

// handle receives every server message the link does not consume itself,
// in order, on the link's dispatch goroutine.
func (a *Agent) handle(m *protocol.Message) {
	switch m.Type {
	case protocol.TypeTransmitResponse:
		// Answers to queued messages carry an attempt number; the
		// dispatcher settles them.
		if q := a.q.Load(); q != nil && q.disp.HandleResponse(m) {
			return
		}
		a.onTransmitResponse(m)
	case protocol.TypeTransmitRequest:
		if !a.active.Load() {
			a.reply(protocol.ErrorMessage(m.Callback, errAgentOff))
			return
		}
		a.out.handle(m, a.reply)
	case protocol.TypeReloadConfigRequest:
		a.submit(m, a.replyReload)
	case protocol.TypeLogsRequest:
		a.submit(m, a.replyLogs)
	case protocol.TypeStatsRequest:
		a.replyStats(m)
	case protocol.TypeUpgradeRequest:
		a.submit(m, a.replyUpgrade)
	}
	// agent:error from the server is logged by the link; nothing to answer.
}

func (a *Agent) onTransmitResponse(m *protocol.Message) {
	a.settle()
	if !a.active.Load() {
		a.reply(protocol.ErrorMessage(m.Callback, errAgentOff))
		return
	}
	if m.Callback == "" {
		a.log.Warn("Transmit response missing callback", "channel", m.Channel, "remote", m.Remote)
	}
	if m.StatusCode >= 400 {
		// The body may quote the message, so it goes to the channel log only.
		a.log.Error("Error during handling transmit request", "channel", m.Channel, "remote", m.Remote,
			"statusCode", m.StatusCode, "callback", m.Callback)
		a.chLog.Error("Error during handling transmit request: "+m.Body, "channel", m.Channel, "remote", m.Remote)
		return
	}
	ch := a.channel(m.Channel)
	if ch == nil {
		a.log.Warn("Transmit response for an unknown channel", "channel", m.Channel, "remote", m.Remote)
		return
	}
	if err := ch.handleResponse(m); err != nil {
		body := "WebSocket error on incoming message: " + err.Error()
		a.log.Error(body, "channel", m.Channel, "remote", m.Remote)
		a.sendControl(protocol.ErrorMessage(m.Callback, body))
	}
}

// onLive runs on the link's reader goroutine and must not block.
func (a *Agent) onLive(live bool) {
	if q := a.q.Load(); q != nil {
		q.disp.LiveChanged(live)
	}
	if live && a.fromSnapshot.Load() {
		a.queueSnapshotReload()
	}
}

// onSent runs on the link's writer goroutine and must not block.
func (a *Agent) onSent(m *protocol.Message) {
	if q := a.q.Load(); q != nil {
		q.disp.OnSent(m)
	}
}

func (a *Agent) queueSnapshotReload() {
	select {
	case a.ops <- a.reloadAfterSnapshot:
	default: // a reload is queued already, or the next live will retry
	}
}

// reloadAfterSnapshot replaces the snapshot with the server's config once
// the server is reachable again.
func (a *Agent) reloadAfterSnapshot() {
	if !a.fromSnapshot.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, reloadTimeout)
	defer cancel()
	_ = a.Reload(ctx) // failures are logged; the next live retries
}
