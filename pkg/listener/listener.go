// Package listener runs the accept loop every device-facing server shares
// (MLLP, DICOM, byte streams): it survives running out of file descriptors
// instead of spinning or giving up, and stops cleanly when the listener is
// closed.
package listener

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Backoff bounds while accept keeps failing for lack of resources.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// Serve accepts connections from ln and hands each to handle, on the calling
// goroutine (handle starts its own). It returns nil once ln is closed or
// closing reports true, and the error for any failure other than a lack of
// descriptors or buffers, after which it waits (5 ms doubling to 1 s, told
// to onRetry when set) for connections to end and tries again.
func Serve(ln net.Listener, closing func() bool, handle func(net.Conn), onRetry func(err error, delay time.Duration)) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err == nil {
			delay = 0
			handle(nc)
			continue
		}
		if errors.Is(err, net.ErrClosed) || (closing != nil && closing()) {
			return nil
		}
		if !resourceShortage(err) {
			return err
		}
		delay = min(max(2*delay, minDelay), maxDelay)
		if onRetry != nil {
			onRetry(err, delay)
		}
		time.Sleep(delay)
	}
}

func resourceShortage(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
