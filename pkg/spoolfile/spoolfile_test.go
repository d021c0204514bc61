package spoolfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func content(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// listing returns the directory's files and its number of spares.
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

// read opens name as Create made it under id, verified, and returns its
// content.
func read(t *testing.T, dir, name string, id uint64) (string, error) {
	t.Helper()
	f, n, err := Open(filepath.Join(dir, name), id, true)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, n))
	return string(b), err
}

func TestDir(t *testing.T) {
	boom := errors.New("peer went away")
	type step struct {
		create  string // a name to Create with body, or ""
		body    string
		fail    bool   // the fill fails after writing body
		recycle string // a name to Recycle, or ""
		reuses  string // a recycled name whose file create must be written into
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
			name: "a recycled file is rewritten, shorter",
			keep: 4, maxSize: 1 << 20,
			steps: []step{
				{create: "a", body: "first file, longer than what follows"},
				{recycle: "a"},
				{create: "b", body: "second", reuses: "a"},
			},
			wantFiles:  []string{"b"},
			wantBodies: map[string]string{"b": "second"},
		},
		{
			name: "a failed fill leaves no file and its file serves the next",
			keep: 4, maxSize: 1 << 20,
			steps: []step{
				{create: "a", body: "partial", fail: true},
				{create: "b", body: "whole"},
			},
			wantFiles:  []string{"b"},
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
			keep: 4, maxSize: 4 + headerLen,
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
			d := New(dir, tt.keep, tt.maxSize)
			recycled := map[string]os.FileInfo{}
			for i, s := range tt.steps {
				if s.recycle != "" {
					st, err := os.Stat(filepath.Join(dir, s.recycle))
					if err != nil {
						t.Fatal(err)
					}
					recycled[s.recycle] = st
					if err := d.Recycle(s.recycle); err != nil {
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
				if err := d.Create(s.create, uint64(i), fill); (err != nil) != s.fail || s.fail && !errors.Is(err, boom) {
					t.Fatalf("Create(%s) = %v, want failure %v", s.create, err, s.fail)
				}
				if s.reuses != "" {
					st, err := os.Stat(filepath.Join(dir, s.create))
					if err != nil || !os.SameFile(st, recycled[s.reuses]) {
						t.Errorf("%s is not written into %s's file (%v)", s.create, s.reuses, err)
					}
				}
			}
			files, spares := listing(t, dir)
			if !slices.Equal(files, tt.wantFiles) || spares != tt.wantSpares {
				t.Errorf("directory holds %v and %d spares, want %v and %d", files, spares, tt.wantFiles, tt.wantSpares)
			}
			for name, want := range tt.wantBodies {
				id := uint64(slices.IndexFunc(tt.steps, func(s step) bool { return s.create == name }))
				if got, err := read(t, dir, name, id); got != want || err != nil {
					t.Errorf("%s holds %q (%v), want %q", name, got, err, want)
				}
			}
		})
	}
}

// What a crash can leave under a name: the spare's earlier content, a cut
// or damaged content. Open rejects all of them.
func TestOpenRejectsIncomplete(t *testing.T) {
	dir := t.TempDir()
	d := New(dir, 4, 1<<20)
	if err := d.Create("old", 1, content("earlier instance")); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, "old"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   []byte
		id     uint64
		verify bool
	}{
		{"another file's content", good, 2, false},
		{"empty", nil, 1, false},
		{"cut short", good[:len(good)-3], 1, false},
		{"header never written", append(make([]byte, headerLen), good[headerLen:]...), 1, false},
		{"content damaged", append(slices.Clone(good[:headerLen]), append([]byte("E"), good[headerLen+1:]...)...), 1, true},
		{"checksum damaged", append(append(slices.Clone(good[:4]), "XXXX"...), good[8:]...), 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "crashed")
			if err := os.WriteFile(path, tt.file, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := Open(path, tt.id, tt.verify); !errors.Is(err, ErrIncomplete) {
				t.Errorf("Open = %v, want ErrIncomplete", err)
			}
		})
	}
	if got, err := read(t, dir, "old", 1); got != "earlier instance" || err != nil {
		t.Errorf("intact file: %q, %v", got, err)
	}
}

// Spares left by an earlier run are reused, and new spare names never
// collide with them.
func TestAdopt(t *testing.T) {
	dir := t.TempDir()
	seq := uint64(time.Now().Add(time.Hour).UnixNano())
	left := fmt.Sprintf("%s%016x", sparePrefix, seq)
	if err := os.WriteFile(filepath.Join(dir, left), []byte("stale content"), 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(filepath.Join(dir, left))
	if err != nil {
		t.Fatal(err)
	}
	d := New(dir, 4, 1<<20)
	for name, want := range map[string]bool{left: true, ".a.dcm.tmp-123": false, "a.dcm": false, sparePrefix + "x": false} {
		if got := d.Adopt(name); got != want {
			t.Errorf("Adopt(%q) = %v, want %v", name, got, want)
		}
	}
	if d.seq <= seq {
		t.Errorf("next spare number %x does not follow the adopted one", d.seq)
	}
	if err := d.Create("a", 7, content("new")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "a")); !os.SameFile(st, old) {
		t.Error("the adopted spare was not reused")
	}
	if got, err := read(t, dir, "a", 7); got != "new" || err != nil {
		t.Errorf("a holds %q, %v", got, err)
	}
}

func TestExport(t *testing.T) {
	dir := t.TempDir()
	d := New(dir, 4, 1<<20)
	if err := d.Create("a", 3, content("plain content")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "a.out")
	if err := Export(filepath.Join(dir, "a"), dst, 3); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); string(b) != "plain content" || err != nil {
		t.Errorf("exported %q, %v", b, err)
	}
	if files, _ := listing(t, dir); len(files) != 0 {
		t.Errorf("left %v", files)
	}
}

// Concurrent writers each get a file of their own.
func TestConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	d := New(dir, 4, 1<<20)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				name, body := fmt.Sprintf("w%d-%d", w, i), strings.Repeat(fmt.Sprint(w, i), 100+i)
				if err := d.Create(name, uint64(w*100+i), content(body)); err != nil {
					t.Error(err)
					return
				}
				if got, err := read(t, dir, name, uint64(w*100+i)); got != body || err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if i%2 == 0 {
					d.Recycle(name)
				}
			}
		})
	}
	wg.Wait()
	if files, spares := listing(t, dir); len(files) != 40 || spares > 4+4 {
		t.Errorf("%d files and %d spares, want 40 and at most 8", len(files), spares)
	}
}
