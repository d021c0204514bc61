package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The committed man pages and completion scripts must be what gen-docs
// makes from the current command tree.
func TestCommittedDocsAreCurrent(t *testing.T) {
	tmp := t.TempDir()
	man, compl := filepath.Join(tmp, "man"), filepath.Join(tmp, "completions")
	if err := generate(man, compl); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct{ fresh, committed string }{
		{man, filepath.Join("..", "..", "man")},
		{compl, filepath.Join("..", "..", "completions")},
	} {
		want := readDir(t, dir.fresh)
		got := readDir(t, dir.committed)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s is stale; run `go run ./cmd/gen-docs` and commit the result (-generated +committed):\n%s", dir.committed, diff)
		}
	}
}

// Two runs give identical bytes: no dates or other varying input.
func TestDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := generate(filepath.Join(d, "man"), filepath.Join(d, "completions")); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"man", "completions"} {
		if diff := cmp.Diff(readDir(t, filepath.Join(a, sub)), readDir(t, filepath.Join(b, sub))); diff != "" {
			t.Errorf("%s differs between runs:\n%s", sub, diff)
		}
	}
}

// generate removes pages of commands that are gone.
func TestStalePagesRemoved(t *testing.T) {
	man := filepath.Join(t.TempDir(), "man")
	if err := os.MkdirAll(man, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(man, "medplum-agent-gone.1")
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := generate(man, filepath.Join(filepath.Dir(man), "completions")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale page kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(man, "medplum-agent.1")); err != nil {
		t.Errorf("root page missing: %v", err)
	}
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}
