// Package hl7 is a light, positional HL7 v2 (ER7) model: parse, read and write values by path, serialise, and build
// acknowledgements. There is no schema. Segments keep their raw text and are split only when a value is read or
// written, because the agent parses every message but looks at only a few fields.
package hl7

import (
	"errors"
	"fmt"
	"strings"
)

// Delimiters of a message, read from MSH-1 and MSH-2. A zero byte means the message declares no such delimiter.
type Delimiters struct{ Field, Component, Repetition, Escape, Subcomponent byte }

// DefaultDelimiters are the standard ER7 delimiters `|^~\&`.
var DefaultDelimiters = Delimiters{'|', '^', '~', '\\', '&'}

// encodingChars returns MSH-2 as HL7 orders it: component, repetition, escape, subcomponent.
func (d Delimiters) encodingChars() [4]byte {
	return [4]byte{d.Component, d.Repetition, d.Escape, d.Subcomponent}
}

// ErrInvalid is matched (errors.Is) by every error Parse returns.
var ErrInvalid = errors.New("invalid HL7 message")

// ErrNotHL7 is returned (wrapped) by Parse when the text does not start with an MSH segment.
var ErrNotHL7 = fmt.Errorf("%w: does not start with MSH", ErrInvalid)

// Message is a parsed HL7 v2 message. Reading methods do not modify it, so a Message may be read from several
// goroutines at once; writes (Set, SetRaw, AppendSegment) need exclusive access.
type Message struct {
	d    Delimiters
	segs []*Segment
	// text is the original input while it is still exactly what String would build; "" once that no longer holds.
	text string
	// trailingCR records a segment terminator after the last segment, so that it survives a round trip.
	trailingCR bool
}

// Segment is one segment of a Message. Its raw text never contains CR or LF.
type Segment struct {
	raw     string
	nameLen int // the name is raw[:nameLen]; an offset rather than a second string keeps parsing cheap
	d       Delimiters
}

// Parse parses an ER7 message that has already been decoded from the wire charset.
//
// Leading CR, LF, space, tab and a UTF-8 byte order mark are skipped (files and some senders add them); after that
// the text must start with "MSH" and a field separator. Segments are split on any run of CR and/or LF. A segment
// terminator after the last segment is remembered and written back by String, but does not create an empty segment.
// Encoding characters missing from a short MSH-2 take their default value unless that collides with one already in
// use, in which case the delimiter is absent (zero). A fifth MSH-2 character (the HL7 2.7 truncation character) is
// kept but not interpreted. Delimiters must be distinct printable ASCII characters other than letters and digits
// (space and tab are tolerated); errors match ErrInvalid, and ErrNotHL7 when there is no MSH at all.
func Parse(text string) (*Message, error) {
	text = trimLeading(text)
	if len(text) < 4 || text[:3] != "MSH" {
		return nil, ErrNotHL7
	}
	d, err := parseDelimiters(text)
	if err != nil {
		return nil, err
	}
	return split(text, d), nil
}

// split builds a Message from text whose MSH and delimiters d have been validated.
func split(text string, d Delimiters) *Message {
	m := &Message{d: d}
	canonical := true
	hasLF := strings.IndexByte(text, '\n') >= 0
	n := strings.Count(text, "\r") + 1
	if hasLF {
		canonical = false
		n += strings.Count(text, "\n")
	}
	backing := make([]Segment, 0, n)
	rest := text
	for {
		end := indexEOL(rest, hasLF)
		if end < 0 {
			backing = append(backing, newSeg(rest, d))
			break
		}
		backing = append(backing, newSeg(rest[:end], d))
		sepEnd := end + 1
		for sepEnd < len(rest) && (rest[sepEnd] == '\r' || rest[sepEnd] == '\n') {
			sepEnd++
		}
		if sepEnd-end > 1 {
			canonical = false
		}
		if sepEnd == len(rest) {
			m.trailingCR = true
			break
		}
		rest = rest[sepEnd:]
	}
	m.segs = make([]*Segment, len(backing))
	for i := range backing {
		m.segs[i] = &backing[i]
	}
	if canonical {
		m.text = text
	}
	return m
}

func trimLeading(s string) string {
	s = strings.TrimPrefix(s, "\uFEFF")
	i := 0
	for i < len(s) && (s[i] == '\r' || s[i] == '\n' || s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return s[i:]
}

// indexEOL finds the next CR (or LF when the text has any); IndexByte is much faster than IndexAny.
func indexEOL(s string, hasLF bool) int {
	if !hasLF {
		return strings.IndexByte(s, '\r')
	}
	return strings.IndexAny(s, "\r\n")
}

// parseDelimiters reads MSH-1 and MSH-2 from text, which starts with "MSH".
func parseDelimiters(text string) (Delimiters, error) {
	var d Delimiters
	d.Field = text[3]
	if err := checkDelimiter(d.Field); err != nil {
		return d, fmt.Errorf("%w: field separator: %v", ErrInvalid, err)
	}
	enc := text[4:]
	for i := 0; i < len(enc); i++ {
		if c := enc[i]; c == d.Field || c == '\r' || c == '\n' {
			enc = enc[:i]
			break
		}
	}
	defaults := DefaultDelimiters.encodingChars()
	slots := [4]*byte{&d.Component, &d.Repetition, &d.Escape, &d.Subcomponent}
	for i, slot := range slots {
		if i < len(enc) {
			c := enc[i]
			if err := checkDelimiter(c); err != nil {
				return d, fmt.Errorf("%w: encoding character %d: %v", ErrInvalid, i+1, err)
			}
			if d.has(c) {
				return d, fmt.Errorf("%w: delimiter %q used twice", ErrInvalid, c)
			}
			*slot = c
		} else if !d.has(defaults[i]) {
			*slot = defaults[i]
		}
	}
	return d, nil
}

// has reports whether c is one of the delimiters.
func (d Delimiters) has(c byte) bool {
	return c != 0 && (c == d.Field || c == d.Component || c == d.Repetition || c == d.Escape || c == d.Subcomponent)
}

// checkDelimiter rejects bytes that cannot be delimiters: HL7 forbids alphanumerics, and non-ASCII bytes would split
// multi-byte UTF-8 characters.
func checkDelimiter(c byte) error {
	switch {
	case c >= 0x80:
		return fmt.Errorf("non-ASCII byte 0x%02X", c)
	case c < ' ' && c != '\t':
		return fmt.Errorf("control byte 0x%02X", c)
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return fmt.Errorf("alphanumeric %q", c)
	}
	return nil
}

func newSeg(raw string, d Delimiters) Segment {
	n := len(raw)
	if n > 3 && raw[3] == d.Field { // the usual three-letter name
		n = 3
	} else if i := strings.IndexByte(raw, d.Field); i >= 0 {
		n = i
	}
	return Segment{raw: raw, nameLen: n, d: d}
}

// String returns the message in ER7 with a CR after every segment but the last (and after the last too when the
// input had one). A message that was parsed from CR-separated text and not modified returns that text unchanged.
func (m *Message) String() string {
	if m.text != "" {
		return m.text
	}
	n := len(m.segs)
	for _, s := range m.segs {
		n += len(s.raw)
	}
	var b strings.Builder
	b.Grow(n)
	for i, s := range m.segs {
		if i > 0 {
			b.WriteByte('\r')
		}
		b.WriteString(s.raw)
	}
	if m.trailingCR {
		b.WriteByte('\r')
	}
	return b.String()
}

// Delimiters returns the delimiters declared in MSH-1 and MSH-2.
func (m *Message) Delimiters() Delimiters { return m.d }

// Segments returns the segments in order. The slice is a copy; the segments are the message's own.
func (m *Message) Segments() []*Segment {
	out := make([]*Segment, len(m.segs))
	copy(out, m.segs)
	return out
}

// Segment returns the first segment with the given name, or nil.
func (m *Message) Segment(name string) *Segment { return m.nthSegment(name, 1) }

func (m *Message) nthSegment(name string, rep int) *Segment {
	for _, s := range m.segs {
		if s.Name() == name {
			rep--
			if rep == 0 {
				return s
			}
		}
	}
	return nil
}

// AllSegments returns every segment with the given name, in order.
func (m *Message) AllSegments(name string) []*Segment {
	var out []*Segment
	for _, s := range m.segs {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// AppendSegment appends a copy of s. If s was written with other delimiters (see NewSegment) its text is
// translated to the message's delimiters first.
func (m *Message) AppendSegment(s *Segment) {
	c := *s
	if c.d != m.d {
		c = newSeg(translate(c.raw, c.d, m.d), m.d)
	}
	m.segs = append(m.segs, &c)
	m.text = ""
}

// Clone returns a deep copy of m.
func (m *Message) Clone() *Message {
	c := *m
	backing := make([]Segment, len(m.segs))
	c.segs = make([]*Segment, len(m.segs))
	for i, s := range m.segs {
		backing[i] = *s
		c.segs[i] = &backing[i]
	}
	return &c
}

// NewSegment builds a segment from raw ER7 field values, field 1 first, written with DefaultDelimiters. Appending
// it to a message with other delimiters translates them.
func NewSegment(name string, fields ...string) *Segment {
	n := len(name) + len(fields)
	for _, f := range fields {
		n += len(f)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(name)
	for _, f := range fields {
		b.WriteByte(DefaultDelimiters.Field)
		b.WriteString(f)
	}
	s := newSeg(b.String(), DefaultDelimiters)
	return &s
}

// Name returns the segment name (the text before the first field separator).
func (s *Segment) Name() string { return s.raw[:s.nameLen] }

// String returns the segment's raw ER7 text.
func (s *Segment) String() string { return s.raw }

// Field returns raw field n with HL7 numbering: in MSH, field 1 is the field separator and field 2 the encoding
// characters. It returns "" for a field that is absent or n < 1.
func (s *Segment) Field(n int) string {
	if n < 1 {
		return ""
	}
	if s.isMSH() {
		if n == 1 {
			return s.raw[3:4]
		}
		n--
	}
	f, _ := piece(s.raw, s.d.Field, n)
	return f
}

// NumFields returns the number of fields, counting MSH-1 in MSH.
func (s *Segment) NumFields() int {
	n := strings.Count(s.raw, string(s.d.Field))
	if s.isMSH() {
		n++
	}
	return n
}

func (s *Segment) isMSH() bool { return s.nameLen == 3 && len(s.raw) > 3 && s.raw[:3] == "MSH" }

// piece returns the i-th (0-based) part of s split on sep, and whether it exists. A zero sep never splits. A plain
// loop beats repeated IndexByte here because HL7 fields are short.
func piece(s string, sep byte, i int) (string, bool) {
	if sep == 0 {
		return s, i == 0
	}
	start := 0
	for j := 0; j < len(s); j++ {
		if s[j] == sep {
			if i == 0 {
				return s[start:j], true
			}
			i--
			start = j + 1
		}
	}
	if i == 0 {
		return s[start:], true
	}
	return "", false
}
