package astm

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// mnemonicNames are the control bytes written by name in mnemonic notation.
var mnemonicNames = map[byte]string{
	NUL: "NUL", SOH: "SOH", STX: "STX", ETX: "ETX", EOT: "EOT", ENQ: "ENQ",
	ACK: "ACK", LF: "LF", CR: "CR", NAK: "NAK", ETB: "ETB",
}

var mnemonicBytes = func() map[string]byte {
	m := make(map[string]byte, len(mnemonicNames))
	for b, n := range mnemonicNames {
		m[n] = b
	}
	return m
}()

// FormatMnemonic renders b in mnemonic notation: named control bytes as
// "<STX>", other bytes outside printable ASCII as "<xHH>", and a '<' that
// would otherwise read as a token as "<x3C>". The result is ASCII and
// ParseMnemonic turns it back into b.
func FormatMnemonic(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		switch name, named := mnemonicNames[c]; {
		case named:
			sb.WriteString("<" + name + ">")
		case c < 0x20 || c >= 0x7F || c == '<' && tokenAt(string(b[i:])) > 0:
			fmt.Fprintf(&sb, "<x%02X>", c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// ParseMnemonic turns mnemonic notation into bytes. "<STX>"-style names and
// "<xHH>" stand for single bytes; any other character stands for itself,
// as one byte (so a character above U+00FF is an error). Literal line breaks
// are layout, not data, and are skipped: write <CR> and <LF> for those
// bytes.
func ParseMnemonic(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		if n := tokenAt(s[i:]); n > 0 {
			out = append(out, tokenByte(s[i:i+n]))
			i += n
			continue
		}
		c := s[i]
		if c == '\n' || c == '\r' {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return nil, fmt.Errorf("astm: mnemonic: invalid UTF-8 at offset %d", i)
		}
		if r > 0xFF {
			return nil, fmt.Errorf("astm: mnemonic: character %q at offset %d is not one byte; write it as <xHH>", r, i)
		}
		out = append(out, byte(r))
		i += size
	}
	return out, nil
}

// tokenAt returns the length of the token at the start of s, or 0.
func tokenAt(s string) int {
	if len(s) < 3 || s[0] != '<' {
		return 0
	}
	end := strings.IndexByte(s[:min(len(s), 5)], '>')
	if end < 0 {
		return 0
	}
	inner := s[1:end]
	if _, ok := mnemonicBytes[inner]; ok {
		return end + 1
	}
	if len(inner) == 3 && inner[0] == 'x' {
		if _, ok := hexValue(inner[1]); ok {
			if _, ok := hexValue(inner[2]); ok {
				return end + 1
			}
		}
	}
	return 0
}

// tokenByte returns the byte of a token recognised by tokenAt.
func tokenByte(tok string) byte {
	inner := tok[1 : len(tok)-1]
	if b, ok := mnemonicBytes[inner]; ok {
		return b
	}
	h, _ := hexValue(inner[1])
	l, _ := hexValue(inner[2])
	return h<<4 | l
}
