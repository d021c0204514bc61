// Package mllp implements the Minimal Lower Layer Protocol used to carry HL7 v2
// messages over TCP: a frame codec, a server that hands each connection's
// messages to a handler in arrival order, and a pipelining client.
//
// A frame is VT (0x0B), the payload, FS (0x1C) and CR (0x0D). Unlike the
// reference implementation, every frame is decoded on its own (a bad frame
// never drops its neighbours), frames are capped in size, and connections can
// be closed when idle.
package mllp

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// Framing bytes.
const (
	StartBlock     = 0x0B // VT: starts a frame
	EndBlock       = 0x1C // FS: ends a frame when followed by CR
	CarriageReturn = 0x0D // CR: follows FS
)

// DefaultMaxFrameSize is the payload limit used when none is given.
const DefaultMaxFrameSize = 16 << 20

// ErrFrameTooLarge reports a frame whose payload exceeded the limit. The
// stream position is lost, so the connection must be closed.
var ErrFrameTooLarge = errors.New("mllp: frame exceeds the maximum size")

const (
	// readBufSize is the initial (and usual) read buffer: large enough that a
	// busy sender's pipelined frames arrive in few syscalls.
	readBufSize = 64 << 10
	// frameSlack is what the buffer may hold beyond the payload limit: the
	// FS CR terminator plus room so reads near the limit are not tiny.
	frameSlack = 4 << 10
	// maxEmptyReads guards against readers that return 0, nil forever.
	maxEmptyReads = 100
)

// Reader extracts MLLP frames from a byte stream.
//
// Bytes outside frames (junk, CRLF between frames) are dropped and counted. A
// frame ends at the first FS immediately followed by CR; an FS followed by
// anything else, and a VT inside a frame, are payload. The buffer never grows
// beyond the frame limit plus a small slack, and each byte is scanned once.
type Reader struct {
	rd       io.Reader
	buf      []byte
	start    int  // first unconsumed byte (the payload start when inFrame)
	end      int  // end of buffered data
	scan     int  // when inFrame: no terminator starts before this index
	inFrame  bool // a VT has been seen and its terminator has not
	maxFrame int
	limit    int // hard cap on len(buf)
	skipped  int64
	err      error // sticky error, returned once buffered frames are drained
}

// NewReader returns a Reader for r. maxFrame limits the payload size; a value
// <= 0 selects DefaultMaxFrameSize.
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrameSize
	}
	limit := maxFrame + frameSlack
	return &Reader{
		rd:       r,
		buf:      make([]byte, min(readBufSize, limit)),
		maxFrame: maxFrame,
		limit:    limit,
	}
}

// ReadFrame returns the payload of the next frame. The slice aliases the
// Reader's buffer and is valid only until the next call. It returns io.EOF
// when the stream ends outside a frame, io.ErrUnexpectedEOF when it ends
// inside one, and ErrFrameTooLarge (sticky) when a payload exceeds the limit.
func (r *Reader) ReadFrame() ([]byte, error) {
	if r.err == ErrFrameTooLarge {
		return nil, r.err
	}
	r.shrink()
	for {
		if !r.inFrame {
			if i := bytes.IndexByte(r.buf[r.start:r.end], StartBlock); i >= 0 {
				r.skipped += int64(i)
				r.start += i + 1
				r.scan = r.start
				r.inFrame = true
			} else {
				r.skipped += int64(r.end - r.start)
				r.start, r.end = 0, 0
			}
		}
		if r.inFrame {
			p, ok := r.findEnd()
			if ok && len(p) <= r.maxFrame {
				return p, nil
			}
			if ok || r.scan-r.start > r.maxFrame {
				r.err = ErrFrameTooLarge
				return nil, r.err
			}
		}
		if r.err != nil {
			if r.err == io.EOF && r.inFrame {
				r.err = io.ErrUnexpectedEOF
			}
			return nil, r.err
		}
		r.fill()
	}
}

// findEnd scans the buffered frame bytes from r.scan for FS CR. On success it
// consumes the frame and returns its payload.
func (r *Reader) findEnd() ([]byte, bool) {
	for {
		i := bytes.IndexByte(r.buf[r.scan:r.end], EndBlock)
		if i < 0 {
			r.scan = r.end
			return nil, false
		}
		fs := r.scan + i
		if fs+1 == r.end {
			// The CR may still be on its way: rescan just this FS next time.
			r.scan = fs
			return nil, false
		}
		if r.buf[fs+1] == CarriageReturn {
			p := r.buf[r.start:fs:fs]
			r.start = fs + 2
			r.inFrame = false
			return p, true
		}
		r.scan = fs + 1
	}
}

// fill reads more data, making room by compacting and then by growing the
// buffer up to its limit. Compaction happens at most once per frame before
// growth takes over, so a large frame arriving in small chunks costs linear
// time.
func (r *Reader) fill() {
	if r.end == len(r.buf) {
		if r.start > 0 {
			n := copy(r.buf, r.buf[r.start:r.end])
			r.scan -= r.start
			r.end = n
			r.start = 0
		} else {
			// Only reachable inside a frame (junk is discarded). The size check
			// in ReadFrame fires before the buffer reaches its limit.
			nb := make([]byte, min(2*len(r.buf), r.limit))
			copy(nb, r.buf[:r.end])
			r.buf = nb
		}
	}
	for range maxEmptyReads {
		n, err := r.rd.Read(r.buf[r.end:])
		if n < 0 || n > len(r.buf)-r.end {
			r.err = errors.New("mllp: reader returned an invalid count")
			return
		}
		r.end += n
		if err != nil {
			r.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.err = io.ErrNoProgress
}

// shrink drops a buffer that grew for one large frame once the data it holds
// fits the usual size again, so an idle connection does not pin megabytes.
func (r *Reader) shrink() {
	if len(r.buf) <= readBufSize || r.end-r.start > readBufSize/2 {
		return
	}
	nb := make([]byte, readBufSize)
	n := copy(nb, r.buf[r.start:r.end])
	r.scan -= r.start
	r.start, r.end = 0, n
	r.buf = nb
}

// Skipped returns the number of bytes dropped outside frames so far.
func (r *Reader) Skipped() int64 { return r.skipped }

// AppendFrame appends payload wrapped in VT ... FS CR to dst.
func AppendFrame(dst, payload []byte) []byte {
	dst = append(dst, StartBlock)
	dst = append(dst, payload...)
	return append(dst, EndBlock, CarriageReturn)
}

// framePool recycles frame buffers for WriteFrame; oversized buffers are not
// kept so one large message does not pin memory.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// WriteFrame writes payload as one frame with exactly one Write call, so
// concurrent writers on a stream never interleave partial frames and the
// frame leaves in as few segments as possible.
func WriteFrame(w io.Writer, payload []byte) error {
	bp := framePool.Get().(*[]byte)
	b := AppendFrame((*bp)[:0], payload)
	_, err := w.Write(b)
	if cap(b) <= readBufSize {
		*bp = b
		framePool.Put(bp)
	}
	return err
}
