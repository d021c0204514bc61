package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

func replayRun(ctx context.Context, opts *Options) error {
	warn := func(format string, args ...any) { fmt.Fprintf(opts.IO.ErrOut, "warning: "+format+"\n", args...) }
	inputs := make([]*input, 0, len(opts.Files))
	perPass := 0
	for _, name := range opts.Files {
		in, err := opts.loadInput(name, warn)
		if err != nil {
			return err
		}
		inputs = append(inputs, in)
		perPass += max(len(in.txs), 1) // a script counts as one session
	}
	tr, err := openTrace(opts)
	if err != nil {
		return err
	}
	r := &runner{
		opts: opts,
		ctx:  ctx,
		sum:  &Summary{Target: opts.target(), Files: len(opts.Files), Repeat: opts.Repeat},
		tr:   tr,
		prog: newProgress(opts, perPass*opts.Repeat),
	}
	so := astm.SenderOptions{ // frames are built per file, so no framing options
		EstablishTimeout: opts.AckTimeout,
		FrameTimeout:     opts.AckTimeout,
		BusyDelay:        noneIfZero(opts.ENQRetryDelay),
		ContentionDelay:  noneIfZero(opts.ContentionDelay),
		MaxAttempts:      opts.MaxAttempts,
		MaxENQAttempts:   opts.MaxENQAttempts,
		HonorInterrupt:   opts.HonorInterrupt,
		EOTWait:          opts.EOTWait,
		FrameDelay:       opts.FrameDelay,
	}
	if len(opts.Corrupt) > 0 {
		so.Corrupt = func(n int) bool { return slices.Contains(opts.Corrupt, n) }
	}
	if tr != nil || r.prog != nil {
		so.Trace = r.hook
	}
	r.sender = astm.NewSender(so)

	start := time.Now()
	runErr := r.run(inputs)
	r.closeLink()
	r.prog.clear()
	r.sum.finish(time.Since(start), runErr)
	if err := tr.close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("writing the trace: %w", err)
	}
	if err := printSummary(opts, r.sum); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// noneIfZero maps a zero delay flag to the sender's "no delay".
func noneIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

type runner struct {
	opts   *Options
	ctx    context.Context
	sender *astm.Sender
	sum    *Summary
	link   *link // nil until needed, and after a connection is closed
	tr     *tracer
	prog   *progress
}

func (r *runner) run(inputs []*input) error {
	for pass := 1; pass <= r.opts.Repeat; pass++ {
		for _, in := range inputs {
			if err := r.replay(in, pass); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *runner) replay(in *input, pass int) error {
	where := in.name
	if r.opts.Repeat > 1 {
		where = fmt.Sprintf("%s (pass %d)", in.name, pass)
	}
	r.tr.printf("# %s\n", where)
	switch {
	case in.script != nil:
		return r.play(in.script, where)
	case r.opts.Conn == ConnPerFile:
		r.closeLink()
	}
	if r.opts.NoWait {
		return r.stream(in, where)
	}
	for i, frames := range in.txs {
		// Counted over the whole run, so the pause also comes between
		// files and passes.
		if r.sum.Transmissions > 0 && r.opts.TransmissionDelay > 0 {
			if err := sleep(r.ctx, r.opts.TransmissionDelay); err != nil {
				return classify(r.ctx, where, err)
			}
		}
		if r.opts.Conn == ConnPerTransmission {
			r.closeLink()
		}
		l, err := r.connect()
		if err != nil {
			return err
		}
		res, err := r.sender.SendFrames(r.ctx, l, frames)
		r.sum.add(res)
		if err != nil && r.ctx.Err() == nil && l.lastEOT && res.Frames == len(frames) && !errors.Is(err, astm.ErrTimeout) {
			// Everything was accepted and EOT went out; only the wait for
			// the listener's ACK of EOT failed because it hung up.
			r.closeLink()
			err = nil
		}
		if err != nil {
			return classify(r.ctx, fmt.Sprintf("%s, transmission %d", where, i+1), err)
		}
		r.sum.Accepted++
		r.tick()
	}
	return nil
}

// play runs a script on a connection of its own: scripts may close it, and
// they expect a fresh listener session.
func (r *runner) play(s *astm.Script, where string) error {
	r.closeLink()
	l, err := r.connect()
	if err != nil {
		return err
	}
	err = s.Play(r.ctx, l, astm.PlayOptions{ReadTimeout: r.opts.AckTimeout, Trace: r.hook})
	r.closeLink()
	if err != nil {
		return classify(r.ctx, where, err)
	}
	r.sum.Scripts++
	r.tick()
	return nil
}

// stream writes a file's units without waiting (--no-wait), then counts the
// replies that arrive until the line stays quiet for --eot-wait.
func (r *runner) stream(in *input, where string) error {
	l, err := r.connect()
	if err != nil {
		return err
	}
	for _, u := range in.units {
		r.hook('>', u)
		if err := l.SetWriteDeadline(time.Now().Add(r.opts.AckTimeout)); err != nil {
			return classify(r.ctx, where, err)
		}
		if _, err := l.Write(u); err != nil {
			if isTimeout(err) {
				err = fmt.Errorf("%w: the listener did not read for %s", astm.ErrTimeout, r.opts.AckTimeout)
			}
			return classify(r.ctx, where, err)
		}
	}
	naks, err := r.collect(l)
	r.sum.Transmissions += len(in.txs)
	for _, frames := range in.txs {
		r.sum.Frames += len(frames)
	}
	r.sum.NAKs += naks
	if err != nil {
		return classify(r.ctx, where, err)
	}
	if naks > 0 {
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%s: the listener answered NAK %d times", where, naks))
	}
	r.sum.Accepted += len(in.txs)
	r.tick()
	return nil
}

// collect reads replies until none comes for --eot-wait, or for
// --ack-timeout in all, and returns how many were NAK.
func (r *runner) collect(l *link) (int, error) {
	if r.opts.EOTWait <= 0 {
		return 0, nil
	}
	naks := 0
	buf := make([]byte, 512)
	limit := time.Now().Add(r.opts.AckTimeout)
	for r.ctx.Err() == nil {
		deadline := time.Now().Add(r.opts.EOTWait)
		if deadline.After(limit) {
			deadline = limit
		}
		if err := l.SetReadDeadline(deadline); err != nil {
			return naks, err
		}
		n, err := l.Read(buf)
		if n > 0 {
			r.hook('<', buf[:n])
			for _, b := range buf[:n] {
				if b == astm.NAK {
					naks++
				}
			}
		}
		switch {
		case err == nil:
		case isTimeout(err) || errors.Is(err, io.EOF):
			return naks, nil
		default:
			return naks, err
		}
	}
	return naks, r.ctx.Err()
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func (r *runner) connect() (*link, error) {
	if r.link != nil {
		return r.link, nil
	}
	t, err := r.opts.dial(r.ctx)
	if err != nil {
		return nil, err
	}
	r.link = &link{t: t, ctx: r.ctx, chunk: r.opts.Chunk, chunkDelay: r.opts.ChunkDelay}
	return r.link, nil
}

func (r *runner) closeLink() {
	if r.link == nil {
		return
	}
	_ = r.link.Close()
	r.sum.BytesSent += r.link.sent
	r.sum.BytesReceived += r.link.received
	r.link = nil
}

// hook sees every unit sent and reply received: it feeds the trace and
// keeps the progress line moving during long transmissions.
func (r *runner) hook(dir byte, unit []byte) {
	r.tr.unit(dir, unit)
	r.tick()
}

func (r *runner) tick() {
	if r.prog == nil {
		return
	}
	sent := r.sum.BytesSent
	if r.link != nil {
		sent += r.link.sent
	}
	r.prog.update(r.sum.Accepted+r.sum.Scripts, r.sum.Frames, sent)
}
