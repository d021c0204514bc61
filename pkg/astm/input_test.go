package astm

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDetectInputFormat(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want InputFormat
	}{
		{"raw capture", readTestdata(t, "framed/immucor-galileo-result.record.e1381.bin"), InputRaw},
		{"raw after blank", []byte("\r\n\x02"), InputRaw},
		{"mnemonic view", readTestdata(t, "framed/immucor-galileo-result.record.e1381.txt"), InputMnemonic},
		{"script", readTestdata(t, "scenarios/L01-establish-and-empty-session.script"), InputScript},
		{"script after comment", []byte("# note\n\n> <ENQ>\n"), InputScript},
		{"records", readTestdata(t, "records/immucor-galileo-result.astm"), InputRecords},
		{"records after comment", []byte("# H|\\^&\nH|\\^&\n"), InputRecords},
		{"empty", nil, InputRecords},
	}
	for _, tt := range tests {
		if got := DetectInputFormat(tt.in); got != tt.want {
			t.Errorf("%s: DetectInputFormat = %v, want %v", tt.name, got, tt.want)
		}
	}
	for _, f := range []InputFormat{InputRecords, InputRaw, InputMnemonic, InputScript} {
		if got, err := ParseInputFormat(f.String()); err != nil || got != f {
			t.Errorf("ParseInputFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if _, err := ParseInputFormat("auto"); err == nil {
		t.Error("ParseInputFormat(auto) succeeded")
	}
	if got := InputFormat(9).String(); got != "InputFormat(9)" {
		t.Errorf("InputFormat(9).String() = %q", got)
	}
}

func TestParseTranscript(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		split Split
		want  [][]string
	}{
		{"blank: one transmission", "H|1\nL|1|N", SplitBlank, [][]string{{"H|1", "L|1|N"}}},
		{"blank: line endings mixed", "H|1\r\nL|1|N \r\n\r\n\r\nH|2\rL|2\r", SplitBlank, [][]string{{"H|1", "L|1|N "}, {"H|2", "L|2"}}},
		{"blank: whitespace line, comment", "# comment\nH|1\n  \t\nL|1\n", SplitBlank, [][]string{{"H|1"}, {"L|1"}}},
		{"blank: H does not split", "H|1\nL|1\nH|2\nL|2\n", SplitBlank, [][]string{{"H|1", "L|1", "H|2", "L|2"}}},
		{"blank: nothing", "\n\n", SplitBlank, nil},
		{"header: each H starts one", "H|1\nP|1\nL|1\nH|2\rL|2\r\nH|3", SplitHeader, [][]string{{"H|1", "P|1", "L|1"}, {"H|2", "L|2"}, {"H|3"}}},
		{"header: blank lines are layout", "H|1\n\nL|1\n\n\nH|2\n\nL|2\n", SplitHeader, [][]string{{"H|1", "L|1"}, {"H|2", "L|2"}}},
		{"header: records before the first H", "# c\nP|0\nH|1\n# H|x\nL|1\n", SplitHeader, [][]string{{"P|0"}, {"H|1", "L|1"}}},
		{"header: nothing", "# only\n\n", SplitHeader, nil},
		{"file: one transmission", "H|1\nL|1\n\nH|2\n\n# c\nL|2\n", SplitFile, [][]string{{"H|1", "L|1", "H|2", "L|2"}}},
		{"file: nothing", " \r\n", SplitFile, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][]string
			for _, tx := range ParseTranscript([]byte(tt.in), tt.split) {
				var recs []string
				for _, r := range tx {
					recs = append(recs, string(r))
				}
				got = append(got, recs)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseTranscript(%q, %v) (-want +got):\n%s", tt.in, tt.split, diff)
			}
		})
	}
}

// FuzzParseTranscript checks that every split mode yields the same records
// in the same order, only grouped differently.
func FuzzParseTranscript(f *testing.F) {
	f.Add(readTestdata(f, "records/immucor-galileo-order.astm"))
	f.Add([]byte("H|1\r\nL|1|N \r\n\r\n# c\rH|2\rL|2\r"))
	f.Add([]byte("P|0\nH|1\n\nH\n\n\nL|1"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var flat [3][][]byte
		for _, split := range []Split{SplitBlank, SplitHeader, SplitFile} {
			txs := ParseTranscript(in, split)
			if split == SplitFile && len(txs) > 1 {
				t.Fatalf("%d transmissions from one file", len(txs))
			}
			for _, tx := range txs {
				if len(tx) == 0 {
					t.Fatal("empty transmission")
				}
				for j, r := range tx {
					if len(strings.TrimSpace(string(r))) == 0 || r[0] == '#' || strings.ContainsAny(string(r), "\r\n") {
						t.Fatalf("record %q", r)
					}
					if split == SplitHeader && j > 0 && r[0] == 'H' {
						t.Fatalf("H record %q does not start a transmission", r)
					}
				}
				flat[split] = append(flat[split], tx...)
			}
		}
		if !cmp.Equal(flat[0], flat[1]) || !cmp.Equal(flat[0], flat[2]) {
			t.Fatalf("split modes disagree on the records: %q", flat)
		}
		_ = DetectInputFormat(in)
	})
}
