package spool

import (
	"context"
	"fmt"
)

// applicationID marks the file as ours ("MPAQ"), so the store refuses a
// database written by another program, including the reference agent's
// queue, which uses the same default file name.
const applicationID = 0x4d504151

// migrations are forward-only; migrations[i] brings the schema to version
// i+1. Never edit a released entry: append a new one.
var migrations = []string{
	// 1: inbound messages of every channel kind, the per-channel MSH-13
	// counter and the dispatch lease.
	`
CREATE TABLE messages (
	id                    INTEGER PRIMARY KEY AUTOINCREMENT,
	kind                  TEXT    NOT NULL,
	channel_name          TEXT    NOT NULL,
	remote                TEXT    NOT NULL,
	content_type          TEXT    NOT NULL,
	msg_control_id        TEXT,
	msg_type              TEXT,
	state                 TEXT    NOT NULL,
	retry_mode            TEXT    NOT NULL,
	retry_base_ms         INTEGER NOT NULL,
	retry_max_ms          INTEGER NOT NULL,
	retry_multiplier      REAL    NOT NULL,
	retry_max_attempts    INTEGER NOT NULL,
	attempt_count         INTEGER NOT NULL DEFAULT 0,
	failed_attempts       INTEGER NOT NULL DEFAULT 0,
	callback_id           TEXT    NOT NULL UNIQUE,
	seq_no                INTEGER,
	server_status_code    INTEGER,
	server_content_type   TEXT,
	ack_outcome           TEXT    NOT NULL DEFAULT 'pending',
	last_error            TEXT,
	error_code            TEXT,
	blob                  TEXT,
	blob_prepared         INTEGER NOT NULL DEFAULT 0,
	received_at           INTEGER NOT NULL,
	processing_started_at INTEGER,
	sent_at               INTEGER,
	processed_at          INTEGER,
	errored_at            INTEGER,
	next_attempt_at       INTEGER,
	-- Message bodies last: columns after a large BLOB would need its
	-- overflow pages to be read. finalized_message is NULL when it equals
	-- original_message, which halves what most rows write.
	original_message      BLOB,
	finalized_message     BLOB,
	server_response_body  BLOB
) STRICT;
-- Claims (FIFO per channel) and per-state counts.
CREATE INDEX messages_fifo ON messages (state, channel_name, id);
-- Retention; partial, so intake does not maintain them.
CREATE INDEX messages_processed ON messages (processed_at) WHERE state = 'processed';
CREATE INDEX messages_errored ON messages (errored_at) WHERE state IN ('rejected', 'failed', 'nacked');
-- Duplicate detection (§6.3): the latest non-nacked row per control id.
CREATE INDEX messages_dedup ON messages (channel_name, msg_control_id, id)
	WHERE msg_control_id IS NOT NULL AND state <> 'nacked';
CREATE INDEX messages_blob ON messages (blob) WHERE blob IS NOT NULL;
CREATE INDEX messages_ack_pending ON messages (id) WHERE ack_outcome = 'pending' AND state IN ('processed', 'rejected');
CREATE TABLE _channel_seq (
	channel_name TEXT    PRIMARY KEY,
	last_seq_no  INTEGER NOT NULL
) STRICT;
CREATE TABLE _lease (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	holder      TEXT    NOT NULL,
	acquired_at INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL
) STRICT;
`,
}

// migrate brings the schema up to date. Each migration commits on its own
// under BEGIN IMMEDIATE, so two processes opening the file at once apply it
// once. With existing set it only checks that the schema is the current one.
func (s *Store) migrate(ctx context.Context, existing bool) error {
	c := s.wconn
	var appID, tables int
	if err := c.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("spool: reading %s: %w", s.path, err)
	}
	if err := c.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&tables); err != nil {
		return fmt.Errorf("spool: reading %s: %w", s.path, err)
	}
	if appID != applicationID && (appID != 0 || tables > 0) {
		return fmt.Errorf("spool: %s is not a medplum-agent queue database", s.path)
	}
	for {
		v, err := s.schemaVersion(ctx)
		if err != nil {
			return err
		}
		switch {
		case v > len(migrations):
			return fmt.Errorf("spool: %s has schema version %d, newer than this build supports (%d)", s.path, v, len(migrations))
		case v == len(migrations):
			return nil
		case existing:
			return fmt.Errorf("spool: %s has schema version %d; start the agent once to upgrade it to %d", s.path, v, len(migrations))
		}
		if err := s.applyMigration(ctx, v+1); err != nil {
			return err
		}
	}
}

func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var n, v int
	err := s.wconn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_schema'").Scan(&n)
	if err == nil && n > 0 {
		err = s.wconn.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM _schema").Scan(&v)
	}
	if err != nil {
		return 0, fmt.Errorf("spool: reading schema version: %w", err)
	}
	return v, nil
}

func (s *Store) applyMigration(ctx context.Context, version int) (err error) {
	c := s.wconn
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("spool: migration %d: %w", version, err)
	}
	defer func() {
		if err != nil {
			_, _ = c.ExecContext(ctx, "ROLLBACK")
		}
	}()
	if _, err := c.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS _schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT"); err != nil {
		return fmt.Errorf("spool: migration %d: %w", version, err)
	}
	// Another process may have applied it while we waited for the lock.
	var done int
	if err := c.QueryRowContext(ctx, "SELECT count(*) FROM _schema WHERE version = ?", version).Scan(&done); err != nil {
		return fmt.Errorf("spool: migration %d: %w", version, err)
	}
	if done == 0 {
		if _, err := c.ExecContext(ctx, migrations[version-1]); err != nil {
			return fmt.Errorf("spool: migration %d: %w", version, err)
		}
		if _, err := c.ExecContext(ctx, "INSERT INTO _schema (version, applied_at) VALUES (?, ?)", version, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("spool: migration %d: %w", version, err)
		}
		if _, err := c.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return fmt.Errorf("spool: migration %d: %w", version, err)
		}
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("spool: migration %d: %w", version, err)
	}
	if done == 0 {
		s.log.Info("Queue database migrated", "version", version)
	}
	return nil
}
