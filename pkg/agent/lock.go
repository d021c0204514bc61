package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFileName is held locked for the life of the process. The lock, not
// the file's existence, is what counts, so a crash never leaves a stale
// lock behind; the file only tells the next instance whose it is.
const lockFileName = "medplum-agent.lock"

// errLocked is returned by lockFile when another process holds the lock.
var errLocked = errors.New("locked")

type dirLock struct{ f *os.File }

// lockDataDir creates dir if needed and takes its lock, recording our pid.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &LockedError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("locking data dir %s: %w", dir, err)
	}
	// The pid is informational only; failing to record it is harmless.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &dirLock{f: f}, nil
}

// release empties the pid record and drops the lock.
func (l *dirLock) release() error {
	_ = l.f.Truncate(0) // best effort: a stale pid is only informational
	return l.f.Close()  // closing the file drops the lock
}

// readPID returns the pid recorded in the lock file, or 0.
func readPID(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 32))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
