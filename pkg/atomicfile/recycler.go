package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sparePrefix names the files a Recycler keeps for reuse. The leading dot
// keeps them apart from the files it creates, and older readers of such a
// directory take them for temporary files.
const sparePrefix = ".spare-"

// IsSpare reports whether name is one of the files a Recycler keeps for
// reuse rather than one it created.
func IsSpare(name string) bool {
	_, ok := spareSeq(name)
	return ok
}

func spareSeq(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, sparePrefix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil
}

// Recycler creates files in one directory as durably as Write, for a
// directory whose files come and go (a spool): instead of creating a file
// per Create and deleting it afterwards, it writes into a file an earlier
// one vacated. Creating and deleting inodes is what costs: ext4 without a
// journal, for one, scans the recently deleted inodes on every create, and
// every file system allocates and frees the blocks again, while rewriting
// an existing file in place costs one sync of its data.
//
// Crash safety rests on names: a spare is renamed to its file's name only
// after its content is synced, and the directory is synced before Create
// returns. A file handed back is renamed to a spare name, and its content
// is overwritten only after a later directory sync made that name durable,
// so a crash cannot leave new bytes under the old file's name. Spares hold
// stale content; after a restart, pass them to Adopt.
type Recycler struct {
	dir     string
	keep    int   // spares kept; more are deleted
	maxSize int64 // larger files are deleted rather than kept

	mu      sync.Mutex
	free    []string // spares whose names are durable: safe to overwrite
	vacated []string // renamed to a spare name since the last directory sync began
	seq     uint64   // of the next spare name
}

// NewRecycler returns a Recycler for dir that keeps at most keep spares of
// at most maxSize bytes each.
func NewRecycler(dir string, keep int, maxSize int64) *Recycler {
	return &Recycler{dir: dir, keep: keep, maxSize: maxSize, seq: uint64(time.Now().UnixNano())}
}

// Adopt takes name, found in the directory, as a spare if it is one (see
// IsSpare), and reports whether it did. Call it before the first Create.
func (r *Recycler) Adopt(name string) bool {
	n, ok := spareSeq(name)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A crash may have left the rename that made it a spare undurable.
	r.vacated = append(r.vacated, filepath.Join(r.dir, name))
	r.seq = max(r.seq, n+1)
	return true
}

// Create makes name in the directory with what fill writes, mode 0600, and
// returns once file and name are durable. On any error name does not
// exist.
func (r *Recycler) Create(name string, fill func(w io.Writer) error) error {
	f, spare, size, err := r.take()
	if err != nil {
		return err
	}
	if err := rewrite(f, size, fill); err != nil {
		f.Close()
		r.giveBack(spare)
		return err
	}
	path := filepath.Join(r.dir, name)
	if err := os.Rename(spare, path); err != nil {
		r.giveBack(spare)
		return err
	}
	if err := r.syncDir(); err != nil {
		// Not known to be durable: as if never made.
		os.Remove(path)
		return err
	}
	return nil
}

// rewrite fills f, positioned at its start and size bytes long, cuts what
// the old content left beyond the new end, then syncs and closes it.
func rewrite(f *os.File, size int64, fill func(w io.Writer) error) error {
	if err := fill(f); err != nil {
		return err
	}
	n, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if n < size {
		if err := f.Truncate(n); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// take opens a spare for rewriting, or creates one.
func (r *Recycler) take() (f *os.File, spare string, size int64, err error) {
	r.mu.Lock()
	if n := len(r.free); n > 0 {
		spare = r.free[n-1]
		r.free = r.free[:n-1]
		r.mu.Unlock()
		if f, err = os.OpenFile(spare, os.O_WRONLY, 0); err == nil {
			var st os.FileInfo
			if st, err = f.Stat(); err == nil {
				return f, spare, st.Size(), nil
			}
			f.Close()
		}
		// Gone or unusable: a new spare stands in.
		os.Remove(spare)
		r.mu.Lock()
	}
	spare = r.nextSpare()
	r.mu.Unlock()
	f, err = os.OpenFile(spare, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	return f, spare, 0, err
}

// giveBack returns a spare that Create did not use. Its name never stood
// for another file, so it may be overwritten at once.
func (r *Recycler) giveBack(spare string) {
	st, err := os.Stat(spare)
	r.mu.Lock()
	keep := err == nil && r.room(st.Size())
	if keep {
		r.free = append(r.free, spare)
	}
	r.mu.Unlock()
	if !keep {
		os.Remove(spare)
	}
}

// room reports whether a file of size bytes may become a spare; r.mu held.
func (r *Recycler) room(size int64) bool {
	return size <= r.maxSize && len(r.free)+len(r.vacated) < r.keep
}

// syncDir syncs the directory; the spares vacated before it began become
// safe to overwrite.
func (r *Recycler) syncDir() error {
	r.mu.Lock()
	vacated := r.vacated
	r.vacated = nil
	r.mu.Unlock()
	err := SyncDir(r.dir)
	r.mu.Lock()
	if err == nil {
		r.free = append(r.free, vacated...)
	} else {
		r.vacated = append(r.vacated, vacated...)
	}
	r.mu.Unlock()
	return err
}

func (r *Recycler) nextSpare() string {
	r.seq++
	return filepath.Join(r.dir, fmt.Sprintf("%s%016x", sparePrefix, r.seq-1))
}

// Recycle removes name from the directory, keeping its file as a spare
// when there is room. Like a plain delete, it is not durable by itself.
func (r *Recycler) Recycle(name string) error {
	path := filepath.Join(r.dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	// Concurrent calls may overshoot keep by their number; harmless.
	keep := st.Mode().IsRegular() && r.room(st.Size())
	spare := r.nextSpare()
	r.mu.Unlock()
	if !keep || os.Rename(path, spare) != nil {
		return os.Remove(path)
	}
	r.mu.Lock()
	r.vacated = append(r.vacated, spare)
	r.mu.Unlock()
	return nil
}
