package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func content(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// listing returns the directory's files and spares, sorted.
func listing(t *testing.T, dir string) (files []string, spares int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if IsSpare(e.Name()) {
			spares++
		} else {
			files = append(files, e.Name())
		}
	}
	return files, spares
}

func TestRecycler(t *testing.T) {
	boom := errors.New("peer went away")
	type step struct {
		create  string // a name to Create with body, or ""
		body    string
		fail    bool   // the fill fails after writing body
		recycle string // a name to Recycle, or ""
		// reuses names the file whose inode the new one must have, or "".
		reuses string
	}
	tests := []struct {
		name       string
		keep       int
		maxSize    int64
		steps      []step
		wantFiles  []string          // left in the directory, spares aside
		wantSpares int               // spares left
		wantBodies map[string]string // content of some of wantFiles
	}{
		{
			name: "a recycled file is rewritten only after a later directory sync",
			keep: 4, maxSize: 1 << 20,
			steps: []step{
				{create: "a", body: "first file, longer than what follows"},
				{recycle: "a"},
				// a's spare name is not durable yet: b gets a new file,
				// whose directory sync makes a's spare reusable.
				{create: "b", body: "second"},
				{create: "c", body: "third", reuses: "a"},
			},
			wantFiles: []string{"b", "c"}, wantSpares: 0,
			wantBodies: map[string]string{"b": "second", "c": "third"},
		},
		{
			name: "a failed fill leaves no file and its spare serves the next",
			keep: 4, maxSize: 1 << 20,
			steps: []step{
				{create: "a", body: "partial", fail: true},
				{create: "b", body: "whole"},
			},
			wantFiles: []string{"b"}, wantSpares: 0,
			wantBodies: map[string]string{"b": "whole"},
		},
		{
			name: "spares beyond keep are deleted",
			keep: 1, maxSize: 1 << 20,
			steps: []step{
				{create: "a", body: "1"}, {create: "b", body: "2"}, {create: "c", body: "3"},
				{recycle: "a"}, {recycle: "b"}, {recycle: "c"},
			},
			wantSpares: 1,
		},
		{
			name: "files over maxSize are deleted",
			keep: 4, maxSize: 4,
			steps: []step{
				{create: "a", body: "12345"}, {create: "b", body: "1234"},
				{recycle: "a"}, {recycle: "b"},
			},
			wantSpares: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r := NewRecycler(dir, tt.keep, tt.maxSize)
			inodes := map[string]os.FileInfo{}
			for _, s := range tt.steps {
				if s.recycle != "" {
					st, err := os.Stat(filepath.Join(dir, s.recycle))
					if err != nil {
						t.Fatal(err)
					}
					inodes[s.recycle] = st
					if err := r.Recycle(s.recycle); err != nil {
						t.Fatalf("Recycle(%s): %v", s.recycle, err)
					}
					continue
				}
				fill := content(s.body)
				if s.fail {
					fill = func(w io.Writer) error {
						content(s.body)(w)
						return boom
					}
				}
				if err := r.Create(s.create, fill); (err != nil) != s.fail {
					t.Fatalf("Create(%s) = %v, want failure %v", s.create, err, s.fail)
				}
				if s.reuses != "" {
					st, err := os.Stat(filepath.Join(dir, s.create))
					if err != nil || !os.SameFile(st, inodes[s.reuses]) {
						t.Errorf("%s is not written into %s's file (%v)", s.create, s.reuses, err)
					}
				}
			}
			files, spares := listing(t, dir)
			if !slices.Equal(files, tt.wantFiles) || spares != tt.wantSpares {
				t.Errorf("directory holds %v and %d spares, want %v and %d", files, spares, tt.wantFiles, tt.wantSpares)
			}
			for name, want := range tt.wantBodies {
				if b, err := os.ReadFile(filepath.Join(dir, name)); string(b) != want {
					t.Errorf("%s holds %q (%v), want %q", name, b, err, want)
				}
			}
		})
	}
}

// Spares left by an earlier run are reused once a directory sync made
// their names durable, and new spare names never collide with them.
func TestRecyclerAdopt(t *testing.T) {
	dir := t.TempDir()
	seq := uint64(time.Now().Add(time.Hour).UnixNano())
	left := fmt.Sprintf("%s%016x", sparePrefix, seq)
	for _, name := range []string{left, ".a.dcm.tmp-123"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("stale content"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.Stat(filepath.Join(dir, left))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecycler(dir, 4, 1<<20)
	for name, want := range map[string]bool{left: true, ".a.dcm.tmp-123": false, "a.dcm": false, sparePrefix + "x": false} {
		if got := r.Adopt(name); got != want {
			t.Errorf("Adopt(%q) = %v, want %v", name, got, want)
		}
	}
	if r.seq <= seq {
		t.Errorf("next spare number %x does not follow the adopted one", r.seq)
	}
	for _, name := range []string{"a", "b"} {
		if err := r.Create(name, content(name)); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "b")); !os.SameFile(st, old) {
		t.Error("the adopted spare was not reused after the first directory sync")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b")); string(b) != "b" {
		t.Errorf("b holds %q", b)
	}
}
