package astm

import (
	"bytes"
)

// InputFormat is a replay input format.
type InputFormat int

const (
	InputRecords  InputFormat = iota // E1394 text, one record per line
	InputRaw                         // instrument bytes as on the wire
	InputMnemonic                    // the same in "<STX>" notation
	InputScript                      // a scripted conversation (ParseScript)
)

var inputFormatNames = []string{"records", "raw", "mnemonic", "script"}

func (f InputFormat) String() string { return enumString(inputFormatNames, "InputFormat", f) }

// ParseInputFormat returns the InputFormat named "records", "raw",
// "mnemonic" or "script".
func ParseInputFormat(name string) (InputFormat, error) {
	return parseEnum[InputFormat](inputFormatNames, "format", name)
}

// DetectInputFormat guesses the format of replay input: raw when the first
// non-blank byte is ENQ or STX, script when the first line that is neither
// blank nor a comment starts with "@ " or "> ", mnemonic when the text
// contains <ENQ> or <STX>, records otherwise.
func DetectInputFormat(data []byte) InputFormat {
	if t := bytes.TrimLeft(data, " \t\r\n\x00"); len(t) > 0 && (t[0] == ENQ || t[0] == STX) {
		return InputRaw
	}
	for _, line := range bytes.FieldsFunc(data, func(r rune) bool { return r == '\n' || r == '\r' }) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if bytes.HasPrefix(line, []byte("@ ")) || bytes.HasPrefix(line, []byte("> ")) {
			return InputScript
		}
		break
	}
	if bytes.Contains(data, []byte("<ENQ>")) || bytes.Contains(data, []byte("<STX>")) {
		return InputMnemonic
	}
	return InputRecords
}

// Split says where records input ends one transmission and starts the next.
type Split int

const (
	SplitBlank  Split = iota // a blank line ends a transmission
	SplitHeader              // every H record starts one; blank lines are layout
	SplitFile                // the whole input is one transmission
)

var splitNames = []string{"blank", "header", "file"}

func (s Split) String() string { return enumString(splitNames, "Split", s) }

// ParseSplit returns the Split named "blank", "header" or "file".
func ParseSplit(name string) (Split, error) { return parseEnum[Split](splitNames, "split", name) }

// ParseTranscript splits records input into transmissions of records, as
// split says. Lines end with LF, CR LF or CR; lines starting with '#' are
// comments. Record bytes are kept as they are.
func ParseTranscript(data []byte, split Split) [][][]byte {
	var out [][][]byte
	var cur [][]byte
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	for rest := data; len(rest) > 0; {
		line := rest
		rest = nil
		if end := bytes.IndexAny(line, "\r\n"); end >= 0 {
			sep := 1
			if line[end] == '\r' && end+1 < len(line) && line[end+1] == '\n' {
				sep = 2
			}
			line, rest = line[:end], line[end+sep:]
		}
		switch {
		case len(bytes.TrimSpace(line)) == 0:
			if split == SplitBlank {
				flush()
			}
		case line[0] == '#':
		default:
			if split == SplitHeader && line[0] == 'H' {
				flush()
			}
			cur = append(cur, line)
		}
	}
	flush()
	return out
}
