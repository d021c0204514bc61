//go:build unix

// Package readonly makes a directory read-only to the test process, root
// included, for tests of code that must cope with an executable it cannot
// replace (a packaged install).
package readonly

import (
	"os"
	"testing"
)

// Dir makes dir read-only until the test ends: by its mode for a normal
// user, and for root, whom modes do not stop, by a read-only bind mount
// (Linux only). The error says why neither could be done.
func Dir(t testing.TB, dir string) error {
	t.Helper()
	if os.Geteuid() == 0 {
		return bindReadOnly(t, dir)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		return err
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
	return nil
}
