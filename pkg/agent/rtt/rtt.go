// Package rtt measures round-trip times between a message and its
// acknowledgement, keyed by message control id, for agent:stats (§5.4):
// inbound channels pair a device message with the ACK sent back to it,
// outbound clients pair a push with the ACK that answers it.
package rtt

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults of the reference's tracker.
const (
	DefaultMaxSamples    = 1000
	DefaultMaxPendingAge = 5 * time.Minute
	// DefaultMaxPending bounds the ids waiting for an acknowledgement, so a
	// server that never answers cannot grow memory for the five minutes an
	// entry may wait.
	DefaultMaxPending = 10000
	// gcInterval is how often GC actually scans, however often it is called.
	gcInterval = time.Minute
)

// Stats is the RttStats object of agent:stats:response. Times are
// milliseconds; every field but PendingCount is -1 without samples.
type Stats struct {
	Count        int     `json:"count"`
	Min          float64 `json:"min"`
	Max          float64 `json:"max"`
	Average      float64 `json:"average"`
	P50          float64 `json:"p50"`
	P95          float64 `json:"p95"`
	P99          float64 `json:"p99"`
	PendingCount int     `json:"pendingCount"`
}

// Tracker pairs sent ids with acknowledgements. It is safe for concurrent
// use; the zero value is not usable, call New.
type Tracker struct {
	now        func() time.Time
	maxSamples int
	maxPending int
	maxAge     time.Duration

	mu      sync.Mutex
	pending map[string]time.Time
	samples []float64 // ring of the last maxSamples RTTs in ms
	next    int       // ring write position once full
	lastGC  time.Time
}

// Options tune a Tracker; zero values take the defaults.
type Options struct {
	MaxSamples    int
	MaxPending    int
	MaxPendingAge time.Duration
	Now           func() time.Time // nil: time.Now
}

// New returns an empty tracker.
func New(opt Options) *Tracker {
	t := &Tracker{
		now:        opt.Now,
		maxSamples: opt.MaxSamples,
		maxPending: opt.MaxPending,
		maxAge:     opt.MaxPendingAge,
		pending:    make(map[string]time.Time),
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.maxSamples <= 0 {
		t.maxSamples = DefaultMaxSamples
	}
	if t.maxPending <= 0 {
		t.maxPending = DefaultMaxPending
	}
	if t.maxAge <= 0 {
		t.maxAge = DefaultMaxPendingAge
	}
	t.lastGC = t.now()
	return t
}

// Sent records that the message with this id went out. Empty ids are not
// tracked; when MaxPending ids are already waiting the id is not tracked
// either.
func (t *Tracker) Sent(id string) {
	if id == "" {
		return
	}
	now := t.now()
	t.mu.Lock()
	if len(t.pending) < t.maxPending {
		t.pending[id] = now
	}
	t.mu.Unlock()
}

// Acked records the acknowledgement of id and adds a sample if id was
// pending; it reports whether it was.
func (t *Tracker) Acked(id string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	sent, ok := t.pending[id]
	if !ok {
		return false
	}
	delete(t.pending, id)
	ms := float64(now.Sub(sent).Microseconds()) / 1000
	if len(t.samples) < t.maxSamples {
		t.samples = append(t.samples, ms)
	} else {
		t.samples[t.next] = ms
		t.next = (t.next + 1) % t.maxSamples
	}
	return true
}

// Forget drops id from the pending set without a sample, for a message that
// will never be acknowledged (it was refused, or the server failed it).
func (t *Tracker) Forget(id string) {
	t.mu.Lock()
	delete(t.pending, id)
	t.mu.Unlock()
}

// GC drops pending ids older than MaxPendingAge and returns them. It scans
// at most once a minute, so it can be called on every heartbeat tick.
func (t *Tracker) GC() []string {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastGC) < gcInterval {
		return nil
	}
	t.lastGC = now
	var dropped []string
	for id, sent := range t.pending {
		if now.Sub(sent) > t.maxAge {
			delete(t.pending, id)
			dropped = append(dropped, id)
		}
	}
	slices.Sort(dropped)
	return dropped
}

// Stats summarises the samples. Percentile p is the sorted sample at index
// ceil(p/100·n)−1, as the reference computes it.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	sorted := slices.Clone(t.samples)
	pending := len(t.pending)
	t.mu.Unlock()

	n := len(sorted)
	if n == 0 {
		return Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1, PendingCount: pending}
	}
	slices.Sort(sorted)
	var sum float64
	for _, v := range sorted {
		sum += v
	}
	pct := func(p float64) float64 {
		return sorted[max(int(math.Ceil(p/100*float64(n)))-1, 0)]
	}
	return Stats{
		Count:        n,
		Min:          sorted[0],
		Max:          sorted[n-1],
		Average:      sum / float64(n),
		P50:          pct(50),
		P95:          pct(95),
		P99:          pct(99),
		PendingCount: pending,
	}
}
