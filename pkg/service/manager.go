package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// Service names. Every platform installs one instance under a fixed name,
// so register, status and uninstall always find it.
const (
	// Name is the systemd unit (medplum-agent.service), the service user
	// and the directory name under /etc, /var/lib and /var/log.
	Name = "medplum-agent"
	// WindowsName is the Windows service name.
	WindowsName = "MedplumAgent"
	// LaunchdLabel is the launchd job label on macOS.
	LaunchdLabel = "dev.medplum-agent"
)

// Action says what a step did (or, in a dry run, would do) to one target.
type Action string

// Actions of a Step.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
	Removed   Action = "removed"
	Enabled   Action = "enabled"
	Started   Action = "started"
	Restarted Action = "restarted"
	Stopped   Action = "stopped"
	Disabled  Action = "disabled"
	Kept      Action = "kept"
	// Verified is for a server resource register only checked.
	Verified Action = "verified"
)

// Step is one thing Install or Uninstall did, in order.
type Step struct {
	Action Action `json:"action"`
	// Target names what was acted on: a path, "user medplum-agent", or
	// "service medplum-agent.service".
	Target string `json:"target"`
	// Note explains a kept or unchanged target, e.g. that a packaged unit
	// belongs to the package manager.
	Note string `json:"note,omitempty"`
}

// Changes reports whether the action changes something.
func (a Action) Changes() bool { return a != Unchanged && a != Kept && a != Verified }

// Changed reports whether any step changed the system.
func Changed(steps []Step) bool {
	for _, s := range steps {
		if s.Action.Changes() {
			return true
		}
	}
	return false
}

// Status is the state of the installed service as its manager reports it.
type Status struct {
	Manager   string `json:"manager"` // systemd, launchd or windows
	Name      string `json:"name"`
	Installed bool   `json:"installed"`
	Enabled   bool   `json:"enabled"`
	Running   bool   `json:"running"`
	// State is the manager's own word for it, e.g. "active (running)",
	// "failed (exit-code)", "stopped".
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
	UnitFile string `json:"unitFile,omitempty"`
	Config   string `json:"config"`
}

// InstallOptions are the inputs of Manager.Install.
type InstallOptions struct {
	// Properties are written to the service's agent.properties in this
	// order; other settings already in the file are kept.
	Properties [][2]string
	// DryRun reports the steps without changing anything.
	DryRun bool
}

// UninstallOptions are the inputs of Manager.Uninstall.
type UninstallOptions struct {
	// Purge also deletes the configuration, the state (including the
	// durable queue) and the logs.
	Purge  bool
	DryRun bool
}

// Manager installs, inspects and removes the agent's service on one
// platform. Implementations never print; they return the steps taken.
type Manager interface {
	// Kind is systemd, launchd or windows.
	Kind() string
	// ConfigPath is where the service reads agent.properties.
	ConfigPath() string
	// Preflight reports what would stop Install before it changes
	// anything: missing administrator rights, no service manager.
	Preflight() error
	// Install writes the configuration, installs the service and starts
	// (or restarts, when something changed) it. Running it again with the
	// same inputs changes nothing.
	Install(ctx context.Context, opts InstallOptions) ([]Step, error)
	// Uninstall stops and removes the service.
	Uninstall(ctx context.Context, opts UninstallOptions) ([]Step, error)
	// Status asks the service manager about the service.
	Status(ctx context.Context) (Status, error)
}

// Host is what managing a service does to the operating system besides
// reading and writing files. Tests replace it with a fake; no test runs a
// real systemctl.
type Host interface {
	// Run runs an administration program (systemctl, useradd, launchctl,
	// icacls) and returns its combined output. Implementations bound the
	// time it may take.
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
	// LookupUser returns the ids of a user, or an error wrapping
	// ErrUnknownUser.
	LookupUser(name string) (uid, gid int, err error)
	// Chown changes the owner of path.
	Chown(path string, uid, gid int) error
	// IsAdmin reports whether the process may install services (root, or
	// an elevated Administrator on Windows).
	IsAdmin() bool
	// Executable is the absolute path of the running binary.
	Executable() (string, error)
}

// Errors of Install and Uninstall.
var (
	ErrUnknownUser = errors.New("unknown user")
	ErrNotAdmin    = errors.New("installing or removing the service needs administrator rights")
	ErrUnsupported = errors.New("no supported service manager on this platform")
)

// New returns the manager of the running platform, acting on the real
// system.
func New() (Manager, error) {
	h := osHost{}
	switch runtime.GOOS {
	case "linux":
		return NewSystemd(h, ""), nil
	case "darwin":
		return NewLaunchd(h, ""), nil
	case "windows":
		return newWindows(h)
	}
	return nil, fmt.Errorf("%w (%s)", ErrUnsupported, runtime.GOOS)
}

// checkExecutable refuses a binary that a hardened service cannot run: one
// in a home or temporary directory (hidden by ProtectHome and PrivateTmp,
// and typical of `go run`), or with characters a unit or plist would need
// quoting for.
func checkExecutable(exe string) error {
	for _, dir := range []string{"/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/", "/Users/", "/private/var/folders/"} {
		if strings.HasPrefix(exe, dir) {
			return fmt.Errorf("the service cannot run %s from %s: install the binary first (e.g. to /usr/local/bin)", exe, dir)
		}
	}
	if strings.ContainsAny(exe, " \t\n\"'\\$%;") {
		return fmt.Errorf("the service cannot run %q: move the binary to a path without spaces or special characters", exe)
	}
	return nil
}

// writeFile writes data to path with perm unless it already holds exactly
// that, and reports what it did (or would do).
func writeFile(path string, data []byte, perm os.FileMode, dryRun bool) (Action, error) {
	old, err := os.ReadFile(path)
	action := Updated
	switch {
	case errors.Is(err, os.ErrNotExist):
		action = Created
	case err != nil:
		return "", err
	case string(old) == string(data):
		return Unchanged, nil
	}
	if dryRun {
		return action, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := atomicfile.WriteBytes(path, perm, data); err != nil {
		return "", err
	}
	return action, nil
}

// removePath deletes path (recursively) if it exists and reports it.
func removePath(path, target string, dryRun bool, steps []Step) ([]Step, error) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return steps, nil
	} else if err != nil {
		return steps, err
	}
	if !dryRun {
		if err := os.RemoveAll(path); err != nil {
			return steps, err
		}
	}
	return append(steps, Step{Action: Removed, Target: target}), nil
}

// exists reports whether path exists; other errors count as absent, which
// at worst makes a later write report the real error.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
