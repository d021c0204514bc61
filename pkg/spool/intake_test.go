package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

func TestIntakeSurvivesReopen(t *testing.T) {
	tests := []struct {
		name  string
		close bool
	}{
		{name: "after Close", close: true},
		// A second handle while the first is still open sees every commit:
		// the file, not the process, holds the data.
		{name: "handle left open", close: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), DefaultFileName)
			c := newClock()
			s := openAt(t, path, c)
			var ids []int64
			var mu sync.Mutex
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 25 {
						res := mustIntake(t, s, hl7Intake(fmt.Sprintf("ch-%d", g%3), fmt.Sprintf("%d-%d", g, i), RetryGuaranteed))
						mu.Lock()
						ids = append(ids, res.ID)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if tt.close {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			s2 := openAt(t, path, c)
			for _, id := range ids {
				r := mustGet(t, s2, id)
				if r.State != StateQueued || r.Body != hl7Message(r.ControlID) {
					t.Fatalf("row %d = %s %q", id, r.State, r.Body)
				}
			}
			sum, err := s2.Summary(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, c := range sum {
				total += c.Counts.Queued
			}
			if total != int64(len(ids)) {
				t.Errorf("queued = %d, want %d", total, len(ids))
			}
		})
	}
}

func TestIntakeStoresRow(t *testing.T) {
	c := newClock()
	s := openStore(t, c)
	in := hl7Intake("adt", "MSG00001", RetryNormal)
	res := mustIntake(t, s, in)
	if res.Duplicate != DuplicateNone || res.SeqNo != -1 {
		t.Errorf("result = %+v", res)
	}
	r := mustGet(t, s, res.ID)
	if !strings.HasPrefix(r.CallbackID, "Agent/"+testAgent+"-") || len(r.CallbackID) != len("Agent/"+testAgent+"-")+36 {
		t.Errorf("callback id = %q", r.CallbackID)
	}
	r.CallbackID = ""
	want := Row{
		ID: res.ID, Kind: KindHL7, Channel: "adt", Remote: "10.0.0.5:51234", ContentType: protocol.ContentTypeHL7,
		ControlID: "MSG00001", MsgType: "ADT^A01", State: StateQueued, Policy: DefaultRetryPolicy(RetryNormal),
		SeqNo: -1, AckOutcome: AckPending, ReceivedAt: c.Now(), Original: in.Original, Body: in.Body,
	}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("row (-want +got):\n%s", d)
	}
}

func TestIntakeDuplicates(t *testing.T) {
	settled := &Response{StatusCode: 200, ContentType: protocol.ContentTypeHL7, Body: ackBody("AA", "X1")}
	tests := []struct {
		name      string
		behavior  DuplicateBehavior
		prior     State      // state the first row is moved to
		priorAck  AckOutcome // its ack outcome
		same      bool       // retransmission has identical bytes
		want      DuplicateKind
		wantReply *Response
	}{
		{name: "identical while queued", behavior: DuplicatesIdempotent, prior: StateQueued, same: true, want: DuplicateReplay},
		{name: "identical after processing replays the answer", behavior: DuplicatesIdempotent, prior: StateProcessed,
			priorAck: AckUndelivered, same: true, want: DuplicateReplay, wantReply: settled},
		{name: "identical after a rejection without relay", behavior: DuplicatesIdempotent, prior: StateRejected,
			priorAck: AckNotOwed, same: true, want: DuplicateReplay},
		{name: "identical after failure", behavior: DuplicatesIdempotent, prior: StateFailed, priorAck: AckNotOwed, same: true, want: DuplicateReplay},
		{name: "different bytes", behavior: DuplicatesIdempotent, prior: StateQueued, want: DuplicateConflict},
		{name: "different bytes after processing", behavior: DuplicatesIdempotent, prior: StateProcessed, priorAck: AckDelivered, want: DuplicateConflict},
		{name: "reject mode, identical", behavior: DuplicatesReject, prior: StateQueued, same: true, want: DuplicateConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, newClock())
			in := hl7Intake("adt", "X1", RetryNormal)
			in.Duplicates = tt.behavior
			in.AssignSeqNo = true
			in.Finalize = func(seq int64) (string, error) { return fmt.Sprintf("%s|seq=%d", in.Body, seq), nil }
			first := mustIntake(t, s, in)
			if tt.prior != StateQueued {
				setState(t, s, first.ID, tt.prior, tt.priorAck, settled)
			}
			again := in
			if !tt.same {
				again.Original = []byte(in.Body + "\rNTE|1|changed")
				again.Body = string(again.Original)
			}
			res := mustIntake(t, s, again)
			if res.Duplicate != tt.want {
				t.Fatalf("Duplicate = %v, want %v", res.Duplicate, tt.want)
			}
			if d := cmp.Diff(tt.wantReply, res.PriorResponse); d != "" {
				t.Errorf("PriorResponse (-want +got):\n%s", d)
			}
			if res.SeqNo != -1 {
				t.Errorf("duplicate got seq %d", res.SeqNo)
			}
			sum, err := s.Summary(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			switch tt.want {
			case DuplicateReplay:
				if res.ID != first.ID || sum[0].Counts.Nacked != 0 {
					t.Errorf("replay: id %d (first %d), nacked %d", res.ID, first.ID, sum[0].Counts.Nacked)
				}
			case DuplicateConflict:
				audit := mustGet(t, s, res.ID)
				if audit.State != StateNacked || audit.LastError != ReasonDuplicate || audit.ErrorCode != CodeDuplicate ||
					audit.AckOutcome != AckNotOwed || audit.SeqNo != -1 {
					t.Errorf("audit row = %+v", audit)
				}
			}
			// The next new message gets the next number: duplicates burn none.
			next := in
			next.ControlID = "X2"
			if got := mustIntake(t, s, next).SeqNo; got != 1 {
				t.Errorf("seq after duplicate = %d, want 1", got)
			}
		})
	}
}

// setState moves a row as the dispatcher would, for tests of later steps.
func setState(t testing.TB, s *Store, id int64, st State, ack AckOutcome, resp *Response) {
	t.Helper()
	err := s.write(context.Background(), func(tx *wtx) error {
		var status sql.NullInt64
		var body []byte
		if resp != nil && (st == StateProcessed || st == StateRejected) {
			status = sql.NullInt64{Int64: int64(resp.StatusCode), Valid: true}
			body = []byte(resp.Body)
		}
		return tx.exec(`UPDATE messages SET state = ?, ack_outcome = ?, server_status_code = ?,
			server_content_type = ?, server_response_body = ?,
			processed_at = CASE WHEN ? = 'processed' THEN ? END,
			errored_at = CASE WHEN ? IN ('rejected', 'failed', 'nacked') THEN ? END WHERE id = ?`,
			st, ack, status, respType(resp), body, st, tx.nowMs(), st, tx.nowMs(), id)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func respType(r *Response) sql.NullString {
	if r == nil {
		return sql.NullString{}
	}
	return nullString(r.ContentType)
}

func TestAssignSeqNoPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	c := newClock()
	seqIntake := func(ch, id string) Intake {
		in := hl7Intake(ch, id, RetryGuaranteed)
		in.AssignSeqNo = true
		in.Finalize = func(seq int64) (string, error) {
			if id == "bad" {
				return "", errors.New("no MSH segment")
			}
			return fmt.Sprintf("MSH-13=%d", seq), nil
		}
		return in
	}
	var got []string
	s := openAt(t, path, c)
	for _, id := range []string{"a", "b", "c"} {
		res := mustIntake(t, s, seqIntake("lab", id))
		got = append(got, fmt.Sprintf("%d:%s", res.SeqNo, mustGet(t, s, res.ID).Body))
	}
	// A failed finalize rolls its number back.
	if _, err := s.Intake(context.Background(), seqIntake("lab", "bad")); err == nil {
		t.Fatal("Intake with a failing Finalize succeeded")
	}
	got = append(got, fmt.Sprintf("other:%d", mustIntake(t, s, seqIntake("other", "a")).SeqNo))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, c)
	got = append(got, fmt.Sprintf("%d", mustIntake(t, s, seqIntake("lab", "d")).SeqNo))
	want := []string{"0:MSH-13=0", "1:MSH-13=1", "2:MSH-13=2", "other:0", "3"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("sequence (-want +got):\n%s", d)
	}
}

func TestIntakeValidation(t *testing.T) {
	s := openStore(t, newClock())
	base := hl7Intake("c", "1", RetryNormal)
	tests := []struct {
		name string
		mod  func(*Intake)
	}{
		{"unknown kind", func(in *Intake) { in.Kind = "fax" }},
		{"no channel", func(in *Intake) { in.Channel = "" }},
		{"empty body", func(in *Intake) { in.Body = "" }},
		{"seq without finalize", func(in *Intake) { in.AssignSeqNo = true }},
		{"bad duplicate behaviour", func(in *Intake) { in.Duplicates = "ignore" }},
		{"bad retry mode", func(in *Intake) { in.Policy.Mode = "always" }},
		{"negative delay", func(in *Intake) { in.Policy.BaseDelay = -1 }},
		{"blob name outside the blob directory", func(in *Intake) { in.Blob = "../../etc/passwd" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			tt.mod(&in)
			if _, err := s.Intake(context.Background(), in); !errors.Is(err, ErrInvalidIntake) {
				t.Errorf("err = %v, want ErrInvalidIntake", err)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	s := openStore(t, newClock())
	in := hl7Intake("c", "1", RetryNormal)
	in.Policy = RetryPolicy{BaseDelay: 5000e6, MaxDelay: 1000e6}
	r := mustGet(t, s, mustIntake(t, s, in).ID)
	want := RetryPolicy{Mode: RetryGuaranteed, BaseDelay: 5000e6, MaxDelay: 5000e6, Multiplier: 2}
	if d := cmp.Diff(want, r.Policy); d != "" {
		t.Errorf("stored policy (-want +got):\n%s", d)
	}
}

// TestStorageFull fills a size-capped database: intakes fail with an error
// (the agent answers CE), earlier rows stay intact, the file passes an
// integrity check, and intake works again once space is available.
func TestStorageFull(t *testing.T) {
	s := openStore(t, newClock())
	ctx := context.Background()
	setMaxPages := func(extra int) {
		t.Helper()
		err := s.writeStandalone(ctx, func(tx *wtx) error {
			var pages int
			if err := tx.queryRow("PRAGMA page_count").Scan(&pages); err != nil {
				return err
			}
			return tx.exec(fmt.Sprintf("PRAGMA max_page_count = %d", pages+extra))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setMaxPages(4)
	big := strings.Repeat("OBX|1|TX|||", 400) // several pages per row
	var stored []int64
	var failures int
	for i := range 40 {
		in := hl7Intake("c", fmt.Sprint(i), RetryNormal)
		in.Body, in.Original = big, []byte(big)
		res, err := s.Intake(ctx, in)
		if err != nil {
			failures++
			if !strings.Contains(err.Error(), "full") {
				t.Errorf("intake %d: err = %v, want a full-database error", i, err)
			}
			continue
		}
		stored = append(stored, res.ID)
	}
	if failures == 0 {
		t.Fatal("no intake failed; the cap did not bite")
	}
	var check string
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	for _, id := range stored {
		if r := mustGet(t, s, id); r.Body != big {
			t.Fatalf("row %d damaged", id)
		}
	}
	setMaxPages(1000)
	mustIntake(t, s, hl7Intake("c", "after", RetryNormal))
}

// TestBatchIsolatesFailures puts intakes into one group commit and fails
// one of them: the others commit, and the failed one leaves no trace, not
// even a consumed sequence number.
func TestBatchIsolatesFailures(t *testing.T) {
	s := openStore(t, newClock())
	eventually(t, "sweep at open", func() bool { return s.sweep.Load() != nil }) // its writes would join the batch
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	blocked := make(chan error, 1)
	go func() { // holds the committer so that the intakes queue up
		blocked <- s.writeStandalone(ctx, func(*wtx) error { close(started); <-release; return nil })
	}()
	<-started

	names := []string{"a", "bad", "c", "a-again"}
	results := make([]IntakeResult, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		in := hl7Intake("c", strings.TrimSuffix(n, "-again"), RetryNormal)
		if n == "a-again" {
			in.Original = []byte("different")
		}
		in.AssignSeqNo = true
		in.Finalize = func(seq int64) (string, error) {
			if n == "bad" {
				return "", errors.New("cannot set MSH-13")
			}
			return fmt.Sprint(seq), nil
		}
		wg.Go(func() { results[i], errs[i] = s.Intake(ctx, in) })
	}
	eventually(t, "intakes queued", func() bool { return len(s.ops) == len(names) })
	close(release)
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if errs[1] == nil || errs[0] != nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("errors = %v", errs)
	}
	got := map[string]string{}
	for i, n := range names {
		if errs[i] == nil {
			r := mustGet(t, s, results[i].ID)
			got[n] = fmt.Sprintf("%s seq=%d", r.State, results[i].SeqNo)
		}
	}
	// Order inside a batch follows arrival: whichever of a and a-again came
	// first is queued and the other is the conflict; the two queued rows
	// have numbers 0 and 1.
	queued := []string{got["c"]}
	switch {
	case got["a-again"] == "nacked seq=-1":
		queued = append(queued, got["a"])
	case got["a"] == "nacked seq=-1":
		queued = append(queued, got["a-again"])
	}
	slices.Sort(queued)
	if !slices.Equal(queued, []string{"queued seq=0", "queued seq=1"}) {
		t.Errorf("rows = %v", got)
	}
}
