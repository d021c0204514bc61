package spool

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Lease timing of the reference: a leader renews every 10 s a lease that
// lasts 30 s; other processes try to take it every 2 s.
const (
	leaseTTL   = 30 * time.Second
	leaseRenew = 10 * time.Second
	leaseRetry = 2 * time.Second
)

// LeaseInfo describes the dispatch lease row.
type LeaseInfo struct {
	Held       bool // a lease row exists
	Mine       bool // held by this Store
	Holder     string
	AcquiredAt time.Time
	ExpiresAt  time.Time
}

// Lease reads the dispatch lease.
func (s *Store) Lease(ctx context.Context) (LeaseInfo, error) {
	var li LeaseInfo
	var acquired, expires int64
	err := s.rdb.QueryRowContext(ctx, "SELECT holder, acquired_at, expires_at FROM _lease WHERE id = 1").Scan(&li.Holder, &acquired, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return li, nil
	}
	if err != nil {
		return li, err
	}
	li.Held, li.Mine = true, li.Holder == s.holder
	li.AcquiredAt, li.ExpiresAt = time.UnixMilli(acquired), time.UnixMilli(expires)
	return li, nil
}

// acquireLease takes the lease if it is free, expired or already ours.
func (s *Store) acquireLease(ctx context.Context) (bool, error) {
	var n int64
	err := s.writeRelaxed(ctx, func(tx *wtx) (err error) {
		now := tx.nowMs()
		n, err = tx.changes(`INSERT INTO _lease (id, holder, acquired_at, expires_at) VALUES (1, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at,
				expires_at = excluded.expires_at
			WHERE _lease.holder = excluded.holder OR _lease.expires_at <= excluded.acquired_at`,
			s.holder, now, now+leaseTTL.Milliseconds())
		return err
	})
	return n == 1, err
}

// renewLease extends our lease; false means another process holds it now.
func (s *Store) renewLease(ctx context.Context) (bool, error) {
	var n int64
	err := s.writeRelaxed(ctx, func(tx *wtx) (err error) {
		n, err = tx.changes("UPDATE _lease SET expires_at = ? WHERE id = 1 AND holder = ?", tx.nowMs()+leaseTTL.Milliseconds(), s.holder)
		return err
	})
	return n == 1, err
}

func (s *Store) releaseLease(ctx context.Context) error {
	return s.writeRelaxed(ctx, func(tx *wtx) error {
		return tx.exec("DELETE FROM _lease WHERE id = 1 AND holder = ?", s.holder)
	})
}

// requireLease fails a claim or settle once another process owns the lease.
func (tx *wtx) requireLease() error {
	var holder string
	err := tx.queryRow("SELECT holder FROM _lease WHERE id = 1").Scan(&holder)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && holder != tx.s.holder) {
		return errNotLeader
	}
	return err
}

// recovery counts what recover changed.
type recovery struct {
	Requeued    int64 // claimed rows, never written to a socket
	Redelivered int64 // guaranteed in-flight rows queued again: the server may see them twice
	Interrupted int64 // other in-flight rows, now failed/interrupted
	Undelivered int64 // settled rows whose answer was never relayed
}

// recover runs when this process becomes the leader (§6.5): the previous
// leader's claimed and in-flight rows are resolved before dispatch resumes.
func (s *Store) recover(ctx context.Context) (recovery, error) {
	var r recovery
	err := s.writeRelaxed(ctx, func(tx *wtx) (err error) {
		if err := tx.requireLease(); err != nil {
			return err
		}
		now := tx.nowMs()
		if r.Requeued, err = tx.changes(`UPDATE messages SET state = 'queued', processing_started_at = NULL
			WHERE state = 'claimed'`); err != nil {
			return err
		}
		if r.Redelivered, err = tx.changes(`UPDATE messages SET state = 'queued', processing_started_at = NULL,
			next_attempt_at = NULL, failed_attempts = failed_attempts + 1, error_code = ?, last_error = ?
			WHERE state = 'inflight' AND retry_mode = 'guaranteed'`, CodeInterrupted, interruptedText); err != nil {
			return err
		}
		if r.Interrupted, err = tx.changes(`UPDATE messages SET state = 'failed', errored_at = ?,
			failed_attempts = failed_attempts + 1, error_code = ?, last_error = ?, ack_outcome = 'not_owed'
			WHERE state = 'inflight'`, now, CodeInterrupted, interruptedText); err != nil {
			return err
		}
		// The device connection that was owed these answers is gone.
		r.Undelivered, err = tx.changes(`UPDATE messages INDEXED BY messages_ack_pending SET ack_outcome = 'undelivered'
			WHERE ack_outcome = 'pending' AND state IN ('processed', 'rejected')`)
		return err
	})
	return r, err
}

const interruptedText = "agent stopped while waiting for the server's response"
