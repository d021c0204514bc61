package astm

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Delimiters are the E1394 separators, declared by each H record. A zero
// byte means the level is not used.
type Delimiters struct {
	Field, Repeat, Component, Escape byte
}

// DefaultDelimiters are the canonical "H|\^&" delimiters, used for records
// that precede any H record.
var DefaultDelimiters = Delimiters{Field: '|', Repeat: '\\', Component: '^', Escape: '&'}

// Record is one E1394 record. Field numbers are 1-based as in the standard:
// field 1 is the record type, field 2 the sequence number (in H, the
// delimiter definition). Values stay exactly as sent; escapes are decoded
// only by Value, Component and Components.
type Record struct {
	text   string
	delims Delimiters
	fields []string
}

// ParseRecords splits record text (CR, LF or CR LF terminated, as in a
// Session body or a transcript) into records. Blank lines are skipped. Each
// H record sets the delimiters for itself and the records after it. The
// only error is an H record without usable delimiters (none declared, or
// letters, digits, spaces or control characters).
func ParseRecords(body []byte) ([]Record, error) {
	var recs []Record
	d := DefaultDelimiters
	for i, line := range splitLines(string(body)) {
		if line[0] == 'H' {
			hd, err := headerDelimiters(line)
			if err != nil {
				return nil, fmt.Errorf("astm: line %d: %w", i+1, err)
			}
			d = hd
		}
		recs = append(recs, newRecord(line, d))
	}
	return recs, nil
}

// splitLines returns the non-blank lines of s, split at CR, LF or CR LF.
func splitLines(s string) []string {
	var lines []string
	for s != "" {
		end := strings.IndexAny(s, "\r\n")
		line := s
		if end >= 0 {
			line, s = s[:end], s[end+1:]
		} else {
			s = ""
		}
		if strings.TrimSpace(line) != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// headerDelimiters reads the delimiters from an H record: the byte after H
// is the field delimiter, and the characters up to the next field delimiter
// are the repeat, component and escape delimiters. Repeated characters are
// skipped, so a header written with a doubled backslash ("H|\\^&", seen in
// captures copied from source code) still gives "\", "^", "&" instead of
// a repeat delimiter equal to the component delimiter.
func headerDelimiters(h string) (Delimiters, error) {
	if len(h) < 2 {
		return Delimiters{}, fmt.Errorf("H record %q declares no delimiters", h)
	}
	d := Delimiters{Field: h[1]}
	def := h[2:]
	if i := strings.IndexByte(def, d.Field); i >= 0 {
		def = def[:i]
	}
	seen := []byte{d.Field}
	for _, p := range []*byte{&d.Repeat, &d.Component, &d.Escape} {
		for def != "" && strings.IndexByte(string(seen), def[0]) >= 0 {
			def = def[1:]
		}
		if def == "" {
			break
		}
		*p = def[0]
		seen = append(seen, def[0])
		def = def[1:]
	}
	for _, c := range seen {
		if c <= ' ' || c == 0x7F || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' {
			return Delimiters{}, fmt.Errorf("H record declares %q as a delimiter", c)
		}
	}
	return d, nil
}

func newRecord(text string, d Delimiters) Record {
	return Record{text: text, delims: d, fields: d.split(text, d.Field)}
}

// split cuts s at sep, outside escape sequences, so that an escaped
// delimiter (&|&, a vendor form) is never mistaken for a separator.
func (d Delimiters) split(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if end, ok := d.escapeAt(s, i); ok {
			i = end - 1
			continue
		}
		if s[i] == sep {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// escapeAt reports whether a recognised escape sequence starts at s[i] and
// where it ends (exclusive). Recognised bodies are F, S, R, E, H, N, X with
// an even number of hex digits, Z with any text free of delimiters, and a
// single delimiter character. Anything else leaves the escape character as
// a literal, so unpaired escape characters cannot swallow delimiters.
func (d Delimiters) escapeAt(s string, i int) (int, bool) {
	if d.Escape == 0 || s[i] != d.Escape {
		return 0, false
	}
	j := strings.IndexByte(s[i+1:], d.Escape)
	if j < 0 {
		return 0, false
	}
	body := s[i+1 : i+1+j]
	end := i + j + 2
	switch {
	case len(body) == 1 && strings.IndexByte("FSREHN", body[0]) >= 0:
		return end, true
	case len(body) == 1 && d.isDelimiter(body[0]):
		return end, true
	case len(body) > 1 && body[0] == 'X':
		_, err := hex.DecodeString(body[1:])
		return end, err == nil
	case len(body) > 1 && body[0] == 'Z':
		for k := 1; k < len(body); k++ {
			if d.isDelimiter(body[k]) {
				return 0, false
			}
		}
		return end, true
	}
	return 0, false
}

func (d Delimiters) isDelimiter(c byte) bool {
	return c == d.Field || c != 0 && (c == d.Repeat || c == d.Component)
}

// Decode resolves escape sequences in s: &F& &S& &R& &E& become the field,
// component, repeat and escape delimiters, &Xhh…& becomes the bytes given in
// hex, and a delimiter between escape characters (&|&) becomes itself.
// Highlighting (&H&, &N&) and local (&Z…&) sequences, and escape characters
// that start no recognised sequence, are kept verbatim.
func (d Delimiters) Decode(s string) string {
	if d.Escape == 0 || strings.IndexByte(s, d.Escape) < 0 {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		end, ok := d.escapeAt(s, i)
		if !ok {
			sb.WriteByte(s[i])
			continue
		}
		body := s[i+1 : end-1]
		switch {
		case body == "F":
			sb.WriteByte(d.Field)
		case body == "S" && d.Component != 0:
			sb.WriteByte(d.Component)
		case body == "R" && d.Repeat != 0:
			sb.WriteByte(d.Repeat)
		case body == "E":
			sb.WriteByte(d.Escape)
		case body[0] == 'X':
			b, _ := hex.DecodeString(body[1:])
			sb.Write(b)
		case len(body) == 1 && d.isDelimiter(body[0]):
			sb.WriteByte(body[0])
		default:
			sb.WriteString(s[i:end])
		}
		i = end - 1
	}
	return sb.String()
}

// Text returns the record as sent, without terminator.
func (r Record) Text() string { return r.text }

// Type returns the record type letter (H, P, O, R, C, Q, M, S, L), or 0
// for the zero Record.
func (r Record) Type() byte {
	if r.text == "" {
		return 0
	}
	return r.text[0]
}

// Delimiters returns the delimiters the record was split with.
func (r Record) Delimiters() Delimiters { return r.delims }

// NumFields returns the number of fields, the type included.
func (r Record) NumFields() int { return len(r.fields) }

// Sequence returns field 2 as a number, or false when the record has none
// (H records, or a field that is not a number).
func (r Record) Sequence() (int, bool) {
	if r.Type() == 'H' {
		return 0, false
	}
	n, err := strconv.Atoi(r.Field(2))
	return n, err == nil
}

// Field returns field n as sent, with repeats, components and escapes
// intact, or "" when the record has fewer fields.
func (r Record) Field(n int) string {
	if n < 1 || n > len(r.fields) {
		return ""
	}
	return r.fields[n-1]
}

// Value returns field n with escapes decoded. Repeat and component
// delimiters in it are left as sent, so use Component for structured fields.
func (r Record) Value(n int) string {
	if r.isDelimiterField(n) {
		return r.Field(n)
	}
	return r.delims.Decode(r.Field(n))
}

// Repeats returns the number of repeats in field n (1 for a plain field, 0
// for a missing one).
func (r Record) Repeats(n int) int {
	if n < 1 || n > len(r.fields) {
		return 0
	}
	return len(r.repeats(n))
}

// Components returns the decoded components of repeat rep (1-based) of
// field n, or nil when there is no such repeat.
func (r Record) Components(n, rep int) []string {
	reps := r.repeats(n)
	if rep < 1 || rep > len(reps) {
		return nil
	}
	if r.isDelimiterField(n) {
		return []string{reps[0]}
	}
	comps := []string{reps[rep-1]}
	if r.delims.Component != 0 {
		comps = r.delims.split(reps[rep-1], r.delims.Component)
	}
	for i, c := range comps {
		comps[i] = r.delims.Decode(c)
	}
	return comps
}

// Component returns component c of repeat rep of field n (all 1-based),
// escapes decoded, or "" when absent.
func (r Record) Component(n, rep, c int) string {
	comps := r.Components(n, rep)
	if c < 1 || c > len(comps) {
		return ""
	}
	return comps[c-1]
}

func (r Record) repeats(n int) []string {
	if n < 1 || n > len(r.fields) {
		return nil
	}
	f := r.fields[n-1]
	if r.delims.Repeat == 0 || r.isDelimiterField(n) {
		return []string{f}
	}
	return r.delims.split(f, r.delims.Repeat)
}

// isDelimiterField reports whether field n is H-2, which declares the
// delimiters and so must not be split or decoded.
func (r Record) isDelimiterField(n int) bool { return n == 2 && r.Type() == 'H' }

// MarshalJSON renders the record for --json output:
//
//	{"type":"R","sequence":1,"fields":["R","1",["","","","GLU"],"95",…],"text":"R|1|^^^GLU|95|…"}
//
// fields[i] is field i+1 with escapes decoded: a string for a plain field,
// an array of components for a field with components, or an array of
// repeats (each an array of components) for a repeated field. H-2 stays a
// string as sent.
func (r Record) MarshalJSON() ([]byte, error) {
	fields := make([]any, len(r.fields))
	for i := range r.fields {
		n := i + 1
		reps := r.Repeats(n)
		switch comps := r.Components(n, 1); {
		case reps > 1:
			all := make([][]string, reps)
			for j := range all {
				all[j] = r.Components(n, j+1)
			}
			fields[i] = all
		case len(comps) > 1:
			fields[i] = comps
		default:
			fields[i] = comps[0]
		}
	}
	out := struct {
		Type     string `json:"type"`
		Sequence *int   `json:"sequence,omitempty"`
		Fields   []any  `json:"fields"`
		Text     string `json:"text"`
	}{Type: r.text[:min(1, len(r.text))], Fields: fields, Text: r.text}
	if seq, ok := r.Sequence(); ok {
		out.Sequence = &seq
	}
	return json.Marshal(out)
}
