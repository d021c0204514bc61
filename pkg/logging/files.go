package logging

import (
	"cmp"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// dayLayout is the date part of a log file name.
const dayLayout = "2006-01-02"

// logFile identifies one file of a logger: medplum-agent-<name>-<day>.log for
// index 0, medplum-agent-<name>-<day>.<index>.log after size rotations.
type logFile struct {
	day   string
	index int
}

func filePrefix(name string) string { return "medplum-agent-" + name + "-" }

func (f logFile) fileName(prefix string) string {
	if f.index == 0 {
		return prefix + f.day + ".log"
	}
	return prefix + f.day + "." + strconv.Itoa(f.index) + ".log"
}

// compare orders files oldest first.
func (f logFile) compare(g logFile) int {
	return cmp.Or(strings.Compare(f.day, g.day), cmp.Compare(f.index, g.index))
}

// parseFileName recognises a file of the logger with the given prefix. It is
// strict because it also validates names that arrive inside fetch cursors.
func parseFileName(prefix, name string) (logFile, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return logFile{}, false
	}
	rest, ok = strings.CutSuffix(rest, ".log")
	if !ok || len(rest) < len(dayLayout) {
		return logFile{}, false
	}
	f := logFile{day: rest[:len(dayLayout)]}
	if _, err := time.Parse(dayLayout, f.day); err != nil {
		return logFile{}, false
	}
	if idx := rest[len(dayLayout):]; idx != "" {
		digits, ok := strings.CutPrefix(idx, ".")
		n, err := strconv.Atoi(digits)
		if !ok || err != nil || n < 1 || strconv.Itoa(n) != digits {
			return logFile{}, false
		}
		f.index = n
	}
	return f, true
}

// listFiles returns the logger's files in dir, oldest first.
func listFiles(dir, prefix string) ([]logFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []logFile
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if f, ok := parseFileName(prefix, e.Name()); ok {
			files = append(files, f)
		}
	}
	slices.SortFunc(files, logFile.compare)
	return files, nil
}
