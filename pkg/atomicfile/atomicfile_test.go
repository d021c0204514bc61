package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	tests := []struct {
		name    string
		perm    os.FileMode
		fill    func(io.Writer) error
		want    string // content after
		wantErr bool
	}{
		{"create", 0o600, func(w io.Writer) error { _, err := io.WriteString(w, "one"); return err }, "one", false},
		{"replace with another mode", 0o644, func(w io.Writer) error { _, err := io.WriteString(w, "two"); return err }, "two", false},
		{"failed fill keeps the old content", 0o600, func(w io.Writer) error {
			io.WriteString(w, "partial")
			return errors.New("boom")
		}, "two", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Write(path, tt.perm, tt.fill)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Write err = %v, want error %v", err, tt.wantErr)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tt.want {
				t.Fatalf("content %q %v, want %q", got, err, tt.want)
			}
			if !tt.wantErr {
				if st, _ := os.Stat(path); st.Mode().Perm() != tt.perm {
					t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.perm)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("%d entries in the directory, want 1 (no temporary file left)", len(entries))
			}
		})
	}
}
