package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"", "null", "20", "1000", "1001", "0", "-1", "1.5", "1e2", `"10"`, `"invalid_limit"`, "true", "{}", "[1]", "1e400", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := ParseLimit(json.RawMessage(raw))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Invalid limit: ") || len(err.Error()) > 250 {
				t.Fatalf("bad error text %q", err)
			}
			return
		}
		if n < 1 || n > MaxFetchLimit {
			t.Fatalf("ParseLimit(%q) = %d, out of range", raw, n)
		}
	})
}

// FuzzFetch writes arbitrary bytes as a log file and pages through it with
// small limits: every entry returned must be a JSON object line of the file,
// each exactly once, newest first. An arbitrary cursor must never fail other
// than with errBadCursor.
func FuzzFetch(f *testing.F) {
	f.Add([]byte(`{"a":1}`+"\n"+`{"a":2}`+"\n"), 1, "")
	f.Add([]byte("junk\n{\"a\":1}\n\n{\"b\"\n{}"), 2, "")
	f.Add([]byte(strings.Repeat("{}\n", 50)), 7, encodeCursor("medplum-agent-main-2026-11-25.log", 30))
	f.Add([]byte("{\"x\":1}\r\n{}\n"), 3, "bWVkcGx1bQ")
	// One directory and logger for all inputs: the logger is at NONE, so it
	// never writes, and each input simply replaces the file.
	dir := f.TempDir()
	path := filepath.Join(dir, "medplum-agent-main-2026-11-25.log")
	l, err := New(Options{Dir: dir, Name: "main", Level: "NONE"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	f.Fuzz(func(t *testing.T, content []byte, limit int, before string) {
		if limit < 1 || limit > 50 {
			limit = 1 + (limit%50+50)%50
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}

		if _, _, _, err := l.Fetch(limit, before); err != nil && err != errBadCursor {
			t.Fatalf("Fetch with cursor %q: %v", before, err)
		}

		var want []string
		for _, line := range bytes.Split(content, []byte("\n")) {
			if len(line) > 0 && len(line) <= maxEntryBytes && line[0] == '{' && json.Valid(line) {
				want = append([]string{string(line)}, want...)
			}
		}
		var got []string
		cursor := ""
		for range len(want) + 2 {
			entries, hasMore, next, err := l.Fetch(limit, cursor)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				got = append(got, string(e))
			}
			if !hasMore {
				break
			}
			cursor = next
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("paged entries differ:\n got %q\nwant %q", got, want)
		}
	})
}
