package serialport

import (
	"context"
	"errors"
	"time"
)

// KeepOptions tune Keep.
type KeepOptions struct {
	// RetryDelay is the first wait before reopening (default 1 s); it
	// doubles after each failed open up to MaxRetryDelay (default 30 s).
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// OnRetry, if set, hears why the port is being reopened and when.
	OnRetry func(err error, after time.Duration)
}

// Keep opens the port and runs serve on it, and opens it again each time
// the device cannot be opened or serve fails with ErrDisconnected: a USB
// adapter that is unplugged and plugged back in is picked up again. It
// returns when ctx is done (ctx.Err()), when serve returns nil or another
// error (that error), or at once for invalid settings.
func Keep(ctx context.Context, cfg Config, opts KeepOptions, serve func(context.Context, *Conn) error) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	if opts.MaxRetryDelay < opts.RetryDelay {
		opts.MaxRetryDelay = max(30*time.Second, opts.RetryDelay)
	}
	delay := opts.RetryDelay
	for {
		c, err := Open(cfg)
		if err == nil {
			err = serveOnce(ctx, c, serve)
			if err == nil || !errors.Is(err, ErrDisconnected) {
				return err
			}
			delay = opts.RetryDelay // it was working: come back quickly
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if opts.OnRetry != nil {
			opts.OnRetry(err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, opts.MaxRetryDelay)
	}
}

// serveOnce runs serve on c and closes c, also when ctx ends first so that
// a serve blocked in a read returns.
func serveOnce(ctx context.Context, c *Conn, serve func(context.Context, *Conn) error) error {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	defer c.Close()
	err := serve(ctx, c)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
