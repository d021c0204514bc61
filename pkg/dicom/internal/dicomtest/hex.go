// Package dicomtest holds helpers shared by the DICOM packages' tests:
// annotated hex golden files and dcmtk interop plumbing.
package dicomtest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

// ParseHex decodes an annotated hex dump: whitespace-separated byte pairs,
// "quoted ASCII" runs, and # comments to the end of the line.
func ParseHex(src string) ([]byte, error) {
	var out []byte
	for ln, line := range strings.Split(src, "\n") {
		for line = strings.TrimSpace(line); line != "" && line[0] != '#'; line = strings.TrimSpace(line) {
			if line[0] == '"' {
				end := strings.IndexByte(line[1:], '"')
				if end < 0 {
					return nil, fmt.Errorf("line %d: unterminated string", ln+1)
				}
				out = append(out, line[1:1+end]...)
				line = line[2+end:]
				continue
			}
			tok, rest, _ := strings.Cut(line, " ")
			b, err := hex.DecodeString(tok)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", ln+1, err)
			}
			out = append(out, b...)
			line = rest
		}
	}
	return out, nil
}

// FormatHex renders b as 16 space-separated hex bytes per line, under a
// comment line.
func FormatHex(comment string, b []byte) string {
	var sb strings.Builder
	if comment != "" {
		fmt.Fprintf(&sb, "# %s\n", comment)
	}
	for len(b) > 0 {
		n := min(16, len(b))
		for i, c := range b[:n] {
			if i > 0 {
				sb.WriteByte(' ')
			}
			fmt.Fprintf(&sb, "%02x", c)
		}
		sb.WriteByte('\n')
		b = b[n:]
	}
	return sb.String()
}

// Golden compares got with the hex golden file at path. With update set it
// rewrites the file instead (losing its annotations) when the bytes differ.
func Golden(t *testing.T, path string, got []byte, update bool) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil && !(update && os.IsNotExist(err)) {
		t.Fatal(err)
	}
	want, perr := ParseHex(string(src))
	if update && (err != nil || perr != nil || !bytes.Equal(want, got)) {
		if err := os.WriteFile(path, []byte(FormatHex("regenerated with -update; check against a capture", got)), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if perr != nil {
		t.Fatalf("%s: %v", path, perr)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s: bytes differ\n got: %x\nwant: %x", path, got, want)
	}
}

// MustHex reads and parses a hex golden file.
func MustHex(t testing.TB, path string) []byte {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseHex(string(src))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}
