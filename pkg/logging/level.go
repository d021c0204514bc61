package logging

import (
	"fmt"
	"log/slog"
	"strings"
)

// LevelNames lists the accepted log levels, quietest first. NONE disables a
// logger entirely; the others map onto the slog levels of the same name.
var LevelNames = []string{"NONE", "ERROR", "WARN", "INFO", "DEBUG"}

// ParseLevel parses a level name case-insensitively, ignoring surrounding
// space. enabled is false for NONE. The empty string is an error: callers
// decide on their own default.
func ParseLevel(s string) (level slog.Level, enabled bool, err error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "NONE":
		return slog.LevelError, false, nil
	case "ERROR":
		return slog.LevelError, true, nil
	case "WARN":
		return slog.LevelWarn, true, nil
	case "INFO":
		return slog.LevelInfo, true, nil
	case "DEBUG":
		return slog.LevelDebug, true, nil
	}
	return 0, false, fmt.Errorf("invalid log level %q: want one of %s", s, strings.Join(LevelNames, ", "))
}

// levelName maps any slog level onto the four names the reference writes, so
// custom levels (e.g. DEBUG-4) never produce a name a reader does not know.
func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARN"
	default:
		return "ERROR"
	}
}
