package hl7

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantErr    error
		delims     Delimiters
		segments   []string // names
		wantString string
	}{
		{name: "plain", in: "MSH|^~\\&|A\rPID|1", delims: DefaultDelimiters, segments: []string{"MSH", "PID"},
			wantString: "MSH|^~\\&|A\rPID|1"},
		{name: "trailing CR kept", in: "MSH|^~\\&|A\rPID|1\r", delims: DefaultDelimiters,
			segments: []string{"MSH", "PID"}, wantString: "MSH|^~\\&|A\rPID|1\r"},
		{name: "LF and blank lines", in: "MSH|^~\\&|A\n\nPID|1\r\n\r\nPV1|1\n", delims: DefaultDelimiters,
			segments: []string{"MSH", "PID", "PV1"}, wantString: "MSH|^~\\&|A\rPID|1\rPV1|1\r"},
		{name: "leading whitespace and BOM", in: "\uFEFF\r\n \tMSH|^~\\&|A", delims: DefaultDelimiters,
			segments: []string{"MSH"}, wantString: "MSH|^~\\&|A"},
		{name: "hash field separator", in: "MSH#^~\\&#A\rPID#1", delims: Delimiters{'#', '^', '~', '\\', '&'},
			segments: []string{"MSH", "PID"}, wantString: "MSH#^~\\&#A\rPID#1"},
		{name: "exotic encoding characters", in: "MSH|$*!@|A", delims: Delimiters{'|', '$', '*', '!', '@'},
			segments: []string{"MSH"}, wantString: "MSH|$*!@|A"},
		{name: "truncation character ignored", in: "MSH|^~\\&#|A", delims: DefaultDelimiters,
			segments: []string{"MSH"}, wantString: "MSH|^~\\&#|A"},
		{name: "three encoding characters", in: "MSH|^~\\|A", delims: DefaultDelimiters,
			segments: []string{"MSH"}, wantString: "MSH|^~\\|A"},
		{name: "default collides with declared", in: "MSH|&|A", delims: Delimiters{'|', '&', '~', '\\', 0},
			segments: []string{"MSH"}, wantString: "MSH|&|A"},
		{name: "empty MSH-2", in: "MSH||A", delims: DefaultDelimiters, segments: []string{"MSH"},
			wantString: "MSH||A"},
		{name: "only MSH-1", in: "MSH|", delims: DefaultDelimiters, segments: []string{"MSH"}, wantString: "MSH|"},
		{name: "segment without fields", in: "MSH|^~\\&\rZZZ\r", delims: DefaultDelimiters,
			segments: []string{"MSH", "ZZZ"}, wantString: "MSH|^~\\&\rZZZ\r"},
		{name: "empty", in: "", wantErr: ErrNotHL7},
		{name: "whitespace only", in: "\r\n  ", wantErr: ErrNotHL7},
		{name: "not MSH", in: "PID|1|2", wantErr: ErrNotHL7},
		{name: "lower-case msh", in: "msh|^~\\&|", wantErr: ErrNotHL7},
		{name: "MSH alone", in: "MSH", wantErr: ErrNotHL7},
		{name: "MSH then CR", in: "MSH\rPID|1", wantErr: ErrInvalid},
		{name: "alphanumeric field separator", in: "MSHA^~\\&", wantErr: ErrInvalid},
		{name: "duplicate delimiter", in: "MSH|^^\\&|", wantErr: ErrInvalid},
		{name: "non-ASCII delimiter", in: "MSH|^~\\é|", wantErr: ErrInvalid},
		{name: "control delimiter", in: "MSH|^\x00\\&|", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.Delimiters() != tt.delims {
				t.Errorf("delimiters %q, want %q", m.Delimiters(), tt.delims)
			}
			var names []string
			for _, s := range m.Segments() {
				names = append(names, s.Name())
			}
			if diff := cmp.Diff(tt.segments, names); diff != "" {
				t.Errorf("segments (-want +got):\n%s", diff)
			}
			if got := m.String(); got != tt.wantString {
				t.Errorf("String() = %q, want %q", got, tt.wantString)
			}
		})
	}
}

const sample = "MSH|^~\\&|SEND|FAC|RCV|RFAC|20240101||ORU^R01^ORU_R01|CTL\\F\\1|P|2.5.1\r" +
	"PID|1||ID1^^^A^MR~ID2^^^B^PI||DOE^JOHN^Q\r" +
	"OBX|1|ST|C1^One||v1&sub1&sub2^c2\r" +
	"OBX|2|ST|C2^Two||a\\S\\b~rep2\r" +
	"ZZZ"

func TestGet(t *testing.T) {
	m, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want, wantRaw string }{
		{"MSH-1", "|", "|"},
		{"MSH-2", "^~\\&", "^~\\&"},
		{"MSH-2.2", "", ""},
		{"MSH-3", "SEND", "SEND"},
		{"MSH-9", "ORU^R01^ORU_R01", "ORU^R01^ORU_R01"},
		{"MSH-9.1", "ORU", "ORU"},
		{"MSH-9.2", "R01", "R01"},
		{"MSH-9.4", "", ""},
		{"MSH-10", "CTL|1", "CTL\\F\\1"},
		{"MSH-13", "", ""},
		{"PID-3", "ID1^^^A^MR", "ID1^^^A^MR"},
		{"PID-3(1)", "ID1^^^A^MR", "ID1^^^A^MR"},
		{"PID-3(2)", "ID2^^^B^PI", "ID2^^^B^PI"},
		{"PID-3(2).1", "ID2", "ID2"},
		{"PID-3(2).4", "B", "B"},
		{"PID-3(3).1", "", ""},
		{"PID-5.2", "JOHN", "JOHN"},
		{"PID.5.2", "JOHN", "JOHN"},
		{"PID-2", "", ""},
		{"OBX-5.1", "v1&sub1&sub2", "v1&sub1&sub2"},
		{"OBX-5.1.1", "v1", "v1"},
		{"OBX-5.1.3", "sub2", "sub2"},
		{"OBX-5.1.4", "", ""},
		{"OBX-5.2.1", "c2", "c2"},
		{"OBX(2)-3.2", "Two", "Two"},
		{"OBX(2)-5", "a^b", "a\\S\\b"},
		{"OBX(2)-5(2)", "rep2", "rep2"},
		{"OBX(3)-1", "", ""},
		{"ZZZ-1", "", ""},
		{"NTE-1", "", ""},
		{"bad", "", ""},
		{"PID-0", "", ""},
	}
	for _, tt := range tests {
		if got := m.Get(tt.path); got != tt.want {
			t.Errorf("Get(%q) = %q, want %q", tt.path, got, tt.want)
		}
		if got := m.GetRaw(tt.path); got != tt.wantRaw {
			t.Errorf("GetRaw(%q) = %q, want %q", tt.path, got, tt.wantRaw)
		}
	}
	if got := m.ControlID(); got != "CTL|1" {
		t.Errorf("ControlID() = %q", got)
	}
	code, trigger, structure := m.Type()
	if diff := cmp.Diff([]string{"ORU", "R01", "ORU_R01"}, []string{code, trigger, structure}); diff != "" {
		t.Errorf("Type() (-want +got):\n%s", diff)
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		name    string
		raw     bool
		path    string
		value   string
		want    string // whole message after the write; "" when an error is expected
		wantGet string
	}{
		{name: "replace field", path: "PID-1", value: "9", want: "MSH|^~\\&|A\rPID|9|X~Y|N1^N2", wantGet: "9"},
		{name: "grow fields", path: "PID-5", value: "v",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^N2||v", wantGet: "v"},
		{name: "first repetition only", path: "PID-2", value: "Z",
			want: "MSH|^~\\&|A\rPID|1|Z~Y|N1^N2", wantGet: "Z"},
		{name: "grow repetitions", path: "PID-2(4)", value: "W",
			want: "MSH|^~\\&|A\rPID|1|X~Y~~W|N1^N2", wantGet: "W"},
		{name: "component", path: "PID-3.2", value: "M",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^M", wantGet: "M"},
		{name: "grow component and subcomponent", path: "PID-3.4.3", value: "s",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^N2^^&&s", wantGet: "s"},
		{name: "escape delimiters", path: "PID-3.1", value: "a|b^c~d\\e&f",
			want: "MSH|^~\\&|A\rPID|1|X~Y|a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f^N2", wantGet: "a|b^c~d\\e&f"},
		{name: "escape line breaks", path: "PID-4", value: "l1\r\nl2",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^N2|l1\\X0D\\\\X0A\\l2", wantGet: "l1\r\nl2"},
		{name: "raw keeps delimiters", raw: true, path: "PID-3", value: "R1^R2~S1",
			want: "MSH|^~\\&|A\rPID|1|X~Y|R1^R2~S1", wantGet: "R1^R2"},
		{name: "MSH field", path: "MSH-4", value: "FAC",
			want: "MSH|^~\\&|A|FAC\rPID|1|X~Y|N1^N2", wantGet: "FAC"},
		{name: "new segment", path: "ZZZ-2", value: "z",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^N2\rZZZ||z", wantGet: "z"},
		{name: "second PID", path: "PID(2)-1", value: "2",
			want: "MSH|^~\\&|A\rPID|1|X~Y|N1^N2\rPID|2", wantGet: "2"},
		{name: "gap in segment repetitions", path: "PID(3)-1", value: "x"},
		{name: "MSH-1", path: "MSH-1", value: "#"},
		{name: "MSH-2", path: "MSH-2", value: "^~"},
		{name: "new MSH", path: "MSH(2)-3", value: "x"},
		{name: "raw CR", raw: true, path: "PID-1", value: "a\rb"},
		{name: "bad path", path: "PID-x", value: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse("MSH|^~\\&|A\rPID|1|X~Y|N1^N2")
			if err != nil {
				t.Fatal(err)
			}
			set := m.Set
			if tt.raw {
				set = m.SetRaw
			}
			err = set(tt.path, tt.value)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("no error; message %q", m.String())
				}
				if got := m.String(); got != "MSH|^~\\&|A\rPID|1|X~Y|N1^N2" {
					t.Errorf("failed write changed the message: %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := m.Get(tt.path); got != tt.wantGet {
				t.Errorf("Get(%q) = %q, want %q", tt.path, got, tt.wantGet)
			}
		})
	}
}

func TestMissingDelimiters(t *testing.T) {
	m, err := Parse("MSH|^~|A")
	if err != nil {
		t.Fatal(err)
	}
	// The default escape character '\' is still assumed when MSH-2 stops before it.
	if err := m.Set("MSH-3", "a|b"); err != nil || m.GetRaw("MSH-3") != "a\\F\\b" {
		t.Errorf("Set = %v, raw %q", err, m.GetRaw("MSH-3"))
	}
	m, err = Parse("MSH|\\|A")
	if err != nil {
		t.Fatal(err)
	}
	if d := m.Delimiters(); d.Escape != 0 {
		t.Fatalf("escape %q, want none", d.Escape)
	}
	if err := m.Set("MSH-3", "a\\b"); err == nil {
		t.Errorf("Set of a delimiter without an escape character succeeded: %q", m.String())
	}
	if err := m.Set("MSH-3", "plain"); err != nil {
		t.Error(err)
	}
	ack := BuildAck(m, AE, AckOptions{Text: "bad \\ value\r", ControlID: "1"})
	if got := ack.Segment("MSA").String(); got != "MSA|AE||bad   value " {
		t.Errorf("MSA without an escape character = %q", got)
	}

	// "~" as component separator leaves no repetition separator.
	m, err = Parse("MSH|~|A\rPID|1")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetRaw("PID-1(2)", "x"); err == nil {
		t.Errorf("second repetition without a repetition separator: %q", m.String())
	}
	if err := m.SetRaw("PID-1.2", "x"); err != nil || m.Get("PID-1.2") != "x" {
		t.Errorf("component write = %v, %q", err, m.String())
	}
}

func TestEscapes(t *testing.T) {
	d := DefaultDelimiters
	tests := []struct{ raw, decoded string }{
		{"plain", "plain"},
		{"\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"},
		{"a\\X41\\b", "aAb"},
		{"\\XC3A9\\", "é"},
		{"\\XE9\\", "é"}, // not UTF-8: read as Latin-1
		{"\\X0D0A\\", "\r\n"},
		{"\\X4\\", "\\X4\\"},
		{"\\X\\", "\\X\\"},
		{"\\XZZ\\", "\\XZZ\\"},
		{"\\H\\bold\\N\\", "\\H\\bold\\N\\"},
		{"a\\.br\\b", "a\\.br\\b"},
		{"\\.sp2\\", "\\.sp2\\"},
		{"\\C2842\\", "\\C2842\\"},
		{"\\Zcustom\\", "\\Zcustom\\"},
		{"\\\\", "\\\\"},
		{"tail \\F", "tail \\F"},
		{"\\", "\\"},
		{"\\F\\ and \\q", "| and \\q"},
	}
	for _, tt := range tests {
		if got := d.decode(tt.raw); got != tt.decoded {
			t.Errorf("decode(%q) = %q, want %q", tt.raw, got, tt.decoded)
		}
	}
	for _, s := range []string{"", "plain", "|^~\\&", "a\r\nb", "é \\X41\\", "\\F\\"} {
		enc, err := d.encode(s)
		if err != nil {
			t.Fatalf("encode(%q): %v", s, err)
		}
		if strings.ContainsAny(enc, "|^~&\r\n") {
			t.Errorf("encode(%q) = %q still holds delimiters", s, enc)
		}
		if got := d.decode(enc); got != s {
			t.Errorf("decode(encode(%q)) = %q", s, got)
		}
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		in      string
		want    Path
		wantErr string
	}{
		{in: "MSH-9.2", want: Path{"MSH", 1, 9, 1, 2, 0}},
		{in: "PID-3(2).1", want: Path{"PID", 1, 3, 2, 1, 0}},
		{in: "OBX(2)-5", want: Path{"OBX", 2, 5, 1, 0, 0}},
		{in: "PID-3.1.2", want: Path{"PID", 1, 3, 1, 1, 2}},
		{in: "PID.3.1", want: Path{"PID", 1, 3, 1, 1, 0}},
		{in: "ZP1-10", want: Path{"ZP1", 1, 10, 1, 0, 0}},
		{in: "OBX(12)-5(3).2.1", want: Path{"OBX", 12, 5, 3, 2, 1}},
		{in: "", wantErr: "segment name"},
		{in: "PI", wantErr: "segment name"},
		{in: "P-D-1", wantErr: "segment name"},
		{in: "PID", wantErr: "field number"},
		{in: "PID-", wantErr: "field must be a number"},
		{in: "PID-0", wantErr: "between 1 and 9999"},
		{in: "PID-10000", wantErr: "between 1 and 9999"},
		{in: "PID-99999999999999999999999", wantErr: "between 1 and 9999"},
		{in: "PID(0)-1", wantErr: "segment repetition"},
		{in: "PID(2-1", wantErr: "missing ')'"},
		{in: "PID-1(", wantErr: "field repetition"},
		{in: "PID-1.", wantErr: "component must be a number"},
		{in: "PID-1.2.3.4", wantErr: "after the subcomponent"},
		{in: "PID-1x", wantErr: "unexpected"},
		{in: " PID-1", wantErr: "segment name"},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePath(%q) error = %v, want it to mention %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePath(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParsePath(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if back, err := ParsePath(got.String()); err != nil || back != got {
			t.Errorf("ParsePath(%q.String() = %q) = %+v, %v", tt.in, got.String(), back, err)
		}
	}
}

func TestSegmentFields(t *testing.T) {
	m, err := Parse("MSH|^~\\&|A||C\rPID|1||3|\rZZZ")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		seg    *Segment
		n      int
		fields []string // fields 0..n+1
	}{
		{m.Segment("MSH"), 5, []string{"", "|", "^~\\&", "A", "", "C", ""}},
		{m.Segment("PID"), 4, []string{"", "1", "", "3", "", ""}},
		{m.Segment("ZZZ"), 0, []string{"", ""}},
	}
	for _, tt := range tests {
		if got := tt.seg.NumFields(); got != tt.n {
			t.Errorf("%s NumFields = %d, want %d", tt.seg.Name(), got, tt.n)
		}
		var got []string
		for i := range tt.fields {
			got = append(got, tt.seg.Field(i))
		}
		if diff := cmp.Diff(tt.fields, got); diff != "" {
			t.Errorf("%s fields (-want +got):\n%s", tt.seg.Name(), diff)
		}
	}
	if m.Segment("NTE") != nil || len(m.AllSegments("NTE")) != 0 {
		t.Error("found a segment that is not there")
	}
}

func TestAllSegmentsAndClone(t *testing.T) {
	m, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(m.AllSegments("OBX")); got != 2 {
		t.Fatalf("AllSegments(OBX) = %d segments", got)
	}
	c := m.Clone()
	if err := c.Set("OBX(2)-5", "changed"); err != nil {
		t.Fatal(err)
	}
	if m.String() != sample {
		t.Errorf("writing to a clone changed the original: %q", m.String())
	}
	if got := c.Get("OBX(2)-5"); got != "changed" {
		t.Errorf("clone Get = %q", got)
	}
	segs := m.Segments()
	segs[0] = nil
	if m.Segments()[0] == nil {
		t.Error("Segments() exposes the message's slice")
	}
}

func TestAppendSegment(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		seg  *Segment
		want string
	}{
		{name: "default delimiters", msg: "MSH|^~\\&|A", seg: NewSegment("NTE", "1", "", "a^b~c&d\\E\\"),
			want: "MSH|^~\\&|A\rNTE|1||a^b~c&d\\E\\"},
		{name: "translated", msg: "MSH#$*!@#A", seg: NewSegment("NTE", "1", "", "a^b~c&d\\E\\ #$"),
			want: "MSH#$*!@#A\rNTE#1##a$b*c@d!E! !F!!S!"},
		{name: "keeps trailing CR", msg: "MSH|^~\\&|A\r", seg: NewSegment("ZZZ"),
			want: "MSH|^~\\&|A\rZZZ\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			m.AppendSegment(tt.seg)
			if got := m.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
	// A segment taken from another message is translated too.
	src, _ := Parse("MSH#$*!@#A\rPID#1##x$y")
	dst, _ := Parse("MSH|^~\\&|B")
	dst.AppendSegment(src.Segment("PID"))
	if got := dst.Get("PID-3.2"); got != "y" {
		t.Errorf("PID-3.2 after translation = %q (%q)", got, dst.String())
	}
}
