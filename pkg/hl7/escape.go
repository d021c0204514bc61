package hl7

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// escapeLetter returns the letter of the escape sequence standing for delimiter c (\F\ \S\ \R\ \E\ \T\), or 0 if c
// is not one of d's delimiters.
func (d Delimiters) escapeLetter(c byte) byte {
	switch {
	case c == 0:
		return 0
	case c == d.Field:
		return 'F'
	case c == d.Component:
		return 'S'
	case c == d.Repetition:
		return 'R'
	case c == d.Escape:
		return 'E'
	case c == d.Subcomponent:
		return 'T'
	}
	return 0
}

// delimiterFor is the inverse of escapeLetter.
func (d Delimiters) delimiterFor(letter string) byte {
	switch letter {
	case "F":
		return d.Field
	case "S":
		return d.Component
	case "R":
		return d.Repetition
	case "E":
		return d.Escape
	case "T":
		return d.Subcomponent
	}
	return 0
}

// decode replaces the escape sequences \F\ \S\ \T\ \R\ \E\ and \Xhh..\ in s. Hex bytes are read as UTF-8 when they
// form valid UTF-8 and as Latin-1 otherwise. Formatting sequences (\H\ \N\ \.br\ \.sp\ …), character-set switches
// (\C..\ \M..\), \Z..\ and anything unknown or unterminated are kept verbatim: they carry meaning for a display,
// and there is no lossless plain-text rendering of them.
func (d Delimiters) decode(s string) string {
	if d.Escape == 0 {
		return s
	}
	i := strings.IndexByte(s, d.Escape)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i+1:]
		j := strings.IndexByte(s, d.Escape)
		if j < 0 {
			b.WriteByte(d.Escape)
			break
		}
		if !d.writeEscape(&b, s[:j]) {
			b.WriteByte(d.Escape)
			b.WriteString(s[:j])
			b.WriteByte(d.Escape)
		}
		s = s[j+1:]
		i = strings.IndexByte(s, d.Escape)
	}
	b.WriteString(s)
	return b.String()
}

// writeEscape writes the text that escape sequence seq (without its escape characters) stands for, and reports
// whether seq was one it decodes.
func (d Delimiters) writeEscape(b *strings.Builder, seq string) bool {
	if c := d.delimiterFor(seq); c != 0 {
		b.WriteByte(c)
		return true
	}
	if len(seq) < 3 || seq[0] != 'X' || len(seq)%2 == 0 {
		return false
	}
	hex := seq[1:]
	var buf [64]byte
	raw := buf[:0]
	for i := 0; i < len(hex); i += 2 {
		hi, ok1 := unhex(hex[i])
		lo, ok2 := unhex(hex[i+1])
		if !ok1 || !ok2 {
			return false
		}
		raw = append(raw, hi<<4|lo)
	}
	if utf8.Valid(raw) {
		b.Write(raw)
		return true
	}
	for _, c := range raw {
		b.WriteRune(rune(c))
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// errNoEscape is returned when a value needs escaping but the message declares no escape character.
var errNoEscape = errors.New("value contains delimiters but the message has no escape character")

// encode escapes d's delimiters, CR and LF in s, so that s reads back unchanged through decode.
func (d Delimiters) encode(s string) (string, error) {
	i := 0
	for i < len(s) && d.escapeLetter(s[i]) == 0 && s[i] != '\r' && s[i] != '\n' {
		i++
	}
	if i == len(s) {
		return s, nil
	}
	if d.Escape == 0 {
		return "", errNoEscape
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		d.writeLiteral(&b, s[i])
	}
	return b.String(), nil
}

// writeLiteral writes byte c as data: escaped if it is a delimiter, CR or LF, as is otherwise (and always as is
// when d has no escape character).
func (d Delimiters) writeLiteral(b *strings.Builder, c byte) {
	if d.Escape == 0 {
		b.WriteByte(c)
		return
	}
	var seq string
	switch c {
	case '\r':
		seq = "X0D"
	case '\n':
		seq = "X0A"
	default:
		if l := d.escapeLetter(c); l != 0 {
			seq = string(rune(l))
		}
	}
	if seq == "" {
		b.WriteByte(c)
		return
	}
	b.WriteByte(d.Escape)
	b.WriteString(seq)
	b.WriteByte(d.Escape)
}

// translate rewrites raw segment text written with delimiters from so that it means the same with delimiters to:
// delimiters are swapped, and data bytes that happen to be delimiters in to are escaped.
func translate(s string, from, to Delimiters) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		var target byte
		switch from.escapeLetter(c) {
		case 'F':
			target = to.Field
		case 'S':
			target = to.Component
		case 'R':
			target = to.Repetition
		case 'E':
			target = to.Escape
		case 'T':
			target = to.Subcomponent
		default:
			to.writeLiteral(&b, c)
			continue
		}
		if target == 0 {
			// to cannot express this structure; keep the character as data.
			to.writeLiteral(&b, c)
			continue
		}
		b.WriteByte(target)
	}
	return b.String()
}
