package spool

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Row transitions driven by the dispatcher. Claims and settles require the
// lease; recording a send does not, because it states a fact.

// claim is the result of claimNext.
type claim struct {
	row  Row
	ok   bool          // row claimed
	wait time.Duration // > 0: the head row waits for its retry time
}

// claimNext claims the oldest queued row of channel unless it is waiting for
// its retry time, which blocks the whole channel to keep FIFO order.
func (s *Store) claimNext(ctx context.Context, channel string) (claim, error) {
	var c claim
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		c = claim{}
		if err := tx.requireLease(); err != nil {
			return err
		}
		var id int64
		var next sql.NullInt64
		err := tx.queryRow("SELECT id, next_attempt_at FROM messages WHERE state = 'queued' AND channel_name = ? ORDER BY id LIMIT 1",
			channel).Scan(&id, &next)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		now := tx.nowMs()
		if next.Valid && next.Int64 > now {
			c.wait = time.Duration(next.Int64-now) * time.Millisecond
			return nil
		}
		rows, err := tx.query(`UPDATE messages SET state = 'claimed', attempt_count = attempt_count + 1,
			processing_started_at = ?, next_attempt_at = NULL WHERE id = ?
			RETURNING `+rowColumns+`, `+bodyColumn, now, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		if !rows.Next() {
			return errors.Join(rows.Err(), errors.New("spool: claimed row vanished"))
		}
		var body []byte
		if c.row, err = scanRow(rows, &body); err != nil {
			return err
		}
		c.row.Body, c.ok = string(body), true
		for rows.Next() { // finish the statement before the savepoint is released
		}
		return rows.Err()
	})
	return c, err
}

// markSent records that the current attempt was written to the socket.
func (s *Store) markSent(ctx context.Context, id int64, attempt int, at time.Time) error {
	return s.writeRelaxed(ctx, func(tx *wtx) error {
		return tx.exec("UPDATE messages SET state = 'inflight', sent_at = ? WHERE id = ? AND attempt_count = ? AND state = 'claimed'",
			at.UnixMilli(), id, attempt)
	})
}

// unclaim returns a row that provably never left the process to the head of
// its queue.
func (s *Store) unclaim(ctx context.Context, id int64, attempt int) error {
	return s.writeRelaxed(ctx, func(tx *wtx) error {
		return tx.exec("UPDATE messages SET state = 'queued', processing_started_at = NULL WHERE id = ? AND attempt_count = ? AND state = 'claimed'",
			id, attempt)
	})
}

// setPrepared stores the body Prepare produced, so a retry does not repeat
// the upload.
func (s *Store) setPrepared(ctx context.Context, id int64, attempt int, body string) error {
	return s.writeRelaxed(ctx, func(tx *wtx) error {
		return tx.exec("UPDATE messages SET finalized_message = ?, blob_prepared = 1 WHERE id = ? AND attempt_count = ? AND state = 'claimed'",
			[]byte(body), id, attempt)
	})
}

// settlement is the outcome of one attempt.
type settlement struct {
	id       int64
	attempt  int
	state    State // queued for a scheduled retry
	relay    bool
	code     string
	text     string
	failures int
	next     time.Time // retry time
	resp     *Response
}

// settle applies s guarded by the attempt number, so a superseded attempt
// cannot overwrite a newer one; it reports whether the row changed. Besides
// claimed and in-flight rows, a late answer may settle a failed row or one
// waiting for its retry.
func (s *Store) settle(ctx context.Context, st settlement) (bool, error) {
	var n int64
	err := s.writeRelaxed(ctx, func(tx *wtx) (err error) {
		if err := tx.requireLease(); err != nil {
			return err
		}
		now := tx.nowMs()
		var processedAt, erroredAt, next, status sql.NullInt64
		var respType sql.NullString
		var respBody []byte
		switch st.state {
		case StateProcessed:
			processedAt = sql.NullInt64{Int64: now, Valid: true}
		case StateRejected, StateFailed:
			erroredAt = sql.NullInt64{Int64: now, Valid: true}
		case StateQueued:
			next = sql.NullInt64{Int64: st.next.UnixMilli(), Valid: true}
		}
		if st.resp != nil {
			status = sql.NullInt64{Int64: int64(st.resp.StatusCode), Valid: true}
			respType = nullString(st.resp.ContentType)
			respBody = []byte(st.resp.Body)
		}
		ack := AckNotOwed
		if st.relay || st.state == StateQueued {
			ack = AckPending
		}
		n, err = tx.changes(`UPDATE messages SET state = ?, failed_attempts = ?, next_attempt_at = ?,
			last_error = ?, error_code = ?, server_status_code = ?, server_content_type = ?,
			server_response_body = ?, processed_at = ?, errored_at = ?, ack_outcome = ?,
			processing_started_at = CASE WHEN ? = 'queued' THEN NULL ELSE processing_started_at END
			WHERE id = ? AND attempt_count = ?
			AND (state IN ('claimed', 'inflight', 'failed') OR (state = 'queued' AND next_attempt_at IS NOT NULL))`,
			st.state, st.failures, next, nullString(st.text), nullString(st.code), status, respType, respBody,
			processedAt, erroredAt, ack, st.state, st.id, st.attempt)
		return err
	})
	return n == 1, err
}

// markAckAsync records an ack outcome without waiting for the commit; a
// lost write only leaves the row pending, which recovery resolves.
func (s *Store) markAckAsync(ctx context.Context, id int64, outcome AckOutcome) error {
	if !outcome.valid() {
		outcome = AckUndelivered
	}
	return s.submitAsync(ctx, func(tx *wtx) error { return tx.markAck(id, outcome) })
}

// queuedChannels lists channels with queued rows.
func (s *Store) queuedChannels(ctx context.Context) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, "SELECT DISTINCT channel_name FROM messages WHERE state = 'queued'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ch string
		if err := rows.Scan(&ch); err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, rows.Err()
}
