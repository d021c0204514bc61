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
		in   string
		want [][]string
	}{
		{"H|1\nL|1|N", [][]string{{"H|1", "L|1|N"}}},
		{"H|1\r\nL|1|N \r\n\r\n\r\nH|2\rL|2\r", [][]string{{"H|1", "L|1|N "}, {"H|2", "L|2"}}},
		{"# comment\nH|1\n  \t\nL|1\n", [][]string{{"H|1"}, {"L|1"}}},
		{"\n\n", nil},
	}
	for _, tt := range tests {
		var got [][]string
		for _, tx := range ParseTranscript([]byte(tt.in)) {
			var recs []string
			for _, r := range tx {
				recs = append(recs, string(r))
			}
			got = append(got, recs)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseTranscript(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseTranscript(f *testing.F) {
	f.Add(readTestdata(f, "records/immucor-galileo-order.astm"))
	f.Add([]byte("H|1\r\nL|1|N \r\n\r\n# c\rH|2\rL|2\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, tx := range ParseTranscript(in) {
			if len(tx) == 0 {
				t.Fatal("empty transmission")
			}
			for _, r := range tx {
				if len(strings.TrimSpace(string(r))) == 0 || r[0] == '#' || strings.ContainsAny(string(r), "\r\n") {
					t.Fatalf("record %q", r)
				}
			}
		}
		_ = DetectInputFormat(in)
	})
}
