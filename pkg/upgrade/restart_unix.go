//go:build !windows

package upgrade

import (
	"os"
	"syscall"
)

func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// reexec replaces this process with the new binary under the same pid;
// Go opens every descriptor close-on-exec, so listeners and the data dir
// lock are released for the new image.
func reexec(exe string, argv []string) error {
	return syscall.Exec(exe, argv, os.Environ())
}
