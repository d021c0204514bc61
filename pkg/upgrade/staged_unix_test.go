//go:build unix

package upgrade

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/internal/readonly"
)

// A staged "binary" here is a shell script answering `version --json`.
func versionScript(version string) string {
	return "#!/bin/sh\necho '{\"version\":\"" + version + "\",\"commit\":\"unknown\"}'\n"
}

func TestCheckStaged(t *testing.T) {
	tests := []struct {
		name       string
		body       string // the staged file; "" for none
		mode, dir  os.FileMode
		symlink    bool // staged is a link to the script
		isSelf     bool // staged is the running executable
		otherOwner bool
		guard      bool // this process was started by ExecStaged
		running    string
		wantVer    string
		wantUse    bool
		wantErr    string
	}{
		{name: "no file", running: "1.0.0"},
		{name: "newer", body: versionScript("1.1.0"), running: "1.0.0-abcdef1", wantVer: "1.1.0", wantUse: true},
		{name: "newer than a dev build", body: versionScript("1.1.0"), running: "0.0.0-dev", wantVer: "1.1.0", wantUse: true},
		{name: "equal", body: versionScript("1.1.0-abcdef1"), running: "1.1.0", wantVer: "1.1.0-abcdef1"},
		{name: "older: the package was upgraded since", body: versionScript("1.1.0"), running: "1.2.0-abcdef1", wantVer: "1.1.0"},
		{name: "group-writable", body: versionScript("1.1.0"), mode: 0o775, running: "1.0.0", wantErr: "medplum-agent is writable by group or others (mode 0775)"},
		{name: "world-writable directory", body: versionScript("1.1.0"), dir: 0o777, running: "1.0.0", wantErr: "bin is writable by group or others (mode 0777)"},
		{name: "owned by another user", body: versionScript("1.1.0"), otherOwner: true, running: "1.0.0", wantErr: "neither root nor this user"},
		{name: "symlink", body: versionScript("1.1.0"), symlink: true, running: "1.0.0", wantErr: "not a regular file"},
		{name: "the running executable", body: versionScript("1.1.0"), isSelf: true, running: "1.0.0"},
		{name: "already re-executed", body: versionScript("1.1.0"), guard: true, running: "1.0.0"},
		{name: "does not start", body: "#!/bin/sh\nexit 3\n", running: "1.0.0", wantErr: "exit status 3"},
		{name: "invalid version", body: versionScript("latest"), running: "1.0.0", wantErr: `invalid version "latest"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.guard {
				t.Setenv(stagedEnv, "1")
			}
			dataDir := t.TempDir()
			path := stagedPath(dataDir)
			uid := os.Geteuid()
			if tt.body != "" {
				mkdir(t, filepath.Dir(path), or(tt.dir, 0o700))
				target := path
				if tt.symlink {
					target = filepath.Join(dataDir, "elsewhere")
					if err := os.Symlink(target, path); err != nil {
						t.Fatal(err)
					}
				}
				writeExec(t, target, tt.body, or(tt.mode, 0o755))
				if tt.otherOwner {
					if uid == 0 {
						if err := os.Chown(path, 65534, 65534); err != nil {
							t.Fatal(err)
						}
					} else {
						uid++ // the file stays the test user's
					}
				}
			}
			self := filepath.Join(dataDir, "running")
			if tt.isSelf {
				self = path
			}
			ver, use, err := checkStaged(context.Background(), path, self, tt.running, uid)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ver != tt.wantVer || use != tt.wantUse {
				t.Errorf("checkStaged = %q, %v; want %q, %v", ver, use, tt.wantVer, tt.wantUse)
			}
		})
	}
}

// or is v, or def when v is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func writeExec(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// When the executable's directory is read-only (root's /usr/bin under
// ProtectSystem=strict), Apply installs into the data dir and leaves the
// executable alone; a failed restart takes the staged binary back. The
// running version is 4.2.9.
func TestApplyStagesBesideReadOnlyExecutable(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		tag        string // default v4.3.0
		previous   string // an earlier staged binary
		restartErr error
		wantErr    string
		want, old  string // staged and staged.old afterwards
	}{
		{name: "first upgrade", want: "new binary", old: "<none>"},
		{name: "second upgrade", previous: "staged binary", want: "new binary", old: "staged binary"},
		{name: "first upgrade, restart fails", restartErr: boom, wantErr: "boom", want: "<none>", old: "<none>"},
		{name: "second upgrade, restart fails", previous: "staged binary", restartErr: boom, wantErr: "boom", want: "staged binary", old: "<none>"},
		{name: "forced reinstall", tag: "v4.2.9", wantErr: "4.2.9 would not take over from 4.2.9-abcdef1 there: use the package manager", want: "<none>", old: "<none>"},
		{name: "forced downgrade", tag: "v4.1.0", previous: "staged binary", wantErr: "4.1.0 would not take over", want: "staged binary", old: "<none>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.restartErr = tt.restartErr
			staged := stagedPath(f.dataDir)
			if tt.previous != "" {
				mkdir(t, filepath.Dir(staged), 0o700)
				writeExec(t, staged, tt.previous, 0o755)
			}
			if err := readonly.Dir(t, filepath.Dir(f.exe)); err != nil {
				t.Skip(err)
			}
			tag := or(tt.tag, "v4.3.0")
			rs := serve(t, release{tag: tag, assets: map[string][]byte{"medplum-agent-linux-amd64": []byte("new binary")}})
			p, err := Plan(context.Background(), f.options(rs), Request{Force: true})
			if err != nil {
				t.Fatal(err)
			}
			err = p.Apply(context.Background())
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
			}
			want := unchanged
			if tt.wantErr == "" || tt.restartErr != nil {
				want.Restarts = 1
			}
			if tt.wantErr == "" {
				want.UpgradeJSON = `{"previousVersion":"4.2.9-abcdef1","targetVersion":"4.3.0","callback":null}`
			}
			if diff := cmp.Diff(want, f.state(t)); diff != "" {
				t.Errorf("executable (-want +got):\n%s", diff)
			}
			got := []string{readOr(t, staged), readOr(t, staged+".old")}
			if diff := cmp.Diff([]string{tt.want, tt.old}, got); diff != "" {
				t.Errorf("staged, staged.old (-want +got):\n%s", diff)
			}
			if st, err := os.Stat(staged); err == nil && st.Mode().Perm() != 0o755 {
				t.Errorf("staged mode %v, want 0755", st.Mode().Perm())
			}
		})
	}
}
