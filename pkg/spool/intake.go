package spool

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Message kinds. The kind only labels the row; dispatch is the same for all.
const (
	KindHL7   = "hl7"
	KindBytes = "bytes"
	KindASTM  = "astm"
	KindDICOM = "dicom"
)

// DuplicateBehavior selects what a repeated HL7 control id gets (§6.3).
type DuplicateBehavior string

// Duplicate behaviours.
const (
	// DuplicatesIdempotent replays the earlier answer for an identical
	// retransmission and rejects a different message with the same id.
	DuplicatesIdempotent DuplicateBehavior = "idempotent"
	// DuplicatesReject rejects every reuse of a control id.
	DuplicatesReject DuplicateBehavior = "reject"
)

// ParseDuplicateBehavior validates a duplicateBehavior value.
func ParseDuplicateBehavior(v string) (DuplicateBehavior, error) {
	switch b := DuplicateBehavior(v); b {
	case DuplicatesIdempotent, DuplicatesReject:
		return b, nil
	}
	return "", fmt.Errorf("unknown duplicate behaviour %q: use idempotent or reject", v)
}

// Intake is one inbound message to persist.
type Intake struct {
	Kind        string // KindHL7, KindBytes, KindASTM or KindDICOM
	Channel     string
	Remote      string // device address (or calling AE title), echoed on the wire
	ContentType string // of the transmit request
	// ControlID (HL7 MSH-10) enables duplicate detection per channel.
	ControlID string
	MsgType   string // HL7 MSH-9, for operators
	Original  []byte // as received; duplicates are compared on these bytes
	Body      string // what is dispatched, unless Finalize provides it
	Blob      string // a PutBlob name whose content Prepare turns into the body
	// AssignSeqNo allocates the channel's next MSH-13 number (from 0) in the
	// same transaction as the insert and passes it to Finalize, which
	// returns the body to dispatch. Finalize runs on the committer: it must
	// be quick and must not call the Store.
	AssignSeqNo bool
	Finalize    func(seqNo int64) (string, error)
	Duplicates  DuplicateBehavior // default idempotent
	Policy      RetryPolicy       // zero fields take the defaults, mode guaranteed
	// Unacknowledged says the device is told nothing before the server's
	// answer (HL7 original mode), so the commit need not wait for a sync:
	// it survives a crash of the process, and if a power cut takes it the
	// device, still waiting for its answer, sends the message again.
	Unacknowledged bool
}

// DuplicateKind tells how an intake matched an earlier message.
type DuplicateKind int

// Duplicate outcomes.
const (
	DuplicateNone     DuplicateKind = iota // a new row was queued
	DuplicateReplay                        // identical retransmission: nothing stored, answer again
	DuplicateConflict                      // control id reused: a nacked audit row was stored; send CR/AR with ReasonDuplicate
)

// Response is a server answer kept with a row.
type Response struct {
	StatusCode  int
	ContentType string
	Body        string
}

// IntakeResult reports what Intake stored.
type IntakeResult struct {
	// ID is the new row, the nacked audit row of a conflict, or the earlier
	// row a replay matched (pass it to MarkAck after relaying PriorResponse).
	ID        int64
	SeqNo     int64 // the assigned MSH-13, or -1
	Duplicate DuplicateKind
	// PriorResponse is set for a replay of a settled message whose answer
	// is owed to the device: relay it (through the ack policy) instead of
	// the commit ACK.
	PriorResponse *Response
}

// ErrInvalidIntake is wrapped by Intake for messages it refuses before
// touching the database.
var ErrInvalidIntake = errors.New("spool: invalid intake")

func (in *Intake) validate() error {
	switch {
	case in.Kind != KindHL7 && in.Kind != KindBytes && in.Kind != KindASTM && in.Kind != KindDICOM:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidIntake, in.Kind)
	case in.Channel == "":
		return fmt.Errorf("%w: no channel", ErrInvalidIntake)
	case in.AssignSeqNo && in.Finalize == nil:
		return fmt.Errorf("%w: AssignSeqNo needs Finalize", ErrInvalidIntake)
	case in.Body == "" && !in.AssignSeqNo && in.Blob == "":
		return fmt.Errorf("%w: empty body", ErrInvalidIntake)
	case in.Blob != "" && !validBlobName(in.Blob):
		return fmt.Errorf("%w: bad blob name", ErrInvalidIntake)
	}
	if in.Duplicates == "" {
		in.Duplicates = DuplicatesIdempotent
	}
	if _, err := ParseDuplicateBehavior(string(in.Duplicates)); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidIntake, err)
	}
	p, err := in.Policy.normalize()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidIntake, err)
	}
	in.Policy = p
	return nil
}

// Intake persists one inbound message and returns once the transaction that
// holds it is durable on disk (unless Unacknowledged); only then may the
// device be acknowledged.
// Concurrent intakes share a commit. An error means nothing was stored:
// answer CE (AE in AA mode). When ctx ends before the message reached the
// committer Intake returns ctx's error; after that it waits for the commit.
func (s *Store) Intake(ctx context.Context, in Intake) (IntakeResult, error) {
	if err := in.validate(); err != nil {
		return IntakeResult{}, err
	}
	var res IntakeResult
	o := &op{fn: func(tx *wtx) error {
		res = IntakeResult{SeqNo: -1}
		return tx.intake(&in, &res)
	}, relaxed: in.Unacknowledged, done: make(chan error, 1)}
	err := s.submit(ctx, o)
	if err != nil {
		return IntakeResult{}, err
	}
	return res, nil
}

func (tx *wtx) intake(in *Intake, res *IntakeResult) error {
	if in.ControlID != "" {
		dup, err := tx.checkDuplicate(in, res)
		if err != nil || dup {
			return err
		}
	}
	body := in.Body
	seq := sql.NullInt64{}
	if in.AssignSeqNo {
		if err := tx.queryRow(`INSERT INTO _channel_seq (channel_name, last_seq_no) VALUES (?, 0)
			ON CONFLICT (channel_name) DO UPDATE SET last_seq_no = last_seq_no + 1
			RETURNING last_seq_no`, in.Channel).Scan(&seq.Int64); err != nil {
			return err
		}
		seq.Valid = true
		var err error
		if body, err = in.Finalize(seq.Int64); err != nil {
			return fmt.Errorf("spool: finalizing message: %w", err)
		}
		res.SeqNo = seq.Int64
	}
	id, err := tx.insert(in, StateQueued, body, seq, "", "")
	res.ID = id
	return err
}

// checkDuplicate applies §6.3 step 1 against the most recent non-nacked row
// with the same control id; it reports whether the intake was answered.
func (tx *wtx) checkDuplicate(in *Intake, res *IntakeResult) (bool, error) {
	var (
		id         int64
		state      State
		ack        AckOutcome
		status     sql.NullInt64
		respType   string
		original   []byte
		respBody   []byte
		hasRespRow bool
	)
	err := tx.queryRow(`SELECT id, state, ack_outcome, server_status_code, coalesce(server_content_type, ''),
		coalesce(original_message, x''), coalesce(server_response_body, x'')
		FROM messages WHERE channel_name = ? AND msg_control_id = ? AND state <> 'nacked'
		ORDER BY id DESC LIMIT 1`, in.Channel, in.ControlID).
		Scan(&id, &state, &ack, &status, &respType, &original, &respBody)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	hasRespRow = status.Valid && (state == StateProcessed || state == StateRejected) && ack != AckNotOwed
	if in.Duplicates == DuplicatesIdempotent && bytes.Equal(original, in.Original) {
		res.ID, res.Duplicate = id, DuplicateReplay
		if hasRespRow {
			res.PriorResponse = &Response{StatusCode: int(status.Int64), ContentType: respType, Body: string(respBody)}
		}
		return true, nil
	}
	res.Duplicate = DuplicateConflict
	res.ID, err = tx.insert(in, StateNacked, in.Body, sql.NullInt64{}, CodeDuplicate, ReasonDuplicate)
	return true, err
}

func (tx *wtx) insert(in *Intake, state State, body string, seq sql.NullInt64, code, reason string) (int64, error) {
	now := tx.nowMs()
	ack, errored := AckPending, sql.NullInt64{}
	if state == StateNacked {
		ack, errored = AckNotOwed, sql.NullInt64{Int64: now, Valid: true}
	}
	var finalized []byte
	if body != string(in.Original) {
		finalized = []byte(body)
	}
	p := in.Policy
	r, err := tx.execResult(`INSERT INTO messages (kind, channel_name, remote, content_type, msg_control_id, msg_type,
		state, retry_mode, retry_base_ms, retry_max_ms, retry_multiplier, retry_max_attempts, callback_id, seq_no,
		ack_outcome, last_error, error_code, blob, received_at, errored_at, original_message, finalized_message)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		in.Kind, in.Channel, in.Remote, in.ContentType, nullString(in.ControlID), nullString(in.MsgType),
		state, p.Mode, p.BaseDelay.Milliseconds(), p.MaxDelay.Milliseconds(), p.Multiplier, p.MaxAttempts,
		tx.s.newCallbackID(), seq, ack, nullString(reason), nullString(code), nullString(in.Blob), now, errored,
		in.Original, finalized)
	if err != nil {
		return 0, err
	}
	return r.LastInsertId()
}

func (s *Store) newCallbackID() string { return "Agent/" + s.agentID + "-" + uuid.NewString() }

func nullString(v string) sql.NullString { return sql.NullString{String: v, Valid: v != ""} }

// MarkAck records whether a relayed answer reached the device, for example
// after replaying PriorResponse to a retransmission.
func (s *Store) MarkAck(ctx context.Context, id int64, outcome AckOutcome) error {
	if !outcome.valid() {
		return fmt.Errorf("spool: invalid ack outcome %q", outcome)
	}
	return s.writeRelaxed(ctx, func(tx *wtx) error { return tx.markAck(id, outcome) })
}

func (tx *wtx) markAck(id int64, outcome AckOutcome) error {
	return tx.exec("UPDATE messages SET ack_outcome = ? WHERE id = ? AND state IN ('processed', 'rejected')", outcome, id)
}
