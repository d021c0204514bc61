package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Row is one stored message. List leaves the message bodies empty; Get and
// the dispatcher fill them.
type Row struct {
	ID             int64
	Kind           string
	Channel        string
	Remote         string
	ContentType    string
	ControlID      string
	MsgType        string
	State          State
	Policy         RetryPolicy
	Attempt        int // attempts so far; the wire callback of the current one is CallbackID#Attempt
	FailedAttempts int // failures counted against Policy.MaxAttempts
	CallbackID     string
	SeqNo          int64 // assigned MSH-13, or -1
	StatusCode     int   // last server status, 0 if none
	AckOutcome     AckOutcome
	LastError      string
	ErrorCode      string
	Blob           string // PutBlob name, for DICOM
	BlobPrepared   bool   // Prepare already produced the final body

	ReceivedAt          time.Time
	ProcessingStartedAt time.Time
	SentAt              time.Time
	ProcessedAt         time.Time
	ErroredAt           time.Time
	NextAttemptAt       time.Time

	Original            []byte // as received
	Body                string // what is dispatched
	Response            string // last server answer
	ResponseContentType string
}

// WireCallback is the callback of the current attempt.
func (r *Row) WireCallback() string { return fmt.Sprintf("%s#%d", r.CallbackID, r.Attempt) }

const rowColumns = `id, kind, channel_name, remote, content_type, coalesce(msg_control_id, ''), coalesce(msg_type, ''),
	state, retry_mode, retry_base_ms, retry_max_ms, retry_multiplier, retry_max_attempts, attempt_count,
	failed_attempts, callback_id, coalesce(seq_no, -1), coalesce(server_status_code, 0), ack_outcome,
	coalesce(last_error, ''), coalesce(error_code, ''), coalesce(blob, ''), blob_prepared, received_at,
	processing_started_at, sent_at, processed_at, errored_at, next_attempt_at`

// bodyColumn is what is dispatched.
const bodyColumn = "coalesce(finalized_message, original_message, x'')"

type scanner interface{ Scan(dest ...any) error }

// scanRow reads rowColumns and then the extra destinations.
func scanRow(sc scanner, extra ...any) (Row, error) {
	var r Row
	var baseMs, maxMs, receivedAt int64
	var started, sent, processed, errored, next sql.NullInt64
	dest := append([]any{&r.ID, &r.Kind, &r.Channel, &r.Remote, &r.ContentType, &r.ControlID, &r.MsgType,
		&r.State, &r.Policy.Mode, &baseMs, &maxMs, &r.Policy.Multiplier, &r.Policy.MaxAttempts, &r.Attempt,
		&r.FailedAttempts, &r.CallbackID, &r.SeqNo, &r.StatusCode, &r.AckOutcome,
		&r.LastError, &r.ErrorCode, &r.Blob, &r.BlobPrepared, &receivedAt,
		&started, &sent, &processed, &errored, &next}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return r, err
	}
	r.Policy.BaseDelay = time.Duration(baseMs) * time.Millisecond
	r.Policy.MaxDelay = time.Duration(maxMs) * time.Millisecond
	r.ReceivedAt = time.UnixMilli(receivedAt)
	r.ProcessingStartedAt, r.SentAt, r.ProcessedAt = msTime(started), msTime(sent), msTime(processed)
	r.ErroredAt, r.NextAttemptAt = msTime(errored), msTime(next)
	return r, nil
}

func msTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64)
}

// Get returns one row with its bodies.
func (s *Store) Get(ctx context.Context, id int64) (Row, error) {
	var original, body, response []byte
	var respType string
	r, err := scanRow(s.rdb.QueryRowContext(ctx, "SELECT "+rowColumns+`, coalesce(original_message, x''), `+bodyColumn+`,
		coalesce(server_response_body, x''), coalesce(server_content_type, '') FROM messages WHERE id = ?`, id),
		&original, &body, &response, &respType)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	r.Original, r.Body, r.Response, r.ResponseContentType = original, string(body), string(response), respType
	return r, err
}

// byCallback finds the row of a callback id (without the #attempt suffix).
func (s *Store) byCallback(ctx context.Context, callbackID string) (Row, error) {
	r, err := scanRow(s.rdb.QueryRowContext(ctx, "SELECT "+rowColumns+" FROM messages WHERE callback_id = ?", callbackID))
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	return r, err
}

// Filter selects rows for List and Purge.
type Filter struct {
	States  []State // any state if empty (List only)
	Channel string  // any channel if empty
	// Before keeps rows that reached their current state (processed_at,
	// errored_at, else received_at) before this time; zero means no limit.
	Before time.Time
	Limit  int // List only: default 100, at most 10 000
}

const (
	defaultListLimit = 100
	maxListLimit     = 10_000
)

// stateArgs pads the state list to every state, so queries keep one shape
// (and one cached statement) whatever the filter.
func stateArgs(states []State) []any {
	if len(states) == 0 {
		states = States
	}
	args := make([]any, len(States))
	for i := range args {
		args[i] = string(states[min(i, len(states)-1)])
	}
	return args
}

var statePlaceholders = strings.TrimSuffix(strings.Repeat("?, ", len(States)), ", ")

func (f Filter) where() (string, []any) {
	before := int64(1<<63 - 1)
	if !f.Before.IsZero() {
		before = f.Before.UnixMilli()
	}
	args := append(stateArgs(f.States), f.Channel, f.Channel, before)
	return `state IN (` + statePlaceholders + `) AND (? = '' OR channel_name = ?)
		AND coalesce(processed_at, errored_at, received_at) < ?`, args
}

// List returns matching rows without bodies, newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Row, error) {
	if err := checkStates(f.States); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	where, args := f.where()
	rows, err := s.rdb.QueryContext(ctx, "SELECT "+rowColumns+" FROM messages WHERE "+where+" ORDER BY id DESC LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Count returns how many rows match f (Limit is ignored).
func (s *Store) Count(ctx context.Context, f Filter) (int64, error) {
	if err := checkStates(f.States); err != nil {
		return 0, err
	}
	where, args := f.where()
	var n int64
	err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE "+where, args...).Scan(&n)
	return n, err
}

func checkStates(states []State) error {
	for _, st := range states {
		if _, err := ParseState(string(st)); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotRetryable is returned by Retry for rows that are not failed or
// rejected.
var ErrNotRetryable = errors.New("spool: only failed or rejected messages can be retried")

// Retry puts a failed or rejected row back in its channel's queue at its
// original position, with the failure budget reset. The agent's dispatcher
// picks it up on its next poll.
func (s *Store) Retry(ctx context.Context, id int64) error {
	var state State
	err := s.write(ctx, func(tx *wtx) error {
		if err := tx.queryRow("SELECT state FROM messages WHERE id = ?", id).Scan(&state); err != nil {
			return err
		}
		if state != StateFailed && state != StateRejected {
			return nil
		}
		return tx.exec(`UPDATE messages SET state = 'queued', failed_attempts = 0, next_attempt_at = NULL,
			last_error = NULL, error_code = NULL, ack_outcome = 'pending', processing_started_at = NULL,
			sent_at = NULL, processed_at = NULL, errored_at = NULL, server_status_code = NULL,
			server_content_type = NULL, server_response_body = NULL
			WHERE id = ?`, id)
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %d", ErrNotFound, id)
	case err != nil:
		return err
	case state != StateFailed && state != StateRejected:
		return fmt.Errorf("%w (message %d is %s)", ErrNotRetryable, id, state)
	}
	return nil
}

// deleteBatch bounds each delete transaction so that a large purge or sweep
// never holds the write lock for long.
const deleteBatch = 1000

// Purge deletes terminal rows matching f and returns how many went. States
// must be given and terminal, and Before must be set: a purge never touches
// messages that still have to be delivered.
func (s *Store) Purge(ctx context.Context, f Filter) (int64, error) {
	if len(f.States) == 0 || f.Before.IsZero() {
		return 0, errors.New("spool: purge needs states and a cut-off time")
	}
	for _, st := range f.States {
		if !st.Terminal() {
			return 0, fmt.Errorf("spool: cannot purge %s messages, only processed, rejected, failed or nacked", st)
		}
	}
	where, args := f.where()
	return s.deleteLoop(ctx, "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE "+where+
		" ORDER BY id LIMIT "+fmt.Sprint(deleteBatch)+") RETURNING coalesce(blob, '')", args, nil)
}

// deleteLoop runs a batched DELETE … RETURNING blob until it deletes nothing
// or more returns false, removing blob files after each commit.
func (s *Store) deleteLoop(ctx context.Context, q string, args []any, more func() bool) (int64, error) {
	var total int64
	for more == nil || more() {
		var n int64
		var blobs []string
		err := s.write(ctx, func(tx *wtx) error {
			n, blobs = 0, blobs[:0]
			rows, err := tx.query(q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var b string
				if err := rows.Scan(&b); err != nil {
					return err
				}
				n++
				if b != "" {
					blobs = append(blobs, b)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return total, err
		}
		total += n
		s.removeBlobs(blobs)
		if n == 0 {
			break
		}
	}
	return total, nil
}
