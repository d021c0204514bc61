package astm

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors returned by Sender; they are wrapped with details, so test them
// with errors.Is.
var (
	// ErrNAKLimit: a frame was not accepted after MaxAttempts sends.
	ErrNAKLimit = errors.New("astm: frame rejected too many times")
	// ErrTimeout: the receiver did not reply (or read) in time.
	ErrTimeout = errors.New("astm: no reply from the receiver in time")
	// ErrBusy: every ENQ was answered NAK.
	ErrBusy = errors.New("astm: receiver stayed busy")
	// ErrContention: the receiver bid for the line at the same time (answered
	// ENQ with ENQ) and the sender yielded or ran out of attempts.
	ErrContention = errors.New("astm: line contention")
	// ErrInterrupted: the receiver asked to stop (EOT in place of ACK) and
	// SenderOptions.HonorInterrupt is set.
	ErrInterrupted = errors.New("astm: receiver interrupted the transmission")
)

// Sender defaults (E1381 timers and counters).
const (
	DefaultReplyTimeout    = 15 * time.Second
	DefaultBusyDelay       = 10 * time.Second
	DefaultContentionDelay = time.Second // the instrument's back-off
	// ComputerContentionDelay is the least a computer (LIS) must wait after
	// yielding on contention before bidding again.
	ComputerContentionDelay = 20 * time.Second
	DefaultMaxAttempts      = 6
)

// SenderOptions configures a Sender. Zero values mean the E1381 defaults.
// Delays (BusyDelay, ContentionDelay) may be negative to mean "none".
type SenderOptions struct {
	// FrameSize is the longest frame text: 0 means DefaultFrameSize and a
	// negative value never splits (for tolerant TCP listeners).
	FrameSize int
	// Packing places frame boundaries for Send.
	Packing Packing
	// EstablishTimeout bounds the wait for the reply to ENQ (default 15 s).
	EstablishTimeout time.Duration
	// FrameTimeout bounds the wait for the reply to a frame, and each write
	// when the connection has write deadlines (default 15 s).
	FrameTimeout time.Duration
	// BusyDelay is the wait after NAK to ENQ before bidding again (10 s).
	BusyDelay time.Duration
	// ContentionDelay is the wait after ENQ is answered with ENQ before
	// bidding again (1 s, the instrument's; see YieldOnContention).
	ContentionDelay time.Duration
	// MaxAttempts is how many times one frame is sent before the transfer
	// is abandoned (6).
	MaxAttempts int
	// MaxENQAttempts is how many ENQ bids are made before giving up (6).
	MaxENQAttempts int
	// YieldOnContention plays the computer's part of E1381: on contention,
	// return ErrContention at once so the caller can receive the
	// instrument's transmission, and bid again only after
	// ComputerContentionDelay. By default the sender plays the instrument,
	// which has priority: it waits ContentionDelay and bids again.
	YieldOnContention bool
	// HonorInterrupt makes an EOT reply to a frame stop the transfer (EOT,
	// ErrInterrupted). By default EOT counts as ACK and the transfer goes on.
	HonorInterrupt bool
	// FrameDelay, when positive, pauses before each frame after the first
	// of a transmission, as a slow instrument would; retransmissions go at
	// once. Bytes arriving meanwhile are consumed, as during BusyDelay.
	FrameDelay time.Duration
	// EOTWait, when positive, waits that long after the final EOT for the
	// ACK that some receivers (the reference agent) send, and consumes it,
	// so it is not taken as the reply to the next ENQ on the connection.
	EOTWait time.Duration
	// Corrupt, if set, is asked for each frame (1-based within the
	// transmission); when it returns true, the frame's first send carries a
	// wrong checksum, to exercise the receiver's NAK path.
	Corrupt func(frame int) bool
	// Trace, if set, sees every unit: dir '>' for bytes sent, '<' for bytes
	// received (one reply byte per call). unit must not be retained.
	Trace func(dir byte, unit []byte)
}

func (o SenderOptions) withDefaults() SenderOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.EstablishTimeout, DefaultReplyTimeout)
	def(&o.FrameTimeout, DefaultReplyTimeout)
	def(&o.BusyDelay, DefaultBusyDelay)
	def(&o.ContentionDelay, DefaultContentionDelay)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxENQAttempts <= 0 {
		o.MaxENQAttempts = DefaultMaxAttempts
	}
	return o
}

// Result counts what happened during one transmission.
type Result struct {
	Frames          int  // frames accepted (ACK, or EOT as an interrupt)
	NAKs            int  // frame replies that were NAK or another byte
	Retransmissions int  // frames sent again after a NAK
	ENQs            int  // ENQ bids sent
	Busy            int  // ENQs answered NAK
	Contentions     int  // ENQs answered ENQ
	Interrupted     bool // the receiver replied EOT to a frame
}

// Sender transmits as the sending side of E1381, normally the instrument.
// It holds only configuration; one Sender may be used on several
// connections at once.
type Sender struct {
	opts SenderOptions
}

// NewSender returns a sender with opts, zero fields set to defaults.
func NewSender(opts SenderOptions) *Sender {
	return &Sender{opts: opts.withDefaults()}
}

// Send frames records (record text without terminator) with the configured
// packing and frame size, in the standard style, and transmits them as one
// ENQ…EOT transmission.
func (s *Sender) Send(ctx context.Context, c Conn, records [][]byte) (Result, error) {
	return s.SendFrames(ctx, c, BuildFrames(records, s.opts.Packing, s.opts.FrameSize, FrameStyle{}))
}

// SendFrames transmits ready-made frames (for example units of a capture
// split by SplitUnits) as one transmission: ENQ until accepted, each frame
// until ACKed, then EOT. On a reply timeout or after MaxAttempts rejected
// sends of a frame it sends EOT and returns ErrTimeout or ErrNAKLimit. When
// ctx is done it returns ctx.Err() without sending EOT (the receiver's idle
// timer ends its session).
func (s *Sender) SendFrames(ctx context.Context, c Conn, frames [][]byte) (Result, error) {
	t := &transfer{opts: s.opts, ctx: ctx, c: c, buf: make([]byte, 64)}
	stop := context.AfterFunc(ctx, func() {
		_ = c.SetReadDeadline(time.Unix(1, 0))
		if wd, ok := c.(writeDeadliner); ok {
			_ = wd.SetWriteDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	if err := t.establish(); err != nil {
		return t.res, err
	}
	for i, f := range frames {
		if i > 0 {
			if err := t.pause(t.opts.FrameDelay); err != nil {
				return t.res, err
			}
		}
		if err := t.sendFrame(i+1, f, i == len(frames)-1); err != nil {
			return t.res, err
		}
	}
	return t.res, t.terminate()
}

// errNoReply is an expired wait inside a transfer; callers turn it into
// ErrTimeout with context.
var errNoReply = errors.New("no reply")

type transfer struct {
	opts    SenderOptions
	ctx     context.Context
	c       Conn
	buf     []byte
	pending []byte // received but not yet consumed
	res     Result
}

func (t *transfer) establish() error {
	for attempt := 1; ; attempt++ {
		t.res.ENQs++
		if err := t.send([]byte{ENQ}); err != nil {
			return err
		}
		reply, err := t.await(t.opts.EstablishTimeout, func(b byte) bool { return b == ACK || b == NAK || b == ENQ })
		if errors.Is(err, errNoReply) {
			t.abort()
			return fmt.Errorf("%w: no reply to ENQ within %s", ErrTimeout, t.opts.EstablishTimeout)
		}
		if err != nil {
			return err
		}
		switch reply {
		case ACK:
			return nil
		case NAK:
			t.res.Busy++
			if attempt >= t.opts.MaxENQAttempts {
				return fmt.Errorf("%w: %d ENQs answered NAK", ErrBusy, attempt)
			}
			err = t.pause(t.opts.BusyDelay)
		case ENQ:
			t.res.Contentions++
			if t.opts.YieldOnContention {
				return fmt.Errorf("%w: the receiver is bidding; answer its ENQ", ErrContention)
			}
			if attempt >= t.opts.MaxENQAttempts {
				return fmt.Errorf("%w: %d ENQs answered ENQ", ErrContention, attempt)
			}
			err = t.pause(t.opts.ContentionDelay)
		}
		if err != nil {
			return err
		}
	}
}

func (t *transfer) sendFrame(n int, frame []byte, last bool) error {
	for attempt := 1; ; attempt++ {
		out := frame
		if attempt == 1 && t.opts.Corrupt != nil && t.opts.Corrupt(n) {
			out = corruptChecksum(frame)
		}
		if attempt > 1 {
			t.res.Retransmissions++
		}
		t.discardPending()
		if err := t.send(out); err != nil {
			return err
		}
		reply, err := t.await(t.opts.FrameTimeout, func(byte) bool { return true })
		if errors.Is(err, errNoReply) {
			t.abort()
			return fmt.Errorf("%w: no reply to frame %d within %s", ErrTimeout, n, t.opts.FrameTimeout)
		}
		if err != nil {
			return err
		}
		switch reply {
		case ACK:
			t.res.Frames++
			return nil
		case EOT:
			t.res.Frames++
			t.res.Interrupted = true
			if t.opts.HonorInterrupt && !last {
				t.abort()
				return fmt.Errorf("%w after frame %d", ErrInterrupted, n)
			}
			return nil
		}
		t.res.NAKs++
		if attempt >= t.opts.MaxAttempts {
			t.abort()
			return fmt.Errorf("%w: frame %d sent %d times", ErrNAKLimit, n, attempt)
		}
	}
}

// terminate ends a successful transfer with EOT, then consumes the optional
// reply to it within EOTWait.
func (t *transfer) terminate() error {
	if err := t.send([]byte{EOT}); err != nil {
		return err
	}
	if t.opts.EOTWait <= 0 {
		return nil
	}
	_, err := t.next(time.Now().Add(t.opts.EOTWait))
	if errors.Is(err, errNoReply) {
		return nil
	}
	return err
}

// abort sends EOT after a failure; the failure is what gets reported.
func (t *transfer) abort() { _ = t.send([]byte{EOT}) }

func (t *transfer) send(b []byte) error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if t.opts.Trace != nil {
		t.opts.Trace('>', b)
	}
	err := writeWithin(t.c, b, t.opts.FrameTimeout)
	switch {
	case err == nil:
		return nil
	case t.ctx.Err() != nil:
		return t.ctx.Err()
	case isTimeout(err):
		return fmt.Errorf("%w: the receiver did not read for %s", ErrTimeout, t.opts.FrameTimeout)
	}
	return fmt.Errorf("astm: write: %w", err)
}

// await returns the first byte accepted by want within d, ignoring others.
func (t *transfer) await(d time.Duration, want func(byte) bool) (byte, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := t.next(deadline)
		if err != nil || want(b) {
			return b, err
		}
	}
}

// pause waits d while consuming (and tracing) whatever arrives, so stale
// replies are not taken for answers to the next bid.
func (t *transfer) pause(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	deadline := time.Now().Add(d)
	for {
		if _, err := t.next(deadline); err != nil {
			if errors.Is(err, errNoReply) {
				return nil
			}
			return err
		}
	}
}

// next returns the next received byte, waiting until deadline.
func (t *transfer) next(deadline time.Time) (byte, error) {
	for len(t.pending) == 0 {
		if err := t.c.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		if err := t.ctx.Err(); err != nil {
			return 0, err
		}
		n, err := t.c.Read(t.buf)
		t.pending = t.buf[:n]
		if n > 0 {
			break
		}
		switch {
		case err == nil:
		case t.ctx.Err() != nil:
			return 0, t.ctx.Err()
		case isTimeout(err):
			return 0, errNoReply
		default:
			return 0, fmt.Errorf("astm: read: %w", err)
		}
	}
	b := t.pending[0]
	t.pending = t.pending[1:]
	if t.opts.Trace != nil {
		t.opts.Trace('<', []byte{b})
	}
	return b, nil
}

// discardPending drops bytes received before a frame is sent: they cannot
// be its reply.
func (t *transfer) discardPending() {
	if len(t.pending) > 0 && t.opts.Trace != nil {
		t.opts.Trace('<', t.pending)
	}
	t.pending = nil
}

// corruptChecksum returns a copy of frame with a wrong checksum, or frame
// itself if it cannot be decoded.
func corruptChecksum(frame []byte) []byte {
	f, err := DecodeFrame(frame)
	if err != nil {
		return frame
	}
	out := append([]byte(nil), frame...)
	wrong := sum8(f.covered()) + 1
	at := 2 + len(f.Text) // terminator index
	out[at+1], out[at+2] = hexUpper[wrong>>4], hexUpper[wrong&0x0F]
	return out
}
