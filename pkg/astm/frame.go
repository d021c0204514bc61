package astm

import (
	"errors"
	"fmt"
)

// Control characters of the E1381 link layer.
const (
	NUL byte = 0x00
	SOH byte = 0x01
	STX byte = 0x02 // start of frame
	ETX byte = 0x03 // end of the last frame of an E1381 message
	EOT byte = 0x04 // end of transmission; receiver interrupt in place of ACK
	ENQ byte = 0x05 // bid for the line
	ACK byte = 0x06
	LF  byte = 0x0A
	CR  byte = 0x0D // record terminator inside frame text
	NAK byte = 0x15
	ETB byte = 0x17 // end of an intermediate frame
)

// DefaultFrameSize is the longest frame text E1381 allows.
const DefaultFrameSize = 240

const (
	hexUpper = "0123456789ABCDEF"
	hexLower = "0123456789abcdef"
)

// Checksum returns the two upper-case hex digits of the modulo-256 sum of
// covered, which runs from the frame number through the ETB or ETX byte.
func Checksum(covered []byte) [2]byte {
	s := sum8(covered)
	return [2]byte{hexUpper[s>>4], hexUpper[s&0x0F]}
}

func sum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// checksumMatches compares received checksum characters with sum, ignoring
// case; a non-hex character is a mismatch.
func checksumMatches(c1, c2, sum byte) bool {
	h, ok1 := hexValue(c1)
	l, ok2 := hexValue(c2)
	return ok1 && ok2 && h<<4|l == sum
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Trailer is what follows a frame's checksum.
type Trailer int

const (
	TrailerCRLF Trailer = iota // CR LF, as E1381 specifies
	TrailerLF                  // LF alone (lossy captures, some TCP senders)
	TrailerNone                // nothing: the next STX or EOT follows the checksum
)

var trailerNames = []string{"crlf", "lf", "none"}

func (t Trailer) String() string { return enumString(trailerNames, "Trailer", t) }

// ParseTrailer returns the Trailer named "crlf", "lf" or "none".
func ParseTrailer(name string) (Trailer, error) {
	return parseEnum[Trailer](trailerNames, "trailer", name)
}

// FrameStyle is how BuildFrames writes frames. The zero value is standard
// E1381; the other settings emulate senders seen in the field, so that
// receivers can be tested against them.
type FrameStyle struct {
	// FirstNumber is the frame-number digit of a transmission's first
	// frame, '0'…'7'; 0 means the standard '1'. Later frames count on
	// modulo 8.
	FirstNumber byte
	// LowerChecksum writes the checksum's hex digits in lower case.
	LowerChecksum bool
	// Trailer is what follows the checksum.
	Trailer Trailer
}

// EncodeFrame returns STX, the frame number (fn modulo 8 as a digit), text,
// ETX when final or ETB otherwise, the checksum and CR LF.
func EncodeFrame(fn int, text []byte, final bool) []byte {
	return FrameStyle{}.appendFrame(make([]byte, 0, len(text)+7), fn, text, final)
}

// appendFrame appends frame number fn (taken modulo 8) in style s; the
// caller applies FirstNumber.
func (s FrameStyle) appendFrame(dst []byte, fn int, text []byte, final bool) []byte {
	dst = append(dst, STX)
	start := len(dst)
	dst = append(dst, '0'+byte(fn&7))
	dst = append(dst, text...)
	if final {
		dst = append(dst, ETX)
	} else {
		dst = append(dst, ETB)
	}
	sum, hex := sum8(dst[start:]), hexUpper
	if s.LowerChecksum {
		hex = hexLower
	}
	dst = append(dst, hex[sum>>4], hex[sum&0x0F])
	switch s.Trailer {
	case TrailerLF:
		return append(dst, LF)
	case TrailerNone:
		return dst
	}
	return append(dst, CR, LF)
}

// firstNumber is the number of a transmission's first frame.
func (s FrameStyle) firstNumber() int {
	if s.FirstNumber == 0 {
		return 1
	}
	return int(s.FirstNumber - '0')
}

// Frame is one decoded E1381 frame.
type Frame struct {
	Number   byte    // frame-number character as sent, normally '0'…'7'
	Text     []byte  // text between the frame number and the terminator
	Final    bool    // ended by ETX rather than ETB
	Checksum [2]byte // checksum characters as sent
}

// ChecksumOK reports whether the checksum as sent matches the frame,
// ignoring the case of the hex digits.
func (f Frame) ChecksumOK() bool {
	return checksumMatches(f.Checksum[0], f.Checksum[1], sum8(f.covered()))
}

// Encode re-encodes the frame with a correct upper-case checksum and a CR LF
// trailer, keeping its frame number.
func (f Frame) Encode() []byte {
	out := append([]byte{STX}, f.covered()...)
	cs := Checksum(out[1:])
	return append(out, cs[0], cs[1], CR, LF)
}

func (f Frame) covered() []byte {
	b := make([]byte, 0, len(f.Text)+2)
	b = append(b, f.Number)
	b = append(b, f.Text...)
	if f.Final {
		return append(b, ETX)
	}
	return append(b, ETB)
}

// ErrNotFrame is returned by DecodeFrame for a unit that is not a complete
// frame.
var ErrNotFrame = errors.New("astm: not a complete frame")

// DecodeFrame parses one unit as produced by SplitUnits: STX, frame number,
// text, ETB or ETX, two checksum characters and an optional CR LF (or LF
// alone). It does not verify the checksum; see Frame.ChecksumOK.
func DecodeFrame(unit []byte) (Frame, error) {
	if len(unit) < 5 || unit[0] != STX {
		return Frame{}, ErrNotFrame
	}
	term := frameEnd(unit, 1)
	if term < 0 || term == 1 {
		return Frame{}, ErrNotFrame
	}
	if term+3 > len(unit) {
		return Frame{}, fmt.Errorf("%w: checksum missing", ErrNotFrame)
	}
	switch trailer := string(unit[term+3:]); trailer {
	case "", "\r\n", "\n", "\r":
	default:
		return Frame{}, fmt.Errorf("%w: %d bytes after the checksum", ErrNotFrame, len(trailer))
	}
	return Frame{
		Number:   unit[1],
		Text:     unit[2:term],
		Final:    unit[term] == ETX,
		Checksum: [2]byte{unit[term+1], unit[term+2]},
	}, nil
}

// frameEnd returns the index of the ETB or ETX ending the frame text that
// starts at b[from], or -1 if the text ends (STX, EOT) or runs out first.
func frameEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		switch b[i] {
		case ETX, ETB:
			return i
		case STX, EOT:
			return -1
		}
	}
	return -1
}

// SplitUnits cuts an instrument byte stream into the units a sender writes
// one at a time: ENQ, EOT, each frame (from STX through its CR LF, or
// through the checksum when the trailer is missing) and runs of any other
// bytes. A frame cut short by STX or EOT is a unit of its own. The units
// concatenate back to b.
func SplitUnits(b []byte) [][]byte {
	var units [][]byte
	for i := 0; i < len(b); {
		end := unitEnd(b, i)
		units = append(units, b[i:end:end])
		i = end
	}
	return units
}

func unitEnd(b []byte, i int) int {
	switch b[i] {
	case ENQ, EOT:
		return i + 1
	case STX:
		j := i + 1
		for j < len(b) && b[j] != ETX && b[j] != ETB && b[j] != STX && b[j] != EOT {
			j++
		}
		if j == len(b) || b[j] == STX || b[j] == EOT {
			return j // truncated frame
		}
		end := min(j+3, len(b))
		if end < len(b) && b[end] == CR {
			end++
		}
		if end < len(b) && b[end] == LF {
			end++
		}
		return end
	}
	j := i + 1
	for j < len(b) && b[j] != ENQ && b[j] != EOT && b[j] != STX {
		j++
	}
	return j
}

// Packing says where BuildFrames puts frame boundaries.
type Packing int

const (
	// PackRecord sends each record as its own E1381 message: record text,
	// CR, ETX; a long record is first cut into ETB frames. The usual layout.
	PackRecord Packing = iota
	// PackFramePerRecord gives each record its own frame but ends every
	// frame except the transmission's last with ETB (Bio-Rad, cobas c111).
	PackFramePerRecord
	// PackStream joins all records and cuts them every frame size
	// characters regardless of record boundaries; ETX only on the last.
	PackStream
)

var packingNames = []string{"record", "frame-per-record", "stream"}

func (p Packing) String() string { return enumString(packingNames, "Packing", p) }

// ParsePacking returns the Packing named "record", "frame-per-record" or
// "stream".
func ParsePacking(name string) (Packing, error) {
	return parseEnum[Packing](packingNames, "packing", name)
}

// BuildFrames frames records (record text without terminator) for one
// transmission: frame numbers start at 1 (or style.FirstNumber) and count
// modulo 8 across the whole transmission; each record is followed by CR.
// frameSize is the longest frame text: 0 means DefaultFrameSize and a
// negative value never splits.
func BuildFrames(records [][]byte, packing Packing, frameSize int, style FrameStyle) [][]byte {
	if frameSize == 0 {
		frameSize = DefaultFrameSize
	}
	type message struct {
		text  []byte
		final bool // the message's last frame ends with ETX
	}
	var msgs []message
	switch packing {
	case PackStream:
		var all []byte
		for _, r := range records {
			all = append(append(all, r...), CR)
		}
		msgs = []message{{all, true}}
	default:
		for i, r := range records {
			final := packing == PackRecord || i == len(records)-1
			msgs = append(msgs, message{append(append([]byte(nil), r...), CR), final})
		}
	}
	var frames [][]byte
	first := style.firstNumber()
	for _, m := range msgs {
		if len(m.text) == 0 {
			continue
		}
		for text := m.text; len(text) > 0; {
			n := len(text)
			if frameSize > 0 && n > frameSize {
				n = frameSize
			}
			last := n == len(text)
			fn := first + len(frames)
			frames = append(frames, style.appendFrame(make([]byte, 0, n+7), fn, text[:n], last && m.final))
			text = text[n:]
		}
	}
	return frames
}
