package charset

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
)

func TestLookupAliases(t *testing.T) {
	tests := []struct {
		names []string
		want  string
	}{
		{[]string{"utf-8", "UTF-8", "utf8", "UTF_8", "UNICODE UTF-8", "unicode utf-8", "ISO_IR 192"}, "utf-8"},
		{[]string{"iso-8859-1", "latin1", "LATIN1", "l1", "8859/1", "ISO_8859-1", "ISO-IR 100", "ISO_IR 100",
			"iso8859-1", "ISO 8859 1", "cp819"}, "iso-8859-1"},
		{[]string{"iso-8859-2", "8859/2", "latin2"}, "iso-8859-2"},
		{[]string{"iso-8859-15", "8859/15", "latin9", "ISO_IR 203"}, "iso-8859-15"},
		{[]string{"windows-1252", "cp1252", "win1252", "Windows_1252", "WINDOWS 1252"}, "windows-1252"},
		{[]string{"windows-1250", "cp1250"}, "windows-1250"},
		{[]string{"windows-1251", "win1251"}, "windows-1251"},
		{[]string{"us-ascii", "ascii", "ASCII", "US_ASCII", "ISO IR6"}, "us-ascii"},
		{[]string{"utf-16", "UTF16", "UNICODE UTF-16"}, "utf-16"},
		{[]string{"utf-16le", "UTF-16LE", "utf16le"}, "utf-16le"},
		{[]string{"utf-16be", "UTF_16BE"}, "utf-16be"},
		{[]string{"GB 18030-2000", "gb18030"}, "gb18030"},
		{[]string{"BIG-5", "big5"}, "big5"},
		{[]string{"KS X 1001", "euc-kr"}, "euc-kr"},
		{[]string{"ibm866", "cp866", "866"}, "ibm866"},
	}
	for _, tt := range tests {
		for _, name := range tt.names {
			got, ok := FromMSH18(name)
			if !ok || got != tt.want {
				t.Errorf("FromMSH18(%q) = %q, %v; want %q", name, got, ok, tt.want)
			}
			if _, err := Lookup(name); err != nil {
				t.Errorf("Lookup(%q): %v", name, err)
			}
		}
	}
}

func TestLookupEncodings(t *testing.T) {
	tests := []struct {
		name string
		want any
	}{
		{"latin1", charmap.ISO8859_1}, // not windows-1252, unlike the WHATWG index
		{"windows-1252", charmap.Windows1252},
		{"utf8", unicode.UTF8},
	}
	for _, tt := range tests {
		got, err := Lookup(tt.name)
		if err != nil || got != tt.want {
			t.Errorf("Lookup(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
}

func TestUnknown(t *testing.T) {
	for _, name := range []string{"", "klingon", "utf-9", "latin99"} {
		_, err := Lookup(name)
		if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "iso-8859-1") {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknown listing the names", name, err)
		}
		if _, err := Decode(name, []byte("x")); !errors.Is(err, ErrUnknown) {
			t.Errorf("Decode(%q) error = %v", name, err)
		}
		if _, err := Encode(name, "x"); !errors.Is(err, ErrUnknown) {
			t.Errorf("Encode(%q) error = %v", name, err)
		}
		if got, ok := FromMSH18(name); ok {
			t.Errorf("FromMSH18(%q) = %q, true", name, got)
		}
	}
	// Names outside the table that the IANA registry knows still work.
	if got, ok := FromMSH18("IBM037"); !ok || got == "" {
		t.Errorf("FromMSH18(IBM037) = %q, %v", got, ok)
	}
	if got, ok := FromMSH18("UNICODE UTF-8~8859/1"); !ok || got != "utf-8" {
		t.Errorf("FromMSH18 with repetitions = %q, %v", got, ok)
	}
}

// TestTable checks that every alias reaches its own charset (no key collides) and that every single-byte charset
// is an ASCII superset, which the decode fast path relies on.
func TestTable(t *testing.T) {
	names := Names()
	if len(names) != len(table) || names[0] != "utf-8" {
		t.Fatalf("Names() = %v", names)
	}
	for _, c := range table {
		for _, a := range append([]string{c.name}, c.aliases...) {
			if got, _ := FromMSH18(a); got != c.name {
				t.Errorf("alias %q resolves to %q, want %q", a, got, c.name)
			}
		}
		if c.kind == kindSingle {
			for b := range utf8.RuneSelf {
				if r := c.charmap().DecodeByte(byte(b)); r != rune(b) {
					t.Errorf("%s: byte 0x%02X decodes to %U", c.name, b, r)
				}
			}
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr string
	}{
		{name: "utf-8", in: []byte("Café"), want: "Café"},
		{name: "utf-8", in: []byte("\xEF\xBB\xBFMSH"), want: "\uFEFFMSH"},
		{name: "utf-8", in: []byte("ok\xE9ok"), wantErr: "byte 0xE9 at offset 2"},
		{name: "utf-8", in: []byte("ab\xC3"), wantErr: "offset 2"},
		{name: "us-ascii", in: []byte("MSH|^~\\&"), want: "MSH|^~\\&"},
		{name: "us-ascii", in: []byte("a\x80"), wantErr: "byte 0x80 at offset 1"},
		{name: "latin1", in: []byte("Caf\xE9 \x80"), want: "Café \u0080"},
		{name: "windows-1252", in: []byte("Caf\xE9 \x80"), want: "Café €"},
		{name: "windows-1252", in: []byte("x\x81"), wantErr: "byte 0x81 at offset 1"},
		{name: "iso-8859-3", in: []byte("\xA5"), wantErr: "byte 0xA5 at offset 0"},
		{name: "iso-8859-2", in: []byte("\xB1"), want: "ą"},
		{name: "windows-1251", in: []byte("\xCF\xF0\xE8"), want: "При"},
		{name: "iso-8859-15", in: []byte("\xA4"), want: "€"},
		{name: "utf-16le", in: []byte{'H', 0, 0xE9, 0}, want: "Hé"},
		{name: "utf-16le", in: []byte{0xFF, 0xFE, 'H', 0}, want: "H"},
		{name: "utf-16be", in: []byte{0, 'H', 0xD8, 0x3D, 0xDE, 0x00}, want: "H😀"},
		{name: "utf-16", in: []byte{0xFE, 0xFF, 0, 'H'}, want: "H"},
		{name: "utf-16", in: []byte{0xFF, 0xFE, 'H', 0}, want: "H"},
		{name: "utf-16", in: []byte{'H', 0}, want: "H"},
		{name: "utf-16le", in: []byte{'H'}, wantErr: "odd length"},
		{name: "utf-16le", in: []byte{0x3D, 0xD8, 'H', 0}, wantErr: "unpaired surrogate at offset 0"},
		{name: "utf-16le", in: []byte{'H', 0, 0x00, 0xDE}, wantErr: "unpaired surrogate at offset 2"},
		{name: "utf-16le", in: []byte{0x3D, 0xD8}, wantErr: "unpaired surrogate"},
		{name: "shift_jis", in: []byte{0x93, 0xFA, 0x96, 0x7B}, want: "日本"},
		{name: "shift_jis", in: []byte{0x93}, wantErr: "invalid"},
		{name: "utf-8", in: nil, want: ""},
	}
	for _, tt := range tests {
		got, err := Decode(tt.name, tt.in)
		if tt.wantErr != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decode(%s, %q) error = %v, want %q", tt.name, tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Decode(%s, %q) = %q, %v; want %q", tt.name, tt.in, got, err, tt.want)
		}
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr string
	}{
		{name: "utf-8", in: "Café", want: []byte("Café")},
		{name: "utf-8", in: "a\xFF", wantErr: "invalid UTF-8 byte 0xFF at offset 1"},
		{name: "us-ascii", in: "MSH", want: []byte("MSH")},
		{name: "us-ascii", in: "Café", wantErr: "U+00E9 'é' at offset 3"},
		{name: "latin1", in: "Café", want: []byte("Caf\xE9")},
		{name: "latin1", in: "€", wantErr: "U+20AC"},
		{name: "latin1", in: "\uFFFD", wantErr: "U+FFFD"},
		{name: "windows-1252", in: "€", want: []byte{0x80}},
		{name: "windows-1250", in: "Łódź", want: []byte{0xA3, 0xF3, 0x64, 0x9F}},
		{name: "windows-1251", in: "日", wantErr: "cannot be represented"},
		{name: "utf-16", in: "H", want: []byte{0xFF, 0xFE, 'H', 0}},
		{name: "utf-16le", in: "Hé", want: []byte{'H', 0, 0xE9, 0}},
		{name: "utf-16be", in: "😀", want: []byte{0xD8, 0x3D, 0xDE, 0x00}},
		{name: "utf-16be", in: "\xC3", wantErr: "invalid UTF-8"},
		{name: "shift_jis", in: "日本", want: []byte{0x93, 0xFA, 0x96, 0x7B}},
		{name: "shift_jis", in: "ą", wantErr: "invalid"},
	}
	for _, tt := range tests {
		got, err := Encode(tt.name, tt.in)
		if tt.wantErr != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Encode(%s, %q) error = %v, want %q", tt.name, tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Encode(%s, %q): %v", tt.name, tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Encode(%s, %q) (-want +got):\n%s", tt.name, tt.in, diff)
		}
	}
}

// TestUTF8DecodeCopiesOnce guards the hot path of the agent: one allocation for the string, nothing else.
func TestUTF8DecodeCopiesOnce(t *testing.T) {
	in := bytes.Repeat([]byte("MSH|^~\\&|Café|"), 100)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Decode("utf-8", in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 1 {
		t.Errorf("Decode(utf-8) made %v allocations, want 1", allocs)
	}
}

func FuzzCharsetDecode(f *testing.F) {
	f.Add("utf-8", []byte("MSH|^~\\&|Café"))
	f.Add("latin1", []byte("Caf\xE9"))
	f.Add("windows-1252", []byte("\x80\x81"))
	f.Add("us-ascii", []byte("a\x80"))
	f.Add("utf-16", []byte{0xFE, 0xFF, 0xD8, 0x3D, 0xDE, 0x00})
	f.Add("utf-16le", []byte{0x3D, 0xD8, 'H'})
	f.Add("shift_jis", []byte{0x93, 0xFA, 0x96})
	f.Add("8859/5", []byte("\xC0\xFF"))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		s, err := Decode(name, b)
		if err != nil {
			if !errors.Is(err, ErrUnknown) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !utf8.ValidString(s) {
			t.Fatalf("Decode(%s) returned invalid UTF-8 %q", name, s)
		}
		out, err := Encode(name, s)
		if err != nil {
			c, _ := resolve(name)
			if c.kind != kindMulti { // multi-byte codecs may decode to characters they do not encode back
				t.Fatalf("Encode(Decode(%q)) = %v", b, err)
			}
			return
		}
		c, _ := resolve(name)
		switch c.kind {
		case kindUTF8, kindASCII, kindSingle:
			if !bytes.Equal(out, b) {
				t.Fatalf("%s round trip: %q -> %q -> %q", c.name, b, s, out)
			}
		case kindUTF16, kindUTF16LE, kindUTF16BE:
			back, err := Decode(name, out)
			if err != nil || back != s {
				t.Fatalf("%s round trip: %q -> %q -> %q -> %q, %v", c.name, b, s, out, back, err)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	ascii := bytes.Repeat([]byte("OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-100|N|||F\r"), 20)
	latin := bytes.Repeat([]byte("NTE|1||Patient Jos\xE9 Garc\xEDa, r\xE9sum\xE9\r"), 20)
	for _, bc := range []struct {
		name, charset string
		in            []byte
	}{
		{"utf-8", "utf-8", ascii},
		{"latin1-ascii-only", "latin1", ascii},
		{"latin1", "latin1", latin},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(bc.charset, bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
