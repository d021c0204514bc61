// Package cmdutil holds what every command shares: the Factory that injects
// I/O and clocks, the typed errors that carry exit codes, and flag helpers.
package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Exit codes. They are mapped from errors in one place (ExitCode) and used by
// main only.
const (
	ExitOK          = 0
	ExitFailure     = 1   // unexpected runtime error
	ExitUsage       = 2   // bad flags or arguments
	ExitRejected    = 3   // the peer said no: AE/AR/CE/CR, DICOM failure status, ASTM NAK
	ExitAuth        = 4   // authentication failed
	ExitConnect     = 5   // could not connect / connection lost / port in use
	ExitConfig      = 78  // invalid configuration (EX_CONFIG)
	ExitTimeout     = 124 // timed out waiting for the peer
	ExitInterrupted = 130 // interrupted by SIGINT
)

// FlagError is a usage error: main prints it with a hint to --help and exits 2.
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// FlagErrorf builds a FlagError.
func FlagErrorf(format string, args ...any) error {
	return &FlagError{Err: fmt.Errorf(format, args...)}
}

// ExitError carries an explicit exit code. Silent errors have already been
// reported to the user (for example a negative ACK printed on stdout).
type ExitError struct {
	Code   int
	Err    error
	Silent bool
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// WithCode wraps err so that main exits with code.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// Silent returns an error that only sets the exit code; the command already
// told the user what happened.
func Silent(code int) error { return &ExitError{Code: code, Silent: true} }

// ErrInterrupted reports that the user pressed Ctrl-C.
var ErrInterrupted = errors.New("interrupted")

// ExitCode maps an error to the process exit code. Explicit codes win; then
// well-known error kinds: timeouts, connection failures, interrupts.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var fe *FlagError
	if errors.As(err, &fe) {
		return ExitUsage
	}
	if errors.Is(err, ErrInterrupted) || errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ExitTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ExitTimeout
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EPIPE) {
		return ExitConnect
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return ExitConnect
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return ExitConnect
	}
	return ExitFailure
}

// IsSilent reports whether the error was already shown to the user.
func IsSilent(err error) bool {
	var ee *ExitError
	return errors.As(err, &ee) && ee.Silent
}
