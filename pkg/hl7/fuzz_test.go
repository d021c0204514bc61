package hl7

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b), "PID-3(2).1", "x|y")
	}
	f.Add("MSH|^~\\&|A\rPID|1", "OBX(2)-5.1.2", "a\\b")
	f.Add("MSH#$*!@#A\r\rZZZ#1\n", "ZZZ-9999", "")
	f.Add("MSH|\\|A", "MSH-3", "\\")
	f.Add("MSH|^~\\&\rMSA|AA|\\XC3\\", "MSA-2", "\r\n")

	f.Fuzz(func(t *testing.T, text, path, value string) {
		m, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		out := m.String()
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("String() output does not parse: %v\n%q", err, out)
		}
		if out2 := m2.String(); out2 != out {
			t.Fatalf("unstable round trip:\n%q\n%q", out, out2)
		}
		if m2.Delimiters() != m.Delimiters() || len(m2.Segments()) != len(m.Segments()) {
			t.Fatalf("reparse changed the structure of %q", out)
		}

		_ = m.Get(path)
		_ = m.ControlID()
		_, _, _ = m.Type()
		ack := BuildAck(m, AE, AckOptions{Text: value, Now: time.Unix(0, 0), ControlID: value})
		if a, err := Parse(ack.String()); err != nil {
			t.Fatalf("ACK does not parse: %v\n%q", err, ack.String())
		} else if a.Get("MSA-3") != value && value != "" && m.Delimiters().Escape != 0 {
			t.Fatalf("MSA-3 = %q, want %q", a.Get("MSA-3"), value)
		}

		c := m.Clone()
		if err := c.Set(path, value); err == nil {
			if got := c.Get(path); got != value {
				t.Fatalf("Set(%q, %q) then Get = %q", path, value, got)
			}
			back, err := Parse(c.String())
			if err != nil {
				t.Fatalf("message after Set does not parse: %v\n%q", err, c.String())
			}
			if back.String() != c.String() {
				t.Fatalf("unstable round trip after Set:\n%q\n%q", c.String(), back.String())
			}
		}
		if m.String() != out {
			t.Fatal("writing to a clone changed the original")
		}
		_ = c.SetRaw(path, value)
		if _, err := Parse(c.String()); err != nil {
			t.Fatalf("message after SetRaw does not parse: %v\n%q", err, c.String())
		}
	})
}
