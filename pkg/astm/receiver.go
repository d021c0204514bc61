package astm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults applied by NewReceiver and NewReceiverState to zero options.
const (
	DefaultIdleTimeout  = 30 * time.Second // E1381 receiver timer
	DefaultMaxFrame     = 64 << 10
	DefaultMaxSession   = 8 << 20
	DefaultWriteTimeout = 15 * time.Second // the sender gives up after this anyway
)

// ContentType is the content type of a delivered session body.
const ContentType = "x-application/astm-e1394"

// ReceiverOptions configures the receiver. The zero value gives the
// reference agent's behaviour with the standard timers.
type ReceiverOptions struct {
	// SilentEOT never replies to EOT, as E1381 specifies. By default the
	// receiver replies ACK to EOT like the reference agent's mode=astm;
	// instruments ignore that ACK.
	SilentEOT bool
	// StrictFrameNumbers NAKs a frame whose number is neither the expected
	// next one nor a repeat of the last accepted one. By default, like the
	// reference, frame numbers are only checked for repeats, because NAKing a
	// frame the instrument believes correct burns its retry budget.
	StrictFrameNumbers bool
	// IdleTimeout discards an open session when nothing arrives for this
	// long (0: DefaultIdleTimeout; negative: never). No timer runs between
	// sessions.
	IdleTimeout time.Duration
	// MaxFrame is the longest frame (number and text) accepted; a longer one
	// is NAKed. 0: DefaultMaxFrame.
	MaxFrame int
	// MaxSession is the body size above which the session is delivered early
	// and accumulation continues in a new message. 0: DefaultMaxSession.
	MaxSession int
	// WriteTimeout bounds each reply write when the connection supports write
	// deadlines (0: DefaultWriteTimeout; negative: unbounded).
	WriteTimeout time.Duration
	// OnWarning, if set, receives problems that are not part of a delivered
	// Session: discarded sessions, failed deliveries, bytes ignored outside a
	// session and the warnings of sessions that delivered nothing.
	OnWarning func(msg string)
}

func (o ReceiverOptions) withDefaults() ReceiverOptions {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.MaxSession <= 0 {
		o.MaxSession = DefaultMaxSession
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	return o
}

// Session is one delivered message: normally one ENQ…EOT transmission.
type Session struct {
	// Body is the record text as the reference mode=astm delivers it: each
	// record followed by "\n", other control bytes dropped, and each byte
	// mapped to the code point of the same value (Latin-1), so Body is
	// always valid UTF-8.
	Body string
	// Records are the lines of Body without their "\n".
	Records []string
	// Frames counts the frames whose text is in Body.
	Frames int
	// Duplicates counts repeated frames that were acknowledged and dropped.
	Duplicates int
	// NAKs counts frames rejected with NAK.
	NAKs int
	// Warnings describe irregularities seen, once per kind with a count.
	Warnings []string
}

type rstate uint8

const (
	stIdle   rstate = iota // neutral: only ENQ (or an adopted STX) opens a session
	stAwait                // session open, between frames
	stNumber               // after STX
	stText                 // collecting text up to ETB or ETX
	stCheck1               // first checksum character
	stCheck2               // second checksum character
)

const anyFN = -1

// ReceiverState is the E1381 receiver as a pure byte-at-a-time state
// machine: each decision depends only on the current byte and the stored
// state, so any chunking of the input gives the same replies and sessions.
// It is not safe for concurrent use; use one per connection.
type ReceiverState struct {
	opts    ReceiverOptions
	deliver func(Session) error
	st      rstate

	// Frame being received.
	fn, sum, term, c1 byte
	text              []byte

	// Open session.
	body   []byte
	lastFN int // last accepted frame number, anyFN if none
	expect int // next expected frame number, anyFN if unknown

	// Counters since the last delivery.
	frames, dups, naks, ignored, truncated, oversized, badFN int
	adopted                                                  bool

	idleIgnored int // bytes ignored outside a session, reported when it ends
}

// NewReceiverState returns a receiver in the neutral state. deliver is
// called with each completed session before the reply that completes it
// (see Feed); nil discards sessions.
func NewReceiverState(opts ReceiverOptions, deliver func(Session) error) *ReceiverState {
	return &ReceiverState{opts: opts.withDefaults(), deliver: deliver, lastFN: anyFN, expect: anyFN}
}

// InSession reports whether a session is open, i.e. whether the idle timer
// should run.
func (s *ReceiverState) InSession() bool { return s.st != stIdle }

// Feed consumes one byte and returns the reply to send (ACK or NAK), or 0
// when none is due.
//
// Deliveries happen inside Feed, before the reply is returned, so a store
// can persist the session before the instrument is told it arrived:
//   - on EOT, before the ACK of EOT (unless SilentEOT);
//   - with SilentEOT, on the frame that completes an L (terminator) record
//     with ETX, before that frame's ACK, because the instrument sends no
//     later byte that is answered; such a session is complete without EOT
//     and records after it form another message;
//   - on ENQ inside a session, before the ACK of ENQ;
//   - on a frame that takes the body over MaxSession, before its ACK.
//
// When deliver fails, that reply becomes NAK: a frame is not accepted (the
// instrument retransmits it and delivery is retried), an ENQ means "busy"
// (the session is kept and delivery is retried on the next ENQ). After EOT
// nothing can be retried: the session is reported lost through OnWarning,
// and the ACK of EOT becomes NAK.
func (s *ReceiverState) Feed(b byte) byte {
	switch s.st {
	case stIdle:
		return s.feedIdle(b)
	case stAwait:
		return s.feedAwait(b)
	case stCheck1:
		s.c1, s.st = b, stCheck2
		return 0
	case stCheck2:
		return s.endFrame(b)
	}
	switch b { // inside a frame
	case STX:
		s.truncated++
		s.beginFrame()
		return 0
	case EOT:
		s.truncated++
		return s.endSession()
	}
	if s.st == stNumber {
		s.fn, s.sum, s.st = b, b, stText
		return 0
	}
	s.sum += b
	if b == ETX || b == ETB {
		s.term, s.st = b, stCheck1
		return 0
	}
	if 1+len(s.text) >= s.opts.MaxFrame {
		s.oversized++
		s.naks++
		s.st = stAwait
		return NAK
	}
	s.text = append(s.text, b)
	return 0
}

func (s *ReceiverState) feedIdle(b byte) byte {
	switch b {
	case ENQ:
		s.open('1')
		return ACK
	case EOT:
		return s.eotReply()
	case STX:
		// Adopt the frame, e.g. after a restart mid-transmission.
		s.open(anyFN)
		s.adopted = true
		s.beginFrame()
		return 0
	}
	s.idleIgnored++
	return 0
}

func (s *ReceiverState) feedAwait(b byte) byte {
	switch b {
	case STX:
		s.beginFrame()
	case EOT:
		return s.endSession()
	case ENQ:
		return s.reopen()
	case CR, LF, NUL: // frame trailers and line noise
	default:
		s.ignored++
	}
	return 0
}

func (s *ReceiverState) eotReply() byte {
	if s.opts.SilentEOT {
		return 0
	}
	return ACK
}

func (s *ReceiverState) beginFrame() {
	s.st = stNumber
	s.text = s.text[:0]
}

// open starts a session expecting the frame-number character expect, or
// any number (anyFN).
func (s *ReceiverState) open(expect int) {
	s.flushIdleIgnored()
	s.resetSession()
	s.st = stAwait
	s.expect = expect
}

func (s *ReceiverState) endFrame(c2 byte) byte {
	s.st = stAwait
	if !checksumMatches(s.c1, c2, s.sum) {
		s.naks++
		return NAK
	}
	fn := int(s.fn)
	if fn < '0' || fn > '7' {
		s.badFN++
	}
	if fn == s.lastFN {
		s.dups++ // the sender missed our ACK
		return ACK
	}
	if s.opts.StrictFrameNumbers && s.expect != anyFN && fn != s.expect {
		s.naks++
		return NAK
	}
	mark, lastFN := len(s.body), s.lastFN
	s.appendText(s.text)
	s.frames++
	s.lastFN = fn
	if s.endsMessage() || len(s.body) > s.opts.MaxSession {
		if err := s.deliverPending(); err != nil {
			s.body = s.body[:mark]
			s.frames--
			s.lastFN = lastFN
			s.naks++
			s.warn(fmt.Sprintf("delivery failed, frame rejected for retransmission: %v", err))
			return NAK
		}
	}
	s.expect = anyFN
	if fn >= '0' && fn <= '7' {
		s.expect = '0' + (fn-'0'+1)%8
	}
	return ACK
}

// appendText adds accepted frame text the way the reference does: CR ends a
// record ("\n"), other control bytes are dropped, and each remaining byte
// becomes the code point of the same value.
func (s *ReceiverState) appendText(text []byte) {
	for _, b := range text {
		switch {
		case b == CR:
			s.body = append(s.body, '\n')
		case b < 0x20:
		default:
			s.body = utf8.AppendRune(s.body, rune(b))
		}
	}
}

// endsMessage reports whether, with SilentEOT, the frame just accepted is
// the last one the instrument expects an answer to: it ends with ETX and
// completes an L record.
func (s *ReceiverState) endsMessage() bool {
	n := len(s.body)
	if !s.opts.SilentEOT || s.term != ETX || n == 0 || s.body[n-1] != '\n' {
		return false
	}
	start := bytes.LastIndexByte(s.body[:n-1], '\n') + 1
	return s.body[start] == 'L'
}

// endSession handles EOT inside a session.
func (s *ReceiverState) endSession() byte {
	reply := s.eotReply()
	if len(s.body) > 0 {
		if err := s.deliverPending(); err != nil {
			s.warn(fmt.Sprintf("delivery failed, session of %d records lost: %v", countLines(s.body), err))
			if reply != 0 {
				reply = NAK
			}
		}
	}
	s.toIdle()
	return reply
}

// reopen handles ENQ inside a session: what was accepted so far is
// delivered as its own message and a new session starts.
func (s *ReceiverState) reopen() byte {
	if len(s.body) > 0 {
		if err := s.deliverPending(); err != nil {
			s.warn(fmt.Sprintf("delivery failed, replying busy to ENQ: %v", err))
			return NAK
		}
	}
	s.reportWarnings()
	s.open('1')
	return ACK
}

// Discard abandons the open session without delivering it, as when the
// connection drops or the idle timer expires; reason ends up in the warning.
func (s *ReceiverState) Discard(reason string) {
	if s.st != stIdle && len(s.body) > 0 {
		s.warn(fmt.Sprintf("session discarded (%s): %d records not delivered", reason, countLines(s.body)))
	}
	s.toIdle()
	s.flushIdleIgnored()
}

func (s *ReceiverState) toIdle() {
	s.reportWarnings()
	s.resetSession()
	s.st = stIdle
}

// deliverPending hands over the accepted body; on success the session stays
// open with an empty body so that duplicates of the last frame are still
// recognised.
func (s *ReceiverState) deliverPending() error {
	sess := Session{
		Body:       string(s.body),
		Records:    strings.Split(strings.TrimSuffix(string(s.body), "\n"), "\n"),
		Frames:     s.frames,
		Duplicates: s.dups,
		NAKs:       s.naks,
		Warnings:   s.warnings(),
	}
	if s.deliver != nil {
		if err := s.deliver(sess); err != nil {
			return err
		}
	}
	s.clearBody()
	return nil
}

func (s *ReceiverState) resetSession() {
	s.clearBody()
	s.lastFN, s.expect = anyFN, anyFN
}

func (s *ReceiverState) clearBody() {
	s.body = s.body[:0]
	if cap(s.body) > DefaultMaxFrame {
		s.body = nil // do not pin the buffer of one large session
	}
	s.frames, s.dups, s.naks, s.ignored, s.truncated, s.oversized, s.badFN = 0, 0, 0, 0, 0, 0, 0
	s.adopted = false
}

// warnings renders the counters once per kind.
func (s *ReceiverState) warnings() []string {
	var w []string
	if s.adopted {
		w = append(w, "frame received without ENQ: session opened for it")
	}
	if s.badFN > 0 {
		w = append(w, fmt.Sprintf("%d frames numbered outside 0-7", s.badFN))
	}
	if s.ignored > 0 {
		w = append(w, fmt.Sprintf("%d stray bytes between frames ignored", s.ignored))
	}
	if s.truncated > 0 {
		w = append(w, fmt.Sprintf("%d unterminated frames dropped", s.truncated))
	}
	if s.oversized > 0 {
		w = append(w, fmt.Sprintf("%d frames longer than %d bytes rejected", s.oversized, s.opts.MaxFrame))
	}
	return w
}

// reportWarnings sends the warnings of a session that delivers nothing more
// to OnWarning, and clears them.
func (s *ReceiverState) reportWarnings() {
	for _, w := range s.warnings() {
		s.warn(w)
	}
	s.ignored, s.truncated, s.oversized, s.badFN = 0, 0, 0, 0
	s.adopted = false
}

func (s *ReceiverState) flushIdleIgnored() {
	if s.idleIgnored > 0 {
		s.warn(fmt.Sprintf("%d bytes outside a session ignored", s.idleIgnored))
		s.idleIgnored = 0
	}
}

func (s *ReceiverState) warn(msg string) {
	if s.opts.OnWarning != nil {
		s.opts.OnWarning(msg)
	}
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

// Receiver runs ReceiverState over connections. One Receiver may serve many
// connections at once; each Serve call keeps its own state.
type Receiver struct {
	opts ReceiverOptions
}

// NewReceiver returns a receiver with opts, zero fields set to defaults.
func NewReceiver(opts ReceiverOptions) *Receiver {
	return &Receiver{opts: opts.withDefaults()}
}

// Serve answers the instrument on rw until the stream ends (returns nil),
// ctx is done (returns ctx.Err()) or reading or writing fails (returns that
// error). Replies are written as soon as the bytes read so far call for
// them. deliver is called on this goroutine, before the reply that completes
// the session (see ReceiverState.Feed); an error from it turns that reply
// into NAK. A session still open when Serve returns is discarded: the
// instrument will resend it.
//
// rw should be a net.Conn or another Conn so that the idle timer and
// cancellation can interrupt a read; a plain io.ReadWriter is read on a
// helper goroutine (see WithReadDeadline) that ends when rw reports an
// error, so close rw after Serve returns.
func (r *Receiver) Serve(ctx context.Context, rw io.ReadWriter, deliver func(Session) error) error {
	conn, ok := rw.(Conn)
	if !ok {
		pc := WithReadDeadline(rw).(*pumpConn)
		defer pc.release()
		conn = pc
	}
	st := NewReceiverState(r.opts, deliver)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	var out []byte
	for {
		var deadline time.Time
		if st.InSession() && r.opts.IdleTimeout > 0 {
			deadline = time.Now().Add(r.opts.IdleTimeout)
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			st.Discard("connection error")
			return err
		}
		// Checked after setting the deadline: cancellation either happened
		// before (seen here) or resets the deadline after us.
		if ctx.Err() != nil {
			st.Discard("cancelled")
			return ctx.Err()
		}
		n, err := conn.Read(buf)
		for _, b := range buf[:n] {
			if reply := st.Feed(b); reply != 0 {
				out = append(out, reply)
			}
		}
		if len(out) > 0 {
			if werr := writeWithin(conn, out, r.opts.WriteTimeout); werr != nil {
				st.Discard("write failed")
				return werr
			}
			out = out[:0]
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			st.Discard("cancelled")
			return ctx.Err()
		case isTimeout(err):
			st.Discard(fmt.Sprintf("nothing received for %s", r.opts.IdleTimeout))
		case errors.Is(err, io.EOF):
			st.Discard("connection closed")
			return nil
		default:
			st.Discard("connection error")
			return err
		}
	}
}
