package service

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// launchdPlist is the job definition shipped in the macOS archives;
// Install writes it, with the binary's real path.
//
//go:embed packaging/dev.medplum-agent.plist
var launchdPlist []byte

// macOS locations, as named in the plist.
const (
	plistPath     = "/Library/LaunchDaemons/" + LaunchdLabel + ".plist"
	plistBinary   = "/usr/local/bin/" + Name
	macStateDir   = "/Library/Application Support/" + Name
	macConfig     = macStateDir + "/agent.properties"
	macLogDir     = "/Library/Logs/" + Name
	launchdTarget = "system/" + LaunchdLabel
	launchdDomain = "system"
)

// launchd manages the agent as a system-wide launchd job (running as root).
type launchd struct {
	host Host
	root string
}

// NewLaunchd returns the macOS manager. root prefixes every file path it
// touches ("" for the real system).
func NewLaunchd(h Host, root string) Manager { return &launchd{host: h, root: root} }

func (l *launchd) Kind() string       { return "launchd" }
func (l *launchd) ConfigPath() string { return macConfig }

func (l *launchd) path(p string) string { return filepath.Join(l.root, p) }

func (l *launchd) Preflight() error {
	if !l.host.IsAdmin() {
		return ErrNotAdmin
	}
	return nil
}

func (l *launchd) Install(ctx context.Context, opts InstallOptions) ([]Step, error) {
	if !opts.DryRun && !l.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	var steps []Step
	if dir := l.path(macStateDir); !exists(dir) {
		if !opts.DryRun {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Created, Target: macStateDir})
	}
	action, err := WriteProperties(l.path(macConfig), opts.Properties,
		[][2]string{{"logger.main.logDir", macLogDir}, {"logger.channel.logDir", macLogDir}}, opts.DryRun)
	if err != nil {
		return steps, err
	}
	steps = append(steps, Step{Action: action, Target: macConfig})
	configChanged := action != Unchanged

	exe, err := l.host.Executable()
	if err != nil {
		return steps, err
	}
	plist, err := renderPlist(exe)
	if err != nil {
		return steps, err
	}
	action, err = writeFile(l.path(plistPath), plist, 0o644, opts.DryRun)
	if err != nil {
		return steps, err
	}
	steps = append(steps, Step{Action: action, Target: plistPath})
	plistChanged := action != Unchanged

	target := "job " + launchdTarget
	out, loaded := l.print(ctx)
	var cmds [][]string
	switch {
	case !loaded:
		// A job disabled earlier (launchctl disable) refuses to bootstrap.
		cmds = [][]string{{"enable", launchdTarget}, {"bootstrap", launchdDomain, plistPath}}
		action = Started
	case plistChanged:
		// launchd reads a plist only when the job is bootstrapped.
		cmds = [][]string{{"bootout", launchdTarget}, {"bootstrap", launchdDomain, plistPath}}
		action = Restarted
	case configChanged:
		cmds = [][]string{{"kickstart", "-k", launchdTarget}}
		action = Restarted
	case launchdRunState(out) != "running":
		cmds = [][]string{{"kickstart", launchdTarget}}
		action = Started
	default:
		return append(steps, Step{Action: Unchanged, Target: target, Note: "loaded"}), nil
	}
	if !opts.DryRun {
		for _, c := range cmds {
			if _, err := l.host.Run(ctx, "launchctl", c...); err != nil {
				return steps, err
			}
		}
	}
	return append(steps, Step{Action: action, Target: target}), nil
}

// renderPlist returns the shipped plist pointed at exe.
func renderPlist(exe string) ([]byte, error) {
	if exe == plistBinary {
		return launchdPlist, nil
	}
	if err := checkExecutable(exe); err != nil {
		return nil, err
	}
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte(exe)) // writes to a buffer cannot fail
	return bytes.ReplaceAll(launchdPlist, []byte("<string>"+plistBinary+"</string>"), []byte("<string>"+esc.String()+"</string>")), nil
}

// print asks launchd about the job; loaded is false when it does not know
// it.
func (l *launchd) print(ctx context.Context) (out []byte, loaded bool) {
	out, err := l.host.Run(ctx, "launchctl", "print", launchdTarget)
	return out, err == nil
}

func (l *launchd) Uninstall(ctx context.Context, opts UninstallOptions) ([]Step, error) {
	if !opts.DryRun && !l.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	var steps []Step
	if _, loaded := l.print(ctx); loaded {
		if !opts.DryRun {
			if _, err := l.host.Run(ctx, "launchctl", "bootout", launchdTarget); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Stopped, Target: "job " + launchdTarget})
	}
	steps, err := removePath(l.path(plistPath), plistPath, opts.DryRun, steps)
	if err != nil {
		return steps, err
	}
	if !opts.Purge {
		if exists(l.path(macConfig)) {
			steps = append(steps, Step{Action: Kept, Target: macConfig, Note: "--purge deletes it with the state and logs"})
		}
		return steps, nil
	}
	for _, dir := range []string{macStateDir, macLogDir} {
		if steps, err = removePath(l.path(dir), dir, opts.DryRun, steps); err != nil {
			return steps, err
		}
	}
	return steps, nil
}

// launchctl print shows "state = running" and "pid = 123" among many
// other lines.
var (
	launchdState = regexp.MustCompile(`(?m)^\s*state = (.+)$`)
	launchdPID   = regexp.MustCompile(`(?m)^\s*pid = (\d+)$`)
)

// launchdRunState extracts the job state from launchctl print output.
func launchdRunState(out []byte) string {
	if m := launchdState.FindSubmatch(out); m != nil {
		return string(bytes.TrimSpace(m[1]))
	}
	return ""
}

func (l *launchd) Status(ctx context.Context) (Status, error) {
	st := Status{Manager: l.Kind(), Name: LaunchdLabel, Config: macConfig, State: "not installed"}
	if exists(l.path(plistPath)) {
		st.Installed = true
		st.UnitFile = plistPath
		st.State = "not loaded"
	}
	out, loaded := l.print(ctx)
	if !loaded {
		return st, nil
	}
	st.Installed, st.Enabled = true, true
	if state := launchdRunState(out); state != "" {
		st.State = state
	}
	st.Running = st.State == "running"
	if m := launchdPID.FindSubmatch(out); m != nil {
		st.PID, _ = strconv.Atoi(string(m[1]))
	}
	return st, nil
}
