package logging

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	// bufSize is how much is buffered before a write reaches the file. At
	// >10k lines/s this turns one syscall per line into one per ~300 lines.
	bufSize = 64 << 10
	// filePerm and dirPerm keep logs private: they may contain PHI.
	filePerm = 0o600
	dirPerm  = 0o700
)

var errNoFile = errors.New("log file is not open")

// fileWriter appends whole lines to the logger's current daily file, starting
// a new file when the day changes or the size limit would be exceeded, and
// deleting the oldest files beyond the retention count.
//
// Each Write must carry complete lines (slog handlers write one record per
// call), so a file never ends in the middle of an entry.
type fileWriter struct {
	dir      string
	prefix   string
	maxBytes int64
	keep     int
	now      func() time.Time

	mu      sync.Mutex
	f       *os.File
	cur     logFile
	size    int64     // bytes in cur, including buffered ones
	nextDay time.Time // start of the day after cur.day, in the clock's location
	buf     []byte
	closed  bool
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, os.ErrClosed
	}
	if err := w.ensureDay(); err != nil {
		return 0, err
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxBytes {
		if err := w.open(logFile{day: w.cur.day, index: w.cur.index + 1}); err != nil {
			return 0, err
		}
	}
	w.buf = append(w.buf, p...)
	w.size += int64(len(p))
	if len(w.buf) >= bufSize {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// ensureDay opens the file for the current day if none is open or the day
// has changed. The day is taken in the clock's own location.
func (w *fileWriter) ensureDay() error {
	t := w.now()
	if w.f != nil && t.Before(w.nextDay) {
		return nil
	}
	day := t.Format(dayLayout)
	y, m, d := t.Date()
	next := time.Date(y, m, d+1, 0, 0, 0, 0, t.Location())
	if w.f != nil && day == w.cur.day {
		w.nextDay = next
		return nil
	}
	// Continue the newest existing file of the day (e.g. after a restart)
	// unless it is already full.
	target := logFile{day: day}
	files, err := listFiles(w.dir, w.prefix)
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.day == day && f.index >= target.index {
			target = f
		}
	}
	if fi, err := os.Stat(filepath.Join(w.dir, target.fileName(w.prefix))); err == nil && fi.Size() >= w.maxBytes {
		target.index++
	}
	if err := w.open(target); err != nil {
		return err
	}
	w.nextDay = next
	return nil
}

// open flushes and closes the current file, opens target for appending and
// applies the retention count.
func (w *fileWriter) open(target logFile) error {
	flushErr := w.flushLocked()
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	f, err := os.OpenFile(filepath.Join(w.dir, target.fileName(w.prefix)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, filePerm)
	if err != nil {
		return errors.Join(flushErr, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return errors.Join(flushErr, err)
	}
	w.f, w.cur, w.size = f, target, fi.Size()
	w.prune()
	return flushErr
}

// prune deletes the oldest files so that at most keep remain. It is best
// effort: a file that cannot be deleted now is retried at the next rotation.
func (w *fileWriter) prune() {
	files, err := listFiles(w.dir, w.prefix)
	if err != nil {
		return
	}
	for i := 0; len(files)-i > w.keep; i++ {
		if files[i] != w.cur {
			os.Remove(filepath.Join(w.dir, files[i].fileName(w.prefix)))
		}
	}
}

// flushLocked writes the buffer out. The buffer is emptied even on failure so
// that a full or broken disk cannot make memory grow.
func (w *fileWriter) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := errNoFile
	if w.f != nil {
		_, err = w.f.Write(w.buf)
	}
	if cap(w.buf) > 4*bufSize {
		w.buf = nil // one huge line must not pin a huge buffer
	} else {
		w.buf = w.buf[:0]
	}
	return err
}

func (w *fileWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// snapshot flushes and reports the current file and its size, so a reader
// sees every line written so far and never a partial one.
func (w *fileWriter) snapshot() (cur logFile, size int64, open bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	err = w.flushLocked()
	return w.cur, w.size, w.f != nil, err
}

func (w *fileWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.flushLocked()
	if w.f != nil {
		err = errors.Join(err, w.f.Close())
		w.f = nil
	}
	return err
}
