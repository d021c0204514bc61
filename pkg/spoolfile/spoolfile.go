// Package spoolfile keeps the files of a spool directory: each written once
// and made durable before its sender is answered, read back to be
// forwarded, then dropped, many times a second.
//
// Two costs dominate such a directory besides the content's own sync:
// creating and deleting files (ext4 without a journal scans its recently
// deleted inodes on every create, and every file system allocates and
// frees inodes and blocks), and the directory sync that makes a new name
// durable. Create avoids the first by rewriting a file an earlier one
// vacated (a spare) and hides the second: it gives the spare its name
// first and syncs the directory while the content is written, then syncs
// the file. A crash may thus leave a name whose content never fully
// reached the disk. Every file therefore starts with a header holding the
// content's length, an identifier the caller binds to the name, and a
// CRC-32C of both and the content; Open with verify rejects a file that
// does not match its header.
package spoolfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// ErrIncomplete is returned by Open for a file that does not match its
// header: a crash interrupted its Create, so its sender was never
// answered.
var ErrIncomplete = errors.New("spoolfile: incomplete file")

const (
	// sparePrefix names the files kept for reuse. The leading dot keeps
	// them apart from the caller's names.
	sparePrefix = ".spare-"
	// headerLen is the header: magic, CRC-32C, identifier and content
	// length (uint64 each); little endian.
	headerLen = 24
	magic     = "MSF1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// IsSpare reports whether name is a file a Dir keeps for reuse.
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

// Dir creates the files of one directory. Its methods may be called
// concurrently.
type Dir struct {
	dir     string
	keep    int   // spares kept; more are deleted
	maxSize int64 // larger files are deleted rather than kept

	mu   sync.Mutex
	free []string // spares, by path
	seq  uint64   // of the next spare name
}

// New returns a Dir for dir that keeps at most keep spares of at most
// maxSize bytes each.
func New(dir string, keep int, maxSize int64) *Dir {
	return &Dir{dir: dir, keep: keep, maxSize: maxSize, seq: uint64(time.Now().UnixNano())}
}

// Adopt takes name, found in the directory, as a spare if it is one (see
// IsSpare), and reports whether it did.
func (d *Dir) Adopt(name string) bool {
	n, ok := spareSeq(name)
	if !ok {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = append(d.free, filepath.Join(d.dir, name))
	d.seq = max(d.seq, n+1)
	return true
}

// Create makes name in the directory with what fill writes, mode 0600, and
// id in its header, and returns once content and name are durable. On an
// error name does not exist. Each name must be used once: Open tells a
// file from an earlier one by id only.
func (d *Dir) Create(name string, id uint64, fill func(w io.Writer) error) error {
	path := filepath.Join(d.dir, name)
	f, size, err := d.open(path)
	if err != nil {
		return err
	}
	// The name goes to disk while the content is written; a crash in
	// between leaves a file Open rejects.
	synced := make(chan error, 1)
	go func() { synced <- atomicfile.SyncDir(d.dir) }()
	err = rewrite(f, size, id, fill)
	if serr := <-synced; err == nil {
		err = serr
	}
	if err != nil {
		f.Close()
		if d.Recycle(name) != nil {
			os.Remove(path)
		}
		return err
	}
	return nil
}

// open gives a spare the name path and opens it for rewriting, or creates
// path. It renames before opening, as Windows cannot rename an open file.
func (d *Dir) open(path string) (f *os.File, size int64, err error) {
	for {
		d.mu.Lock()
		if len(d.free) == 0 {
			d.mu.Unlock()
			f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			return f, 0, err
		}
		spare := d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
		d.mu.Unlock()
		if os.Rename(spare, path) != nil {
			os.Remove(spare) // gone or unusable
			continue
		}
		if f, err = os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			var st os.FileInfo
			if st, err = f.Stat(); err == nil {
				return f, st.Size(), nil
			}
			f.Close()
		}
		os.Remove(path)
		return nil, 0, err
	}
}

// rewrite writes the header and what fill writes over f, positioned at
// its start and size bytes long, cuts what the old content left beyond,
// and syncs and closes f. The header is written last, with the checksum.
func rewrite(f *os.File, size int64, id uint64, fill func(w io.Writer) error) error {
	var h [headerLen]byte
	if _, err := f.Write(h[:]); err != nil {
		return err
	}
	w := &summer{w: f}
	if err := fill(w); err != nil {
		return err
	}
	copy(h[:], magic)
	binary.LittleEndian.PutUint64(h[8:], id)
	binary.LittleEndian.PutUint64(h[16:], uint64(w.n))
	binary.LittleEndian.PutUint32(h[4:], crc32.Update(w.crc, castagnoli, h[8:]))
	if _, err := f.WriteAt(h[:], 0); err != nil {
		return err
	}
	if end := headerLen + w.n; end < size {
		if err := f.Truncate(end); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// summer checksums and counts what it writes.
type summer struct {
	w   io.Writer
	crc uint32
	n   int64
}

func (s *summer) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	s.n += int64(n)
	return n, err
}

// room reports whether a file of size bytes may become a spare; d.mu held.
func (d *Dir) room(size int64) bool {
	return size <= d.maxSize && len(d.free) < d.keep
}

func (d *Dir) nextSpare() string {
	d.seq++
	return filepath.Join(d.dir, fmt.Sprintf("%s%016x", sparePrefix, d.seq-1))
}

// Recycle removes name from the directory, keeping its file as a spare
// when there is room. Like a plain delete it is not durable by itself: a
// crash may bring name back, with its content or, once the spare was
// reused, with one Open rejects.
func (d *Dir) Recycle(name string) error {
	path := filepath.Join(d.dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	d.mu.Lock()
	// Concurrent calls may overshoot keep by their number; harmless.
	keep := st.Mode().IsRegular() && d.room(st.Size())
	spare := d.nextSpare()
	d.mu.Unlock()
	if !keep || os.Rename(path, spare) != nil {
		return os.Remove(path)
	}
	d.mu.Lock()
	d.free = append(d.free, spare)
	d.mu.Unlock()
	return nil
}

// Open opens a file Create made under id for reading, positioned at its
// content, and returns it with the content's length. It checks the header
// and, with verify, reads the content against the checksum: do that for
// files found after a restart, as a crash may have cut them short.
func Open(path string, id uint64, verify bool) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	n, err := check(f, id, verify)
	if err == nil {
		_, err = f.Seek(headerLen, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

func check(f *os.File, id uint64, verify bool) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var h [headerLen]byte
	if _, err := f.ReadAt(h[:], 0); errors.Is(err, io.EOF) {
		return 0, ErrIncomplete
	} else if err != nil {
		return 0, err
	}
	n := st.Size() - headerLen
	if string(h[:4]) != magic || binary.LittleEndian.Uint64(h[8:]) != id || binary.LittleEndian.Uint64(h[16:]) != uint64(n) {
		return 0, ErrIncomplete
	}
	if !verify {
		return n, nil
	}
	sum := crc32.New(castagnoli)
	if _, err := io.Copy(sum, io.NewSectionReader(f, headerLen, n)); err != nil {
		return 0, err
	}
	if crc32.Update(sum.Sum32(), castagnoli, h[8:]) != binary.LittleEndian.Uint32(h[4:]) {
		return 0, ErrIncomplete
	}
	return n, nil
}

// Export copies the content of a file Create made under id to a new file
// dst, for other programs to read, and removes the original.
func Export(path, dst string, id uint64) error {
	f, n, err := Open(path, id, false)
	if err != nil {
		return err
	}
	err = atomicfile.Write(dst, 0o600, func(w io.Writer) error {
		_, err := io.Copy(w, io.LimitReader(f, n))
		return err
	})
	f.Close() // before the removal, which Windows refuses for open files
	if err != nil {
		return err
	}
	return os.Remove(path)
}
