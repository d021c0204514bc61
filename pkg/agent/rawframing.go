package agent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
)

// errInvalidHex answers a response whose body is not hex in a channel with
// bodyEncoding=hex. The reference would write the bytes before the first
// bad digit; we write nothing and tell the server.
var errInvalidHex = errors.New("Invalid hex body")

// keptBuffer is the largest message buffer a connection keeps between
// messages; a larger one is released so that one big message does not pin
// memory for the life of the connection.
const keptBuffer = 64 << 10

// rawFramer is the per-connection state of a raw byte stream: the
// autoRespond window and the message being assembled. Each decision
// depends only on the current byte and this state, so any chunking of the
// stream gives the same responses and messages.
//
// Framing differs from the reference on purpose. There, a completed
// message starts right after the previous endChar of the same TCP chunk,
// so bytes between an endChar and the next startChar are included when
// they share a chunk and dropped when they do not, and bytes before the
// first startChar let a lone endChar emit them. That depends on how the
// network cuts the stream, so it cannot be reproduced; here a message is
// always exactly startChar…endChar and bytes outside one are ignored.
// Well-formed traffic gives the same messages either way.
type rawFramer struct {
	window    []byte // the last bytes seen, for autoRespond
	msg       []byte
	in        bool // a startChar was seen and no endChar since
	ignored   int  // bytes outside messages or in discarded partial ones
	oversized int  // messages discarded for exceeding maxMessage
}

// step consumes one byte. It returns the autoRespond response due now
// (nil if none) and the message b completes (nil if none; valid until the
// next step).
func (f *rawFramer) step(p *byteStreamParams, b byte) (response, message []byte) {
	if b == p.startChar {
		f.window = f.window[:0]
	}
	return f.respond(p, b), f.frame(p, b)
}

// respond matches the autoRespond patterns against the bytes seen so far;
// a match clears the window, so overlapping occurrences answer once.
func (f *rawFramer) respond(p *byteStreamParams, b byte) []byte {
	if p.window == 0 {
		return nil
	}
	f.window = append(f.window, b)
	if n := len(f.window) - p.window; n > 0 {
		f.window = append(f.window[:0], f.window[n:]...)
	}
	for _, ar := range p.autoRespond {
		if bytes.HasSuffix(f.window, ar.pattern) {
			f.window = f.window[:0]
			return ar.response
		}
	}
	return nil
}

func (f *rawFramer) frame(p *byteStreamParams, b byte) []byte {
	switch {
	case f.in && b == p.endChar: // checked first, so startChar == endChar pairs up
		f.in = false
		if len(f.msg) >= p.maxMessage {
			f.discardOversized()
			return nil
		}
		f.msg = append(f.msg, b)
		return f.msg
	case b == p.startChar:
		if f.in {
			f.ignored += len(f.msg)
		}
		if cap(f.msg) > keptBuffer {
			f.msg = nil
		}
		f.msg = append(f.msg[:0], b)
		f.in = true
	case !f.in:
		f.ignored++
	case len(f.msg) >= p.maxMessage:
		f.in = false
		f.discardOversized()
	default:
		f.msg = append(f.msg, b)
	}
	return nil
}

func (f *rawFramer) discardOversized() {
	f.oversized++
	f.msg = f.msg[:0]
	if cap(f.msg) > keptBuffer {
		f.msg = nil
	}
}

// clean applies stripSequence (longest match first, non-overlapping) and
// then stripControlChars to a completed message.
func (p *byteStreamParams) clean(msg []byte) []byte {
	if len(p.strip) == 0 && !p.stripControl {
		return msg
	}
	out := make([]byte, 0, len(msg))
	for i := 0; i < len(msg); {
		if n := p.stripAt(msg[i:]); n > 0 {
			i += n
			continue
		}
		if c := msg[i]; !p.stripControl || c >= 0x20 || p.keep[c] {
			out = append(out, c)
		}
		i++
	}
	return out
}

// stripAt returns the length of the strip sequence that b starts with, or 0.
func (p *byteStreamParams) stripAt(b []byte) int {
	for _, s := range p.strip {
		if bytes.HasPrefix(b, s) {
			return len(s)
		}
	}
	return 0
}

// encodeBody renders message bytes per bodyEncoding. In utf-8, bytes that
// are not UTF-8 become U+FFFD, as the JSON envelope could not carry them.
func (p *byteStreamParams) encodeBody(b []byte) string {
	if p.hexBody {
		return hex.EncodeToString(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// decodeResponse turns a server response body into the bytes for the
// device, per bodyEncoding.
func (p *byteStreamParams) decodeResponse(body string) ([]byte, error) {
	if !p.hexBody {
		return []byte(body), nil
	}
	b, err := hex.DecodeString(body)
	if err != nil {
		return nil, errInvalidHex
	}
	return b, nil
}
