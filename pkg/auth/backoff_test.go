package auth

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoff(t *testing.T) {
	s := time.Second
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	tests := []struct {
		name string
		b    Backoff
		n    int
		want []time.Duration
	}{
		{name: "doubling up to the cap", b: Backoff{Base: s, Max: 10 * s, Factor: 2}, n: 6,
			want: []time.Duration{s, 2 * s, 4 * s, 8 * s, 10 * s, 10 * s}},
		{name: "reference fixed retry", b: Backoff{Base: 10 * s, Max: 10 * s, Factor: 1}, n: 3,
			want: []time.Duration{10 * s, 10 * s, 10 * s}},
		{name: "zero value", b: Backoff{}, n: 8,
			want: []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s}},
		{name: "jitter low end", b: Backoff{Base: s, Max: 10 * s, Factor: 2, Jitter: 0.5, Rand: fixed(0)}, n: 3,
			want: []time.Duration{s / 2, s, 2 * s}},
		{name: "jitter high end never exceeds Max", b: Backoff{Base: 4 * s, Max: 5 * s, Factor: 2, Jitter: 1, Rand: fixed(0.75)}, n: 2,
			want: []time.Duration{5 * s, 5 * s}},
		{name: "base above max", b: Backoff{Base: time.Hour, Max: s}, n: 2,
			want: []time.Duration{s, s}},
		{name: "no overflow", b: Backoff{Base: 1, Max: time.Duration(1<<63 - 1), Factor: 1e6}, n: 6,
			want: []time.Duration{1, 1e6, 1e12, 1e18, 1<<63 - 1, 1<<63 - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []time.Duration
			for range tt.n {
				got = append(got, tt.b.Next())
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("delays mismatch (-want +got):\n%s", d)
			}
			tt.b.Reset()
			if first := tt.b.Next(); len(tt.want) > 0 && first != tt.want[0] {
				t.Errorf("after Reset: %v, want %v", first, tt.want[0])
			}
		})
	}
}
