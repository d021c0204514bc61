package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost stands in for the operating system: it records every command and
// keeps just enough systemd and launchd state to answer the queries the
// managers make, so that Install can be run twice.
type fakeHost struct {
	root  string
	admin bool
	exe   string
	users map[string]int // name -> uid (= gid)

	calls  []string
	chowns map[string]string // path under root -> "uid:gid"
	failOn string            // a command line that fails

	// systemd
	enabled, active bool
	// launchd
	loaded bool
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{systemdRunning, "/etc", "/usr/lib/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fakeHost{root: root, admin: true, exe: "/usr/local/bin/medplum-agent", users: map[string]int{}, chowns: map[string]string{}}
}

func (f *fakeHost) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	f.calls = append(f.calls, line)
	if line == f.failOn {
		return []byte("boom"), fmt.Errorf("%s: exit status 1: boom", line)
	}
	switch name {
	case "useradd":
		f.users[args[len(args)-1]] = 990
	case "systemctl":
		switch args[0] {
		case "show":
			return f.show(), nil
		case "enable":
			f.enabled = true
		case "disable":
			f.enabled = false
		case "start", "restart":
			f.active = true
		case "stop":
			f.active = false
		}
	case "launchctl":
		switch args[0] {
		case "print":
			if !f.loaded {
				return []byte("Could not find service"), errors.New("exit status 113")
			}
			return []byte("system/dev.medplum-agent = {\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n}\n"), nil
		case "bootstrap":
			f.loaded = true
		case "bootout":
			f.loaded = false
		}
	}
	return nil, nil
}

func (f *fakeHost) show() []byte {
	load, fragment := "not-found", ""
	for _, p := range []string{localUnit, packagedUnit} {
		if exists(filepath.Join(f.root, p)) {
			load, fragment = "loaded", p
			break
		}
	}
	file, state, sub, pid := "disabled", "inactive", "dead", 0
	if f.enabled {
		file = "enabled"
	}
	if f.active {
		state, sub, pid = "active", "running", 4242
	}
	return fmt.Appendf(nil, "LoadState=%s\nActiveState=%s\nSubState=%s\nUnitFileState=%s\nMainPID=%d\nFragmentPath=%s\n",
		load, state, sub, file, pid, fragment)
}

func (f *fakeHost) LookupUser(name string) (int, int, error) {
	id, ok := f.users[name]
	if !ok {
		return 0, 0, fmt.Errorf("%w %s", ErrUnknownUser, name)
	}
	return id, id, nil
}

func (f *fakeHost) Chown(path string, uid, gid int) error {
	rel, err := filepath.Rel(f.root, path)
	if err != nil {
		return err
	}
	f.chowns["/"+rel] = fmt.Sprintf("%d:%d", uid, gid)
	return nil
}

func (f *fakeHost) IsAdmin() bool               { return f.admin }
func (f *fakeHost) Executable() (string, error) { return f.exe, nil }

// takeCalls returns the commands run since the last call.
func (f *fakeHost) takeCalls() []string {
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeHost) read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (f *fakeHost) mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(filepath.Join(f.root, path))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

var testProps = [][2]string{
	{"baseUrl", "https://example.test/"},
	{"clientId", "client-1"},
	{"clientSecret", "s3cret=with=equals"},
	{"agentId", "agent-1"},
}

// withSecret returns testProps with another secret.
func withSecret(secret string) [][2]string {
	p := append([][2]string(nil), testProps...)
	p[2][1] = secret
	return p
}
