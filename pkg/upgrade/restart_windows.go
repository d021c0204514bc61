package upgrade

import (
	"syscall"

	"golang.org/x/sys/windows"
)

func detached() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.DETACHED_PROCESS | windows.CREATE_NEW_PROCESS_GROUP, HideWindow: true}
}

// reexec is impossible on Windows: a new process would find the ports and
// the data dir lock still held by this one.
func reexec(string, []string) error { return errNoReexec }
