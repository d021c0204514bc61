//go:build !windows

package service

import (
	"context"
	"errors"
	"os"
)

// IsWindowsService reports whether the Windows service manager started the
// process; never outside Windows.
func IsWindowsService() bool { return false }

// RunAsService is only meaningful on Windows.
func RunAsService(string, func(context.Context) error) error {
	return errors.New("not running as a Windows service")
}

func isAdmin() bool { return os.Geteuid() == 0 }

func newWindows(Host) (Manager, error) { return nil, ErrUnsupported }
