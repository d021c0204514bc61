package hl7

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with the file at path, or rewrites the file with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func readMessage(t testing.TB, name string) (string, *Message) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(string(b))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return string(b), m
}

var fixedNow = time.Date(2024, 3, 15, 9, 15, 0, 7_000_000, time.UTC)

// dump renders what the model sees in a message, for golden comparison.
func dump(m *Message) string {
	var b strings.Builder
	d := m.Delimiters()
	fmt.Fprintf(&b, "string: %q\n", m.String())
	fmt.Fprintf(&b, "delimiters: %q\n", []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent})
	code, trigger, structure := m.Type()
	fmt.Fprintf(&b, "type: %q %q %q\n", code, trigger, structure)
	fmt.Fprintf(&b, "control id: %q\n", m.ControlID())
	for i, s := range m.Segments() {
		fmt.Fprintf(&b, "segment %d: %s (%d fields)\n", i+1, s.Name(), s.NumFields())
		for f := 1; f <= s.NumFields(); f++ {
			if raw := s.Field(f); raw != "" {
				path := fmt.Sprintf("%s-%d", s.Name(), f)
				fmt.Fprintf(&b, "  %-7s raw %q", path, raw)
				if dec := d.decode(raw); dec != raw {
					fmt.Fprintf(&b, " decoded %q", dec)
				}
				b.WriteByte('\n')
			}
		}
	}
	ack := BuildAck(m, AA, AckOptions{Now: fixedNow, ControlID: "ACK-1"})
	fmt.Fprintf(&b, "ack: %q\n", ack.String())
	return b.String()
}

func TestGoldenMessages(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test messages: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			in, m := readMessage(t, name)
			out := m.String()
			// Input that is already canonical (single CRs, at most one trailing) must come back byte for byte.
			canonical := !strings.Contains(in, "\n") && !strings.Contains(in, "\r\r")
			if canonical && out != in {
				t.Errorf("round trip changed the message:\n in %q\nout %q", in, out)
			}
			if strings.ContainsRune(out, '\n') {
				t.Errorf("String() contains LF: %q", out)
			}
			m2, err := Parse(out)
			if err != nil {
				t.Fatalf("reparse: %v", err)
			}
			if got := m2.String(); got != out {
				t.Errorf("second round trip differs:\n%q\n%q", out, got)
			}
			golden(t, filepath.Join("testdata", strings.TrimSuffix(name, ".hl7")+".golden"), []byte(dump(m)))
		})
	}
}

func TestGoldenAcks(t *testing.T) {
	errSeg := NewSegment("ERR", "", "PID^1^3", "", "E", "101^Required field missing^HL70357")
	tests := []struct {
		name  string
		input string
		code  AckCode
		opt   AckOptions
	}{
		{name: "adt_aa", input: "adt_a01.hl7", code: AA},
		{name: "oru_ca", input: "oru_r01.hl7", code: CA},
		{name: "oru_ce_reason", input: "oru_r01.hl7", code: CE, opt: AckOptions{Text: "Queue full | retry ^ later"}},
		{name: "type_only_ar", input: "minimal_type_only.hl7", code: AR},
		{name: "custom_delims_ae_err", input: "custom_delims.hl7", code: AE,
			opt: AckOptions{Text: "bad#value$here", ErrorSegment: errSeg}},
		{name: "hash_cr", input: "field_sep_hash.hl7", code: CR},
		{name: "truncation_aa", input: "truncation_char.hl7", code: AA},
		{name: "short_msh2_aa", input: "short_msh2.hl7", code: AA},
		{name: "empty_version_aa", input: "empty_fields.hl7", code: AA, opt: AckOptions{ErrorSegment: errSeg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m := readMessage(t, tt.input)
			opt := tt.opt
			opt.Now = fixedNow
			opt.ControlID = "ACK" + tt.name
			ack := BuildAck(m, tt.code, opt)
			out := ack.String()
			golden(t, filepath.Join("testdata", "ack", tt.name+".golden"), []byte(out))
			if strings.HasSuffix(out, "\r") {
				t.Errorf("ACK ends with CR: %q", out)
			}
			back, err := Parse(out)
			if err != nil {
				t.Fatalf("ACK does not parse: %v", err)
			}
			text := opt.Text
			if text == "" {
				text = tt.code.DefaultText()
			}
			got := []string{string(AckCodeOf(back)), back.Get("MSA-2"), back.Get("MSA-3"), back.ControlID()}
			want := []string{string(tt.code), m.ControlID(), text, opt.ControlID}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ACK fields (-want +got):\n%s", diff)
			}
			if back.Delimiters() != m.Delimiters() {
				t.Errorf("delimiters %+v, want %+v", back.Delimiters(), m.Delimiters())
			}
		})
	}
}
