//go:build unix

package spool

import "golang.org/x/sys/unix"

// diskFree reports the bytes an unprivileged writer can still use on the
// file system holding path.
func diskFree(path string) (uint64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true //nolint:unconvert // field types differ by OS
}
