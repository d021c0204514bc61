package hl7

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// AckCode is an acknowledgment code (MSA-1, HL7 table 0008).
type AckCode string

// Application-level (AA, AE, AR) and commit-level (CA, CE, CR) acknowledgment codes.
const (
	AA AckCode = "AA"
	AE AckCode = "AE"
	AR AckCode = "AR"
	CA AckCode = "CA"
	CE AckCode = "CE"
	CR AckCode = "CR"
)

// Valid reports whether c is one of the six codes.
func (c AckCode) Valid() bool { return c.DefaultText() != "" }

// Commit reports whether c is a commit-level code (CA, CE, CR).
func (c AckCode) Commit() bool { return c == CA || c == CE || c == CR }

// Positive reports whether c accepts the message (AA, CA).
func (c AckCode) Positive() bool { return c == AA || c == CA }

// DefaultText returns the MSA-3 text the reference implementation writes for c, or "" for an unknown code.
func (c AckCode) DefaultText() string {
	switch c {
	case AA:
		return "OK"
	case AE:
		return "Application Error"
	case AR:
		return "Application Reject"
	case CA:
		return "Commit Accept"
	case CE:
		return "Commit Error"
	case CR:
		return "Commit Reject"
	}
	return ""
}

// AckOptions tune BuildAck. The zero value gives the reference behaviour, with zero-padded milliseconds and control
// IDs that are unique within the process.
type AckOptions struct {
	Text         string    // MSA-3; default code.DefaultText()
	Now          time.Time // MSH-7; default time.Now()
	ControlID    string    // MSH-10; default NewControlID-style id derived from Now
	ErrorSegment *Segment  // appended after MSA when set (see NewSegment)
}

// BuildAck builds the acknowledgment of orig: its delimiters (MSH-2 copied verbatim), sender and receiver swapped,
// MSH-9 `ACK`, `ACK^<trigger>` or `ACK^<trigger>^ACK` after the original's shape, MSH-11 `P`, MSH-12 the original's
// MSH-12 if that field exists (even empty) else `2.5.1`, nothing after MSH-12, then `MSA|<code>|<orig MSH-10>|<text>`.
// Segments are separated by CR with no trailing CR. Text and ControlID are escaped as needed.
func BuildAck(orig *Message, code AckCode, opt AckOptions) *Message {
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	id := opt.ControlID
	if id == "" {
		id = controlID(now)
	}
	text := opt.Text
	if text == "" {
		text = code.DefaultText()
	}

	// Read MSH-1..12 of the original in one pass; f[n] is field n.
	d := DefaultDelimiters
	var f [13]string
	f[2] = "^~\\&"
	numFields := 0
	if msh := orig.Segment("MSH"); msh != nil && msh.isMSH() {
		d = orig.d
		numFields = 1
		rest := msh.raw[4:]
		for numFields < len(f)-1 {
			numFields++
			i := strings.IndexByte(rest, d.Field)
			if i < 0 {
				f[numFields] = rest
				break
			}
			f[numFields], rest = rest[:i], rest[i+1:]
		}
	}
	version := f[12]
	if numFields < 12 {
		version = "2.5.1"
	}

	var b strings.Builder
	b.Grow(96 + len(f[2]) + len(f[3]) + len(f[4]) + len(f[5]) + len(f[6]) + len(f[9]) + len(f[10]) + len(id) +
		len(version) + len(text))
	fs := d.Field
	b.WriteString("MSH")
	for _, v := range [...]string{f[2], f[5], f[6], f[3], f[4], FormatTime(now), "", "ACK"} {
		b.WriteByte(fs)
		b.WriteString(v)
	}
	if trigger, _ := piece(f[9], d.Component, 1); trigger != "" {
		b.WriteByte(d.Component)
		b.WriteString(trigger)
		if structure, _ := piece(f[9], d.Component, 2); structure != "" {
			b.WriteByte(d.Component)
			b.WriteString("ACK")
		}
	}
	for _, v := range [...]string{d.encodeText(id), "P", version} {
		b.WriteByte(fs)
		b.WriteString(v)
	}
	b.WriteString("\rMSA")
	for _, v := range [...]string{d.encodeText(string(code)), f[10], d.encodeText(text)} {
		b.WriteByte(fs)
		b.WriteString(v)
	}
	ack := split(b.String(), d)
	if opt.ErrorSegment != nil {
		ack.AppendSegment(opt.ErrorSegment)
	}
	return ack
}

// encodeText escapes s like encode; when the message has no escape character, characters that would break the
// structure are replaced by spaces, because an acknowledgment must always be built.
func (d Delimiters) encodeText(s string) string {
	if e, err := d.encode(s); err == nil {
		return e
	}
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (d.has(byte(r)) || r == '\r' || r == '\n') {
			return ' '
		}
		return r
	}, s)
}

// AckCodeOf returns MSA-1 of m with surrounding spaces removed, or "" if m has no MSA segment.
func AckCodeOf(m *Message) AckCode {
	v := m.d.decode(m.lookup(Path{Segment: "MSA", SegmentRep: 1, Field: 1, Repetition: 1}))
	return AckCode(strings.TrimSpace(v))
}

// lastControlID holds the last generated id as a number, so that ids are strictly increasing within the process.
var lastControlID atomic.Uint64

// NewControlID returns a message control id (MSH-10) unique within the process: the epoch milliseconds followed by a
// three-digit sequence number within that millisecond (16 digits in all).
func NewControlID() string { return controlID(time.Now()) }

func controlID(now time.Time) string {
	ms := max(now.UnixMilli(), 0)
	base := uint64(ms) * 1000
	for {
		last := lastControlID.Load()
		next := max(base, last+1)
		if lastControlID.CompareAndSwap(last, next) {
			return strconv.FormatUint(next, 10)
		}
	}
}

// FormatTime formats t as an HL7 DTM in UTC, YYYYMMDDHHMMSS.sss, with the milliseconds always three digits (the
// reference drops leading zeros, turning 7 ms into ".7", which HL7 reads as 700 ms).
func FormatTime(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format("20060102150405.000")
	}
	hour, minute, sec := t.Clock()
	var b [18]byte
	put := func(at, width, v int) {
		for i := at + width - 1; i >= at; i-- {
			b[i] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, 4, year)
	put(4, 2, int(month))
	put(6, 2, day)
	put(8, 2, hour)
	put(10, 2, minute)
	put(12, 2, sec)
	b[14] = '.'
	put(15, 3, t.Nanosecond()/int(time.Millisecond))
	return string(b[:])
}

// ExampleADT returns the sample ADT^A01 that `hl7 send --generate-example` sends: the same segments and field
// positions as the reference CLI, including its PID fields that sit one position early and its trailing empty
// fields. now is written to MSH-7 and EVN-2, controlID (escaped as needed) to MSH-10.
func ExampleADT(now time.Time, controlID string) *Message {
	ts := FormatTime(now)
	text := "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|" + ts + "||ADT^A01|" + DefaultDelimiters.encodeText(controlID) +
		"|P|2.5|\r" +
		"EVN|A01|" + ts + "||\r" +
		"PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|||123 STREET^APT 4B^CITY^ST^12345-6789" +
		"||555-555-5555||S|\r" +
		"PV1|1|I|2000^2012^01||||12345^DOCTOR^DOC||||||||||1234567^DOCTOR^DOC||AMB|||||||||||||||||||||||||" +
		"202309280900|"
	return split(text, DefaultDelimiters)
}
