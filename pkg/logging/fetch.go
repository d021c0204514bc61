package logging

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	// readChunk is how much of a file is read per step backwards.
	readChunk = 32 << 10
	// maxEntryBytes skips lines longer than this when fetching: such a line
	// is not a normal log entry and would only bloat the reply.
	maxEntryBytes = 64 << 10
	// maxFetchBytes caps one page; a page cut short by it still reports
	// hasMore and a cursor, so nothing is lost, only split further.
	maxFetchBytes = 4 << 20
)

var errBadCursor = errors.New("invalid before cursor")

// Fetch returns up to limit entries of this logger's files, newest first,
// for agent:logs:request. before is "" for the newest entries or a cursor
// from an earlier call; nextBefore continues after the oldest entry returned
// and is "" when hasMore is false. Lines that are not JSON objects (e.g. cut
// short by a crash) are skipped. Files are read backwards in small chunks, so
// memory does not depend on their size.
func (l *Logger) Fetch(limit int, before string) (entries []json.RawMessage, hasMore bool, nextBefore string, err error) {
	if l.w == nil {
		return nil, false, "", ErrFetchUnsupported
	}
	if limit < 1 || limit > MaxFetchLimit {
		return nil, false, "", invalidLimit(strconv.Itoa(limit))
	}
	var (
		start    logFile
		startOff int64
	)
	if before != "" {
		if start, startOff, err = decodeCursor(l.w.prefix, before); err != nil {
			return nil, false, "", err
		}
	}
	cur, curSize, curOpen, err := l.w.snapshot()
	if err != nil {
		return nil, false, "", fmt.Errorf("flush log: %w", err)
	}
	files, err := listFiles(l.w.dir, l.w.prefix)
	if err != nil {
		return nil, false, "", err
	}

	var (
		last  logFile
		lastO int64
		total int
	)
	for i := len(files) - 1; i >= 0 && !hasMore; i-- {
		f := files[i]
		end := int64(-1) // whole file
		if curOpen && f == cur {
			end = curSize
		}
		if before != "" {
			switch c := f.compare(start); {
			case c > 0:
				continue
			case c == 0 && (end < 0 || startOff < end):
				end = startOff
			}
		}
		err := readBackward(filepath.Join(l.w.dir, f.fileName(l.w.prefix)), end, func(line []byte, off int64) bool {
			if len(line) > maxEntryBytes || line[0] != '{' || !json.Valid(line) {
				return true
			}
			if len(entries) == limit || (total+len(line) > maxFetchBytes && len(entries) > 0) {
				hasMore = true
				return false
			}
			entries = append(entries, bytes.Clone(line))
			total += len(line)
			last, lastO = f, off
			return true
		})
		if err != nil {
			return nil, false, "", err
		}
	}
	if hasMore {
		nextBefore = encodeCursor(last.fileName(l.w.prefix), lastO)
	}
	return entries, hasMore, nextBefore, nil
}

// readBackward calls fn for each non-empty line of the file that ends before
// offset end (end < 0: the whole file), last line first, with the line's
// offset. A line far longer than maxEntryBytes is skipped without being held
// in memory whole; fn must reject the moderately long ones it still receives.
// A missing file reads as empty.
func readBackward(path string, end int64, fn func(line []byte, off int64) bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // deleted by rotation since it was listed
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if end < 0 || end > fi.Size() {
		end = fi.Size()
	}
	var (
		pos  = end  // data holds the file's bytes [pos, pos+len(data))
		data []byte // not yet split into lines
		skip bool   // dropping the rest of an over-long line
	)
	for {
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			line := data[i+1:]
			if skip {
				skip = false
			} else if len(line) > 0 && !fn(line, pos+int64(i)+1) {
				return nil
			}
			data = data[:i]
			continue
		}
		if pos == 0 {
			if !skip && len(data) > 0 {
				fn(data, 0)
			}
			return nil
		}
		if len(data) > maxEntryBytes {
			// No newline yet and already too long: drop it and keep
			// reading only to find where it starts.
			skip, data = true, data[:0]
		}
		n := min(readChunk, pos)
		buf := make([]byte, int(n)+len(data))
		if _, err := f.ReadAt(buf[:n], pos-n); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		copy(buf[n:], data)
		data, pos = buf, pos-n
	}
}

// A cursor names a file and the offset of the oldest entry already returned.
// It is opaque to the server; encoding it keeps it a plain token.
func encodeCursor(name string, off int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(name + ":" + strconv.FormatInt(off, 10)))
}

// decodeCursor accepts only this logger's own file names, so a cursor can
// never point outside the log directory.
func decodeCursor(prefix, s string) (logFile, int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return logFile{}, 0, errBadCursor
	}
	name, offText, ok := strings.Cut(string(b), ":")
	if !ok {
		return logFile{}, 0, errBadCursor
	}
	f, ok := parseFileName(prefix, name)
	off, err := strconv.ParseInt(offText, 10, 64)
	if !ok || err != nil || off < 0 {
		return logFile{}, 0, errBadCursor
	}
	return f, off, nil
}
