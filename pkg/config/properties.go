package config

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// MaxPropertiesSize bounds a properties file; real ones are a few hundred
// bytes.
const MaxPropertiesSize = 1 << 20

// ReadProperties parses agent.properties text. Each line is key=value, split
// at the first '=' (so a secret containing '=' is kept whole), with key and
// value trimmed of white space and byte order marks. Blank lines and lines
// starting with '#' or '!' are skipped; CR LF line endings are accepted.
// There are no escapes, continuations or ${} expansion: a value is taken
// literally. A later duplicate key wins. Errors name the line but never its content, which
// may be a secret.
func ReadProperties(r io.Reader) (map[string]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxPropertiesSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxPropertiesSize {
		return nil, fmt.Errorf("properties file is larger than %d bytes", MaxPropertiesSize)
	}
	props := map[string]string{}
	for n, line := range strings.Split(string(data), "\n") {
		line = trim(line)
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = trim(key)
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: expected key=value", n+1)
		case key == "":
			return nil, fmt.Errorf("line %d: empty key", n+1)
		}
		props[key] = trim(value)
	}
	return props, nil
}

// trim removes white space and byte order marks, which editors on Windows
// put at the start of a file, from both ends.
func trim(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' })
}

// encodeProperties renders key/value pairs so that ReadProperties returns
// them unchanged, and rejects pairs for which that is impossible.
func encodeProperties(kv [][2]string) ([]byte, error) {
	var b bytes.Buffer
	for _, p := range kv {
		key, value := p[0], p[1]
		switch {
		case key == "" || key != trim(key) || strings.ContainsAny(key, "=\n") || key[0] == '#' || key[0] == '!':
			return nil, fmt.Errorf("cannot write property key %q", key)
		case value != trim(value) || strings.Contains(value, "\n"):
			// The value may be a secret: name only the key.
			return nil, fmt.Errorf("cannot write the value of %q: it has surrounding space or a line break", key)
		}
		b.WriteString(key)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// WriteProperties replaces the file at path with the given pairs, in order.
// The file is written to a temporary file in the same directory, synced and
// renamed into place, so a crash leaves either the old or the new file. The
// mode is 0600: the file holds the client secret.
func WriteProperties(path string, kv [][2]string) error {
	data, err := encodeProperties(kv)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, 0o600, data)
}
