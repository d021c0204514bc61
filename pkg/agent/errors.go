package agent

import (
	"fmt"
	"strings"
)

// ConfigError reports a configuration that was refused as a whole: nothing
// of it was applied. Problems lists every issue found, one text each.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%d problem(s) found in agent config; no changes applied\n%s",
		len(e.Problems), strings.Join(e.Problems, "\n"))
}

// LockedError is returned by Start when another process holds the data
// directory.
type LockedError struct {
	Dir string
	PID int // 0 when the holder's pid could not be read
}

func (e *LockedError) Error() string {
	s := "another medplum-agent is already running with data dir " + e.Dir
	if e.PID > 0 {
		s += fmt.Sprintf(" (pid %d)", e.PID)
	}
	return s
}
