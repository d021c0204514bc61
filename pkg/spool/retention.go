package spool

import (
	"context"
	"fmt"
	"time"
)

// RetentionSettings bound what the queue keeps (§6.6). Zero fields take the
// reference defaults.
type RetentionSettings struct {
	ProcessedMaxAge time.Duration // queueRetentionDays, default 7 days
	ErroredMaxAge   time.Duration // queueErroredRetentionDays, default 90 days: errored rows are never deleted younger
	MaxBytes        int64         // queueRetentionMaxMb, default 512 MiB of used pages
	SweepInterval   time.Duration // queueSweepIntervalSecs, default 1 h
}

func (r RetentionSettings) withDefaults() RetentionSettings {
	if r.ProcessedMaxAge <= 0 {
		r.ProcessedMaxAge = 7 * 24 * time.Hour
	}
	if r.ErroredMaxAge <= 0 {
		r.ErroredMaxAge = 90 * 24 * time.Hour
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = 512 << 20
	}
	if r.SweepInterval <= 0 {
		r.SweepInterval = time.Hour
	}
	return r
}

// SweepResult reports one retention sweep.
type SweepResult struct {
	At               time.Time
	DeletedProcessed int64
	DeletedErrored   int64
	UsedBytes        int64 // after the sweep
}

// sweepTimeout bounds one background sweep.
const sweepTimeout = 10 * time.Minute

func (s *Store) sweepLoop() {
	// Close interrupts a sweep in progress.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.bgStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, scancel := context.WithTimeout(ctx, sweepTimeout)
		if _, err := s.Sweep(sctx); err != nil && ctx.Err() == nil {
			s.log.Error("Queue retention sweep failed", "err", err)
		}
		scancel()
		t.Reset(s.ret.SweepInterval)
	}
}

// Sweep applies the retention policy now: (1) processed rows whose answer
// was delivered or not owed, older than ProcessedMaxAge; (2) while the used
// size exceeds MaxBytes, the oldest such rows regardless of age; (3) if still
// over, the oldest errored rows (rejected, failed, nacked, processed but
// undelivered) older than ErroredMaxAge, never younger; (4) free pages are
// returned to the file system and the WAL is checkpointed. Messages still to
// be delivered are never deleted.
func (s *Store) Sweep(ctx context.Context) (SweepResult, error) {
	now := s.now()
	res := SweepResult{At: now}
	processedCutoff := now.Add(-s.ret.ProcessedMaxAge).UnixMilli()
	erroredCutoff := now.Add(-s.ret.ErroredMaxAge).UnixMilli()
	var overErr error
	over := func() bool {
		used, err := s.usedBytes(ctx)
		if err != nil {
			overErr = err
			return false
		}
		return used > s.ret.MaxBytes
	}
	// INDEXED BY: without statistics the planner would scan the FIFO index
	// and sort; with it a query that cannot use the index fails loudly.
	const done = `state = 'processed' AND ack_outcome IN ('delivered', 'not_owed')`
	batch := fmt.Sprint(deleteBatch)
	steps := []struct {
		q       string
		args    []any
		more    func() bool
		errored bool
	}{
		{q: `SELECT id FROM messages INDEXED BY messages_processed WHERE ` + done + ` AND processed_at < ?
			ORDER BY processed_at LIMIT ` + batch, args: []any{processedCutoff}},
		{q: `SELECT id FROM messages INDEXED BY messages_processed WHERE ` + done + ` ORDER BY processed_at LIMIT ` + batch,
			more: over},
		{q: `SELECT id FROM messages INDEXED BY messages_errored WHERE state IN ('rejected', 'failed', 'nacked')
			AND errored_at < ? ORDER BY errored_at LIMIT ` + batch, args: []any{erroredCutoff}, more: over, errored: true},
		{q: `SELECT id FROM messages INDEXED BY messages_processed WHERE state = 'processed' AND ack_outcome = 'undelivered'
			AND processed_at < ? ORDER BY processed_at LIMIT ` + batch, args: []any{erroredCutoff}, more: over, errored: true},
	}
	for _, st := range steps {
		n, err := s.deleteLoop(ctx, "DELETE FROM messages WHERE id IN ("+st.q+") RETURNING coalesce(blob, '')", st.args, st.more)
		if st.errored {
			res.DeletedErrored += n
		} else {
			res.DeletedProcessed += n
		}
		if err == nil {
			err = overErr
		}
		if err != nil {
			return res, err
		}
	}
	if err := s.removeOrphanBlobs(ctx); err != nil {
		s.log.Warn("Cannot clean up queue blobs", "err", err)
	}
	if err := s.compact(ctx); err != nil {
		return res, err
	}
	used, err := s.usedBytes(ctx)
	if err != nil {
		return res, err
	}
	res.UsedBytes = used
	s.sweep.Store(&res)
	if res.DeletedProcessed > 0 || res.DeletedErrored > 0 {
		s.log.Info("Queue retention sweep", "deletedProcessed", res.DeletedProcessed,
			"deletedErrored", res.DeletedErrored, "usedBytes", used)
	}
	if used > s.ret.MaxBytes {
		s.log.Warn("Queue database is over its size limit; only undelivered or recent errored messages remain",
			"usedBytes", used, "maxBytes", s.ret.MaxBytes)
	}
	return res, nil
}

// compact returns free pages to the file system and truncates the WAL.
func (s *Store) compact(ctx context.Context) error {
	return s.writeStandalone(ctx, func(tx *wtx) error {
		if err := tx.exec("PRAGMA incremental_vacuum"); err != nil {
			return err
		}
		var busy, logPages, done int
		return tx.queryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done)
	})
}

// usedBytes is the size of the pages holding data: deletes shrink it even
// before the file itself shrinks.
func (s *Store) usedBytes(ctx context.Context) (int64, error) {
	var pages, free, size int64
	err := s.rdb.QueryRowContext(ctx, "SELECT page_count, freelist_count, page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()").
		Scan(&pages, &free, &size)
	return (pages - free) * size, err
}
