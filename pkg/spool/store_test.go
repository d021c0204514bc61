package spool

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOpenCreatesPrivateWALDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, DefaultFileName)
	s := openAt(t, path, newClock())
	mustIntake(t, s, hl7Intake("c", "1", RetryNormal))

	if runtime.GOOS != "windows" {
		for _, p := range []string{path, path + "-wal"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("%s mode = %o, want 600", filepath.Base(p), got)
			}
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("dir mode = %o, want 700", got)
		}
	}
	var mode string
	var sync, appID, vacuum int
	ctx := context.Background()
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		t.Fatal(err)
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&vacuum); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || sync != 2 || appID != applicationID || vacuum != 2 {
		t.Errorf("journal_mode=%s synchronous=%d application_id=%#x auto_vacuum=%d, want wal 2 (FULL) %#x 2 (incremental)",
			mode, sync, appID, vacuum, applicationID)
	}
}

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFileName)
	c := newClock()
	s := openAt(t, path, c)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening applies nothing twice.
	s = openAt(t, path, c)
	var versions []int
	rows, err := s.rdb.Query("SELECT version FROM _schema ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	rows.Close()
	want := make([]int, len(migrations))
	for i := range want {
		want[i] = i + 1
	}
	if d := cmp.Diff(want, versions); d != "" {
		t.Errorf("_schema versions (-want +got):\n%s", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A newer schema is refused, also by operator tools.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO _schema (version, applied_at) VALUES (?, 0)", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, existing := range []bool{false, true} {
		_, err := Open(Options{Path: path, Existing: existing})
		if err == nil || !strings.Contains(err.Error(), "newer than this build") {
			t.Errorf("Open(existing=%v) of a newer schema: err = %v", existing, err)
		}
	}
}

func TestOpenRefusals(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.sqlite")
	db, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE inbound_hl7_messages (id INTEGER)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	tests := []struct {
		name string
		opt  Options
		want string
		is   error
	}{
		{name: "no path", opt: Options{}, want: "path is required"},
		{name: "missing for operator tools", opt: Options{Path: filepath.Join(dir, "missing.sqlite"), Existing: true}, is: ErrNoDatabase},
		{name: "foreign database", opt: Options{Path: foreign}, want: "not a medplum-agent queue database"},
		{name: "directory", opt: Options{Path: dir}, want: "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.opt)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.sqlite")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("operator open created the database: %v", err)
	}
}

func TestClosedStoreRefusesWrites(t *testing.T) {
	s := openStore(t, newClock())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Intake(context.Background(), hl7Intake("c", "1", RetryNormal)); !errors.Is(err, ErrClosed) {
		t.Errorf("Intake after Close: err = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// An intake the device was told nothing about commits without a sync; an
// acknowledged one, and any batch that holds one, with synchronous=FULL.
func TestIntakeSyncLevel(t *testing.T) {
	s := openStore(t, newClock())
	// The sweep at open writes too, and would share a commit.
	eventually(t, "the first sweep", func() bool { return s.sweep.Load() != nil })
	for i, tt := range []struct {
		unacknowledged bool
		want           int
	}{{true, 1}, {false, 2}, {true, 1}} {
		in := hl7Intake("c", fmt.Sprint(i), RetryGuaranteed)
		in.Unacknowledged = tt.unacknowledged
		mustIntake(t, s, in)
		var level int
		if err := s.writeStandalone(context.Background(), func(tx *wtx) error {
			return s.wconn.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&level)
		}); err != nil {
			t.Fatal(err)
		}
		if level != tt.want {
			t.Errorf("intake %d (unacknowledged=%v): synchronous=%d, want %d", i, tt.unacknowledged, level, tt.want)
		}
	}
}
