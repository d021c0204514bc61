//go:build windows

package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
)

// stopTimeout bounds how long the handler waits for the agent to return
// after Stop; run's own shutdown timeout is shorter, so this only catches a
// hang.
const stopTimeout = 30 * time.Second

// IsWindowsService reports whether the Windows service manager started the
// process.
func IsWindowsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// RunAsService runs run under the service control manager until it
// returns or the service is stopped, which cancels its context. A non-nil
// error from run is returned and makes the service stop with a failure, so
// that the recovery actions restart it.
func RunAsService(name string, run func(ctx context.Context) error) error {
	// Services start in System32; relative paths should mean the install
	// folder, as for an agent started by hand there.
	if exe, err := os.Executable(); err == nil {
		_ = os.Chdir(filepath.Dir(exe))
	}
	h := &handler{run: run}
	if err := svc.Run(name, h); err != nil {
		return err
	}
	return h.err
}

// handler bridges the service control requests to a context.
type handler struct {
	run func(context.Context) error
	err error // what run returned
}

const accepted = svc.AcceptStop | svc.AcceptShutdown

func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	status <- svc.Status{State: svc.Running, Accepts: accepted}
	for {
		select {
		case err := <-done:
			h.err = err
			status <- svc.Status{State: svc.StopPending}
			return exitCode(err)
		case c, ok := <-req:
			if ok && c.Cmd == svc.Interrogate {
				status <- c.CurrentStatus
				continue
			}
			if ok && c.Cmd != svc.Stop && c.Cmd != svc.Shutdown {
				continue
			}
			status <- svc.Status{State: svc.StopPending, WaitHint: uint32(stopTimeout / time.Millisecond)}
			cancel()
			select {
			case h.err = <-done:
			case <-time.After(stopTimeout):
				h.err = fmt.Errorf("the agent did not stop within %s", stopTimeout)
			}
			return exitCode(h.err)
		}
	}
}

// exitCode reports a failure as service-specific exit code 1, which the
// service manager counts as a failure for its recovery actions.
func exitCode(err error) (bool, uint32) {
	if err != nil {
		return true, 1
	}
	return false, 0
}

func isAdmin() bool { return windows.GetCurrentProcessToken().IsElevated() }
