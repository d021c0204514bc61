package config

import (
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadProperties(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		err  string
	}{
		{
			name: "reference file",
			in:   "baseUrl=https://api.medplum.com/\nclientId=abc\nclientSecret=s3cr3t\nagentId=123\n",
			want: map[string]string{"baseUrl": "https://api.medplum.com/", "clientId": "abc", "clientSecret": "s3cr3t", "agentId": "123"},
		},
		{
			name: "value keeps every = after the first",
			in:   "clientSecret = ab=cd==\n",
			want: map[string]string{"clientSecret": "ab=cd=="},
		},
		{
			name: "value is literal",
			in:   `clientSecret=ab\cd:ef${x}#g!h` + "\n",
			want: map[string]string{"clientSecret": `ab\cd:ef${x}#g!h`},
		},
		{
			name: "comments, blank lines, CRLF, BOM and spaces",
			in:   "\uFEFF# comment=1\r\n\r\n  ! other=2\r\n\t key \t=\t value with spaces \r\n",
			want: map[string]string{"key": "value with spaces"},
		},
		{
			name: "empty value and later duplicate",
			in:   "a=\nb=1\nb=2",
			want: map[string]string{"a": "", "b": "2"},
		},
		{name: "empty", in: "", want: map[string]string{}},
		{name: "line without =", in: "a=1\nclientSecret s3cr3t\n", err: "line 2: expected key=value"},
		{name: "empty key", in: "\n\n=s3cr3t", err: "line 3: empty key"},
		{name: "too large", in: strings.Repeat("#", MaxPropertiesSize+1), err: "properties file is larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadProperties(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestWriteProperties(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.properties")
	if err := os.WriteFile(path, []byte("old=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kv := [][2]string{{"baseUrl", "https://example.com/"}, {"clientSecret", "a=b#c"}, {"agentId", ""}}
	if err := WriteProperties(path, kv); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "baseUrl=https://example.com/\nclientSecret=a=b#c\nagentId=\n"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	bad := []struct {
		kv   [2]string
		want string
	}{
		{kv: [2]string{"", "x"}, want: `cannot write property key ""`},
		{kv: [2]string{"a=b", "x"}, want: `cannot write property key "a=b"`},
		{kv: [2]string{"#a", "x"}, want: `cannot write property key "#a"`},
		{kv: [2]string{" a", "x"}, want: `cannot write property key " a"`},
		{kv: [2]string{"clientSecret", "s3cr3t\n"}, want: `cannot write the value of "clientSecret": it has surrounding space or a line break`},
		{kv: [2]string{"clientSecret", " s3cr3t"}, want: `cannot write the value of "clientSecret": it has surrounding space or a line break`},
	}
	for _, tt := range bad {
		err := WriteProperties(path, [][2]string{tt.kv})
		if err == nil || err.Error() != tt.want {
			t.Errorf("WriteProperties(%q) err = %v, want %q", tt.kv, err, tt.want)
		}
	}
	if err := WriteProperties(filepath.Join(dir, "missing", "agent.properties"), kv); err == nil {
		t.Error("WriteProperties into a missing directory succeeded")
	}
}

// FuzzReadProperties checks that parsing never fails unexpectedly and that
// whatever it returns can be written and read back unchanged.
func FuzzReadProperties(f *testing.F) {
	for _, s := range []string{
		"baseUrl=https://api.medplum.com/\nclientSecret=a=b\n",
		"# c\n! c\n\n k = v \r\n",
		"\uFEFFa=1",
		"novalue\n",
		"=x",
		"a=\x00\xff",
		"logger.main.logLevel=DEBUG\nlogger.channel.maxFileSizeMb=5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		props, err := ReadProperties(strings.NewReader(in))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		var kv [][2]string
		for _, k := range slices.Sorted(maps.Keys(props)) {
			kv = append(kv, [2]string{k, props[k]})
		}
		data, err := encodeProperties(kv)
		if err != nil {
			t.Fatalf("cannot encode what was read: %v", err)
		}
		again, err := ReadProperties(strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("cannot read what was encoded: %v", err)
		}
		if d := cmp.Diff(props, again); d != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", d)
		}
	})
}
