package auth

import (
	"math/rand/v2"
	"time"
)

// Backoff computes jittered exponential delays for login retries and
// WebSocket reconnects. Base=Max with Factor 1 gives the reference agent's
// fixed 10 s retry. It is not safe for concurrent use.
type Backoff struct {
	Base   time.Duration // first delay; 0 means 1 s
	Max    time.Duration // cap on any delay; 0 means 1 min
	Factor float64       // growth per attempt; values below 1 mean 2
	// Jitter spreads each delay uniformly over ±Jitter of itself (0..1),
	// so agents restarted together do not retry in lockstep.
	Jitter float64
	// Rand returns values in [0, 1); nil means math/rand/v2.
	Rand func() float64

	next time.Duration // un-jittered delay of the next attempt; 0 before the first
}

// Next returns the delay before the next attempt and advances.
func (b *Backoff) Next() time.Duration {
	base, limit, factor := b.Base, b.Max, b.Factor
	if base <= 0 {
		base = time.Second
	}
	if limit <= 0 {
		limit = time.Minute
	}
	if factor < 1 {
		factor = 2
	}
	if b.next == 0 {
		b.next = min(base, limit)
	}
	d := b.next
	b.next = capped(float64(b.next)*factor, limit)
	if j := min(max(b.Jitter, 0), 1); j > 0 {
		r := b.Rand
		if r == nil {
			r = rand.Float64
		}
		d = capped(float64(d)*(1+j*(2*r()-1)), limit)
	}
	return d
}

// capped converts a delay computed in floating point, where it cannot
// overflow, back to a Duration within [0, limit].
func capped(f float64, limit time.Duration) time.Duration {
	if f >= float64(limit) {
		return limit
	}
	return max(time.Duration(f), 0)
}

// Reset starts over from Base, e.g. after a successful connection.
func (b *Backoff) Reset() { b.next = 0 }
