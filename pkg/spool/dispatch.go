package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Link is the transport the dispatcher sends through; *wslink.Link
// satisfies it. Enqueue must keep messages in order across reconnects and
// only write them while live.
type Link interface {
	Live() bool
	Enqueue(m *protocol.Message) error
}

// Settled reports a row that reached a terminal state.
type Settled struct {
	Row      Row       // the row after settling, without bodies
	Relay    bool      // Response is owed to the device, subject to the channel's ack policy
	Response *Response // the server's answer; nil after a timeout or a lost connection
}

// DispatchOptions configure a Dispatcher.
type DispatchOptions struct {
	// ResponseTimeout bounds the wait for the server's answer to one
	// attempt; default 60 s.
	ResponseTimeout time.Duration
	// OnSettled is called for every row that reaches a terminal state, on
	// its channel's worker, so it must not block for
	// long. When Relay is set it delivers Response to the device and
	// returns AckDelivered or AckUndelivered; otherwise its result is
	// ignored.
	OnSettled func(Settled) AckOutcome
	// Prepare produces the body of a row that has a Blob (DICOM: upload the
	// file as a Binary and return the transmit JSON that references it).
	// It runs once per row unless it fails; a failure is retried like a
	// server error.
	Prepare func(ctx context.Context, r Row) (string, error)
	// MaxInFlight bounds the rows of one channel sent and not yet answered;
	// they are always sent in id order and come from different device
	// connections, so the messages of one connection are never in flight
	// together. Default DefaultMaxInFlight; 1 sends one row of the channel
	// at a time, as the reference does.
	MaxInFlight int
	Logger      *slog.Logger
	// Now must be the clock the Store uses.
	Now func() time.Time
}

// DefaultResponseTimeout is the reference's per-attempt response timeout.
const DefaultResponseTimeout = 60 * time.Second

// DefaultMaxInFlight lets the connections of a busy channel share the
// server round trip.
const DefaultMaxInFlight = 16

const (
	// errorRetry paces a worker after a database error or a refused Enqueue.
	errorRetry = time.Second
	// maxPendingResponses bounds answers waiting for one channel's worker;
	// more can only be a misbehaving server.
	maxPendingResponses = 64
	// untilSignal makes a worker sleep until it is signalled.
	untilSignal time.Duration = -1
)

// Dispatcher sends queued rows to the server: one worker goroutine per
// channel with work, rows in id order with at most one in flight per device
// connection (and MaxInFlight per channel), only while the link is live and
// only while this process holds the dispatch lease.
type Dispatcher struct {
	s    *Store
	link Link
	opt  DispatchOptions
	log  *slog.Logger
	rnd  func(n int64) int64

	maxInFlight atomic.Int64
	downs       atomic.Uint64 // link drops so far
	quiescing   atomic.Bool   // claim nothing new: the agent is stopping

	mu      sync.Mutex
	workers map[string]*worker
	running bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	poll    chan struct{}

	renewedAt time.Time // lease goroutine only
}

// NewDispatcher builds a dispatcher for s; Start runs it.
func NewDispatcher(s *Store, link Link, opt DispatchOptions) *Dispatcher {
	if opt.ResponseTimeout <= 0 {
		opt.ResponseTimeout = DefaultResponseTimeout
	}
	if opt.Logger == nil {
		opt.Logger = s.log
	}
	if opt.Now == nil {
		opt.Now = s.now
	}
	d := &Dispatcher{
		s: s, link: link, opt: opt, log: opt.Logger,
		rnd:     rand.Int64N,
		workers: map[string]*worker{},
		poll:    make(chan struct{}, 1),
	}
	d.SetMaxInFlight(opt.MaxInFlight)
	return d
}

// SetMaxInFlight changes DispatchOptions.MaxInFlight; 0 means the default.
func (d *Dispatcher) SetMaxInFlight(n int) {
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	d.maxInFlight.Store(int64(n))
	d.mu.Lock()
	for _, w := range d.workers {
		w.signal()
	}
	d.mu.Unlock()
}

// Start makes a first attempt to take the dispatch lease, then keeps
// competing for it in the background. Holding the lease, it recovers the
// previous leader's rows and dispatches every channel with queued rows,
// polling for rows other processes (or the operator CLI) queued. Later
// calls are no-ops.
func (d *Dispatcher) Start(ctx context.Context) {
	d.mu.Lock()
	if d.ctx != nil {
		d.mu.Unlock()
		return
	}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.running = true
	d.wg.Add(1)
	d.mu.Unlock()
	d.leaseTick(d.ctx)
	go d.leaseLoop()
}

// Quiesce stops claiming rows, so that the ones in flight can settle
// before a graceful stop: a row whose answer is recorded is not sent again
// by the next process.
func (d *Dispatcher) Quiesce() { d.quiescing.Store(true) }

// InFlight counts the rows handed to the link whose answer has not been
// settled yet.
func (d *Dispatcher) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, w := range d.workers {
		n += w.inFlight()
	}
	return n
}

// Stop stops the workers and releases the lease. Rows in flight stay
// claimed or in flight for the next leader's recovery; stop the link first
// so that rows it writes while flushing are recorded as sent.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.mu.Lock()
	if !d.running {
		d.mu.Unlock()
		return nil
	}
	d.running = false
	d.cancel()
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("spool: stopping dispatcher: %w", ctx.Err())
	}
	if d.s.leader.Swap(false) {
		return d.s.releaseLease(ctx)
	}
	return nil
}

// IsLeader reports whether this process holds the dispatch lease.
func (d *Dispatcher) IsLeader() bool { return d.s.leader.Load() }

// Wake tells a channel's worker that rows were queued.
func (d *Dispatcher) Wake(channel string) {
	d.withWorker(channel, (*worker).signal)
}

// LiveChanged must be called when the link goes live or drops (wslink
// Config.OnLive). It does not block.
func (d *Dispatcher) LiveChanged(live bool) {
	// A drop caused by our own graceful stop is not a failed dispatch: the
	// rows in flight stay in flight, for the next process's recovery.
	if !live && !d.quiescing.Load() {
		d.downs.Add(1)
	}
	d.mu.Lock()
	for _, w := range d.workers {
		w.signal()
	}
	d.mu.Unlock()
	if live {
		select {
		case d.poll <- struct{}{}:
		default:
		}
	}
}

// OnSent must be called after a message handed to Link.Enqueue was written
// to the socket (wslink Config.OnSent). It does not block.
func (d *Dispatcher) OnSent(m *protocol.Message) {
	if m == nil || m.Type != protocol.TypeTransmitRequest {
		return
	}
	d.mu.Lock()
	w := d.workers[m.Channel]
	d.mu.Unlock()
	if w == nil {
		return
	}
	w.markSent(m.Callback, d.opt.Now(), d.downs.Load())
	w.signal()
}

// HandleResponse takes an agent:transmit:response whose callback has the
// durable form Agent/…#attempt and reports true; the agent must not treat it
// as a legacy response. Answers to unknown rows or superseded attempts are
// dropped.
func (d *Dispatcher) HandleResponse(m *protocol.Message) bool {
	if m == nil || m.Type != protocol.TypeTransmitResponse {
		return false
	}
	callbackID, _, ok := parseWireCallback(m.Callback)
	if !ok {
		return false
	}
	push := func(w *worker) { w.push(m) }
	if m.Channel != "" && d.withWorker(m.Channel, push) {
		return true
	}
	// No channel field, or not dispatching: the row knows its channel.
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	if ctx == nil {
		return true
	}
	row, err := d.s.byCallback(ctx, callbackID)
	if err != nil {
		d.log.Debug("Dropping response for an unknown queued message", "err", err)
		return true
	}
	if !d.withWorker(row.Channel, push) {
		d.log.Debug("Dropping response: not dispatching", "channel", row.Channel)
	}
	return true
}

// parseWireCallback splits Agent/{agentId}-{uuid}#{attempt}.
func parseWireCallback(cb string) (string, int, bool) {
	i := strings.LastIndexByte(cb, '#')
	if i < 0 || !strings.HasPrefix(cb, "Agent/") {
		return "", 0, false
	}
	n, err := strconv.Atoi(cb[i+1:])
	if err != nil || n < 1 {
		return "", 0, false
	}
	return cb[:i], n, true
}

// withWorker runs fn on the channel's worker, starting one if this process
// leads and is running; it reports false if there is none. fn runs under
// d.mu, which orders it against retire: what fn hands over is never left
// with a worker that already exited.
func (d *Dispatcher) withWorker(channel string, fn func(*worker)) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.workers[channel]
	if w == nil {
		if !d.running || !d.s.leader.Load() {
			return false
		}
		w = &worker{d: d, channel: channel, wake: make(chan struct{}, 1)}
		d.workers[channel] = w
		d.wg.Add(1)
		go w.run(d.ctx)
	}
	fn(w)
	return true
}

// retire removes an idle worker unless it was handed work meanwhile.
func (d *Dispatcher) retire(w *worker) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	w.mu.Lock()
	pending := len(w.responses)
	w.mu.Unlock()
	if len(w.wake) > 0 || pending > 0 {
		return false
	}
	delete(d.workers, w.channel)
	return true
}

func (d *Dispatcher) leaseLoop() {
	defer d.wg.Done()
	t := time.NewTicker(leaseRetry)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.poll:
		}
		d.leaseTick(d.ctx)
	}
}

// leaseTick renews or acquires the lease, then wakes channels with queued
// rows, which covers rows other processes queued.
func (d *Dispatcher) leaseTick(ctx context.Context) {
	now := d.opt.Now()
	if d.s.leader.Load() {
		if now.Sub(d.renewedAt) >= leaseRenew {
			ok, err := d.s.renewLease(ctx)
			switch {
			case err != nil:
				if ctx.Err() == nil {
					d.log.Warn("Cannot renew the queue dispatch lease", "err", err)
				}
				if now.Sub(d.renewedAt) >= leaseTTL {
					d.demote("lease expired")
				}
			case !ok:
				d.demote("lease taken over by another process")
			default:
				d.renewedAt = now
			}
		}
	} else if !d.becomeLeader(ctx, now) {
		return
	}
	if !d.link.Live() {
		return
	}
	chans, err := d.s.queuedChannels(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("Cannot list queued channels", "err", err)
		}
		return
	}
	for _, ch := range chans {
		d.Wake(ch)
	}
}

func (d *Dispatcher) becomeLeader(ctx context.Context, now time.Time) bool {
	ok, err := d.s.acquireLease(ctx)
	if err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			d.log.Warn("Cannot acquire the queue dispatch lease", "err", err)
		}
		return false
	}
	r, err := d.s.recover(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("Queue recovery failed; releasing the dispatch lease", "err", err)
		}
		if rerr := d.s.releaseLease(ctx); rerr != nil && ctx.Err() == nil {
			d.log.Warn("Cannot release the queue dispatch lease", "err", rerr)
		}
		return false
	}
	d.renewedAt = now
	d.s.leader.Store(true)
	d.log.Info("Dispatching the durable queue", "requeued", r.Requeued, "interrupted", r.Interrupted,
		"undeliveredAcks", r.Undelivered)
	if r.Redelivered > 0 {
		d.log.Warn("Messages that were in flight will be sent again; the server may see them twice", "count", r.Redelivered)
	}
	return true
}

// demote stops dispatching; the new leader recovers the rows in flight.
func (d *Dispatcher) demote(reason string) {
	if !d.s.leader.CompareAndSwap(true, false) {
		return
	}
	d.log.Warn("Stopped dispatching the durable queue", "reason", reason)
	d.mu.Lock()
	for _, w := range d.workers {
		w.signal()
	}
	d.mu.Unlock()
}

// worker drives one channel.
type worker struct {
	d       *Dispatcher
	channel string
	wake    chan struct{} // capacity 1: signals coalesce

	mu        sync.Mutex
	flights   []*flight // in id order
	responses []*protocol.Message

	// Worker goroutine only.
	late []*outcome // settlements of rows no longer in flight
	// blocked: the head row waits for a connection with a row in flight.
	// Intakes only add rows behind it, so only a settlement unblocks it.
	blocked bool
}

// flight is a row of the channel that was handed to the link.
type flight struct {
	row      Row
	callback string
	// Set by OnSent under worker.mu.
	sent   bool
	sentAt time.Time
	downs  uint64 // link drops counted when it was sent
	// Worker goroutine only.
	recorded bool      // inflight state committed
	deadline time.Time // zero: not armed
	armedAt  uint64    // link drops counted when the deadline of an unsent row was armed
	done     *outcome  // how the attempt ended, waiting for its commit
}

// outcome is a settlement on its way to the database, with what is needed
// to report it afterwards.
type outcome struct {
	row   Row
	resp  *Response
	relay bool
	st    settlement
}

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) push(m *protocol.Message) {
	w.mu.Lock()
	full := len(w.responses) >= maxPendingResponses
	if !full {
		w.responses = append(w.responses, m)
	}
	w.mu.Unlock()
	if full {
		w.d.log.Warn("Dropping response: too many pending for the channel", "channel", w.channel)
		return
	}
	w.signal()
}

func (w *worker) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.flights)
}

// markSent is OnSent for this channel.
func (w *worker) markSent(callback string, at time.Time, downs uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.flights {
		if f.callback == callback && !f.sent {
			f.sent, f.sentAt, f.downs = true, at, downs
			return
		}
	}
}

func (w *worker) snapshot() []*flight {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.flights)
}

func (w *worker) run(ctx context.Context) {
	defer w.d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for ctx.Err() == nil {
		wait, idle := w.step(ctx)
		switch {
		case idle:
			if w.d.retire(w) {
				return
			}
			continue
		case wait == 0:
			continue
		}
		var expired <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			expired = timer.C
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-expired:
		}
		timer.Stop()
	}
}

// step makes what progress it can in one transaction and says how long to
// sleep; idle means the channel has nothing to do (or this process may not
// dispatch).
func (w *worker) step(ctx context.Context) (time.Duration, bool) {
	d := w.d
	if !d.s.leader.Load() {
		w.mu.Lock()
		w.flights = nil // the new leader recovers them
		w.mu.Unlock()
		w.late = nil
		return 0, true
	}
	w.mu.Lock()
	resps := w.responses
	w.responses = nil
	w.mu.Unlock()
	for _, m := range resps {
		w.handleResponse(ctx, m)
	}

	flights := w.snapshot()
	wait := untilSignal
	var marks []sentMark
	var marked, open []*flight
	var outcomes []*outcome
	for _, f := range flights {
		mark := false
		if f.done == nil {
			var next time.Duration
			mark, next = w.watch(f)
			wait = shorter(wait, next)
		} else {
			// Answered before its send was recorded: record it with the answer.
			w.mu.Lock()
			mark = f.sent && !f.recorded
			w.mu.Unlock()
		}
		if mark {
			marks = append(marks, sentMark{id: f.row.ID, attempt: f.row.Attempt, at: f.sentAt})
			marked = append(marked, f)
		}
		if f.done != nil {
			outcomes = append(outcomes, f.done)
		} else {
			open = append(open, f)
		}
	}
	outcomes = append(outcomes, w.late...)
	req := claimRequest{}
	if d.link.Live() && !d.quiescing.Load() {
		req.n = int(d.maxInFlight.Load()) - len(open)
		req.busy = make(map[string]bool, len(open))
		for _, f := range open {
			req.busy[f.row.Remote] = true
		}
	}
	if len(open) == 0 {
		w.blocked = false // whatever blocked the head is gone
	}
	if len(outcomes) == 0 && w.blocked {
		req.n = 0
	}
	if len(marks) == 0 && len(outcomes) == 0 && req.n <= 0 {
		return wait, len(flights) == 0
	}
	settles := make([]settlement, len(outcomes))
	for i, o := range outcomes {
		settles[i] = o.st
	}
	a, err := d.s.advance(ctx, w.channel, marks, settles, req)
	switch {
	case errors.Is(err, errNotLeader):
		d.demote("lease held by another process")
		return 0, true
	case err != nil:
		// Everything is kept and tried again: the channel cannot move on
		// before its rows are settled.
		if ctx.Err() == nil {
			d.log.Warn("Cannot update the durable queue; retrying", "channel", w.channel, "err", err)
		}
		return errorRetry, false
	}
	for _, f := range marked {
		f.recorded = true
	}
	if req.n > 0 {
		w.blocked = a.blocked
	}
	w.late = nil
	w.mu.Lock()
	w.flights = slices.DeleteFunc(w.flights, func(f *flight) bool { return f.done != nil })
	w.mu.Unlock()
	for i, o := range outcomes {
		w.report(ctx, o, a.settled[i])
	}
	if len(a.claimed) > 0 {
		return w.send(ctx, a.claimed), false
	}
	if a.wait > 0 {
		wait = shorter(wait, a.wait)
	}
	return wait, len(open) == 0 && (a.empty || req.n <= 0) && a.wait == 0
}

// shorter returns the shorter of two sleeps, untilSignal being the longest.
func shorter(a, b time.Duration) time.Duration {
	switch {
	case a == untilSignal:
		return b
	case b == untilSignal:
		return a
	}
	return min(a, b)
}

// send hands claimed rows to the link in order. If the link refuses one,
// it and the rows after it go back to the queue, which provably never left
// the process.
func (w *worker) send(ctx context.Context, rows []Row) time.Duration {
	d := w.d
	for i, row := range rows {
		if row.Blob != "" && !row.BlobPrepared {
			body, err := w.prepare(ctx, row)
			if err != nil {
				// Claim stopped at this row, so it is the last one.
				w.late = append(w.late, w.outcome(row, nil, verdict{state: StateFailed, retry: row.Policy.Mode != RetryNone,
					code: CodeDispatchFailed, text: truncate("preparing the message failed: " + err.Error())}))
				return 0
			}
			row.Body = body
		}
		f := &flight{row: row, callback: row.WireCallback(), armedAt: d.downs.Load()}
		w.mu.Lock()
		w.flights = append(w.flights, f) // before Enqueue, so OnSent finds it
		w.mu.Unlock()
		err := d.link.Enqueue(&protocol.Message{
			Type:        protocol.TypeTransmitRequest,
			Channel:     row.Channel,
			Remote:      row.Remote,
			ContentType: row.ContentType,
			Body:        row.Body,
			Callback:    f.callback,
		})
		if err != nil {
			w.mu.Lock()
			w.flights = slices.DeleteFunc(w.flights, func(x *flight) bool { return x == f })
			w.mu.Unlock()
			d.log.Warn("Link refused a queued message; retrying", "id", row.ID, "err", err)
			for _, r := range rows[i:] {
				if err := d.s.unclaim(ctx, r.ID, r.Attempt); err != nil && ctx.Err() == nil {
					d.log.Warn("Cannot requeue message", "id", r.ID, "err", err)
				}
			}
			return errorRetry
		}
	}
	return 0
}

func (w *worker) prepare(ctx context.Context, row Row) (string, error) {
	d := w.d
	if d.opt.Prepare == nil {
		return "", errors.New("no Prepare hook for messages with a blob")
	}
	pctx, cancel := context.WithTimeout(ctx, d.opt.ResponseTimeout)
	defer cancel()
	body, err := d.opt.Prepare(pctx, row)
	if err != nil {
		return "", err
	}
	return body, d.s.setPrepared(ctx, row.ID, row.Attempt, body)
}

// watch reports whether the send of f is still to be recorded, and fails
// the attempt when the link dropped after it or when its deadline passes.
// A row the link has not written yet waits without a deadline while the
// link is down: the link keeps it and sends it first after reconnecting,
// so requeueing it would only duplicate it.
func (w *worker) watch(f *flight) (bool, time.Duration) {
	d := w.d
	w.mu.Lock()
	sent, sentAt, downs := f.sent, f.sentAt, f.downs
	w.mu.Unlock()
	mark := sent && !f.recorded
	if mark {
		f.deadline = sentAt.Add(d.opt.ResponseTimeout)
	}
	now := d.opt.Now()
	switch {
	case sent && d.downs.Load() != downs:
		// The answer would have come on the socket that closed.
		w.fail(f, CodeDispatchFailed, "connection to the server lost while waiting for the response")
		return mark, 0
	case !sent && !d.link.Live():
		f.deadline = time.Time{}
		return false, untilSignal
	case !sent && d.downs.Load() != f.armedAt:
		// The link went down and came back since the deadline was armed,
		// perhaps too briefly for this worker to see it: only time while
		// live counts, so start again.
		f.armedAt = d.downs.Load()
		f.deadline = now.Add(d.opt.ResponseTimeout)
	case f.deadline.IsZero():
		f.deadline = now.Add(d.opt.ResponseTimeout)
	}
	if now.Before(f.deadline) {
		return mark, f.deadline.Sub(now)
	}
	if sent {
		w.fail(f, CodeResponseTimeout, fmt.Sprintf("no response within %s", d.opt.ResponseTimeout))
	} else {
		w.fail(f, CodeDispatchFailed, fmt.Sprintf("not sent within %s while the link was live", d.opt.ResponseTimeout))
	}
	return mark, 0
}

func (w *worker) fail(f *flight, code, text string) {
	f.done = w.outcome(f.row, nil, classifyAmbiguous(f.row.Policy.Mode, code, text))
}

func (w *worker) handleResponse(ctx context.Context, m *protocol.Message) {
	d := w.d
	resp := &Response{StatusCode: m.StatusCode, ContentType: m.ContentType, Body: m.Body}
	w.mu.Lock()
	i := slices.IndexFunc(w.flights, func(f *flight) bool { return f.callback == m.Callback })
	var f *flight
	if i >= 0 {
		f = w.flights[i]
	}
	w.mu.Unlock()
	if f != nil {
		// An answer also replaces a timeout that is not committed yet.
		f.done = w.outcome(f.row, resp, classifyResponse(f.row.Policy.Mode, m.ContentType, m.StatusCode, m.Body))
		return
	}
	callbackID, attempt, _ := parseWireCallback(m.Callback)
	row, err := d.s.byCallback(ctx, callbackID)
	switch {
	case err != nil:
		d.log.Debug("Dropping response for an unknown queued message", "err", err)
	case row.Channel != w.channel:
		d.log.Warn("Dropping response naming the wrong channel", "id", row.ID, "channel", m.Channel)
	case attempt != row.Attempt:
		d.log.Debug("Dropping response to a superseded attempt", "id", row.ID, "attempt", attempt, "current", row.Attempt)
	case row.State == StateFailed || (row.State == StateQueued && !row.NextAttemptAt.IsZero()):
		d.log.Info("Applying a late response", "id", row.ID, "attempt", attempt, "state", row.State)
		w.late = append(w.late, w.outcome(row, resp, classifyResponse(row.Policy.Mode, m.ContentType, m.StatusCode, m.Body)))
	default:
		d.log.Debug("Dropping response for a message not awaiting one", "id", row.ID, "state", row.State)
	}
}

// outcome settles one attempt: retry with backoff while the policy allows,
// otherwise a terminal state.
func (w *worker) outcome(row Row, resp *Response, v verdict) *outcome {
	st := settlement{id: row.ID, attempt: row.Attempt, state: v.state, relay: v.relay, code: v.code, text: v.text,
		failures: row.FailedAttempts, resp: resp}
	if v.state == StateFailed {
		st.failures++
		if v.retry {
			if limit := row.Policy.MaxAttempts; limit == 0 || st.failures < limit {
				st.state = StateQueued
				st.next = w.d.opt.Now().Add(row.Policy.delay(st.failures, w.d.rnd))
			} else {
				st.text = truncate(fmt.Sprintf("%s (%d attempts exhausted)", v.text, st.failures))
			}
		}
	}
	return &outcome{row: row, resp: resp, relay: v.relay, st: st}
}

// report logs a committed settlement and, for a terminal one, calls
// OnSettled and records whether the answer reached the device.
func (w *worker) report(ctx context.Context, o *outcome, changed bool) {
	d, row, st := w.d, o.row, o.st
	if !changed {
		d.log.Debug("Settlement superseded", "id", row.ID, "attempt", row.Attempt)
		return
	}
	status := 0
	if o.resp != nil {
		status = o.resp.StatusCode
	}
	attrs := []any{"id", row.ID, "channel", row.Channel, "attempt", row.Attempt, "state", st.state, "statusCode", status, "code", st.code}
	switch st.state {
	case StateQueued:
		d.log.Warn("Queued message will be retried", append(attrs, "at", st.next)...)
		return
	case StateProcessed:
		d.log.Debug("Queued message processed", attrs...)
	default:
		d.log.Warn("Queued message settled with an error", attrs...)
	}
	row.State, row.FailedAttempts, row.LastError, row.ErrorCode = st.state, st.failures, st.text, st.code
	row.NextAttemptAt, row.StatusCode, row.AckOutcome = time.Time{}, status, AckNotOwed
	if o.relay {
		row.AckOutcome = AckPending
	}
	ack := AckUndelivered
	if d.opt.OnSettled != nil {
		ack = d.opt.OnSettled(Settled{Row: row, Relay: o.relay, Response: o.resp})
	}
	if !o.relay {
		return
	}
	if err := d.s.markAckAsync(ctx, row.ID, ack); err != nil && ctx.Err() == nil {
		d.log.Warn("Cannot record the ack outcome", "id", row.ID, "err", err)
	}
}
