package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Row transitions driven by the dispatcher. Claims and settles require the
// lease; recording a send does not, because it states a fact.

// sentMark records that an attempt was written to the socket.
type sentMark struct {
	id      int64
	attempt int
	at      time.Time
}

// claimRequest asks advance for up to n more rows of a channel. busy holds
// the remotes with a row in flight: a row from one of them waits, and so
// does everything after it, so rows go out in id order and one device
// connection never has two in flight.
type claimRequest struct {
	n    int
	busy map[string]bool
}

// advanced is the result of advance.
type advanced struct {
	settled []bool // per settlement: the row changed
	claimed []Row  // in id order
	wait    time.Duration
	empty   bool // no queued rows: the channel has nothing more to send
	blocked bool // the head row's connection has a row in flight
}

// advance moves a channel's dispatch along in one transaction: it records
// sends, applies settlements, then claims what req allows. One commit per
// step of the worker, however many rows it covers.
func (s *Store) advance(ctx context.Context, channel string, marks []sentMark, settles []settlement, req claimRequest) (advanced, error) {
	var a advanced
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		a = advanced{settled: make([]bool, len(settles))}
		if len(settles) > 0 || req.n > 0 {
			if err := tx.requireLease(); err != nil {
				return err
			}
		}
		for _, m := range marks {
			if err := tx.exec("UPDATE messages SET state = 'inflight', sent_at = ? WHERE id = ? AND attempt_count = ? AND state = 'claimed'",
				m.at.UnixMilli(), m.id, m.attempt); err != nil {
				return err
			}
		}
		for i, st := range settles {
			ok, err := tx.settle(st)
			if err != nil {
				return err
			}
			a.settled[i] = ok
		}
		if req.n <= 0 {
			return nil
		}
		return tx.claim(channel, req, &a)
	})
	return a, err
}

// claim claims queued rows of channel in id order. A head row waiting for
// its retry time blocks the whole channel, to keep FIFO order, and a row
// that still has to be prepared (uploaded) ends the batch, so a failed
// preparation holds back nothing already claimed.
func (tx *wtx) claim(channel string, req claimRequest, a *advanced) error {
	type candidate struct {
		id      int64
		next    sql.NullInt64
		remote  string
		prepare bool
	}
	// A constant LIMIT: a bound one makes SQLite prepare the statement again
	// on every call. Powers of two keep the statement cache small.
	limit := 1
	for limit < req.n {
		limit *= 2
	}
	rows, err := tx.query(fmt.Sprintf(`SELECT id, next_attempt_at, remote, blob IS NOT NULL AND blob_prepared = 0
		FROM messages WHERE state = 'queued' AND channel_name = ? ORDER BY id LIMIT %d`, limit), channel)
	if err != nil {
		return err
	}
	var cands []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.next, &c.remote, &c.prepare); err != nil {
			rows.Close()
			return err
		}
		cands = append(cands, c)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	a.empty = len(cands) == 0
	now := tx.nowMs()
	busy := map[string]bool{}
	for _, c := range cands[:min(len(cands), req.n)] {
		if c.next.Valid && c.next.Int64 > now {
			a.wait = time.Duration(c.next.Int64-now) * time.Millisecond
			return nil
		}
		if req.busy[c.remote] || busy[c.remote] {
			a.blocked = true
			return nil
		}
		busy[c.remote] = true
		row, err := tx.claimRow(c.id, now)
		if err != nil {
			return err
		}
		a.claimed = append(a.claimed, row)
		if c.prepare {
			return nil
		}
	}
	return nil
}

func (tx *wtx) claimRow(id, now int64) (Row, error) {
	rows, err := tx.query(`UPDATE messages SET state = 'claimed', attempt_count = attempt_count + 1,
		processing_started_at = ?, next_attempt_at = NULL WHERE id = ?
		RETURNING `+rowColumns+`, `+bodyColumn, now, id)
	if err != nil {
		return Row{}, err
	}
	defer rows.Close()
	if !rows.Next() {
		return Row{}, errors.Join(rows.Err(), errors.New("spool: claimed row vanished"))
	}
	var body []byte
	row, err := scanRow(rows, &body)
	if err != nil {
		return Row{}, err
	}
	row.Body = string(body)
	for rows.Next() { // finish the statement before the transaction goes on
	}
	return row, rows.Err()
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

// settle applies st guarded by the attempt number, so a superseded attempt
// cannot overwrite a newer one; it reports whether the row changed. Besides
// claimed and in-flight rows, a late answer may settle a failed row or one
// waiting for its retry.
func (tx *wtx) settle(st settlement) (bool, error) {
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
	n, err := tx.changes(`UPDATE messages SET state = ?, failed_attempts = ?, next_attempt_at = ?,
		last_error = ?, error_code = ?, server_status_code = ?, server_content_type = ?,
		server_response_body = ?, processed_at = ?, errored_at = ?, ack_outcome = ?,
		processing_started_at = CASE WHEN ? = 'queued' THEN NULL ELSE processing_started_at END
		WHERE id = ? AND attempt_count = ?
		AND (state IN ('claimed', 'inflight', 'failed') OR (state = 'queued' AND next_attempt_at IS NOT NULL))`,
		st.state, st.failures, next, nullString(st.text), nullString(st.code), status, respType, respBody,
		processedAt, erroredAt, ack, st.state, st.id, st.attempt)
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
