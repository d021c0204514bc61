package wslink

import (
	"math"
	"time"
)

// backoffFactor is the reference reconnecting socket's growth factor.
const backoffFactor = 1.3

// backoff yields reconnect delays min(max, base × 1.3^(n−1)) for retry n ≥ 1.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) reset() { b.n = 0 }

func (b *backoff) next() time.Duration {
	b.n++
	d := float64(b.base) * math.Pow(backoffFactor, float64(b.n-1))
	if d >= float64(b.max) {
		return b.max
	}
	return time.Duration(d)
}
