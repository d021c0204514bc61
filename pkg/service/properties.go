package service

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"

	"github.com/medplum-agent/medplum-agent/pkg/config"
)

// WriteProperties makes the properties file at path hold the settings in
// set, keeping every other setting already in it and adding each of
// defaults the file does not have yet. The file is written atomically with
// mode 0600, since it holds the client secret; a file with the right
// settings but a wider mode is only chmod-ed. Comments in an existing file
// are not kept. It reports what it did, or with dryRun what it would do.
func WriteProperties(path string, set, defaults [][2]string, dryRun bool) (Action, error) {
	old, err := readProperties(path)
	if err != nil {
		return "", err
	}
	next := maps.Clone(old)
	if next == nil {
		next = map[string]string{}
	}
	for _, kv := range defaults {
		if _, ok := next[kv[0]]; !ok {
			next[kv[0]] = kv[1]
		}
	}
	for _, kv := range set {
		next[kv[0]] = kv[1]
	}

	switch {
	case old == nil:
		if !dryRun {
			return Created, config.WriteProperties(path, ordered(next, set, defaults))
		}
		return Created, nil
	case !maps.Equal(old, next):
		if !dryRun {
			return Updated, config.WriteProperties(path, ordered(next, set, defaults))
		}
		return Updated, nil
	}
	if runtime.GOOS == "windows" {
		return Unchanged, nil // modes mean nothing there; the directory ACL protects the file
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm() == 0o600 {
		return Unchanged, nil
	}
	if !dryRun {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", err
		}
	}
	return Updated, nil
}

// readProperties reads an existing properties file; nil means there is
// none.
func readProperties(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	props, err := config.ReadProperties(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return props, nil
}

// ordered lists the settings of m: those of set first, then defaults, then
// the rest sorted, so the file reads the same way after every write.
func ordered(m map[string]string, set, defaults [][2]string) [][2]string {
	var out [][2]string
	seen := map[string]bool{}
	for _, group := range [][][2]string{set, defaults} {
		for _, kv := range group {
			if !seen[kv[0]] {
				seen[kv[0]] = true
				out = append(out, [2]string{kv[0], m[kv[0]]})
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !seen[k] {
			out = append(out, [2]string{k, m[k]})
		}
	}
	return out
}
