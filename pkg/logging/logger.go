// Package logging provides the agent's two loggers: "main" (operational
// events, no message content, fetchable by the server) and "channels"
// (message content). Each writes JSON lines to daily files named like the
// reference agent's, rotated by size and pruned by count, and can mirror
// human-readable lines to a console writer.
//
// Daily files switch at midnight in the location of the times returned by
// Options.Now; with the default clock that is local midnight, as the
// reference does. Timestamps inside the entries are always UTC.
package logging

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Options configures a Logger.
type Options struct {
	// Dir holds the log files; "" means no files (console only). It is
	// created with mode 0700 if missing.
	Dir string
	// Name selects the file names: medplum-agent-<Name>-YYYY-MM-DD.log.
	// The agent uses "main" and "channels".
	Name string
	// Level is NONE, ERROR, WARN, INFO or DEBUG (any case); "" means INFO.
	Level string
	// MaxFileSizeMB starts the next file (….1.log, ….2.log, …) when a line
	// would make the current one larger; 0 means 10.
	MaxFileSizeMB int
	// FilesToKeep is how many files of this logger are kept, across days;
	// the oldest are deleted. 0 means 10.
	FilesToKeep int
	// Console, if set, receives human-readable lines (e.g. stderr when it
	// is a terminal), filtered by the same level.
	Console io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

const (
	defaultMaxFileSizeMB = 10
	defaultFilesToKeep   = 10
	// flushInterval bounds how long a buffered line waits for the file.
	flushInterval = 500 * time.Millisecond
	// timestampLayout matches JavaScript's Date.toISOString, as the
	// reference writes it.
	timestampLayout = "2006-01-02T15:04:05.000Z"
)

// ErrFetchUnsupported is returned by Fetch on a logger without files. The
// text is the reference agent's error for the same case.
var ErrFetchUnsupported = errors.New("Unable to fetch logs since current logger instance does not support fetching")

// Logger is one of the agent's loggers. It is safe for concurrent use.
type Logger struct {
	slog *slog.Logger
	w    *fileWriter // nil without files
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New creates the log directory if needed and, unless the level is NONE,
// opens today's file.
func New(opt Options) (*Logger, error) {
	levelText := cmp.Or(opt.Level, "INFO")
	level, enabled, err := ParseLevel(levelText)
	if err != nil {
		return nil, err
	}
	if opt.MaxFileSizeMB < 0 || opt.FilesToKeep < 0 {
		return nil, fmt.Errorf("logging: MaxFileSizeMB and FilesToKeep must not be negative")
	}
	return newLogger(opt, level, enabled, int64(cmp.Or(opt.MaxFileSizeMB, defaultMaxFileSizeMB))<<20)
}

// newLogger takes the size limit in bytes so tests can rotate at a few bytes.
func newLogger(opt Options, level slog.Level, enabled bool, maxBytes int64) (*Logger, error) {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	h := &handler{level: level, enabled: enabled, clock: opt.Now}
	l := &Logger{}
	if opt.Dir != "" {
		if !validName(opt.Name) {
			return nil, fmt.Errorf("logging: invalid logger name %q", opt.Name)
		}
		if err := os.MkdirAll(opt.Dir, dirPerm); err != nil {
			return nil, fmt.Errorf("logging: %w", err)
		}
		l.w = &fileWriter{
			dir:      opt.Dir,
			prefix:   filePrefix(opt.Name),
			maxBytes: maxBytes,
			keep:     cmp.Or(opt.FilesToKeep, defaultFilesToKeep),
			now:      now,
		}
		if enabled {
			// Open now so that an unwritable directory fails at start-up,
			// not silently at the first line.
			l.w.mu.Lock()
			err := l.w.ensureDay()
			l.w.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("logging: %w", err)
			}
		}
		h.file = l.w
		h.json = slog.NewJSONHandler(l.w, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: replaceJSON})
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.flushLoop()
	}
	if opt.Console != nil {
		h.text = slog.NewTextHandler(opt.Console, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: replaceText})
	}
	l.slog = slog.New(h)
	return l, nil
}

// validName keeps the logger name usable inside a file name.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (l *Logger) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.w.Flush()
		case <-l.stop:
			return
		}
	}
}

// Slog returns the structured logger. File lines look like
// {"timestamp":"2026-11-25T10:00:00.000Z","level":"INFO","msg":"…",…attrs}.
func (l *Logger) Slog() *slog.Logger { return l.slog }

// Flush writes buffered lines to the file.
func (l *Logger) Flush() error {
	if l.w == nil {
		return nil
	}
	return l.w.Flush()
}

// Close flushes and closes the file. Lines logged afterwards still reach the
// console, so shutdown messages stay visible, but not the file.
func (l *Logger) Close() error {
	if l.w == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		err = l.w.Close()
	})
	return err
}

// replaceJSON shapes file entries like the reference's: "timestamp" in UTC
// with milliseconds and one of four upper-case level names.
func replaceJSON(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch {
	case a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime:
		return slog.String("timestamp", a.Value.Time().UTC().Format(timestampLayout))
	case a.Key == slog.LevelKey && a.Value.Kind() == slog.KindAny:
		if lv, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, levelName(lv))
		}
	}
	return a
}

// replaceText keeps console lines short: local wall-clock time and the same
// level names as the files.
func replaceText(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch {
	case a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime:
		return slog.String(slog.TimeKey, a.Value.Time().Format("2006-01-02 15:04:05.000"))
	case a.Key == slog.LevelKey && a.Value.Kind() == slog.KindAny:
		if lv, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, levelName(lv))
		}
	}
	return a
}

// handler fans records out to the JSON file handler and the console handler
// under one level filter, and flushes the file at once for errors.
type handler struct {
	level   slog.Level
	enabled bool
	clock   func() time.Time // nil: keep the time slog stamped
	file    *fileWriter
	json    slog.Handler
	text    slog.Handler
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	return h.enabled && l >= h.level
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if h.clock != nil {
		r.Time = h.clock()
	}
	var err error
	if h.json != nil {
		err = h.json.Handle(ctx, r)
		if r.Level >= slog.LevelError {
			err = errors.Join(err, h.file.Flush())
		}
	}
	if h.text != nil {
		err = errors.Join(err, h.text.Handle(ctx, r))
	}
	return err
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.derive(func(s slog.Handler) slog.Handler { return s.WithAttrs(attrs) })
}

func (h *handler) WithGroup(name string) slog.Handler {
	return h.derive(func(s slog.Handler) slog.Handler { return s.WithGroup(name) })
}

func (h *handler) derive(f func(slog.Handler) slog.Handler) slog.Handler {
	c := *h
	if c.json != nil {
		c.json = f(c.json)
	}
	if c.text != nil {
		c.text = f(c.text)
	}
	return &c
}
