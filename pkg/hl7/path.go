package hl7

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxIndex bounds every number in a path, so that SetRaw cannot be made to allocate without limit.
const maxIndex = 9999

// Path addresses a value: SEG[(segRep)]-field[(rep)][.component[.subcomponent]], e.g. "MSH-9.2", "PID-3(2).1",
// "OBX(2)-5", "PID-3.1.2". All numbers are 1-based. SegmentRep and Repetition default to 1; Component and
// Subcomponent are 0 when not given, which selects the whole repetition or component.
type Path struct {
	Segment                                                string
	SegmentRep, Field, Repetition, Component, Subcomponent int
}

// ParsePath parses and validates a path. A '.' is accepted in place of the '-' after the segment name.
func ParsePath(p string) (Path, error) {
	fail := func(why string) (Path, error) {
		return Path{}, fmt.Errorf("invalid HL7 path %q: %s", p, why)
	}
	if len(p) < 3 || !isSegmentName(p[:3]) {
		return fail("must start with a 3-character segment name such as PID")
	}
	path := Path{Segment: p[:3], SegmentRep: 1, Repetition: 1}
	rest := p[3:]
	var err error
	if path.SegmentRep, rest, err = optionalRep(rest, 1); err != nil {
		return fail("segment repetition " + err.Error())
	}
	if rest == "" || (rest[0] != '-' && rest[0] != '.') {
		return fail("expected '-' and a field number after the segment name")
	}
	if path.Field, rest, err = number(rest[1:]); err != nil {
		return fail("field " + err.Error())
	}
	if path.Repetition, rest, err = optionalRep(rest, 1); err != nil {
		return fail("field repetition " + err.Error())
	}
	for _, dst := range []*int{&path.Component, &path.Subcomponent} {
		if rest == "" {
			break
		}
		if rest[0] != '.' {
			return fail(fmt.Sprintf("unexpected %q", rest))
		}
		if *dst, rest, err = number(rest[1:]); err != nil {
			return fail("component " + err.Error())
		}
	}
	if rest != "" {
		return fail(fmt.Sprintf("unexpected %q after the subcomponent", rest))
	}
	return path, nil
}

// String formats p in the syntax ParsePath reads, leaving out default repetitions.
func (p Path) String() string {
	var b strings.Builder
	b.WriteString(p.Segment)
	if p.SegmentRep > 1 {
		fmt.Fprintf(&b, "(%d)", p.SegmentRep)
	}
	fmt.Fprintf(&b, "-%d", p.Field)
	if p.Repetition > 1 {
		fmt.Fprintf(&b, "(%d)", p.Repetition)
	}
	if p.Component > 0 {
		fmt.Fprintf(&b, ".%d", p.Component)
		if p.Subcomponent > 0 {
			fmt.Fprintf(&b, ".%d", p.Subcomponent)
		}
	}
	return b.String()
}

func isSegmentName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// optionalRep reads "(n)" if present, else returns def.
func optionalRep(s string, def int) (int, string, error) {
	if s == "" || s[0] != '(' {
		return def, s, nil
	}
	n, rest, err := number(s[1:])
	if err != nil {
		return 0, "", err
	}
	if rest == "" || rest[0] != ')' {
		return 0, "", errors.New("is missing ')'")
	}
	return n, rest[1:], nil
}

// number reads a decimal in 1..maxIndex at the start of s.
func number(s string) (int, string, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, "", errors.New("must be a number")
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n < 1 || n > maxIndex {
		return 0, "", fmt.Errorf("must be between 1 and %d", maxIndex)
	}
	return n, s[i:], nil
}

// Get returns the value at path with escape sequences decoded, or "" when the value is absent or the path is
// invalid. \F\ \S\ \T\ \R\ \E\ and \Xhh..\ are decoded (hex as UTF-8 when valid, else Latin-1); formatting
// sequences such as \.br\ \H\ \N\, charset switches and unknown or unterminated sequences are returned verbatim.
// A path without a repetition reads the first repetition (use Segment.Field for a whole repeating field); MSH-1
// and MSH-2 are returned whole. Segment names are matched case-sensitively.
func (m *Message) Get(path string) string {
	p, err := ParsePath(path)
	if err != nil {
		return ""
	}
	return m.d.decode(m.lookup(p))
}

// GetRaw is Get without escape decoding.
func (m *Message) GetRaw(path string) string {
	p, err := ParsePath(path)
	if err != nil {
		return ""
	}
	return m.lookup(p)
}

func (m *Message) lookup(p Path) string {
	s := m.nthSegment(p.Segment, p.SegmentRep)
	if s == nil {
		return ""
	}
	if s.isMSH() && p.Field <= 2 {
		if p.Repetition > 1 || p.Component > 1 || p.Subcomponent > 1 {
			return ""
		}
		return s.Field(p.Field)
	}
	v := s.Field(p.Field)
	levels := [...]struct {
		sep byte
		n   int
	}{{m.d.Repetition, p.Repetition}, {m.d.Component, p.Component}, {m.d.Subcomponent, p.Subcomponent}}
	for _, l := range levels {
		if l.n == 0 {
			break
		}
		var ok bool
		if v, ok = piece(v, l.sep, l.n-1); !ok {
			return ""
		}
	}
	return v
}

// Set stores value at path, first encoding the message's delimiters, its escape character, CR and LF in value as
// escape sequences. See SetRaw for how the path is created.
func (m *Message) Set(path, value string) error {
	enc, err := m.d.encode(value)
	if err != nil {
		return fmt.Errorf("hl7: set %s: %w", path, err)
	}
	return m.SetRaw(path, enc)
}

// SetRaw stores value at path as is. Missing fields, repetitions, components and subcomponents are added as empty
// ones. When the segment does not exist and SegmentRep is one more than the number of such segments, a new segment
// is appended. MSH-1 and MSH-2 cannot be set, nor can a new MSH be added. value must not contain CR or LF.
func (m *Message) SetRaw(path, value string) error {
	p, err := ParsePath(path)
	if err != nil {
		return err
	}
	if strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("hl7: set %s: value contains a segment terminator", path)
	}
	s := m.nthSegment(p.Segment, p.SegmentRep)
	isNew := s == nil
	if isNew {
		if p.Segment == "MSH" || p.SegmentRep != len(m.AllSegments(p.Segment))+1 {
			return fmt.Errorf("hl7: set %s: no segment %s(%d)", path, p.Segment, p.SegmentRep)
		}
		seg := newSeg(p.Segment, m.d)
		s = &seg
	}
	field := p.Field
	if p.Segment == "MSH" && !s.isMSH() {
		return fmt.Errorf("hl7: set %s: segment has no field separator", path)
	}
	if s.isMSH() {
		if field <= 2 {
			return fmt.Errorf("hl7: set %s: MSH-1 and MSH-2 are the message's delimiters and cannot be set", path)
		}
		field--
	}
	levels := []level{{m.d.Field, field}, {m.d.Repetition, p.Repetition - 1}}
	if p.Component > 0 {
		levels = append(levels, level{m.d.Component, p.Component - 1})
		if p.Subcomponent > 0 {
			levels = append(levels, level{m.d.Subcomponent, p.Subcomponent - 1})
		}
	}
	raw, err := replace(s.raw, levels, value)
	if err != nil {
		return fmt.Errorf("hl7: set %s: %w", path, err)
	}
	s.raw = raw
	if isNew {
		m.segs = append(m.segs, s)
	}
	m.text = ""
	return nil
}

// level is one step of a write: split on sep and replace part i.
type level struct {
	sep byte
	i   int
}

// replace rewrites part levels[0].i of s (split on levels[0].sep), descending through the remaining levels, and adds
// empty parts as needed.
func replace(s string, levels []level, value string) (string, error) {
	if len(levels) == 0 {
		return value, nil
	}
	l := levels[0]
	if l.sep == 0 {
		if l.i > 0 {
			return "", errors.New("the message declares no delimiter for that level")
		}
		return replace(s, levels[1:], value)
	}
	parts := strings.Split(s, string(l.sep))
	for len(parts) <= l.i {
		parts = append(parts, "")
	}
	v, err := replace(parts[l.i], levels[1:], value)
	if err != nil {
		return "", err
	}
	parts[l.i] = v
	return strings.Join(parts, string(l.sep)), nil
}

// ControlID returns MSH-10, decoded.
func (m *Message) ControlID() string {
	return m.d.decode(m.lookup(Path{Segment: "MSH", SegmentRep: 1, Field: 10, Repetition: 1}))
}

// Type returns MSH-9.1 (message code), MSH-9.2 (trigger event) and MSH-9.3 (message structure), decoded.
func (m *Message) Type() (code, trigger, structure string) {
	p := Path{Segment: "MSH", SegmentRep: 1, Field: 9, Repetition: 1}
	get := func(c int) string {
		p.Component = c
		return m.d.decode(m.lookup(p))
	}
	return get(1), get(2), get(3)
}
