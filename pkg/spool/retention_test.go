package spool

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const day = 24 * time.Hour

// openSwept opens a store and waits for the sweep it runs at open, so the
// test's own Sweep calls are the only ones that see its rows.
func openSwept(t *testing.T, c *clock, ret RetentionSettings) *Store {
	t.Helper()
	s := openStore(t, c, func(o *Options) { o.Retention = ret })
	eventually(t, "sweep at open", func() bool { return s.sweep.Load() != nil })
	return s
}

func TestRetention(t *testing.T) {
	type row struct {
		name string
		age  time.Duration // how long ago it settled
		st   State
		ack  AckOutcome
	}
	tests := []struct {
		name          string
		ret           RetentionSettings
		rows          []row
		keep          []string
		wantProcessed int64
		wantErrored   int64
	}{
		{
			name: "by age",
			rows: []row{
				{"old delivered", 8 * day, StateProcessed, AckDelivered},
				{"old not owed", 8 * day, StateProcessed, AckNotOwed},
				{"old undelivered", 8 * day, StateProcessed, AckUndelivered},
				{"old relay pending", 8 * day, StateProcessed, AckPending},
				{"old failed", 100 * day, StateFailed, AckNotOwed},
				{"queued", 0, StateQueued, AckPending},
				{"young delivered", 6 * day, StateProcessed, AckDelivered},
			},
			keep:          []string{"old undelivered", "old relay pending", "old failed", "queued", "young delivered"},
			wantProcessed: 2,
		},
		{
			name: "over the size limit",
			ret:  RetentionSettings{MaxBytes: 1},
			rows: []row{
				{"young delivered", time.Hour, StateProcessed, AckDelivered},
				{"ancient failed", 100 * day, StateFailed, AckNotOwed},
				{"ancient nacked", 91 * day, StateNacked, AckNotOwed},
				{"ancient undelivered", 95 * day, StateProcessed, AckUndelivered},
				{"recent rejected", 10 * day, StateRejected, AckNotOwed},
				{"queued", 200 * day, StateQueued, AckPending},
				{"in flight", 200 * day, StateInflight, AckPending},
			},
			keep:          []string{"recent rejected", "queued", "in flight"},
			wantProcessed: 1,
			wantErrored:   3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			s := openSwept(t, c, tt.ret)
			// Settle the oldest first, moving the clock forward to "now".
			rows := slices.Clone(tt.rows)
			slices.SortStableFunc(rows, func(a, b row) int { return int(b.age - a.age) })
			start := c.Now()
			ids := map[string]int64{}
			for _, r := range rows {
				c.Set(start.Add(200*day - r.age))
				ids[r.name] = mustIntake(t, s, hl7Intake("c", r.name, RetryNormal)).ID
				if r.st != StateQueued {
					setState(t, s, ids[r.name], r.st, r.ack, nil)
				}
			}
			c.Set(start.Add(200 * day))
			res, err := s.Sweep(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.DeletedProcessed != tt.wantProcessed || res.DeletedErrored != tt.wantErrored {
				t.Errorf("deleted processed=%d errored=%d, want %d %d", res.DeletedProcessed, res.DeletedErrored,
					tt.wantProcessed, tt.wantErrored)
			}
			var kept []string
			for _, r := range tt.rows {
				if _, err := s.Get(context.Background(), ids[r.name]); err == nil {
					kept = append(kept, r.name)
				} else if !errors.Is(err, ErrNotFound) {
					t.Fatal(err)
				}
			}
			if d := cmp.Diff(tt.keep, kept); d != "" {
				t.Errorf("kept rows (-want +got):\n%s", d)
			}
			if fi, err := os.Stat(s.path + "-wal"); err == nil && fi.Size() != 0 {
				t.Errorf("WAL not truncated after the sweep: %d bytes", fi.Size())
			}
		})
	}
}

func TestSweepRemovesOrphanBlobs(t *testing.T) {
	c := newClock()
	s := openSwept(t, c, RetentionSettings{})
	orphan, err := s.PutBlob(strings.NewReader("left by a crash"))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.PutBlob(strings.NewReader("referenced"))
	if err != nil {
		t.Fatal(err)
	}
	young, err := s.PutBlob(strings.NewReader("intake in progress"))
	if err != nil {
		t.Fatal(err)
	}
	in := hl7Intake("pacs", "", RetryNormal)
	in.Blob = kept
	mustIntake(t, s, in)
	old := c.Now().Add(-2 * orphanAge)
	for _, n := range []string{orphan, kept} {
		if err := os.Chtimes(s.BlobPath(n), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(s.BlobPath(young), c.Now(), c.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{orphan: false, kept: true, young: true} {
		_, err := os.Stat(s.BlobPath(n))
		if got := err == nil; got != want {
			t.Errorf("blob %s exists = %v, want %v", n, got, want)
		}
	}
}

func TestStats(t *testing.T) {
	c := newClock()
	s := openSwept(t, c, RetentionSettings{})
	ids := map[string]int64{}
	for _, n := range []string{"a1", "a2", "a3", "b1", "c1"} {
		ids[n] = mustIntake(t, s, hl7Intake(n[:1], n, RetryNormal)).ID
		c.Advance(time.Second)
	}
	setState(t, s, ids["a1"], StateProcessed, AckDelivered, nil)
	setState(t, s, ids["a2"], StateInflight, AckPending, nil)
	setState(t, s, ids["b1"], StateFailed, AckNotOwed, nil)
	setState(t, s, ids["c1"], StateClaimed, AckPending, nil)
	sweep, err := s.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)

	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.DBSizeBytes <= 0 {
		t.Errorf("dbSizeBytes = %d", st.DBSizeBytes)
	}
	st.DBSizeBytes = 0
	want := Stats{
		Enabled:       true,
		CountsByState: StateCounts{Queued: 1, Claimed: 1, Inflight: 1, Processed: 1, Failed: 1},
		ChannelDepth: map[string]ChannelDepth{
			"a": {Queued: 1, Inflight: 1, OldestQueuedAgeMs: (time.Minute + 3*time.Second).Milliseconds()},
			"c": {Claimed: 1, OldestQueuedAgeMs: -1},
		},
		LastSweepAt: sweep.At.UnixMilli(),
	}
	if d := cmp.Diff(want, st); d != "" {
		t.Errorf("Stats (-want +got):\n%s", d)
	}

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	wantKeys := []string{"channelDepth", "countsByState", "dbSizeBytes", "enabled", "isLeader", "lastSweepAt",
		"lastSweepDeletedErrored", "lastSweepDeletedProcessed"}
	if d := cmp.Diff(wantKeys, got); d != "" {
		t.Errorf("JSON keys (-want +got):\n%s", d)
	}
	if !strings.Contains(string(keys["countsByState"]), `"nacked":0`) {
		t.Errorf("countsByState = %s", keys["countsByState"])
	}
	if !strings.Contains(string(keys["channelDepth"]), `"c":{"queued":0,"claimed":1,"inflight":0,"oldestQueuedAgeMs":-1}`) {
		t.Errorf("channelDepth = %s", keys["channelDepth"])
	}
}

func TestOperatorRetryAndPurge(t *testing.T) {
	c := newClock()
	s := openStore(t, c)
	ctx := context.Background()
	ids := map[State]int64{}
	for _, st := range []State{StateFailed, StateRejected, StateProcessed, StateQueued, StateNacked} {
		ids[st] = mustIntake(t, s, hl7Intake("c", string(st), RetryNormal)).ID
		if st != StateQueued {
			setState(t, s, ids[st], st, AckNotOwed, &Response{StatusCode: 503, Body: "x"})
		}
	}
	for st, id := range ids {
		err := s.Retry(ctx, id)
		switch st {
		case StateFailed, StateRejected:
			if err != nil {
				t.Errorf("Retry(%s): %v", st, err)
			}
			r := mustGet(t, s, id)
			if r.State != StateQueued || r.FailedAttempts != 0 || r.StatusCode != 0 || r.AckOutcome != AckPending {
				t.Errorf("retried %s row: %+v", st, r)
			}
		default:
			if !errors.Is(err, ErrNotRetryable) {
				t.Errorf("Retry(%s) err = %v, want ErrNotRetryable", st, err)
			}
		}
	}
	if err := s.Retry(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry(unknown) err = %v", err)
	}

	list, err := s.List(ctx, Filter{States: []State{StateQueued}})
	if err != nil {
		t.Fatal(err)
	}
	var listed []int64
	for _, r := range list {
		listed = append(listed, r.ID)
	}
	if d := cmp.Diff([]int64{ids[StateQueued], ids[StateRejected], ids[StateFailed]}, listed); d != "" {
		t.Errorf("List queued, newest first (-want +got):\n%s", d)
	}

	if _, err := s.Purge(ctx, Filter{States: []State{StateQueued}, Before: c.Now()}); err == nil {
		t.Error("Purge of queued rows allowed")
	}
	if _, err := s.Purge(ctx, Filter{States: []State{StateProcessed}}); err == nil {
		t.Error("Purge without a cut-off allowed")
	}
	n, err := s.Purge(ctx, Filter{States: []State{StateProcessed, StateNacked}, Before: c.Now()})
	if err != nil || n != 0 {
		t.Errorf("Purge of rows settled just now = %d, %v", n, err)
	}
	c.Advance(time.Minute)
	n, err = s.Purge(ctx, Filter{States: []State{StateProcessed, StateNacked}, Channel: "c", Before: c.Now()})
	if err != nil || n != 2 {
		t.Errorf("Purge = %d, %v; want 2", n, err)
	}
}
