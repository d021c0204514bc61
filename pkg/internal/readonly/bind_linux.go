package readonly

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// bindReadOnly mounts dir over itself, then makes that mount read-only
// (a bind mount takes its flags only from a remount).
func bindReadOnly(t testing.TB, dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remounting %s read-only: %w", dir, err)
	}
	return nil
}
