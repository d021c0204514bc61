package rtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time               { return c.t }
func (c *clock) advance(d time.Duration)      { c.t = c.t.Add(d) }
func newTracker(c *clock, o Options) *Tracker { o.Now = c.now; return New(o) }

func TestStats(t *testing.T) {
	tests := []struct {
		name    string
		rtts    []time.Duration // one message each, acked after this long
		pending int             // extra ids sent and never acked
		opt     Options
		want    Stats
	}{
		{
			name: "empty",
			want: Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1},
		},
		{
			name: "pending only", pending: 2,
			want: Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1, PendingCount: 2},
		},
		{
			name: "one sample", rtts: []time.Duration{1500 * time.Microsecond},
			want: Stats{Count: 1, Min: 1.5, Max: 1.5, Average: 1.5, P50: 1.5, P95: 1.5, P99: 1.5},
		},
		{
			// 1..10 ms: p50 = sorted[ceil(5)-1] = 5, p95 = sorted[ceil(9.5)-1] = 10.
			name: "ten samples", rtts: ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), pending: 1,
			want: Stats{Count: 10, Min: 1, Max: 10, Average: 5.5, P50: 5, P95: 10, P99: 10, PendingCount: 1},
		},
		{
			// Only the last 3 samples (3, 4, 5) are kept.
			name: "ring keeps the newest", rtts: ms(1, 2, 3, 4, 5), opt: Options{MaxSamples: 3},
			want: Stats{Count: 3, Min: 3, Max: 5, Average: 4, P50: 4, P95: 5, P99: 5},
		},
		{
			name: "pending is capped", pending: 5, opt: Options{MaxPending: 3},
			want: Stats{Min: -1, Max: -1, Average: -1, P50: -1, P95: -1, P99: -1, PendingCount: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			tr := newTracker(c, tt.opt)
			for i, d := range tt.rtts {
				id := fmt.Sprint("m", i)
				tr.Sent(id)
				c.advance(d)
				if !tr.Acked(id) {
					t.Fatalf("Acked(%s) = false", id)
				}
			}
			for i := range tt.pending {
				tr.Sent(fmt.Sprint("p", i))
			}
			if diff := cmp.Diff(tt.want, tr.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
		})
	}
}

func ms(vs ...int) []time.Duration {
	out := make([]time.Duration, len(vs))
	for i, v := range vs {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestAckedUnknownAndForget(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	tr := newTracker(c, Options{})
	tr.Sent("")
	tr.Sent("a")
	tr.Sent("b")
	tr.Forget("a")
	if tr.Acked("a") || tr.Acked("zzz") {
		t.Error("Acked of a forgotten or unknown id reported true")
	}
	if got := tr.Stats(); got.Count != 0 || got.PendingCount != 1 {
		t.Errorf("Stats = %+v, want no samples and 1 pending", got)
	}
}

func TestGC(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	tr := newTracker(c, Options{})
	tr.Sent("old")
	c.advance(4 * time.Minute)
	tr.Sent("new")
	if got := tr.GC(); got != nil {
		t.Errorf("GC before 5 min = %v", got)
	}
	c.advance(90 * time.Second) // old is 5.5 min, new 1.5 min
	if diff := cmp.Diff([]string{"old"}, tr.GC()); diff != "" {
		t.Errorf("GC (-want +got):\n%s", diff)
	}
	c.advance(10 * time.Second)
	if got := tr.GC(); got != nil {
		t.Errorf("GC within a minute of the last scan = %v", got)
	}
	if got := tr.Stats().PendingCount; got != 1 {
		t.Errorf("pending = %d, want 1", got)
	}
}
