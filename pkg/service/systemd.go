package service

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// systemdUnit is the unit the packages ship; Install writes it, with the
// binary's real path, when the packaged one is absent.
//
//go:embed packaging/medplum-agent.service
var systemdUnit []byte

// Linux locations. They match the unit's ExecStart, StateDirectory and
// LogsDirectory.
const (
	unitName       = Name + ".service"
	packagedBinary = "/usr/bin/" + Name
	packagedUnit   = "/usr/lib/systemd/system/" + unitName
	localUnit      = "/etc/systemd/system/" + unitName
	linuxConfigDir = "/etc/" + Name
	linuxConfig    = linuxConfigDir + "/agent.properties"
	linuxStateDir  = "/var/lib/" + Name
	linuxLogDir    = "/var/log/" + Name
)

// systemdRunning is present exactly when systemd is PID 1 (sd_booted).
const systemdRunning = "/run/systemd/system"

var errNoSystemd = errors.New("systemd is not running on this host (no " + systemdRunning + "); run `medplum-agent run` under your own supervisor instead")

// systemd manages the agent as a systemd system service running as the
// medplum-agent user.
type systemd struct {
	host Host
	root string // prefix of every path; tests point it at a temporary directory
}

// NewSystemd returns the Linux manager. root prefixes every file path it
// touches ("" for the real system).
func NewSystemd(h Host, root string) Manager { return &systemd{host: h, root: root} }

func (s *systemd) Kind() string       { return "systemd" }
func (s *systemd) ConfigPath() string { return linuxConfig }

func (s *systemd) path(p string) string { return filepath.Join(s.root, p) }

func (s *systemd) Preflight() error {
	if !s.host.IsAdmin() {
		return ErrNotAdmin
	}
	if !exists(s.path(systemdRunning)) {
		return errNoSystemd
	}
	return nil
}

func (s *systemd) Install(ctx context.Context, opts InstallOptions) ([]Step, error) {
	if !opts.DryRun && !s.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	if !exists(s.path(systemdRunning)) {
		return nil, errNoSystemd
	}
	var steps []Step
	uid, gid, err := s.host.LookupUser(Name)
	if errors.Is(err, ErrUnknownUser) {
		if !opts.DryRun {
			if _, err := s.host.Run(ctx, "useradd", "--system", "--user-group", "--home-dir", linuxStateDir,
				"--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "Medplum agent", Name); err != nil {
				return steps, err
			}
			if uid, gid, err = s.host.LookupUser(Name); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Created, Target: "user " + Name})
	} else if err != nil {
		return steps, err
	}

	// The directory is root's, readable by the service's group only; the
	// file in it is the service user's, so that nobody else can read the
	// secret.
	if dir := s.path(linuxConfigDir); !exists(dir) {
		if !opts.DryRun {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return steps, err
			}
			if err := s.host.Chown(dir, 0, gid); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Created, Target: linuxConfigDir})
	}
	cfg := s.path(linuxConfig)
	logDefaults := [][2]string{{"logger.main.logDir", linuxLogDir}, {"logger.channel.logDir", linuxLogDir}}
	action, err := WriteProperties(cfg, opts.Properties, logDefaults, opts.DryRun)
	if err != nil {
		return steps, err
	}
	if !opts.DryRun {
		if err := s.host.Chown(cfg, uid, gid); err != nil {
			return steps, err
		}
	}
	steps = append(steps, Step{Action: action, Target: linuxConfig})
	changed := action != Unchanged

	if exists(s.path(packagedUnit)) {
		steps = append(steps, Step{Action: Kept, Target: packagedUnit, Note: "installed by the package"})
	} else {
		exe, err := s.host.Executable()
		if err != nil {
			return steps, err
		}
		unit, err := renderUnit(exe)
		if err != nil {
			return steps, err
		}
		action, err := writeFile(s.path(localUnit), unit, 0o644, opts.DryRun)
		if err != nil {
			return steps, err
		}
		steps = append(steps, Step{Action: action, Target: localUnit})
		if action != Unchanged {
			changed = true
			if !opts.DryRun {
				if _, err := s.host.Run(ctx, "systemctl", "daemon-reload"); err != nil {
					return steps, err
				}
			}
		}
	}

	st, err := s.show(ctx)
	if err != nil {
		return steps, err
	}
	target := "service " + unitName
	if !strings.HasPrefix(st["UnitFileState"], "enabled") {
		if err := s.systemctl(ctx, opts.DryRun, "enable", unitName); err != nil {
			return steps, err
		}
		steps = append(steps, Step{Action: Enabled, Target: target})
	}
	// A running agent reads its configuration only at start.
	verb, action := "start", Started
	switch {
	case st["ActiveState"] != "active":
	case changed:
		verb, action = "restart", Restarted
	default:
		return append(steps, Step{Action: Unchanged, Target: target, Note: "running"}), nil
	}
	if err := s.systemctl(ctx, opts.DryRun, verb, unitName); err != nil {
		return steps, err
	}
	steps = append(steps, Step{Action: action, Target: target})
	return steps, nil
}

// systemctl runs systemctl unless this is a dry run. start and restart
// wait until the agent reports READY=1 or fails.
func (s *systemd) systemctl(ctx context.Context, dryRun bool, args ...string) error {
	if dryRun {
		return nil
	}
	_, err := s.host.Run(ctx, "systemctl", args...)
	return err
}

// renderUnit returns the packaged unit, pointed at exe when the binary is
// not where the packages put it.
func renderUnit(exe string) ([]byte, error) {
	if exe == packagedBinary {
		return systemdUnit, nil
	}
	if err := checkExecutable(exe); err != nil {
		return nil, err
	}
	return bytes.ReplaceAll(systemdUnit, []byte("ExecStart="+packagedBinary+" "), []byte("ExecStart="+exe+" ")), nil
}

// show returns the unit properties Install, Uninstall and Status look at.
// systemctl show answers for unknown units too (LoadState=not-found).
func (s *systemd) show(ctx context.Context) (map[string]string, error) {
	out, err := s.host.Run(ctx, "systemctl", "show", unitName,
		"--property=LoadState,ActiveState,SubState,UnitFileState,MainPID,FragmentPath")
	if err != nil {
		return nil, err
	}
	props := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			props[k] = v
		}
	}
	return props, nil
}

func (s *systemd) Uninstall(ctx context.Context, opts UninstallOptions) ([]Step, error) {
	if !opts.DryRun && !s.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	if !exists(s.path(systemdRunning)) {
		return nil, errNoSystemd
	}
	st, err := s.show(ctx)
	if err != nil {
		return nil, err
	}
	var steps []Step
	target := "service " + unitName
	switch st["ActiveState"] {
	case "active", "activating", "reloading", "deactivating":
		if err := s.systemctl(ctx, opts.DryRun, "stop", unitName); err != nil {
			return steps, err
		}
		steps = append(steps, Step{Action: Stopped, Target: target})
	}
	if strings.HasPrefix(st["UnitFileState"], "enabled") {
		if err := s.systemctl(ctx, opts.DryRun, "disable", unitName); err != nil {
			return steps, err
		}
		steps = append(steps, Step{Action: Disabled, Target: target})
	}
	n := len(steps)
	if steps, err = removePath(s.path(localUnit), localUnit, opts.DryRun, steps); err != nil {
		return steps, err
	}
	if len(steps) > n {
		if err := s.systemctl(ctx, opts.DryRun, "daemon-reload"); err != nil {
			return steps, err
		}
	}
	if exists(s.path(packagedUnit)) {
		steps = append(steps, Step{Action: Kept, Target: packagedUnit, Note: "belongs to the package; remove the package to delete it"})
	}
	if !opts.Purge {
		if exists(s.path(linuxConfig)) {
			steps = append(steps, Step{Action: Kept, Target: linuxConfig, Note: "--purge deletes it with the state and logs"})
		}
		return steps, nil
	}
	for _, dir := range []string{linuxConfigDir, linuxStateDir, linuxLogDir} {
		if steps, err = removePath(s.path(dir), dir, opts.DryRun, steps); err != nil {
			return steps, err
		}
	}
	return steps, nil
}

func (s *systemd) Status(ctx context.Context) (Status, error) {
	st := Status{Manager: s.Kind(), Name: unitName, Config: linuxConfig, State: "not installed"}
	if !exists(s.path(systemdRunning)) {
		return st, errNoSystemd
	}
	props, err := s.show(ctx)
	if err != nil {
		return st, err
	}
	if props["LoadState"] != "loaded" {
		return st, nil
	}
	st.Installed = true
	st.Enabled = strings.HasPrefix(props["UnitFileState"], "enabled")
	st.Running = props["ActiveState"] == "active"
	st.State = props["ActiveState"]
	if sub := props["SubState"]; sub != "" {
		st.State += " (" + sub + ")"
	}
	st.PID, _ = strconv.Atoi(props["MainPID"]) // 0 when not running
	st.UnitFile = props["FragmentPath"]
	return st, nil
}
