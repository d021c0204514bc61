package service

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteProperties(t *testing.T) {
	set := [][2]string{{"baseUrl", "https://example.test/"}, {"clientSecret", "a=b"}}
	defaults := [][2]string{{"logger.main.logDir", "/var/log/x"}}
	written := "baseUrl=https://example.test/\nclientSecret=a=b\nlogger.main.logDir=/var/log/x\n"
	tests := []struct {
		name      string
		existing  string // "" means no file
		mode      os.FileMode
		dryRun    bool
		want      Action
		wantFile  string
		wantMode  os.FileMode
		wantError bool
	}{
		{name: "new file", want: Created, wantFile: written, wantMode: 0o600},
		{name: "new file, dry run", dryRun: true, want: Created},
		{
			name:     "other settings are kept, defaults do not override",
			existing: "#comment\nlogger.main.logDir=/srv/logs\nzeta=1\nalpha=2\nclientSecret=old\n", mode: 0o600,
			want:     Updated,
			wantFile: "baseUrl=https://example.test/\nclientSecret=a=b\nlogger.main.logDir=/srv/logs\nalpha=2\nzeta=1\n", wantMode: 0o600,
		},
		{name: "same settings in another order", existing: "logger.main.logDir=/var/log/x\nclientSecret=a=b\nbaseUrl=https://example.test/\n", mode: 0o600,
			want: Unchanged, wantFile: "logger.main.logDir=/var/log/x\nclientSecret=a=b\nbaseUrl=https://example.test/\n", wantMode: 0o600},
		{name: "too open", existing: written, mode: 0o644, want: Updated, wantFile: written, wantMode: 0o600},
		{name: "too open, dry run", existing: written, mode: 0o644, dryRun: true, want: Updated, wantFile: written, wantMode: 0o644},
		{name: "unreadable existing file", existing: "no equals sign\n", mode: 0o600, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.properties")
			if tt.existing != "" {
				if err := os.WriteFile(path, []byte(tt.existing), tt.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			got, err := WriteProperties(path, set, defaults, tt.dryRun)
			if tt.wantError {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("action = %s, want %s", got, tt.want)
			}
			b, err := os.ReadFile(path)
			if tt.wantFile == "" {
				if !os.IsNotExist(err) {
					t.Fatalf("file written in a dry run: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantFile, string(b)); diff != "" {
				t.Errorf("file (-want +got):\n%s", diff)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.wantMode {
				t.Errorf("mode = %#o, want %#o", fi.Mode().Perm(), tt.wantMode)
			}
		})
	}
}
