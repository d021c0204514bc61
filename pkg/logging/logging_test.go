package logging

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is an injectable, settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var day1 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// newTestLogger builds a logger that rotates after maxBytes bytes.
func newTestLogger(t *testing.T, dir string, c *clock, maxBytes int64, keep int) *Logger {
	t.Helper()
	l, err := newLogger(Options{Dir: dir, Name: "main", FilesToKeep: keep, Now: c.Now}, slog.LevelDebug, true, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		level   slog.Level
		enabled bool
		err     bool
	}{
		{in: "NONE", level: slog.LevelError, enabled: false},
		{in: "error", level: slog.LevelError, enabled: true},
		{in: " Warn ", level: slog.LevelWarn, enabled: true},
		{in: "INFO", level: slog.LevelInfo, enabled: true},
		{in: "debug", level: slog.LevelDebug, enabled: true},
		{in: "", err: true},
		{in: "TRACE", err: true},
		{in: "WARNING", err: true},
	}
	for _, tt := range tests {
		level, enabled, err := ParseLevel(tt.in)
		if (err != nil) != tt.err {
			t.Fatalf("ParseLevel(%q) err = %v, want error %v", tt.in, err, tt.err)
		}
		if !tt.err && (level != tt.level || enabled != tt.enabled) {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, %v", tt.in, level, enabled, tt.level, tt.enabled)
		}
	}
}

func TestParseLimit(t *testing.T) {
	const suffix = " - must be a valid positive integer less than or equal to 1000"
	tests := []struct {
		raw  string
		want int
		err  string
	}{
		{raw: "", want: 20},
		{raw: "null", want: 20},
		{raw: "1", want: 1},
		{raw: "10", want: 10},
		{raw: " 1000 ", want: 1000},
		{raw: "10.0", want: 10},
		{raw: "1e2", want: 100},
		{raw: `"invalid_limit"`, err: "Invalid limit: invalid_limit" + suffix},
		{raw: "-1", err: "Invalid limit: -1" + suffix},
		{raw: "200000", err: "Invalid limit: 200000" + suffix},
		{raw: "0", err: "Invalid limit: 0" + suffix},
		{raw: "1001", err: "Invalid limit: 1001" + suffix},
		{raw: "1.5", err: "Invalid limit: 1.5" + suffix},
		{raw: `"10"`, err: "Invalid limit: 10" + suffix},
		{raw: "0x1p4", err: "Invalid limit: 0x1p4" + suffix},
		{raw: "true", err: "Invalid limit: true" + suffix},
		{raw: `{"a":1}`, err: `Invalid limit: {"a":1}` + suffix},
		{raw: `"` + strings.Repeat("x", 200) + `"`, err: "Invalid limit: " + strings.Repeat("x", 100) + "..." + suffix},
	}
	for _, tt := range tests {
		got, err := ParseLimit(json.RawMessage(tt.raw))
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.err {
			t.Errorf("ParseLimit(%s) = %d, %q; want %d, %q", tt.raw, got, gotErr, tt.want, tt.err)
		}
	}
}

func TestParseFileName(t *testing.T) {
	prefix := filePrefix("main")
	tests := []struct {
		name string
		want logFile
		ok   bool
	}{
		{name: "medplum-agent-main-2026-11-25.log", want: logFile{day: "2026-11-25"}, ok: true},
		{name: "medplum-agent-main-2026-11-25.1.log", want: logFile{day: "2026-11-25", index: 1}, ok: true},
		{name: "medplum-agent-main-2026-11-25.12.log", want: logFile{day: "2026-11-25", index: 12}, ok: true},
		{name: "medplum-agent-main-2026-11-25.0.log"},
		{name: "medplum-agent-main-2026-11-25.01.log"},
		{name: "medplum-agent-main-2026-11-25.-1.log"},
		{name: "medplum-agent-main-2026-13-25.log"},
		{name: "medplum-agent-main-2026-11-25.log.1"},
		{name: "medplum-agent-channels-2026-11-25.log"},
		{name: "medplum-agent-main-2026-11-25/../../x.log"},
		{name: "medplum-agent-main-.log"},
	}
	for _, tt := range tests {
		got, ok := parseFileName(prefix, tt.name)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseFileName(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
		if ok && got.fileName(prefix) != tt.name {
			t.Errorf("fileName round trip: %q != %q", got.fileName(prefix), tt.name)
		}
	}
}

func TestEntryShapeAndLevels(t *testing.T) {
	tests := []struct {
		level       string
		wantFile    string
		wantConsole string
	}{
		{
			level: "INFO",
			wantFile: `{"timestamp":"2026-11-25T10:00:00.000Z","level":"INFO","msg":"started","channel":"adt","port":2575}` + "\n" +
				`{"timestamp":"2026-11-25T10:00:00.000Z","level":"WARN","msg":"slow","component":"ws","ms":12}` + "\n" +
				`{"timestamp":"2026-11-25T10:00:00.000Z","level":"ERROR","msg":"failed","err":"boom"}` + "\n",
			wantConsole: `time="2026-11-25 10:00:00.000" level=INFO msg=started channel=adt port=2575` + "\n" +
				`time="2026-11-25 10:00:00.000" level=WARN msg=slow component=ws ms=12` + "\n" +
				`time="2026-11-25 10:00:00.000" level=ERROR msg=failed err=boom` + "\n" +
				`time="2026-11-25 10:00:00.000" level=ERROR msg="after close"` + "\n",
		},
		{
			level:    "error",
			wantFile: `{"timestamp":"2026-11-25T10:00:00.000Z","level":"ERROR","msg":"failed","err":"boom"}` + "\n",
			wantConsole: `time="2026-11-25 10:00:00.000" level=ERROR msg=failed err=boom` + "\n" +
				`time="2026-11-25 10:00:00.000" level=ERROR msg="after close"` + "\n",
		},
		{level: "NONE"},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			dir := t.TempDir()
			var console bytes.Buffer
			l, err := New(Options{Dir: dir, Name: "main", Level: tt.level, Console: &console, Now: (&clock{t: day1}).Now})
			if err != nil {
				t.Fatal(err)
			}
			log := l.Slog()
			log.Debug("hidden")
			log.Info("started", "channel", "adt", "port", 2575)
			log.With("component", "ws").Warn("slow", "ms", 12)
			log.Error("failed", "err", "boom")
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			log.Error("after close")
			got := ""
			if b, err := os.ReadFile(filepath.Join(dir, "medplum-agent-main-2026-11-25.log")); err == nil {
				got = string(b)
			}
			if d := cmp.Diff(tt.wantFile, got); d != "" {
				t.Errorf("file mismatch (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantConsole, console.String()); d != "" {
				t.Errorf("console mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []Options{
		{Level: "LOUD"},
		{Dir: t.TempDir(), Name: "../x"},
		{Dir: t.TempDir(), Name: ""},
		{Dir: t.TempDir(), Name: "main", MaxFileSizeMB: -1},
		{Dir: t.TempDir(), Name: "main", FilesToKeep: -1},
	}
	for _, opt := range tests {
		if l, err := New(opt); err == nil {
			l.Close()
			t.Errorf("New(%+v) succeeded, want error", opt)
		}
	}
}

func TestErrorIsFlushedAtOnce(t *testing.T) {
	dir := t.TempDir()
	l := newTestLogger(t, dir, &clock{t: day1}, 1<<20, 10)
	l.Slog().Error("disk on fire")
	got := readFile(t, filepath.Join(dir, "medplum-agent-main-2026-11-25.log"))
	if !strings.Contains(got, `"msg":"disk on fire"`) {
		t.Errorf("error entry not flushed: %q", got)
	}
}

func TestDailyFileFollowsClockLocation(t *testing.T) {
	// 23:59 at UTC+2 is still the 25th locally although UTC is past noon;
	// two minutes later it is the 26th locally.
	zone := time.FixedZone("UTC+2", 2*3600)
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 11, 25, 23, 59, 0, 0, zone)}
	l := newTestLogger(t, dir, c, 1<<20, 10)
	l.Slog().Info("before midnight")
	c.Set(time.Date(2026, 11, 26, 0, 1, 0, 0, zone))
	l.Slog().Info("after midnight")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"medplum-agent-main-2026-11-25.log": `{"timestamp":"2026-11-25T21:59:00.000Z","level":"INFO","msg":"before midnight"}` + "\n",
		"medplum-agent-main-2026-11-26.log": `{"timestamp":"2026-11-25T22:01:00.000Z","level":"INFO","msg":"after midnight"}` + "\n",
	}
	got := map[string]string{}
	for _, name := range dirFiles(t, dir) {
		got[name] = readFile(t, filepath.Join(dir, name))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("files mismatch (-want +got):\n%s", d)
	}
}

func TestRotationBySizeAndCount(t *testing.T) {
	// Each line is 93 bytes, so a 100-byte limit holds one line per file.
	tests := []struct {
		name      string
		maxBytes  int64
		keep      int
		lines     int
		nextDayAt int // index of the first line logged on the next day; -1 = never
		want      map[string][]int
	}{
		{
			name: "size", maxBytes: 100, keep: 3, lines: 6, nextDayAt: -1,
			want: map[string][]int{
				"medplum-agent-main-2026-11-25.3.log": {3},
				"medplum-agent-main-2026-11-25.4.log": {4},
				"medplum-agent-main-2026-11-25.5.log": {5},
			},
		},
		{
			name: "two lines per file", maxBytes: 200, keep: 10, lines: 5, nextDayAt: -1,
			want: map[string][]int{
				"medplum-agent-main-2026-11-25.log":   {0, 1},
				"medplum-agent-main-2026-11-25.1.log": {2, 3},
				"medplum-agent-main-2026-11-25.2.log": {4},
			},
		},
		{
			name: "count spans days", maxBytes: 100, keep: 3, lines: 4, nextDayAt: 2,
			want: map[string][]int{
				"medplum-agent-main-2026-11-25.1.log": {1},
				"medplum-agent-main-2026-11-26.log":   {2},
				"medplum-agent-main-2026-11-26.1.log": {3},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := &clock{t: day1}
			l := newTestLogger(t, dir, c, tt.maxBytes, tt.keep)
			for i := range tt.lines {
				if i == tt.nextDayAt {
					c.Set(day1.Add(24 * time.Hour))
				}
				l.Slog().Info("line", "n", i, "pad", "xxxxxxxxx")
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got := map[string][]int{}
			for _, name := range dirFiles(t, dir) {
				for _, line := range strings.SplitAfter(readFile(t, filepath.Join(dir, name)), "\n") {
					if line == "" {
						continue
					}
					if len(line) != 93 {
						t.Fatalf("line is %d bytes, the test assumes 93: %q", len(line), line)
					}
					var e struct{ N int }
					if err := json.Unmarshal([]byte(line), &e); err != nil {
						t.Fatal(err)
					}
					got[name] = append(got[name], e.N)
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("files mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestRestartContinuesTodaysFile(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: day1}
	for i := range 3 {
		l, err := newLogger(Options{Dir: dir, Name: "main", Now: c.Now}, slog.LevelInfo, true, 200)
		if err != nil {
			t.Fatal(err)
		}
		l.Slog().Info("line", "n", i, "pad", "xxxxxxxxx")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Run 0 and 1 share the first file; run 2 finds it full and starts .1.
	want := []string{"medplum-agent-main-2026-11-25.1.log", "medplum-agent-main-2026-11-25.log"}
	if d := cmp.Diff(want, dirFiles(t, dir)); d != "" {
		t.Errorf("files mismatch (-want +got):\n%s", d)
	}
}

func TestPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX modes")
	}
	dir := filepath.Join(t.TempDir(), "logs", "main")
	l := newTestLogger(t, dir, &clock{t: day1}, 1<<20, 10)
	l.Slog().Info("x")
	l.Close()
	for path, want := range map[string]os.FileMode{
		dir: dirPerm,
		filepath.Join(dir, "medplum-agent-main-2026-11-25.log"): filePerm,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
}

// fill writes n numbered entries through the logger, starting a new file
// every two entries and a new day every five.
func fill(t *testing.T, dir string, n int) *Logger {
	t.Helper()
	c := &clock{t: day1}
	l := newTestLogger(t, dir, c, 200, 100)
	for i := range n {
		c.Set(day1.Add(time.Duration(i/5) * 24 * time.Hour))
		l.Slog().Info("line", "n", i, "pad", "xxxxxxxxx")
	}
	return l
}

func entryNumbers(t *testing.T, entries []json.RawMessage) []int {
	t.Helper()
	var ns []int
	for _, e := range entries {
		var v struct{ N int }
		if err := json.Unmarshal(e, &v); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, v.N)
	}
	return ns
}

func TestFetchPaging(t *testing.T) {
	const total = 23
	dir := t.TempDir()
	l := fill(t, dir, total)
	if n := len(dirFiles(t, dir)); n < 10 {
		t.Fatalf("want entries spread over many files, got %d", n)
	}
	var all []int
	for n := total - 1; n >= 0; n-- {
		all = append(all, n)
	}
	for _, limit := range []int{1, 2, 3, 7, 22, 23, 1000} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			var got []int
			before := ""
			for page := 0; ; page++ {
				entries, hasMore, next, err := l.Fetch(limit, before)
				if err != nil {
					t.Fatal(err)
				}
				if hasMore && len(entries) != limit {
					t.Fatalf("page %d: %d entries with more to come, want exactly %d", page, len(entries), limit)
				}
				got = append(got, entryNumbers(t, entries)...)
				if !hasMore {
					if next != "" {
						t.Errorf("last page has cursor %q", next)
					}
					break
				}
				before = next
			}
			if d := cmp.Diff(all, got); d != "" {
				t.Errorf("entries mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestFetchCursorSurvivesRestartAndNewLines(t *testing.T) {
	dir := t.TempDir()
	l := fill(t, dir, 12)
	first, hasMore, next, err := l.Fetch(5, "")
	if err != nil || !hasMore {
		t.Fatalf("Fetch = %v, hasMore %v", err, hasMore)
	}
	l.Slog().Info("line", "n", 99) // newer lines must not shift the cursor
	l.Close()

	l2, err := newLogger(Options{Dir: dir, Name: "main", FilesToKeep: 100, Now: (&clock{t: day1.Add(72 * time.Hour)}).Now}, slog.LevelInfo, true, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	second, hasMore, _, err := l2.Fetch(1000, next)
	if err != nil || hasMore {
		t.Fatalf("Fetch = %v, hasMore %v", err, hasMore)
	}
	want := []int{11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}
	if d := cmp.Diff(want, append(entryNumbers(t, first), entryNumbers(t, second)...)); d != "" {
		t.Errorf("entries mismatch (-want +got):\n%s", d)
	}
}

func TestFetchSkipsBadAndHugeLines(t *testing.T) {
	dir := t.TempDir()
	l := newTestLogger(t, dir, &clock{t: day1}, 1<<30, 10)
	l.Slog().Info("line", "n", 0)
	l.Slog().Info("line", "n", 1, "big", strings.Repeat("y", 3*maxEntryBytes))
	l.Slog().Info("line", "n", 2, "big", strings.Repeat("z", maxEntryBytes-100))
	l.Slog().Info("line", "n", 3)
	l.Flush()
	f, err := os.OpenFile(filepath.Join(dir, "medplum-agent-main-2026-11-25.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n\nnot json\n[1,2]\n{\"truncated\":")
	f.Close()
	entries, hasMore, _, err := l.Fetch(10, "")
	if err != nil || hasMore {
		t.Fatalf("Fetch = %v, hasMore %v", err, hasMore)
	}
	if d := cmp.Diff([]int{3, 2, 0}, entryNumbers(t, entries)); d != "" {
		t.Errorf("entries mismatch (-want +got):\n%s", d)
	}
}

func TestFetchErrors(t *testing.T) {
	l := newTestLogger(t, t.TempDir(), &clock{t: day1}, 1<<20, 10)
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		limit  int
		before string
		want   string
	}{
		{limit: 0, want: "Invalid limit: 0 - must be a valid positive integer less than or equal to 1000"},
		{limit: 1001, want: "Invalid limit: 1001 - must be a valid positive integer less than or equal to 1000"},
		{limit: 1, before: "%%%", want: errBadCursor.Error()},
		{limit: 1, before: enc("../../etc/passwd:0"), want: errBadCursor.Error()},
		{limit: 1, before: enc("medplum-agent-channels-2026-11-25.log:0"), want: errBadCursor.Error()},
		{limit: 1, before: enc("medplum-agent-main-2026-11-25.log:-5"), want: errBadCursor.Error()},
		{limit: 1, before: enc("medplum-agent-main-2026-11-25.log"), want: errBadCursor.Error()},
	}
	for _, tt := range tests {
		_, _, _, err := l.Fetch(tt.limit, tt.before)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Fetch(%d, %q) err = %v, want %q", tt.limit, tt.before, err, tt.want)
		}
	}

	console, err := New(Options{Console: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := console.Fetch(20, ""); err != ErrFetchUnsupported {
		t.Errorf("console-only Fetch err = %v, want ErrFetchUnsupported", err)
	}
	if got, want := ErrFetchUnsupported.Error(), "Unable to fetch logs since current logger instance does not support fetching"; got != want {
		t.Errorf("ErrFetchUnsupported = %q, want %q", got, want)
	}
}

func TestConcurrentWritersRotationAndFetch(t *testing.T) {
	const writers, perWriter = 4, 200
	dir := t.TempDir()
	l := newTestLogger(t, dir, &clock{t: day1}, 4096, 1000)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				l.Slog().Info("line", "w", w, "i", i)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if _, _, _, err := l.Fetch(50, ""); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()

	seen := map[[2]int]bool{}
	before := ""
	for {
		entries, hasMore, next, err := l.Fetch(MaxFetchLimit, before)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			var v struct{ W, I int }
			if err := json.Unmarshal(e, &v); err != nil {
				t.Fatal(err)
			}
			seen[[2]int{v.W, v.I}] = true
		}
		if !hasMore {
			break
		}
		before = next
	}
	if len(seen) != writers*perWriter {
		t.Errorf("fetched %d distinct entries, want %d", len(seen), writers*perWriter)
	}
}
