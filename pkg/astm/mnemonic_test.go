package astm

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMnemonic(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{in: "<ENQ>", want: []byte{ENQ}},
		{in: "<STX>1A<CR><ETX>82<CR><LF>", want: []byte("\x021A\r\x0382\r\n")},
		{in: "<NUL><SOH><EOT><ACK><NAK><ETB>", want: []byte{NUL, SOH, EOT, ACK, NAK, ETB}},
		{in: "<xFF><x01><x3c>", want: []byte{0xFF, 0x01, '<'}},
		{in: "R|1|^^^GLU|<0.1|", want: []byte("R|1|^^^GLU|<0.1|")},
		{in: "<stx><X41><xG1><x4><", want: []byte("<stx><X41><xG1><x4><")},
		{in: "a\r\nb\nc", want: []byte("abc")},
		{in: "caf\u00e9", want: []byte("caf\xe9")},
		{in: "", want: []byte{}},
		{in: "\u20ac", wantErr: true},
		{in: "\xff", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseMnemonic(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseMnemonic(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !bytes.Equal(got, tt.want) {
			t.Errorf("ParseMnemonic(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatMnemonic(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{[]byte("\x021A\r\x0382\r\n"), "<STX>1A<CR><ETX>82<CR><LF>"},
		{[]byte{0x7F, 0x80, 0xE9, 0x1B}, "<x7F><x80><xE9><x1B>"},
		{[]byte("<0.1"), "<0.1"},
		{[]byte("<STX>"), "<x3C>STX>"},
		{[]byte("<x41>"), "<x3C>x41>"},
		{[]byte("<<CR>"), "<<x3C>CR>"},
		{[]byte{'<', CR, '>'}, "<<CR>>"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := FormatMnemonic(tt.in); got != tt.want {
			t.Errorf("FormatMnemonic(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if back := mnemonic(t, tt.want); !bytes.Equal(back, tt.in) && len(tt.in) > 0 {
			t.Errorf("round trip of %q gave %q", tt.in, back)
		}
	}
}

func FuzzParseMnemonic(f *testing.F) {
	for _, s := range []string{
		"<ENQ>", "<STX>1H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>EF<CR><LF>",
		"<x3C>STX>", "<<CR>>", "<xZZ>", "<0.1", "caf\u00e9", "\u20ac", "<x0", "<LF",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseMnemonic(s)
		if err != nil {
			return
		}
		back, err := ParseMnemonic(FormatMnemonic(b))
		if err != nil {
			t.Fatalf("formatted text does not parse: %v", err)
		}
		if diff := cmp.Diff(b, back); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
