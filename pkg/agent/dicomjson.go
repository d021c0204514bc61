package agent

import (
	"bufio"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	dtag "github.com/suyashkumar/dicom/pkg/tag"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
)

// dicomJSON renders a Part-10 file as the DICOM JSON model (PS3.18 F.2):
// one object keyed by 8-hex-digit tags, the file meta group first, then the
// dataset, as the reference's transmit carries it.
//
// Bulk data is left out, since the Binary holds the whole instance: pixel
// data (7FE0,0008/0009/0010, encapsulated or not), binary values (OB, OD,
// OF, OL, OV, OW, UN) over maxInlineBinary and any value over
// maxJSONValue. Smaller binary values are inlined as base64.
//
// The file is walked element by element rather than parsed with a dataset
// library: that keeps pixel data unread (skipped by seeking), and every
// allocation bounded by the limits above whatever lengths the file
// declares. On malformed input the elements decoded before the fault are
// returned with the error.
func dicomJSON(r io.ReadSeeker) ([]byte, error) {
	size, err := r.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = r.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, err
	}
	d := &dsDecoder{r: newDSReader(r, size), metaEnd: -1}
	err = d.file()
	d.out = append(d.out[:d.good], '}')
	return d.out, err
}

const (
	maxInlineBinary = 1 << 10
	maxJSONValue    = 1 << 20
	// maxJSONSize keeps the transmit, with its quotes escaped once more in
	// the envelope, well under the 16 MiB frames servers accept.
	maxJSONSize      = 4 << 20
	maxSequenceDepth = 32
	// maxInflated bounds a deflated dataset once inflated, against
	// decompression bombs.
	maxInflated = 8 << 30

	undefinedLength = 0xFFFFFFFF

	tagItem           = 0xFFFEE000
	tagItemDelim      = 0xFFFEE00D
	tagSequenceDelim  = 0xFFFEE0DD
	tagSpecificCharSt = 0x00080005
	tagMetaLength     = 0x00020000
	tagTransferSyntax = 0x00020010
)

var (
	errDICOMTooLarge = errors.New("dataset JSON larger than the limit")
	errPastEnd       = errors.New("element runs past the end of the data")
)

// dsReader reads dataset bytes, counting them for defined-length items.
type dsReader struct {
	br       *bufio.Reader
	file     io.ReadSeeker // under br; nil once inflating
	pos      int64
	limit    int64 // the file size, so that lengths past it fail at once
	bo       binary.ByteOrder
	implicit bool
	scratch  [8]byte
}

func newDSReader(r io.ReadSeeker, size int64) *dsReader {
	return &dsReader{br: bufio.NewReaderSize(r, 64<<10), file: r, limit: size, bo: binary.LittleEndian}
}

// fill reads exactly len(b) bytes; a clean end of stream stays io.EOF.
func (r *dsReader) fill(b []byte) error {
	switch {
	case len(b) == 0:
		return nil
	case r.pos == r.limit:
		return io.EOF
	case r.pos+int64(len(b)) > r.limit:
		return errPastEnd
	}
	n, err := io.ReadFull(r.br, b)
	r.pos += int64(n)
	return err
}

// value reads a value of n bytes; callers keep n within maxJSONValue.
func (r *dsReader) value(n uint32) ([]byte, error) {
	b := make([]byte, n)
	return b, noEOF(r.fill(b))
}

func (r *dsReader) skip(n int64) error {
	if r.pos+n > r.limit {
		return errPastEnd
	}
	if buffered := int64(r.br.Buffered()); r.file != nil && n > buffered {
		// Bulk data: seek past it instead of reading it.
		r.br.Discard(int(buffered))
		if _, err := r.file.Seek(n-buffered, io.SeekCurrent); err != nil {
			return err
		}
		r.br.Reset(r.file)
		r.pos += n
		return nil
	}
	m, err := r.br.Discard(int(n))
	r.pos += int64(m)
	return noEOF(err)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// inflate switches to a deflated dataset (PS3.5 A.5): raw DEFLATE from the
// current position.
func (r *dsReader) inflate() {
	r.br = bufio.NewReaderSize(flate.NewReader(r.br), 64<<10)
	r.file = nil
	r.limit = r.pos + maxInflated
}

type elemHeader struct {
	tag uint32
	vr  string
	vl  uint32
}

// header reads a tag and, per the transfer syntax, its VR and length.
// Item and delimiter tags have no VR in any transfer syntax.
func (r *dsReader) header() (elemHeader, error) {
	b := r.scratch[:8]
	if err := r.fill(b); err != nil {
		return elemHeader{}, err
	}
	h := elemHeader{tag: uint32(r.bo.Uint16(b))<<16 | uint32(r.bo.Uint16(b[2:]))}
	switch {
	case h.tag>>16 == 0xFFFE:
		h.vl = r.bo.Uint32(b[4:])
		return h, nil
	case r.implicit:
		h.vr, h.vl = implicitVR(h.tag), r.bo.Uint32(b[4:])
		return h, nil
	}
	h.vr = string(b[4:6])
	info, ok := vrs[h.vr]
	if !ok {
		return h, fmt.Errorf("element %08X: unknown VR %q", h.tag, h.vr)
	}
	if !info.long {
		h.vl = uint32(r.bo.Uint16(b[6:]))
		return h, nil
	}
	if err := r.fill(b[:4]); err != nil {
		return h, noEOF(err)
	}
	h.vl = r.bo.Uint32(b)
	return h, nil
}

// implicitVR looks a tag's VR up in the data dictionary, as implicit VR
// transfer syntaxes require.
func implicitVR(tag uint32) string {
	group, elem := uint16(tag>>16), uint16(tag)
	switch {
	case elem == 0:
		return "UL" // group length
	case group%2 == 1 && elem >= 0x10 && elem <= 0xFF:
		return "LO" // private creator
	case group%2 == 1:
		return "UN"
	}
	t := dtag.Tag{Group: group, Element: elem}
	if g := group & 0xFF00; g == 0x5000 || g == 0x6000 {
		t.Group = g // repeating groups (curves, overlays) are listed once
	}
	info, err := dtag.Find(t)
	switch {
	case err != nil || len(info.VRs) == 0:
		return "UN"
	case slices.Contains(info.VRs, "OW"):
		return "OW" // "OB or OW" is OW in implicit VR (PS3.5 A.1)
	}
	if _, ok := vrs[info.VRs[0]]; !ok {
		return "UN"
	}
	return info.VRs[0]
}

type vrKind uint8

const (
	vrText     vrKind = iota // default repertoire
	vrCharText               // in the Specific Character Set
	vrDecimal                // DS
	vrInteger                // IS
	vrPersonName
	vrNumber // binary numbers
	vrTag    // AT
	vrBytes
	vrSequence
)

type vrInfo struct {
	kind   vrKind
	long   bool // 4-byte length in explicit VR
	single bool // one value: a backslash is text
	size   int  // bytes per number, or per word of OW, OF...
}

var vrs = map[string]vrInfo{
	"AE": {kind: vrText}, "AS": {kind: vrText}, "CS": {kind: vrText}, "DA": {kind: vrText},
	"DT": {kind: vrText}, "TM": {kind: vrText}, "UI": {kind: vrText},
	"UR": {kind: vrText, long: true, single: true},
	"LO": {kind: vrCharText}, "SH": {kind: vrCharText},
	"LT": {kind: vrCharText, single: true}, "ST": {kind: vrCharText, single: true},
	"UT": {kind: vrCharText, long: true, single: true}, "UC": {kind: vrCharText, long: true},
	"DS": {kind: vrDecimal}, "IS": {kind: vrInteger}, "PN": {kind: vrPersonName},
	"US": {kind: vrNumber, size: 2}, "SS": {kind: vrNumber, size: 2},
	"UL": {kind: vrNumber, size: 4}, "SL": {kind: vrNumber, size: 4}, "FL": {kind: vrNumber, size: 4},
	"FD": {kind: vrNumber, size: 8},
	"SV": {kind: vrNumber, size: 8, long: true}, "UV": {kind: vrNumber, size: 8, long: true},
	"AT": {kind: vrTag, size: 4},
	"OB": {kind: vrBytes, long: true, size: 1}, "UN": {kind: vrBytes, long: true, size: 1},
	"OW": {kind: vrBytes, long: true, size: 2}, "OF": {kind: vrBytes, long: true, size: 4},
	"OL": {kind: vrBytes, long: true, size: 4}, "OD": {kind: vrBytes, long: true, size: 8},
	"OV": {kind: vrBytes, long: true, size: 8},
	"SQ": {kind: vrSequence, long: true},
}

// dsDecoder writes JSON into out; good is the length of out up to the
// last complete top-level element.
type dsDecoder struct {
	r       *dsReader
	out     []byte
	good    int
	metaEnd int64  // from (0002,0000); -1 without one
	ts      string // (0002,0010)
}

func (d *dsDecoder) file() error {
	d.out = append(d.out, '{')
	d.good = 1
	pre := make([]byte, 132)
	if err := d.r.fill(pre); err != nil || string(pre[128:]) != "DICM" {
		return dicom.ErrNotPart10
	}
	// File meta: explicit VR little endian, bounded by its group length
	// (or, without one, by the first tag of another group).
	first := true
	for d.metaEnd < 0 || d.r.pos < d.metaEnd {
		if d.metaEnd < 0 {
			if b, err := d.r.br.Peek(2); err != nil || binary.LittleEndian.Uint16(b) != 2 {
				break
			}
		}
		h, err := d.r.header()
		if err != nil {
			return noEOF(err)
		}
		if err := d.topElement(h, &first, &textDecoder{}); err != nil {
			return err
		}
	}
	switch d.ts {
	case dicom.ImplicitVRLittleEndian:
		d.r.implicit = true
	case dicom.ExplicitVRBigEndian:
		d.r.bo = binary.BigEndian
	case dicom.DeflatedExplicitVRLittleEndian:
		d.r.inflate()
	}
	cs := &textDecoder{}
	for {
		h, err := d.r.header()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return noEOF(err)
		}
		if err := d.topElement(h, &first, cs); err != nil {
			return err
		}
	}
}

// topElement writes one top-level element and records it as complete.
func (d *dsDecoder) topElement(h elemHeader, first *bool, cs *textDecoder) error {
	if h.vr == "" {
		return fmt.Errorf("unexpected item tag %08X at the top level", h.tag)
	}
	written, err := d.element(h, !*first, 0, cs)
	if err != nil {
		return err
	}
	if written {
		*first = false
	}
	if len(d.out) > maxJSONSize {
		return errDICOMTooLarge
	}
	d.good = len(d.out)
	return nil
}

// element writes h and its value as an object member (after a comma when
// comma is set). It reports false for an element left out as bulk data.
func (d *dsDecoder) element(h elemHeader, comma bool, depth int, cs *textDecoder) (bool, error) {
	info := vrs[h.vr]
	undefined := h.vl == undefinedLength
	pixel := h.tag == 0x7FE00008 || h.tag == 0x7FE00009 || h.tag == 0x7FE00010
	switch {
	case info.kind == vrSequence, undefined && h.vr == "UN", undefined && d.r.implicit && !pixel:
		d.key(h.tag, comma)
		// An undefined-length UN is a sequence in implicit VR little
		// endian (PS3.5 6.2.2).
		return true, d.sequence(h, depth+1, *cs, h.vr == "UN" && !d.r.implicit)
	case undefined:
		return false, d.r.skipEncapsulated()
	case pixel, h.vl > maxJSONValue, info.kind == vrBytes && h.vl > maxInlineBinary:
		return false, d.r.skip(int64(h.vl))
	}
	v, err := d.r.value(h.vl)
	if err != nil {
		return false, err
	}
	switch h.tag {
	case tagSpecificCharSt:
		*cs = newTextDecoder(string(v))
	case tagMetaLength:
		if len(v) == 4 {
			d.metaEnd = d.r.pos + int64(binary.LittleEndian.Uint32(v))
		}
	case tagTransferSyntax:
		d.ts = strings.TrimRight(string(v), "\x00 ")
	}
	b, err := json.Marshal(jsonValue(h.vr, info, v, d.r.bo, cs))
	if err != nil {
		return false, err
	}
	d.key(h.tag, comma)
	d.out = append(d.out, b...)
	return true, nil
}

func (d *dsDecoder) key(tag uint32, comma bool) {
	if comma {
		d.out = append(d.out, ',')
	}
	d.out = fmt.Appendf(d.out, `"%08X":`, tag)
}

// sequence writes a sequence's items; an item may set its own Specific
// Character Set, which holds within it only.
func (d *dsDecoder) sequence(h elemHeader, depth int, cs textDecoder, implicitContent bool) error {
	if depth > maxSequenceDepth {
		return errors.New("sequences nested too deep")
	}
	if implicitContent {
		bo, implicit := d.r.bo, d.r.implicit
		d.r.bo, d.r.implicit = binary.LittleEndian, true
		defer func() { d.r.bo, d.r.implicit = bo, implicit }()
	}
	end := int64(-1)
	if h.vl != undefinedLength {
		end = d.r.pos + int64(h.vl)
	}
	d.out = append(d.out, `{"vr":"SQ"`...)
	n := 0
	for end < 0 || d.r.pos < end {
		ih, err := d.r.header()
		if err != nil {
			return noEOF(err)
		}
		if ih.tag == tagSequenceDelim {
			break
		}
		if ih.tag != tagItem {
			return fmt.Errorf("sequence %08X: unexpected tag %08X", h.tag, ih.tag)
		}
		if n == 0 {
			d.out = append(d.out, `,"Value":[`...)
		} else {
			d.out = append(d.out, ',')
		}
		n++
		if err := d.item(ih, depth, cs); err != nil {
			return err
		}
		if len(d.out) > maxJSONSize {
			return errDICOMTooLarge
		}
	}
	if n > 0 {
		d.out = append(d.out, ']')
	}
	d.out = append(d.out, '}')
	return nil
}

func (d *dsDecoder) item(ih elemHeader, depth int, cs textDecoder) error {
	end := int64(-1)
	if ih.vl != undefinedLength {
		end = d.r.pos + int64(ih.vl)
	}
	d.out = append(d.out, '{')
	first := true
	for end < 0 || d.r.pos < end {
		h, err := d.r.header()
		if err != nil {
			return noEOF(err)
		}
		if h.tag == tagItemDelim {
			break
		}
		if h.vr == "" {
			return fmt.Errorf("unexpected tag %08X in an item", h.tag)
		}
		written, err := d.element(h, !first, depth, &cs)
		if err != nil {
			return err
		}
		first = first && !written
	}
	d.out = append(d.out, '}')
	return nil
}

// skipEncapsulated skips the fragments of encapsulated pixel data.
func (r *dsReader) skipEncapsulated() error {
	for {
		h, err := r.header()
		if err != nil {
			return noEOF(err)
		}
		switch {
		case h.tag == tagSequenceDelim:
			return nil
		case h.tag != tagItem || h.vl == undefinedLength:
			return fmt.Errorf("encapsulated data: unexpected tag %08X", h.tag)
		}
		if err := r.skip(int64(h.vl)); err != nil {
			return err
		}
	}
}

// jsonElement is one attribute of the DICOM JSON model.
type jsonElement struct {
	VR           string `json:"vr"`
	Value        []any  `json:"Value,omitempty"`
	InlineBinary string `json:"InlineBinary,omitempty"`
}

// personName is a PN value: its component groups (PS3.18 F.2.2).
type personName struct {
	Alphabetic  string `json:"Alphabetic,omitempty"`
	Ideographic string `json:"Ideographic,omitempty"`
	Phonetic    string `json:"Phonetic,omitempty"`
}

func jsonValue(vr string, info vrInfo, v []byte, bo binary.ByteOrder, cs *textDecoder) jsonElement {
	e := jsonElement{VR: vr}
	switch info.kind {
	case vrBytes:
		if bo == binary.BigEndian && info.size > 1 {
			// InlineBinary is little endian (PS3.18 F.2.7).
			v = slices.Clone(v)
			for i := 0; i+info.size <= len(v); i += info.size {
				slices.Reverse(v[i : i+info.size])
			}
		}
		e.InlineBinary = base64.StdEncoding.EncodeToString(v)
	case vrNumber:
		for i := 0; i+info.size <= len(v); i += info.size {
			e.Value = append(e.Value, binaryNumber(vr, v[i:], bo))
		}
	case vrTag:
		for i := 0; i+4 <= len(v); i += 4 {
			e.Value = append(e.Value, fmt.Sprintf("%04X%04X", bo.Uint16(v[i:]), bo.Uint16(v[i+2:])))
		}
	default:
		e.Value = textValues(vr, info, v, cs)
	}
	return e
}

func binaryNumber(vr string, b []byte, bo binary.ByteOrder) any {
	switch vr {
	case "US":
		return bo.Uint16(b)
	case "SS":
		return int16(bo.Uint16(b))
	case "UL":
		return bo.Uint32(b)
	case "SL":
		return int32(bo.Uint32(b))
	case "SV":
		return int64(bo.Uint64(b))
	case "UV":
		return bo.Uint64(b)
	case "FL":
		if f := math.Float32frombits(bo.Uint32(b)); finite(float64(f)) {
			return f
		}
	case "FD":
		if f := math.Float64frombits(bo.Uint64(b)); finite(f) {
			return f
		}
	}
	return nil // NaN and infinities have no JSON form
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// textValues splits a string value into its values, trimmed of
// insignificant padding; empty values are null (PS3.18 F.2.5).
func textValues(vr string, info vrInfo, v []byte, cs *textDecoder) []any {
	var s string
	if info.kind == vrText || info.kind == vrDecimal || info.kind == vrInteger {
		s = strings.ToValidUTF8(string(v), "\uFFFD")
	} else {
		s = cs.decode(v)
	}
	parts := []string{s}
	if !info.single {
		parts = strings.Split(s, `\`)
	}
	var out []any
	empty := true
	for _, p := range parts {
		if info.single {
			p = strings.TrimRight(p, " \x00")
		} else {
			p = strings.Trim(p, " \x00")
		}
		var val any
		if p != "" {
			empty = false
			val = typedText(vr, info.kind, p)
		}
		out = append(out, val)
	}
	if empty && len(out) == 1 {
		return nil
	}
	return out
}

func typedText(vr string, kind vrKind, s string) any {
	switch kind {
	case vrDecimal:
		if f, err := strconv.ParseFloat(s, 64); err == nil && finite(f) {
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
		}
	case vrInteger:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	case vrPersonName:
		var pn personName
		groups := strings.SplitN(s, "=", 3)
		pn.Alphabetic = strings.TrimRight(groups[0], " ")
		if len(groups) > 1 {
			pn.Ideographic = strings.TrimRight(groups[1], " ")
		}
		if len(groups) > 2 {
			pn.Phonetic = strings.TrimRight(groups[2], " ")
		}
		if pn == (personName{}) {
			return nil
		}
		return pn
	}
	return s
}

// textDecoder decodes text values per a Specific Character Set (0008,0005).
// With code extensions (ISO 2022, PS3.5 6.1.2.5) escape sequences designate
// the sets for bytes below 0x80 (G0) and from 0x80 (G1); without, the one
// named set decodes the whole value. Bytes invalid in their set become
// U+FFFD rather than failing the instance.
type textDecoder struct {
	initial csRef // the whole value without code extensions; G1 with them
	iso2022 bool
}

// csRef is a set pkg/hl7/charset decodes, with the escape sequence its
// decoder must see first (JIS X 0208 and 0212 go through ISO-2022-JP).
type csRef struct {
	name, prefix string
}

var (
	asciiSet = csRef{name: "us-ascii"}
	// iso2022Escapes maps the escape sequences of PS3.3 C.12.1.1.2 to the
	// set they designate.
	iso2022Escapes = map[string]designation{
		"\x1b(B":  {asciiSet, false},
		"\x1b(J":  {asciiSet, false}, // JIS X 0201 Romaji
		"\x1b)I":  {csRef{name: "shift_jis"}, true},
		"\x1b$B":  {csRef{name: "iso-2022-jp", prefix: "\x1b$B"}, false},
		"\x1b$(D": {csRef{name: "iso-2022-jp", prefix: "\x1b$(D"}, false},
		"\x1b$)C": {csRef{name: "euc-kr"}, true},
		"\x1b$)A": {csRef{name: "gbk"}, true},
		"\x1b-A":  {csRef{name: "iso-8859-1"}, true},
		"\x1b-B":  {csRef{name: "iso-8859-2"}, true},
		"\x1b-C":  {csRef{name: "iso-8859-3"}, true},
		"\x1b-D":  {csRef{name: "iso-8859-4"}, true},
		"\x1b-L":  {csRef{name: "iso-8859-5"}, true},
		"\x1b-G":  {csRef{name: "iso-8859-6"}, true},
		"\x1b-F":  {csRef{name: "iso-8859-7"}, true},
		"\x1b-H":  {csRef{name: "iso-8859-8"}, true},
		"\x1b-M":  {csRef{name: "iso-8859-9"}, true},
		"\x1b-b":  {csRef{name: "iso-8859-15"}, true},
		"\x1b-T":  {csRef{name: "windows-874"}, true}, // TIS 620 (a subset)
	}
)

func newTextDecoder(value string) textDecoder {
	terms := strings.Split(value, `\`)
	first := strings.TrimSpace(terms[0])
	d := textDecoder{iso2022: len(terms) > 1 || strings.HasPrefix(first, "ISO 2022")}
	if n, ok := strings.CutPrefix(first, "ISO 2022 IR "); ok {
		first = "ISO_IR " + n
	}
	switch first {
	case "", "ISO_IR 6":
		d.initial = asciiSet
	case "ISO_IR 166":
		d.initial = csRef{name: "windows-874"}
	default:
		if _, err := charset.Lookup(first); err == nil {
			d.initial = csRef{name: first}
		}
	}
	return d
}

func (d *textDecoder) decode(b []byte) string {
	if !d.iso2022 {
		return decodeSet(d.initial, b)
	}
	var sb strings.Builder
	g0, g1 := asciiSet, d.initial
	for len(b) > 0 {
		if b[0] == 0x1b {
			if esc, n := escapeAt(b); n > 0 {
				if esc.g1 {
					g1 = esc.cs
				} else {
					g0 = esc.cs
				}
				b = b[n:]
				continue
			}
		}
		// A run of bytes in one set: G0 below 0x80, G1 from 0x80.
		high := b[0] >= 0x80
		n := 1
		for n < len(b) && b[n] != 0x1b && (b[n] >= 0x80) == high {
			n++
		}
		set := g0
		if high {
			set = g1
		}
		sb.WriteString(decodeSet(set, b[:n]))
		b = b[n:]
	}
	return sb.String()
}

// designation is a set an escape sequence invokes, as G1 or G0.
type designation struct {
	cs csRef
	g1 bool
}

// escapeAt matches a known escape sequence at the start of b and returns
// its length, or 0.
func escapeAt(b []byte) (designation, int) {
	for _, n := range []int{4, 3} {
		if len(b) >= n {
			if esc, ok := iso2022Escapes[string(b[:n])]; ok {
				return esc, n
			}
		}
	}
	return designation{}, 0
}

func decodeSet(set csRef, b []byte) string {
	if set.name != "" {
		in := b
		if set.prefix != "" {
			in = append([]byte(set.prefix), b...)
		}
		if s, err := charset.Decode(set.name, in); err == nil {
			return s
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
