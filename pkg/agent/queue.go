package agent

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// Bounds of the durable-queue settings: far above any sensible value, low
// enough that durations cannot overflow.
const (
	maxRetentionDays = 100 * 365
	maxRetentionMb   = 1 << 30
	maxSweepSecs     = 365 * 24 * 3600
	maxRetryDelayMs  = 24 * 3600 * 1000
	maxRetryAttempts = 1 << 30
	maxQueueInFlight = 1024
	// queueStatsTimeout bounds the database reads of one stats request.
	queueStatsTimeout = 2 * time.Second
)

// queueSettings are the agent-wide durable-queue settings (§1.4, §6).
type queueSettings struct {
	enabled    bool   // durableQueue; default true
	dbPath     string // queueDbPath; "" → <dataDir>/medplum-agent-queue.sqlite
	retention  spool.RetentionSettings
	retry      retryConfig             // channelRetryMode, channelAutoRetry*
	duplicates spool.DuplicateBehavior // duplicateBehavior; "" → idempotent
	// maxInFlight is queueMaxInFlight: rows of one channel sent and not yet
	// answered, each from a different device connection; 0 → the default.
	maxInFlight int
}

// retryConfig holds retry settings as given: unset fields are empty (mode),
// -1 (integers) or 0 (multiplier), so that a channel's URL parameters,
// the agent settings and the defaults can be layered field by field.
type retryConfig struct {
	mode                       spool.RetryMode
	baseMs, maxMs, maxAttempts int64
	multiplier                 float64
}

func unsetRetry() retryConfig { return retryConfig{baseMs: -1, maxMs: -1, maxAttempts: -1} }

// over returns c with its unset fields taken from d.
func (c retryConfig) over(d retryConfig) retryConfig {
	if c.mode == "" {
		c.mode = d.mode
	}
	if c.baseMs < 0 {
		c.baseMs = d.baseMs
	}
	if c.maxMs < 0 {
		c.maxMs = d.maxMs
	}
	if c.maxAttempts < 0 {
		c.maxAttempts = d.maxAttempts
	}
	if c.multiplier == 0 {
		c.multiplier = d.multiplier
	}
	return c
}

// policy resolves c against the reference defaults of its mode.
func (c retryConfig) policy() spool.RetryPolicy {
	mode := c.mode
	if mode == "" {
		mode = spool.RetryGuaranteed
	}
	p := spool.DefaultRetryPolicy(mode)
	if c.baseMs >= 0 {
		p.BaseDelay = time.Duration(c.baseMs) * time.Millisecond
	}
	if c.maxMs >= 0 {
		p.MaxDelay = time.Duration(c.maxMs) * time.Millisecond
	}
	if c.maxAttempts >= 0 {
		p.MaxAttempts = int(c.maxAttempts)
	}
	if c.multiplier > 0 {
		p.Multiplier = c.multiplier
	}
	return p
}

// clampIssue warns when the maximum delay is below the base; spool clamps it.
func (c retryConfig) clampIssue(where string) []issue {
	if p := c.policy(); p.MaxDelay < p.BaseDelay {
		return []issue{warning("%sautoRetryMaxDelayMs %d is below autoRetryBaseDelayMs %d; using %d",
			where, p.MaxDelay.Milliseconds(), p.BaseDelay.Milliseconds(), p.BaseDelay.Milliseconds())}
	}
	return nil
}

func parseQueueSettings(find func(string) *fhir.AgentSetting) (queueSettings, []issue) {
	q := queueSettings{enabled: true, retry: unsetRetry()}
	var issues []issue
	optInt := func(name string, limit int64) int64 {
		v := find(name)
		if v == nil {
			return -1
		}
		n, is := readIntSetting(v, limit)
		if is != nil {
			issues = append(issues, *is)
			return -1
		}
		return n
	}
	str := func(name string) string {
		v := find(name)
		switch {
		case v == nil:
			return ""
		case v.ValueString == nil:
			issues = append(issues, warning("Invalid %s setting '%s'; expected a string. Ignoring.", name, settingText(v)))
			return ""
		}
		return *v.ValueString
	}
	if v := find("durableQueue"); v != nil {
		if v.ValueBoolean == nil {
			issues = append(issues, warning("Invalid durableQueue setting '%s'; expected a boolean. Using true.", settingText(v)))
		} else {
			q.enabled = *v.ValueBoolean
		}
	}
	q.dbPath = str("queueDbPath")
	q.maxInFlight = int(max(optInt("queueMaxInFlight", maxQueueInFlight), 0))
	days := func(name string) time.Duration {
		return time.Duration(max(optInt(name, maxRetentionDays), 0)) * 24 * time.Hour
	}
	q.retention = spool.RetentionSettings{
		ProcessedMaxAge: days("queueRetentionDays"),
		ErroredMaxAge:   days("queueErroredRetentionDays"),
		MaxBytes:        max(optInt("queueRetentionMaxMb", maxRetentionMb), 0) << 20,
		SweepInterval:   time.Duration(max(optInt("queueSweepIntervalSecs", maxSweepSecs), 0)) * time.Second,
	}
	if v := str("channelRetryMode"); v != "" {
		if m, err := spool.ParseRetryMode(v); err == nil {
			q.retry.mode = m
		} else {
			issues = append(issues, warning("Invalid channelRetryMode setting '%s'; expected none, normal or guaranteed. Using guaranteed.", v))
		}
	}
	q.retry.baseMs = optInt("channelAutoRetryBaseDelayMs", maxRetryDelayMs)
	q.retry.maxMs = optInt("channelAutoRetryMaxDelayMs", maxRetryDelayMs)
	q.retry.maxAttempts = optInt("channelAutoRetryMaxAttempts", maxRetryAttempts)
	if v := find("channelAutoRetryBackoffMultiplier"); v != nil {
		switch {
		case v.ValueDecimal != nil && *v.ValueDecimal > 0 && *v.ValueDecimal <= 1000:
			q.retry.multiplier = *v.ValueDecimal
		case v.ValueInteger != nil && *v.ValueInteger > 0 && *v.ValueInteger <= 1000:
			q.retry.multiplier = float64(*v.ValueInteger)
		default:
			issues = append(issues, warning("Invalid channelAutoRetryBackoffMultiplier setting '%s'; expected a positive number. Ignoring.", settingText(v)))
		}
	}
	issues = append(issues, q.retry.clampIssue("")...)
	if v := str("duplicateBehavior"); v != "" {
		if b, err := spool.ParseDuplicateBehavior(v); err == nil {
			q.duplicates = b
		} else {
			issues = append(issues, warning("Invalid duplicateBehavior setting '%s'; expected idempotent or reject. Using idempotent.", v))
		}
	}
	return q, issues
}

// channelQueueParams are a channel's durable-queue URL parameters (§3.2),
// layered over the agent settings when a message is taken in.
type channelQueueParams struct {
	retry      retryConfig
	duplicates spool.DuplicateBehavior
	given      bool // any of them was set: warned about when the queue is off
}

func parseChannelQueueParams(q url.Values) (channelQueueParams, []issue) {
	p := channelQueueParams{retry: unsetRetry()}
	var issues []issue
	integer := func(name string, limit int64) int64 {
		v := q.Get(name)
		if v == "" {
			return -1
		}
		p.given = true
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > limit {
			issues = append(issues, warning("Invalid %s: '%s'; expected a non-negative integer. Ignoring.", name, v))
			return -1
		}
		return n
	}
	if v := q.Get("retryMode"); v != "" {
		p.given = true
		if m, err := spool.ParseRetryMode(v); err == nil {
			p.retry.mode = m
		} else {
			issues = append(issues, warning("Invalid retryMode: '%s'; expected none, normal or guaranteed. Using the agent setting.", v))
		}
	}
	p.retry.baseMs = integer("autoRetryBaseDelayMs", maxRetryDelayMs)
	p.retry.maxMs = integer("autoRetryMaxDelayMs", maxRetryDelayMs)
	p.retry.maxAttempts = integer("autoRetryMaxAttempts", maxRetryAttempts)
	if v := q.Get("autoRetryBackoffMultiplier"); v != "" {
		p.given = true
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f <= 1000 {
			p.retry.multiplier = f
		} else {
			issues = append(issues, warning("Invalid autoRetryBackoffMultiplier: '%s'; expected a positive number. Ignoring.", v))
		}
	}
	if v := q.Get("duplicateBehavior"); v != "" {
		p.given = true
		if b, err := spool.ParseDuplicateBehavior(v); err == nil {
			p.duplicates = b
		} else {
			issues = append(issues, warning("Invalid duplicateBehavior: '%s'; expected idempotent or reject. Using the agent setting.", v))
		}
	}
	return p, append(issues, p.retry.clampIssue("")...)
}

// durable is the open queue: its store and its dispatcher.
type durable struct {
	store *spool.Store
	disp  *spool.Dispatcher
	path  string
	cfg   atomic.Pointer[queueSettings] // of the plan last applied
}

// policy resolves a channel's retry policy and duplicate behaviour.
func (q *durable) policy(cp *channelQueueParams) (spool.RetryPolicy, spool.DuplicateBehavior) {
	cfg := q.cfg.Load()
	if cp == nil {
		return cfg.retry.policy(), cfg.duplicates
	}
	dup := cp.duplicates
	if dup == "" {
		dup = cfg.duplicates
	}
	return cp.retry.over(cfg.retry).policy(), dup
}

// queue returns the durable queue when the running configuration enables
// it, nil for the in-memory path. The queue stays open (and keeps
// dispatching the rows it holds) when a reload turns the setting off.
func (a *Agent) queue() *durable {
	if q := a.q.Load(); q != nil && a.useQueue.Load() {
		return q
	}
	return nil
}

// openQueue opens the queue the first time a plan enables it, before any
// channel of that plan starts. The caller holds applyMu.
func (a *Agent) openQueue(s queueSettings) error {
	path := s.dbPath
	if path == "" {
		path = filepath.Join(a.cfg.DataDir, spool.DefaultFileName)
	}
	if q := a.q.Load(); q != nil {
		if s.enabled && path != q.path {
			a.log.Warn("Changing queueDbPath while the queue is open is not supported; restart the agent to use it",
				"path", q.path, "queueDbPath", path)
		}
		q.cfg.Store(&s)
		q.disp.SetMaxInFlight(s.maxInFlight)
		a.useQueue.Store(s.enabled)
		return nil
	}
	if !s.enabled {
		a.useQueue.Store(false)
		return nil
	}
	store, err := spool.Open(spool.Options{Path: path, AgentID: a.cfg.AgentID, Logger: a.log, Retention: s.retention})
	if err != nil {
		return fmt.Errorf("cannot open the durable queue: %w", err)
	}
	q := &durable{store: store, path: path}
	q.cfg.Store(&s)
	q.disp = spool.NewDispatcher(store, a.link, spool.DispatchOptions{
		ResponseTimeout: a.opt.QueueResponseTimeout,
		MaxInFlight:     s.maxInFlight,
		OnSettled:       a.onSettled,
		Logger:          a.log,
	})
	// Not under a.ctx: Stop ends dispatch only after the link has flushed.
	q.disp.Start(context.Background())
	a.q.Store(q)
	a.useQueue.Store(true)
	a.log.Info("Durable queue open", "path", path)
	return nil
}

// closeQueue stops dispatching and closes the database; the link must be
// stopped first, so rows it flushed are recorded as sent.
func (a *Agent) closeQueue(ctx context.Context) {
	q := a.q.Swap(nil)
	if q == nil {
		return
	}
	if err := q.disp.Stop(ctx); err != nil {
		a.log.Warn("Stopping the queue dispatcher", "err", err)
	}
	if err := q.store.Close(); err != nil {
		a.log.Warn("Closing the durable queue", "err", err)
	}
}

// queueIntake persists one message, then wakes its channel's dispatcher.
func (a *Agent) queueIntake(q *durable, in spool.Intake) (spool.IntakeResult, error) {
	res, err := q.store.Intake(a.ctx, in)
	if err == nil && res.Duplicate == spool.DuplicateNone {
		q.disp.Wake(in.Channel)
	}
	return res, err
}

// relayer is a channel that can say whether a response reached its device.
type relayer interface {
	relay(m *protocol.Message) (spool.AckOutcome, error)
}

// onSettled relays the server's answer to a settled row to its device, on
// the channel's dispatcher worker.
func (a *Agent) onSettled(s spool.Settled) spool.AckOutcome {
	if !s.Relay || s.Response == nil {
		return spool.AckUndelivered
	}
	m := &protocol.Message{
		Type: protocol.TypeTransmitResponse, Channel: s.Row.Channel, Remote: s.Row.Remote,
		ContentType: s.Response.ContentType, StatusCode: s.Response.StatusCode, Body: s.Response.Body,
		Callback: s.Row.WireCallback(),
	}
	ch, ok := a.channel(s.Row.Channel).(relayer)
	if !ok {
		a.log.Warn("Response for a queued message of a channel that is not running", "channel", s.Row.Channel, "id", s.Row.ID)
		return spool.AckUndelivered
	}
	out, err := ch.relay(m)
	if err != nil {
		a.log.Error("Cannot relay the response to a queued message", "channel", s.Row.Channel, "id", s.Row.ID, "err", err)
		return spool.AckUndelivered
	}
	return out
}
