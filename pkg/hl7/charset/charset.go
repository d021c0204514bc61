// Package charset maps wire-encoding names (iconv-style names, IANA names, HL7 MSH-18 and DICOM Specific Character
// Set values) to golang.org/x/text encodings, and decodes and encodes strictly: bytes that are not valid in the
// charset, and characters the charset cannot represent, are errors rather than U+FFFD or '?'.
//
// The WHATWG index (htmlindex) is deliberately not used: it maps latin1, iso-8859-1 and even ascii to windows-1252.
package charset

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// ErrUnknown is matched (errors.Is) by errors for charset names that are not supported.
var ErrUnknown = errors.New("unknown charset")

// ErrInvalid is matched (errors.Is) by errors for bytes that are invalid in a charset (Decode) and characters it
// cannot represent (Encode).
var ErrInvalid = errors.New("invalid data for charset")

type kind uint8

const (
	kindUTF8   kind = iota
	kindASCII       // US-ASCII: bytes >= 0x80 are errors
	kindSingle      // an ASCII-compatible single-byte charmap
	kindUTF16       // UTF-16 with byte order from a BOM, little endian without one (as iconv-lite)
	kindUTF16LE
	kindUTF16BE
	kindMulti // any other x/text encoding, checked for U+FFFD after decoding
)

type charset struct {
	name    string
	kind    kind
	enc     encoding.Encoding
	aliases []string
}

// charmap returns the single-byte table of a kindSingle charset.
func (c *charset) charmap() *charmap.Charmap { return c.enc.(*charmap.Charmap) }

func single(name string, cm *charmap.Charmap, aliases ...string) charset {
	return charset{name: name, kind: kindSingle, enc: cm, aliases: aliases}
}

func multi(name string, enc encoding.Encoding, aliases ...string) charset {
	return charset{name: name, kind: kindMulti, enc: enc, aliases: aliases}
}

// table lists the supported charsets under their canonical names, in the order Names reports them. Aliases include
// HL7 table 0211 values (MSH-18, e.g. "8859/1", "UNICODE UTF-8") and DICOM defined terms (e.g. "ISO_IR 100").
var table = []charset{
	{name: "utf-8", kind: kindUTF8, enc: unicode.UTF8, aliases: []string{"utf8", "UNICODE UTF-8", "ISO_IR 192"}},
	{name: "us-ascii", kind: kindASCII, enc: mustIANA("US-ASCII"), aliases: []string{
		"ascii", "us", "ANSI_X3.4-1968", "iso646-us", "ISO IR6", "ISO_IR 6"}},
	single("iso-8859-1", charmap.ISO8859_1, "latin1", "l1", "8859/1", "ISO_8859-1:1987", "ISO-IR-100", "ISO_IR 100",
		"cp819", "ibm819"),
	single("iso-8859-2", charmap.ISO8859_2, "latin2", "l2", "8859/2", "ISO-IR-101", "ISO_IR 101"),
	single("iso-8859-3", charmap.ISO8859_3, "latin3", "l3", "8859/3", "ISO-IR-109", "ISO_IR 109"),
	single("iso-8859-4", charmap.ISO8859_4, "latin4", "l4", "8859/4", "ISO-IR-110", "ISO_IR 110"),
	single("iso-8859-5", charmap.ISO8859_5, "cyrillic", "8859/5", "ISO-IR-144", "ISO_IR 144"),
	single("iso-8859-6", charmap.ISO8859_6, "arabic", "8859/6", "ISO-IR-127", "ISO_IR 127"),
	single("iso-8859-7", charmap.ISO8859_7, "greek", "8859/7", "ISO-IR-126", "ISO_IR 126"),
	single("iso-8859-8", charmap.ISO8859_8, "hebrew", "8859/8", "ISO-IR-138", "ISO_IR 138"),
	single("iso-8859-9", charmap.ISO8859_9, "latin5", "l5", "8859/9", "ISO-IR-148", "ISO_IR 148"),
	single("iso-8859-10", charmap.ISO8859_10, "latin6", "l6", "ISO-IR-157"),
	single("iso-8859-13", charmap.ISO8859_13, "latin7", "l7", "ISO-IR-179"),
	single("iso-8859-14", charmap.ISO8859_14, "latin8", "l8", "ISO-IR-199"),
	single("iso-8859-15", charmap.ISO8859_15, "latin9", "l9", "latin0", "8859/15", "ISO-IR-203", "ISO_IR 203"),
	single("iso-8859-16", charmap.ISO8859_16, "latin10", "l10", "ISO-IR-226"),
	single("windows-874", charmap.Windows874, "cp874", "win874"),
	single("windows-1250", charmap.Windows1250, "cp1250", "win1250"),
	single("windows-1251", charmap.Windows1251, "cp1251", "win1251"),
	single("windows-1252", charmap.Windows1252, "cp1252", "win1252"),
	single("windows-1253", charmap.Windows1253, "cp1253", "win1253"),
	single("windows-1254", charmap.Windows1254, "cp1254", "win1254"),
	single("windows-1255", charmap.Windows1255, "cp1255", "win1255"),
	single("windows-1256", charmap.Windows1256, "cp1256", "win1256"),
	single("windows-1257", charmap.Windows1257, "cp1257", "win1257"),
	single("windows-1258", charmap.Windows1258, "cp1258", "win1258"),
	single("ibm437", charmap.CodePage437, "cp437", "437"),
	single("ibm850", charmap.CodePage850, "cp850", "850"),
	single("ibm852", charmap.CodePage852, "cp852", "852"),
	single("ibm855", charmap.CodePage855, "cp855", "855"),
	single("ibm858", charmap.CodePage858, "cp858", "858"),
	single("ibm860", charmap.CodePage860, "cp860", "860"),
	single("ibm862", charmap.CodePage862, "cp862", "862"),
	single("ibm863", charmap.CodePage863, "cp863", "863"),
	single("ibm865", charmap.CodePage865, "cp865", "865"),
	single("ibm866", charmap.CodePage866, "cp866", "866"),
	single("koi8-r", charmap.KOI8R, "koi8r"),
	single("koi8-u", charmap.KOI8U, "koi8u"),
	single("macintosh", charmap.Macintosh, "mac", "macroman"),
	{name: "utf-16", kind: kindUTF16, enc: unicode.UTF16(unicode.LittleEndian, unicode.UseBOM),
		aliases: []string{"utf16", "UNICODE UTF-16", "ucs-2"}},
	{name: "utf-16le", kind: kindUTF16LE, enc: unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM),
		aliases: []string{"utf16le", "ucs-2le"}},
	{name: "utf-16be", kind: kindUTF16BE, enc: unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM),
		aliases: []string{"utf16be", "ucs-2be"}},
	multi("gb18030", simplifiedchinese.GB18030, "GB 18030-2000"),
	multi("gbk", simplifiedchinese.GBK, "cp936", "GB2312"),
	multi("big5", traditionalchinese.Big5, "BIG-5", "cp950"),
	multi("euc-kr", korean.EUCKR, "KS X 1001", "cp949", "ISO_IR 149"),
	multi("shift_jis", japanese.ShiftJIS, "sjis", "ms_kanji", "ISO IR14", "ISO_IR 13"),
	multi("euc-jp", japanese.EUCJP, "eucjp"),
	multi("iso-2022-jp", japanese.ISO2022JP, "ISO IR87", "ISO 2022 IR 87"),
}

func mustIANA(name string) encoding.Encoding {
	e, err := ianaindex.IANA.Encoding(name)
	if err != nil || e == nil {
		panic("charset: x/text lacks " + name)
	}
	return e
}

// byKey maps a normalised name (see appendKey) to an index in table.
var byKey = func() map[string]int {
	m := make(map[string]int)
	for i, c := range table {
		m[string(appendKey(nil, c.name))] = i
		for _, a := range c.aliases {
			m[string(appendKey(nil, a))] = i
		}
	}
	return m
}()

// appendKey appends name lower-cased and without anything but letters and digits, so that "ISO_8859-1",
// "iso 8859 1" and "8859/1"-style spellings meet. No two supported names differ only in punctuation.
func appendKey(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			dst = append(dst, c)
		}
	}
	return dst
}

// resolve finds the charset for name: the table first, then any other name the IANA index knows.
func resolve(name string) (*charset, error) {
	var buf [32]byte
	if i, ok := byKey[string(appendKey(buf[:0], name))]; ok {
		return &table[i], nil
	}
	if e, err := ianaindex.IANA.Encoding(name); err == nil && e != nil {
		canon, err := ianaindex.IANA.Name(e)
		if err != nil {
			canon = strings.TrimSpace(name)
		}
		return &charset{name: strings.ToLower(canon), kind: kindMulti, enc: e}, nil
	}
	return nil, fmt.Errorf("%w %q (supported: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
}

// Names returns the canonical names of the charsets in the table. Lookup also accepts their aliases and any other
// IANA-registered name that golang.org/x/text implements.
func Names() []string {
	out := make([]string, len(table))
	for i, c := range table {
		out[i] = c.name
	}
	return out
}

// Lookup returns the encoding for a charset name, case-insensitively and ignoring punctuation and spaces.
func Lookup(name string) (encoding.Encoding, error) {
	c, err := resolve(name)
	if err != nil {
		return nil, err
	}
	return c.enc, nil
}

// FromMSH18 maps an MSH-18 value (HL7 table 0211, e.g. "8859/1", "UNICODE UTF-8", "ASCII"; other charset names
// are accepted too) to a canonical charset name. Only the first repetition counts, as it names the default charset.
// It returns false for an empty or unknown value.
func FromMSH18(value string) (string, bool) {
	if i := strings.IndexByte(value, '~'); i >= 0 {
		value = value[:i]
	}
	value = strings.TrimSpace(value)
	if value == "" {
		return "", false
	}
	c, err := resolve(value)
	if err != nil {
		return "", false
	}
	return c.name, true
}

// Decode converts b from the named charset to a string. Bytes that are not valid in the charset are an error that
// matches ErrInvalid and gives the offset; nothing is replaced by U+FFFD. For UTF-8 and US-ASCII the bytes are
// copied once and not otherwise transformed (a UTF-8 BOM is kept); for UTF-16 a leading BOM is consumed.
func Decode(name string, b []byte) (string, error) {
	c, err := resolve(name)
	if err != nil {
		return "", err
	}
	switch c.kind {
	case kindUTF8:
		if !utf8.Valid(b) {
			return "", c.invalidAt(b, firstInvalidUTF8(b))
		}
		return string(b), nil
	case kindASCII:
		if i := firstNonASCII(b); i >= 0 {
			return "", c.invalidAt(b, i)
		}
		return string(b), nil
	case kindSingle:
		return c.decodeSingle(b)
	case kindUTF16, kindUTF16LE, kindUTF16BE:
		return c.decodeUTF16(b)
	}
	out, err := c.enc.NewDecoder().Bytes(b)
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrInvalid, c.name, err)
	}
	if bytes.ContainsRune(out, utf8.RuneError) {
		return "", fmt.Errorf("%w %s: undecodable byte sequence", ErrInvalid, c.name)
	}
	return string(out), nil
}

func (c *charset) invalidAt(b []byte, i int) error {
	return fmt.Errorf("%w %s: byte 0x%02X at offset %d", ErrInvalid, c.name, b[i], i)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

func firstNonASCII(b []byte) int {
	for i, c := range b {
		if c >= utf8.RuneSelf {
			return i
		}
	}
	return -1
}

func (c *charset) decodeSingle(b []byte) (string, error) {
	i := firstNonASCII(b)
	if i < 0 {
		return string(b), nil
	}
	cm := c.charmap()
	var sb strings.Builder
	sb.Grow(len(b) + (len(b)-i)*2)
	sb.Write(b[:i])
	for ; i < len(b); i++ {
		if b[i] < utf8.RuneSelf {
			sb.WriteByte(b[i])
			continue
		}
		r := cm.DecodeByte(b[i])
		if r == utf8.RuneError {
			return "", c.invalidAt(b, i)
		}
		sb.WriteRune(r)
	}
	return sb.String(), nil
}

// order returns the byte order of a UTF-16 charset after looking at a possible BOM, and the bytes after the BOM.
func (c *charset) order(b []byte) (bigEndian bool, rest []byte) {
	bigEndian = c.kind == kindUTF16BE
	if len(b) >= 2 {
		switch {
		case b[0] == 0xFF && b[1] == 0xFE && c.kind != kindUTF16BE:
			return false, b[2:]
		case b[0] == 0xFE && b[1] == 0xFF && c.kind != kindUTF16LE:
			return true, b[2:]
		}
	}
	return bigEndian, b
}

func (c *charset) decodeUTF16(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", fmt.Errorf("%w %s: odd length %d", ErrInvalid, c.name, len(b))
	}
	be, rest := c.order(b)
	start := len(b) - len(rest)
	unit := func(i int) rune {
		if be {
			return rune(rest[i])<<8 | rune(rest[i+1])
		}
		return rune(rest[i+1])<<8 | rune(rest[i])
	}
	var sb strings.Builder
	sb.Grow(len(rest))
	for i := 0; i < len(rest); i += 2 {
		r := unit(i)
		switch {
		case utf16.IsSurrogate(r):
			if r >= 0xDC00 || i+3 >= len(rest) {
				return "", fmt.Errorf("%w %s: unpaired surrogate at offset %d", ErrInvalid, c.name, start+i)
			}
			r = utf16.DecodeRune(r, unit(i+2))
			if r == utf8.RuneError {
				return "", fmt.Errorf("%w %s: unpaired surrogate at offset %d", ErrInvalid, c.name, start+i)
			}
			i += 2
		}
		sb.WriteRune(r)
	}
	return sb.String(), nil
}

// Encode converts s to the named charset. Invalid UTF-8 in s and characters the charset cannot represent are an
// error that matches ErrInvalid; nothing is replaced by '?'. "utf-16" output starts with a BOM and is little
// endian, as iconv-lite writes it; "utf-16le" and "utf-16be" have no BOM.
func Encode(name string, s string) ([]byte, error) {
	c, err := resolve(name)
	if err != nil {
		return nil, err
	}
	switch c.kind {
	case kindUTF8:
		if !utf8.ValidString(s) {
			return nil, c.unencodable(s, firstInvalidUTF8([]byte(s)))
		}
		return []byte(s), nil
	case kindASCII:
		for i := 0; i < len(s); i++ {
			if s[i] >= utf8.RuneSelf {
				return nil, c.unencodable(s, i)
			}
		}
		return []byte(s), nil
	case kindSingle:
		return c.encodeSingle(s)
	case kindUTF16, kindUTF16LE, kindUTF16BE:
		return c.encodeUTF16(s)
	}
	if !utf8.ValidString(s) {
		return nil, c.unencodable(s, firstInvalidUTF8([]byte(s)))
	}
	out, err := c.enc.NewEncoder().Bytes([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrInvalid, c.name, err)
	}
	return out, nil
}

// unencodable reports the character at byte offset i of s.
func (c *charset) unencodable(s string, i int) error {
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n <= 1 {
		return fmt.Errorf("%w %s: invalid UTF-8 byte 0x%02X at offset %d", ErrInvalid, c.name, s[i], i)
	}
	return fmt.Errorf("%w %s: character %U %q at offset %d cannot be represented", ErrInvalid, c.name, r, r, i)
}

func (c *charset) encodeSingle(s string) ([]byte, error) {
	cm := c.charmap()
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			out = append(out, s[i])
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		b, ok := cm.EncodeRune(r)
		if !ok || (r == utf8.RuneError && n <= 1) {
			return nil, c.unencodable(s, i)
		}
		out = append(out, b)
		i += n
	}
	return out, nil
}

func (c *charset) encodeUTF16(s string) ([]byte, error) {
	be := c.kind == kindUTF16BE
	out := make([]byte, 0, 2*len(s)+2)
	put := func(u uint16) {
		if be {
			out = append(out, byte(u>>8), byte(u))
		} else {
			out = append(out, byte(u), byte(u>>8))
		}
	}
	if c.kind == kindUTF16 {
		put(0xFEFF)
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return nil, c.unencodable(s, i)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			put(uint16(r1))
			put(uint16(r2))
		} else {
			put(uint16(r))
		}
		i += n
	}
	return out, nil
}
