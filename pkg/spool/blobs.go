package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// Large payloads (DICOM instances) live in files next to the database; the
// row keeps the file name. PutBlob syncs the file and its directory, so a
// C-STORE can be answered Success as soon as the Intake that references it
// has committed.

const (
	blobTemp = ".tmp"
	// orphanAge is how old an unreferenced blob file must be before the
	// sweeper deletes it: younger ones may belong to an intake in progress.
	orphanAge = time.Hour
)

func (s *Store) blobDir() string {
	return strings.TrimSuffix(s.path, filepath.Ext(s.path)) + "-blobs"
}

// validBlobName accepts only names PutBlob creates, so a name read from the
// database can never point outside the blob directory.
func validBlobName(name string) bool {
	_, err := uuid.Parse(name)
	return err == nil && len(name) == 36
}

// PutBlob streams r into a new file in the blob directory, syncs it and
// returns its name for Intake.Blob. The caller bounds r.
func (s *Store) PutBlob(r io.Reader) (name string, err error) {
	dir := s.blobDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	name = uuid.NewString()
	tmp := filepath.Join(dir, name+blobTemp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return "", fmt.Errorf("spool: writing blob: %w", err)
	}
	if err = f.Sync(); err != nil {
		return "", fmt.Errorf("spool: syncing blob: %w", err)
	}
	if err = f.Close(); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	if err = atomicfile.SyncDir(dir); err != nil {
		return "", fmt.Errorf("spool: syncing blob directory: %w", err)
	}
	return name, nil
}

// BlobPath returns the file of a blob name, or "" for a name PutBlob cannot
// have produced.
func (s *Store) BlobPath(name string) string {
	if !validBlobName(name) {
		return ""
	}
	return filepath.Join(s.blobDir(), name)
}

func (s *Store) removeBlobs(names []string) {
	for _, n := range names {
		if p := s.BlobPath(n); p != "" {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("Cannot remove queue blob", "blob", n, "err", err)
			}
		}
	}
}

// removeOrphanBlobs deletes blob files no row references, left by a crash
// between PutBlob and Intake, and stale temporary files.
func (s *Store) removeOrphanBlobs(ctx context.Context) error {
	entries, err := os.ReadDir(s.blobDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cutoff := s.now().Add(-orphanAge)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.ModTime().After(cutoff) {
			continue
		}
		name := e.Name()
		if !strings.HasSuffix(name, blobTemp) {
			if !validBlobName(name) {
				continue // not ours
			}
			var n int
			if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE blob = ?", name).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
		}
		if err := os.Remove(filepath.Join(s.blobDir(), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("Cannot remove orphaned queue blob", "blob", name, "err", err)
		}
	}
	return nil
}
