package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

type harness struct {
	t       *testing.T
	c       *clock
	s       *Store
	link    *fakeLink
	d       *Dispatcher
	settled *settledLog
}

func newHarness(t *testing.T, live bool, mod ...func(*DispatchOptions)) *harness {
	t.Helper()
	c := newClock()
	h := &harness{t: t, c: c, s: openStore(t, c), link: newFakeLink(live), settled: &settledLog{}}
	h.d = h.start(mod...)
	return h
}

// start runs a dispatcher on h.s and waits until it leads.
func (h *harness) start(mod ...func(*DispatchOptions)) *Dispatcher {
	h.t.Helper()
	opt := DispatchOptions{OnSettled: h.settled.record, Now: h.c.Now}
	for _, m := range mod {
		m(&opt)
	}
	d := NewDispatcher(h.s, h.link, opt)
	d.rnd = func(n int64) int64 { return n - 1 } // the top of the jitter range
	d.Start(context.Background())
	h.t.Cleanup(func() { _ = d.Stop(context.Background()) })
	if !d.IsLeader() {
		h.t.Fatal("dispatcher did not take the lease")
	}
	return d
}

func (h *harness) intake(in Intake) int64 {
	h.t.Helper()
	id := mustIntake(h.t, h.s, in).ID
	h.d.Wake(in.Channel)
	return id
}

// sendAndAnswer simulates the socket write and the server's answer.
func (h *harness) sendAndAnswer(m *protocol.Message, status int, body string) {
	h.d.OnSent(m)
	if !h.d.HandleResponse(response(m, status, body)) {
		h.t.Fatalf("response to %s not consumed", m.Callback)
	}
}

func (h *harness) counts(channel string) StateCounts {
	h.t.Helper()
	sum, err := h.s.Summary(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, c := range sum {
		if c.Channel == channel {
			return c.Counts
		}
	}
	return StateCounts{}
}

func TestDispatchFIFOPerChannel(t *testing.T) {
	h := newHarness(t, true)
	ids := map[string][]int64{}
	for i := range 3 {
		for _, ch := range []string{"a", "b"} {
			ids[ch] = append(ids[ch], h.intake(hl7Intake(ch, fmt.Sprintf("%s%d", ch, i), RetryGuaranteed)))
		}
	}
	first := map[string]*protocol.Message{}
	for range 2 {
		m := h.link.next(t)
		first[m.Channel] = m
	}
	// One row in flight per channel: the rest wait until it is answered.
	for _, ch := range []string{"a", "b"} {
		m := first[ch]
		if m == nil {
			t.Fatalf("no first message for channel %s", ch)
		}
		row := mustGet(t, h.s, ids[ch][0])
		want := &protocol.Message{Type: protocol.TypeTransmitRequest, Channel: ch, Remote: "10.0.0.5:51234",
			ContentType: protocol.ContentTypeHL7, Body: hl7Message(ch + "0"), Callback: row.CallbackID + "#1"}
		if d := cmp.Diff(want, m); d != "" {
			t.Errorf("first transmit of %s (-want +got):\n%s", ch, d)
		}
		if got := h.counts(ch); got.Claimed != 1 || got.Queued != 2 {
			t.Errorf("channel %s while waiting: %+v", ch, got)
		}
	}
	order := map[string][]string{}
	pending := first
	for len(pending) > 0 {
		for ch, m := range pending {
			order[ch] = append(order[ch], m.Body)
			h.sendAndAnswer(m, 200, ackBody("AA", "x"))
			delete(pending, ch)
		}
		if len(order["a"])+len(order["b"]) < 6 {
			m := h.link.next(t)
			pending[m.Channel] = m
		}
	}
	for _, ch := range []string{"a", "b"} {
		want := []string{hl7Message(ch + "0"), hl7Message(ch + "1"), hl7Message(ch + "2")}
		if d := cmp.Diff(want, order[ch]); d != "" {
			t.Errorf("channel %s order (-want +got):\n%s", ch, d)
		}
		for _, id := range ids[ch] {
			waitState(t, h.s, id, StateProcessed)
			if r := mustGet(t, h.s, id); r.SentAt.IsZero() {
				t.Errorf("row %d processed without its send time", id)
			}
		}
	}
	eventually(t, "six settlements", func() bool { return h.settled.len() == 6 })
	var settledA []int64
	for i := range 6 {
		if s := h.settled.at(i); s.Row.Channel == "a" {
			settledA = append(settledA, s.Row.ID)
			if !s.Relay || s.Response.Body != ackBody("AA", "x") {
				t.Errorf("settled %+v", s)
			}
		}
	}
	if d := cmp.Diff(ids["a"], settledA); d != "" {
		t.Errorf("OnSettled order of channel a (-want +got):\n%s", d)
	}
	eventually(t, "ack outcomes recorded", func() bool { return mustGet(t, h.s, ids["b"][2]).AckOutcome == AckDelivered })
}

// TestDispatchOutcomes is scenario 55 and the rest of the §6.5 table.
func TestDispatchOutcomes(t *testing.T) {
	jsonErr := `{"resourceType":"OperationOutcome"}`
	tests := []struct {
		name      string
		mode      RetryMode
		status    int
		body      string
		wantState State
		wantCode  string
		wantRelay bool // for terminal states
	}{
		{name: "normal 200", mode: RetryNormal, status: 200, body: ackBody("AA", "1"), wantState: StateProcessed, wantRelay: true},
		{name: "normal 200 with AR is the Bot's business", mode: RetryNormal, status: 200, body: ackBody("AR", "1"), wantState: StateProcessed, wantRelay: true},
		{name: "normal 503 retried", mode: RetryNormal, status: 503, body: jsonErr, wantState: StateQueued, wantCode: CodeServerStatus},
		{name: "normal 429 retried", mode: RetryNormal, status: 429, body: jsonErr, wantState: StateQueued, wantCode: CodeServerStatus},
		{name: "normal 400 rejected", mode: RetryNormal, status: 400, body: jsonErr, wantState: StateRejected, wantCode: CodeServerStatus},
		{name: "guaranteed AA", mode: RetryGuaranteed, status: 200, body: ackBody("AA", "1"), wantState: StateProcessed, wantRelay: true},
		{name: "guaranteed CA", mode: RetryGuaranteed, status: 200, body: ackBody("CA", "1"), wantState: StateProcessed, wantRelay: true},
		{name: "guaranteed AE retried without relay", mode: RetryGuaranteed, status: 200, body: ackBody("AE", "1"), wantState: StateQueued, wantCode: CodeNegativeAck},
		{name: "guaranteed CE retried", mode: RetryGuaranteed, status: 400, body: ackBody("CE", "1"), wantState: StateQueued, wantCode: CodeNegativeAck},
		{name: "guaranteed AR relayed and rejected", mode: RetryGuaranteed, status: 200, body: ackBody("AR", "1"), wantState: StateRejected, wantCode: CodeNegativeAck, wantRelay: true},
		{name: "guaranteed CR relayed and rejected", mode: RetryGuaranteed, status: 200, body: ackBody("CR", "1"), wantState: StateRejected, wantCode: CodeNegativeAck, wantRelay: true},
		{name: "guaranteed no ACK, 400 retried", mode: RetryGuaranteed, status: 400, body: jsonErr, wantState: StateQueued, wantCode: CodeServerStatus},
		{name: "guaranteed no ACK, 200 processed", mode: RetryGuaranteed, status: 200, body: "Bot execution logs:\n", wantState: StateProcessed, wantRelay: true},
		{name: "none 503 terminal", mode: RetryNone, status: 503, body: jsonErr, wantState: StateFailed, wantCode: CodeServerStatus},
		{name: "none 400 rejected", mode: RetryNone, status: 400, body: jsonErr, wantState: StateRejected, wantCode: CodeServerStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			id := h.intake(hl7Intake("c", "1", tt.mode))
			m := h.link.next(t)
			h.sendAndAnswer(m, tt.status, tt.body)
			waitState(t, h.s, id, tt.wantState)
			r := mustGet(t, h.s, id)
			if r.ErrorCode != tt.wantCode || r.StatusCode != tt.status || r.Response != tt.body {
				t.Errorf("row code=%q status=%d response=%q", r.ErrorCode, r.StatusCode, r.Response)
			}
			if tt.wantState == StateQueued {
				// Retry after base×mult^0 = 1 s (top of the jitter range).
				if want := h.c.Now().Add(time.Second); !r.NextAttemptAt.Equal(want) || r.FailedAttempts != 1 {
					t.Errorf("retry at %v after %d failures, want %v after 1", r.NextAttemptAt, r.FailedAttempts, want)
				}
				if n := h.settled.len(); n != 0 {
					t.Errorf("OnSettled called %d times for a retry", n)
				}
				return
			}
			eventually(t, "OnSettled", func() bool { return h.settled.len() == 1 })
			if got := h.settled.at(0); got.Relay != tt.wantRelay || got.Row.State != tt.wantState {
				t.Errorf("settled relay=%v state=%s, want %v %s", got.Relay, got.Row.State, tt.wantRelay, tt.wantState)
			}
			wantAck := AckNotOwed
			if tt.wantRelay {
				wantAck = AckDelivered
			}
			eventually(t, "ack outcome "+string(wantAck), func() bool { return mustGet(t, h.s, id).AckOutcome == wantAck })
		})
	}
}

// TestRetryBackoff is scenario 53: each retry carries the next attempt
// number under the same callback id, after min(max, base×2^(n−1)).
func TestRetryBackoff(t *testing.T) {
	h := newHarness(t, true)
	in := hl7Intake("c", "1", RetryNormal)
	in.Policy.MaxAttempts = 3
	id := h.intake(in)
	cb := mustGet(t, h.s, id).CallbackID
	var delays []time.Duration
	for attempt := 1; attempt <= 3; attempt++ {
		m := h.link.next(t)
		if want := fmt.Sprintf("%s#%d", cb, attempt); m.Callback != want {
			t.Fatalf("callback = %s, want %s", m.Callback, want)
		}
		h.sendAndAnswer(m, 503, "busy")
		if attempt == 3 {
			break
		}
		eventually(t, "retry scheduled", func() bool {
			r := mustGet(t, h.s, id)
			return r.State == StateQueued && r.FailedAttempts == attempt
		})
		d := mustGet(t, h.s, id).NextAttemptAt.Sub(h.c.Now())
		delays = append(delays, d)
		h.c.Advance(d)
		h.d.Wake("c")
	}
	waitState(t, h.s, id, StateFailed)
	r := mustGet(t, h.s, id)
	if want := "Server returned 503: busy (3 attempts exhausted)"; r.LastError != want || r.Attempt != 3 {
		t.Errorf("last error %q attempt %d, want %q 3", r.LastError, r.Attempt, want)
	}
	if d := cmp.Diff([]time.Duration{time.Second, 2 * time.Second}, delays); d != "" {
		t.Errorf("delays (-want +got):\n%s", d)
	}
}

func TestBackoffFormula(t *testing.T) {
	p := RetryPolicy{Mode: RetryNormal, BaseDelay: time.Second, MaxDelay: 10 * time.Second, Multiplier: 3}
	tests := []struct {
		failures int
		capped   time.Duration
	}{{1, time.Second}, {2, 3 * time.Second}, {3, 9 * time.Second}, {4, 10 * time.Second}, {1000, 10 * time.Second}}
	for _, tt := range tests {
		if got := p.capped(tt.failures); got != tt.capped {
			t.Errorf("capped(%d) = %v, want %v", tt.failures, got, tt.capped)
		}
		lo := p.delay(tt.failures, func(int64) int64 { return 0 })
		hi := p.delay(tt.failures, func(n int64) int64 { return n - 1 })
		if lo != tt.capped/2 || hi != tt.capped {
			t.Errorf("delay(%d) range [%v, %v], want [%v, %v]", tt.failures, lo, hi, tt.capped/2, tt.capped)
		}
	}
}

// TestStaleAttemptDiscarded: an answer to attempt 1 arriving while attempt 2
// is in flight must not settle the row.
func TestStaleAttemptDiscarded(t *testing.T) {
	h := newHarness(t, true)
	id := h.intake(hl7Intake("c", "1", RetryGuaranteed))
	first := h.link.next(t)
	h.d.OnSent(first)
	waitState(t, h.s, id, StateInflight)
	h.c.Advance(DefaultResponseTimeout)
	h.d.Wake("c")
	eventually(t, "timeout retry", func() bool { return mustGet(t, h.s, id).ErrorCode == CodeResponseTimeout })
	h.c.Advance(time.Second)
	h.d.Wake("c")
	second := h.link.next(t)
	if !strings.HasSuffix(second.Callback, "#2") {
		t.Fatalf("retry callback = %s", second.Callback)
	}
	h.d.OnSent(second)
	h.d.HandleResponse(response(first, 200, ackBody("AA", "1"))) // stale
	h.d.HandleResponse(response(second, 200, ackBody("AE", "1")))
	eventually(t, "AE retry", func() bool { return mustGet(t, h.s, id).FailedAttempts == 2 })
	if r := mustGet(t, h.s, id); r.State != StateQueued || r.ErrorCode != CodeNegativeAck {
		t.Errorf("row %s %s: the stale AA was applied", r.State, r.ErrorCode)
	}
}

// TestLateResponseSettles is scenario 57: an answer to the current attempt
// after its timeout still settles the row.
func TestLateResponseSettles(t *testing.T) {
	tests := []struct {
		name      string
		mode      RetryMode
		afterWait State // state after the timeout
	}{
		{name: "normal: failed row", mode: RetryNormal, afterWait: StateFailed},
		{name: "guaranteed: row waiting for its retry", mode: RetryGuaranteed, afterWait: StateQueued},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			id := h.intake(hl7Intake("c", "1", tt.mode))
			m := h.link.next(t)
			h.d.OnSent(m)
			waitState(t, h.s, id, StateInflight)
			h.c.Advance(DefaultResponseTimeout)
			h.d.Wake("c")
			eventually(t, "timeout", func() bool { return mustGet(t, h.s, id).ErrorCode == CodeResponseTimeout })
			if got := rowState(t, h.s, id); got != tt.afterWait {
				t.Fatalf("state after timeout = %s, want %s", got, tt.afterWait)
			}
			if !h.d.HandleResponse(response(m, 200, ackBody("AA", "1"))) {
				t.Fatal("late response not consumed")
			}
			waitState(t, h.s, id, StateProcessed)
			eventually(t, "relay", func() bool {
				n := h.settled.len()
				return n > 0 && h.settled.at(n-1).Relay
			})
			h.link.none(t)
		})
	}
}

// TestLinkDropBeforeSend: a claimed row the link has not written stays with
// the link across a reconnect and is sent once, with its attempt number.
func TestLinkDropBeforeSend(t *testing.T) {
	h := newHarness(t, true)
	id := h.intake(hl7Intake("c", "1", RetryNormal))
	m := h.link.next(t)
	h.link.setLive(false)
	h.d.LiveChanged(false)
	h.c.Advance(2 * DefaultResponseTimeout) // no deadline runs while down
	h.d.Wake("c")
	h.link.setLive(true)
	h.d.LiveChanged(true)
	if got := rowState(t, h.s, id); got != StateClaimed {
		t.Fatalf("state = %s, want claimed", got)
	}
	h.sendAndAnswer(m, 200, ackBody("AA", "1"))
	waitState(t, h.s, id, StateProcessed)
	if r := mustGet(t, h.s, id); r.Attempt != 1 {
		t.Errorf("attempt = %d, want 1", r.Attempt)
	}
	h.link.none(t)
}

// TestLinkDropAfterSend: the answer would come on the closed socket, so the
// attempt fails at once as ambiguous.
func TestLinkDropAfterSend(t *testing.T) {
	tests := []struct {
		mode RetryMode
		want State
	}{{RetryNormal, StateFailed}, {RetryGuaranteed, StateQueued}}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			h := newHarness(t, true)
			id := h.intake(hl7Intake("c", "1", tt.mode))
			h.d.OnSent(h.link.next(t))
			waitState(t, h.s, id, StateInflight)
			h.link.setLive(false)
			h.d.LiveChanged(false)
			eventually(t, "dispatch-failed", func() bool { return mustGet(t, h.s, id).ErrorCode == CodeDispatchFailed })
			if got := rowState(t, h.s, id); got != tt.want {
				t.Errorf("state = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestDispatchWhileDown is scenario 56: intake continues while the link is
// down and the backlog goes out in order after it comes back.
func TestDispatchWhileDown(t *testing.T) {
	h := newHarness(t, false)
	var ids []int64
	for i := range 3 {
		ids = append(ids, h.intake(hl7Intake("c", fmt.Sprint(i), RetryNormal)))
	}
	if got := h.counts("c"); got.Queued != 3 {
		t.Fatalf("counts while down = %+v", got)
	}
	h.link.setLive(true)
	h.d.LiveChanged(true)
	for i := range 3 {
		m := h.link.next(t)
		if m.Body != hl7Message(fmt.Sprint(i)) {
			t.Fatalf("message %d body = %q", i, m.Body)
		}
		h.sendAndAnswer(m, 200, ackBody("AA", fmt.Sprint(i)))
		waitState(t, h.s, ids[i], StateProcessed)
	}
}

func TestEnqueueRefusedRequeues(t *testing.T) {
	h := newHarness(t, true)
	h.link.mu.Lock()
	h.link.err = errors.New("queue full")
	h.link.mu.Unlock()
	id := h.intake(hl7Intake("c", "1", RetryNormal))
	eventually(t, "a refused attempt", func() bool { return mustGet(t, h.s, id).Attempt >= 1 })
	h.link.mu.Lock()
	h.link.err = nil
	h.link.mu.Unlock()
	m := h.link.next(t)
	h.sendAndAnswer(m, 200, ackBody("AA", "1"))
	waitState(t, h.s, id, StateProcessed)
	if r := mustGet(t, h.s, id); r.FailedAttempts != 0 {
		t.Errorf("refused enqueue counted as failure: %+v", r)
	}
}

// TestRecovery is scenario 52 at the queue level: what a new leader does
// with the rows of a process that stopped mid-dispatch.
func TestRecovery(t *testing.T) {
	tests := []struct {
		name      string
		mode      RetryMode
		sent      bool
		wantState State
		wantSend  bool
	}{
		{name: "claimed, never sent", mode: RetryNormal, wantState: StateClaimed, wantSend: true},
		{name: "in flight, normal", mode: RetryNormal, sent: true, wantState: StateFailed},
		{name: "in flight, none", mode: RetryNone, sent: true, wantState: StateFailed},
		{name: "in flight, guaranteed", mode: RetryGuaranteed, sent: true, wantState: StateClaimed, wantSend: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			id := h.intake(hl7Intake("c", "1", tt.mode))
			next := h.intake(hl7Intake("c", "2", tt.mode))
			m := h.link.next(t)
			if tt.sent {
				h.d.OnSent(m)
				waitState(t, h.s, id, StateInflight)
			}
			if err := h.d.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			h.d = h.start()
			if tt.wantSend {
				m2 := h.link.next(t)
				if !strings.HasSuffix(m2.Callback, "#2") || m2.Body != m.Body {
					t.Fatalf("resent %s %q", m2.Callback, m2.Body)
				}
				h.sendAndAnswer(m2, 200, ackBody("AA", "1"))
				waitState(t, h.s, id, StateProcessed)
			} else {
				r := mustGet(t, h.s, id)
				if r.State != tt.wantState || r.ErrorCode != CodeInterrupted {
					t.Fatalf("recovered row %s %s", r.State, r.ErrorCode)
				}
			}
			// The channel moves on to the next row.
			m3 := h.link.next(t)
			if m3.Body != hl7Message("2") {
				t.Fatalf("next body %q", m3.Body)
			}
			h.sendAndAnswer(m3, 200, ackBody("AA", "2"))
			waitState(t, h.s, next, StateProcessed)
		})
	}
}

func TestRecoveryMarksUnrelayedAnswersUndelivered(t *testing.T) {
	h := newHarness(t, false)
	id := h.intake(hl7Intake("c", "1", RetryNormal))
	setState(t, h.s, id, StateProcessed, AckPending, &Response{StatusCode: 200, Body: "ack"})
	if err := h.d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.d = h.start()
	if got := mustGet(t, h.s, id).AckOutcome; got != AckUndelivered {
		t.Errorf("ack outcome = %s, want undelivered", got)
	}
}

// TestLease: two stores on one file, as during an upgrade. Only the lease
// holder dispatches, intake works on both, and the other takes over once the
// lease expires.
func TestLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	ca, cb := newClock(), newClock()
	ha := &harness{t: t, c: ca, s: openAt(t, path, ca), link: newFakeLink(true), settled: &settledLog{}}
	ha.d = ha.start()
	hb := &harness{t: t, c: cb, s: openAt(t, path, cb), link: newFakeLink(true), settled: &settledLog{}}
	db := NewDispatcher(hb.s, hb.link, DispatchOptions{Now: cb.Now})
	db.Start(context.Background())
	t.Cleanup(func() { _ = db.Stop(context.Background()) })
	hb.d = db
	if db.IsLeader() {
		t.Fatal("second process took a live lease")
	}

	// Intake on the follower; the leader finds it on its next poll.
	id := mustIntake(t, hb.s, hl7Intake("c", "1", RetryGuaranteed)).ID
	hb.d.Wake("c")
	ha.d.LiveChanged(true)
	m := ha.link.next(t)
	ha.sendAndAnswer(m, 200, ackBody("AA", "1"))
	waitState(t, ha.s, id, StateProcessed)
	hb.link.none(t)

	// The leader stops renewing (its clock stands still); after the TTL the
	// follower takes over, and the old leader steps down on its next renew.
	cb.Advance(leaseTTL + time.Second)
	db.LiveChanged(true) // polls now
	eventually(t, "takeover", db.IsLeader)
	ca.Advance(leaseRenew)
	ha.d.LiveChanged(true)
	eventually(t, "old leader to step down", func() bool { return !ha.d.IsLeader() })
	li, err := hb.s.Lease(context.Background())
	if err != nil || !li.Mine {
		t.Errorf("lease = %+v, %v", li, err)
	}
	id2 := mustIntake(t, ha.s, hl7Intake("c", "2", RetryGuaranteed)).ID
	hb.d.LiveChanged(true)
	m2 := hb.link.next(t)
	hb.sendAndAnswer(m2, 200, ackBody("AA", "2"))
	waitState(t, hb.s, id2, StateProcessed)
	ha.link.none(t)
}

func TestBlobPrepare(t *testing.T) {
	var prepared atomic.Int32
	var fail atomic.Bool
	fail.Store(true)
	var h *harness
	h = newHarness(t, true, func(o *DispatchOptions) {
		o.Prepare = func(ctx context.Context, r Row) (string, error) {
			prepared.Add(1)
			if fail.Load() {
				return "", errors.New("upload failed")
			}
			data, err := os.ReadFile(h.s.BlobPath(r.Blob))
			if err != nil {
				return "", err
			}
			return fmt.Sprintf(`{"binary":{"reference":"Binary/%d"},"size":%d}`, r.ID, len(data)), nil
		}
	})
	name, err := h.s.PutBlob(strings.NewReader("DICM-data"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(h.s.BlobPath(name)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("blob file: %v %v", fi, err)
	}
	in := Intake{Kind: KindDICOM, Channel: "pacs", Remote: "MODALITY", ContentType: protocol.ContentTypeJSON,
		Body: `{"binary":{}}`, Blob: name, Policy: DefaultRetryPolicy(RetryNormal)}
	id := h.intake(in)
	eventually(t, "prepare failure retry", func() bool { return mustGet(t, h.s, id).FailedAttempts == 1 })
	fail.Store(false)
	h.c.Advance(time.Second)
	h.d.Wake("pacs")
	m := h.link.next(t)
	want := fmt.Sprintf(`{"binary":{"reference":"Binary/%d"},"size":9}`, id)
	if m.Body != want || m.ContentType != protocol.ContentTypeJSON || m.Remote != "MODALITY" {
		t.Fatalf("transmit = %+v", m)
	}
	// A retry reuses the prepared body instead of uploading again.
	h.sendAndAnswer(m, 503, "")
	eventually(t, "server retry", func() bool { return mustGet(t, h.s, id).FailedAttempts == 2 })
	h.c.Advance(2 * time.Second)
	h.d.Wake("pacs")
	m = h.link.next(t)
	h.sendAndAnswer(m, 200, "{}")
	waitState(t, h.s, id, StateProcessed)
	if m.Body != want || prepared.Load() != 2 {
		t.Errorf("retry body %q after %d Prepare calls", m.Body, prepared.Load())
	}

	// Purging the row removes its file.
	h.c.Advance(time.Hour)
	n, err := h.s.Purge(context.Background(), Filter{States: []State{StateProcessed}, Before: h.c.Now()})
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if _, err := os.Stat(h.s.BlobPath(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blob survived its row: %v", err)
	}
}

func TestPutBlobFailureLeavesNothing(t *testing.T) {
	s := openStore(t, newClock())
	_, err := s.PutBlob(io.MultiReader(strings.NewReader("part"), errReader{}))
	if err == nil {
		t.Fatal("PutBlob succeeded")
	}
	entries, _ := os.ReadDir(s.blobDir())
	if len(entries) != 0 {
		t.Errorf("left %d files", len(entries))
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("association aborted") }

func TestHandleResponseIgnoresLegacyCallbacks(t *testing.T) {
	h := newHarness(t, true)
	for _, cb := range []string{"", "Agent/agent-1-6f1c", "agent:cb:host:uuid", "Agent/x#0", "Agent/x#two"} {
		m := &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: "c", Callback: cb, StatusCode: 200}
		if h.d.HandleResponse(m) {
			t.Errorf("HandleResponse consumed callback %q", cb)
		}
	}
	unknown := &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: "c", Callback: "Agent/agent-1-unknown#1"}
	if !h.d.HandleResponse(unknown) {
		t.Error("durable-form callback not consumed")
	}
}

// TestReplayAfterDispatch is scenario 54 end to end: a retransmission of a
// processed message whose ACK never reached the device gets the stored ACK,
// and nothing goes to the server again.
func TestReplayAfterDispatch(t *testing.T) {
	h := newHarness(t, true)
	h.settled.ack = AckUndelivered // the device hung up before the ACK
	in := hl7Intake("c", "MSG1", RetryGuaranteed)
	id := h.intake(in)
	h.sendAndAnswer(h.link.next(t), 200, ackBody("AA", "MSG1"))
	eventually(t, "undelivered", func() bool { return mustGet(t, h.s, id).AckOutcome == AckUndelivered })

	res := mustIntake(t, h.s, in)
	want := &Response{StatusCode: 200, ContentType: protocol.ContentTypeHL7, Body: ackBody("AA", "MSG1")}
	if res.Duplicate != DuplicateReplay || res.ID != id {
		t.Fatalf("retransmission = %+v", res)
	}
	if d := cmp.Diff(want, res.PriorResponse); d != "" {
		t.Errorf("replayed answer (-want +got):\n%s", d)
	}
	if err := h.s.MarkAck(context.Background(), res.ID, AckDelivered); err != nil {
		t.Fatal(err)
	}
	h.d.Wake("c")
	if got := mustGet(t, h.s, id); got.AckOutcome != AckDelivered || got.Attempt != 1 {
		t.Errorf("after replay: ack %s attempt %d", got.AckOutcome, got.Attempt)
	}
	h.link.none(t)
}

// TestDispatchPipelinesConnections: rows of different device connections
// share the round trip, up to MaxInFlight, always in id order; a row whose
// connection has one in flight holds back the rows behind it.
func TestDispatchPipelinesConnections(t *testing.T) {
	tests := []struct {
		name        string
		maxInFlight int
		remotes     []string
		first       int // sent before any answer
		answer      int // answering this one of the first lets the next one go
	}{
		{name: "distinct connections", remotes: []string{"a:1", "b:1", "c:1"}, first: 3},
		{name: "same connection waits", remotes: []string{"a:1", "b:1", "a:1", "c:1"}, first: 2, answer: 0},
		{name: "window", maxInFlight: 2, remotes: []string{"a:1", "b:1", "c:1"}, first: 2, answer: 1},
		{name: "one at a time", maxInFlight: 1, remotes: []string{"a:1", "b:1"}, first: 1, answer: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true, func(o *DispatchOptions) { o.MaxInFlight = tt.maxInFlight })
			var ids []int64
			for i, r := range tt.remotes {
				in := hl7Intake("c", fmt.Sprint(i), RetryGuaranteed)
				in.Remote = r
				ids = append(ids, mustIntake(t, h.s, in).ID)
			}
			h.d.Wake("c")
			var sent []*protocol.Message
			for range tt.first {
				sent = append(sent, h.link.next(t))
			}
			for i, m := range sent {
				if m.Body != hl7Message(fmt.Sprint(i)) {
					t.Fatalf("send %d = %q, want message %d", i, m.Body, i)
				}
			}
			if got := h.counts("c"); got.Claimed != int64(tt.first) || got.Queued != int64(len(tt.remotes)-tt.first) {
				t.Fatalf("counts = %+v, want %d claimed", got, tt.first)
			}
			h.link.none(t)
			if tt.first == len(tt.remotes) {
				return
			}
			h.sendAndAnswer(sent[tt.answer], 200, ackBody("AA", fmt.Sprint(tt.answer)))
			waitState(t, h.s, ids[tt.answer], StateProcessed)
			if m := h.link.next(t); m.Body != hl7Message(fmt.Sprint(tt.first)) {
				t.Fatalf("after the answer: %q, want message %d", m.Body, tt.first)
			}
		})
	}
}
