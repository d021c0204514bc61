package astm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRecordsGolden renders every records file as JSON and compares it with
// testdata/astm/golden/records/*.json (rewrite with -update).
func TestRecordsGolden(t *testing.T) {
	for _, path := range globTestdata(t, "records/*.astm") {
		name := strings.TrimSuffix(filepath.Base(path), ".astm")
		t.Run(name, func(t *testing.T) {
			src := readTestdata(t, "records/"+name+".astm")
			recs, err := ParseRecords(src)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(recs), len(splitLines(string(src))); got != want {
				t.Errorf("%d records, want %d", got, want)
			}
			got, err := json.MarshalIndent(recs, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join(testdata, "golden", "records", name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("JSON differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestParseRecordsDialects(t *testing.T) {
	t.Run("biorad repeats and C records", func(t *testing.T) {
		recs, err := ParseRecords(readTestdata(t, "records/biorad-ihcom-v52-bloodtype.astm"))
		if err != nil {
			t.Fatal(err)
		}
		var types string
		for _, r := range recs {
			types += string(r.Type())
		}
		if types != "HPORCRCRCRCL" {
			t.Errorf("record types %s", types)
		}
		o := recs[2]
		if o.Repeats(4) != 2 || o.Component(4, 2, 1) != "1122206642" {
			t.Errorf("O-4 repeats = %d, second = %q", o.Repeats(4), o.Component(4, 2, 1))
		}
		r := recs[3]
		if got := r.Component(3, 1, 6); got != "Bloodgroup: A,B,D Confirmation for Patients (DiaClon) (5005)" {
			t.Errorf("R-3.6 = %q", got)
		}
	})
	t.Run("euroimmun decimal commas kept", func(t *testing.T) {
		recs, err := ParseRecords(readTestdata(t, "records/euroimmun-analyzer1-sampleigg.astm"))
		if err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, r := range recs {
			if r.Type() == 'R' {
				values = append(values, r.Value(4))
			}
		}
		if len(values) == 0 || values[0] != ">8" || !containsComma(values) {
			t.Errorf("R values %q", values)
		}
	})
	t.Run("horiba doubled backslashes", func(t *testing.T) {
		recs, err := ParseRecords(readTestdata(t, "records/horiba-yumizen-h550-result.astm"))
		if err != nil {
			t.Fatal(err)
		}
		if d := recs[0].Delimiters(); d != DefaultDelimiters {
			t.Errorf("delimiters %+v", d)
		}
		h := recs[0]
		if h.Field(2) != `\\^&` || h.Component(5, 1, 1) != "H550" || h.Component(5, 1, 3) != "1.2.1.4" {
			t.Errorf("H-2 %q, H-5 %q", h.Field(2), h.Components(5, 1))
		}
		m := recs[3]
		if m.Type() != 'M' || m.Component(6, 1, 1) != "FLOATLE-stream/deflate:base64" || !strings.HasPrefix(m.Component(6, 1, 2), "Y2AAAQ4n") {
			t.Errorf("M-6 = %.60q", m.Field(6))
		}
	})
}

func containsComma(values []string) bool {
	for _, v := range values {
		if strings.Contains(v, ",") {
			return true
		}
	}
	return false
}

func TestRecordAccessors(t *testing.T) {
	body := "H|\\^&|||Sim^1|||||||P|LIS2-A2\r" +
		"R|1|^^^GLU&S&X|9&F&5|a&R&b&E&c|&Xe9&|&H&bold&N&|&|&x|A\\B^C\\D|unpaired&|x&Z01&\n" +
		"\n" +
		"H!@#$!x!1!a@b#c$d\r\n" +
		"P!2!a@b#c!q$F$r\n"
	recs, err := ParseRecords([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[1]
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"type", string(r.Type()), "R"},
		{"fields", r.NumFields(), 11},
		{"raw field", r.Field(3), "^^^GLU&S&X"},
		{"component escape", r.Component(3, 1, 4), "GLU^X"},
		{"field escape", r.Value(4), "9|5"},
		{"repeat and escape escapes", r.Value(5), "a\\b&c"},
		{"hex escape", r.Value(6), "\xe9"},
		{"highlighting kept", r.Value(7), "&H&bold&N&"},
		{"escaped delimiter not split", r.Value(8), "|x"},
		{"repeats", r.Repeats(9), 3},
		{"components of repeat 2", r.Components(9, 2), []string{"B", "C"}},
		{"unpaired escape kept", r.Value(10), "unpaired&"},
		{"local escape kept", r.Value(11), "x&Z01&"},
		{"missing field", r.Field(40), ""},
		{"missing repeat", r.Components(9, 4), []string(nil)},
		{"missing component", r.Component(9, 1, 9), ""},
		{"missing field repeats", r.Repeats(0), 0},
		{"sequence", ptrSeq(r), 1},
		{"H has no sequence", ptrSeq(recs[0]), -1},
		{"H-2 kept whole", recs[0].Components(2, 1), []string{"\\^&"}},
		{"H-2 value", recs[0].Value(2), "\\^&"},
		{"custom delimiters", recs[2].Delimiters(), Delimiters{Field: '!', Repeat: '@', Component: '#', Escape: '$'}},
		{"custom split", recs[3].Components(3, 2), []string{"b", "c"}},
		{"custom escape", recs[3].Value(4), "q!r"},
		{"zero record", Record{}.Type(), byte(0)},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func ptrSeq(r Record) int {
	if n, ok := r.Sequence(); ok {
		return n
	}
	return -1
}

func TestParseRecordsErrors(t *testing.T) {
	for _, in := range []string{"H", "Hello world", "H|a^&", "H| ^&", "P|1\nH|\\^\x01"} {
		if _, err := ParseRecords([]byte(in)); err == nil {
			t.Errorf("ParseRecords(%q) succeeded", in)
		}
	}
	for _, in := range []string{"", "\r\n\n", "H|", "H|\\", "H|\\^", "P|1||x"} {
		if _, err := ParseRecords([]byte(in)); err != nil {
			t.Errorf("ParseRecords(%q) = %v", in, err)
		}
	}
	recs, _ := ParseRecords([]byte("H|\\\nP|1|a^b\\c&S&d"))
	if d := recs[0].Delimiters(); d != (Delimiters{Field: '|', Repeat: '\\'}) {
		t.Errorf("short header delimiters %+v", d)
	}
	if got := recs[1].Components(3, 2); !cmp.Equal(got, []string{"c&S&d"}) {
		t.Errorf("without component or escape delimiters: %q", got)
	}
}

func TestRecordJSON(t *testing.T) {
	recs, err := ParseRecords([]byte("H|\\^&\rR|1|^^^GLU|95|A\\B^C\r"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"type":"H","fields":["H","\\^\u0026"],"text":"H|\\^\u0026"},` +
		`{"type":"R","sequence":1,"fields":["R","1",["","","","GLU"],"95",[["A"],["B","C"]]],"text":"R|1|^^^GLU|95|A\\B^C"}]`
	if string(got) != want {
		t.Errorf("JSON\n got %s\nwant %s", got, want)
	}
}

func FuzzParseRecords(f *testing.F) {
	for _, p := range globTestdata(f, "records/*.astm") {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("H|\\^&\rR|1|&|&&X4&&S&|&\r"))
	f.Add([]byte("H!@#$\nP!1!a$F$b@c#d$"))
	f.Fuzz(func(t *testing.T, in []byte) {
		recs, err := ParseRecords(in)
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.Text() == "" || strings.ContainsAny(r.Text(), "\r\n") {
				t.Fatalf("record text %q", r.Text())
			}
			var joined []string
			for n := 1; n <= r.NumFields(); n++ {
				joined = append(joined, r.Field(n))
				for rep := 1; rep <= r.Repeats(n); rep++ {
					_ = r.Components(n, rep)
				}
				_ = r.Value(n)
			}
			if strings.Join(joined, string(r.Delimiters().Field)) != r.Text() {
				t.Fatalf("fields of %q do not join back", r.Text())
			}
			b, err := json.Marshal(r)
			if err != nil || !json.Valid(b) {
				t.Fatalf("MarshalJSON: %v", err)
			}
		}
	})
}
