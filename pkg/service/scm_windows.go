//go:build windows

package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// stateTimeout bounds each wait for the service to reach a state.
const stateTimeout = 30 * time.Second

// scm manages the agent as a Windows service running as LocalSystem. Its
// configuration, state and logs live in %ProgramData%\MedplumAgent, whose
// ACL is narrowed to SYSTEM and Administrators because agent.properties
// holds the client secret.
type scm struct {
	host Host
	dir  string
}

func newWindows(h Host) (Manager, error) {
	base := os.Getenv("ProgramData")
	if base == "" {
		base = `C:\ProgramData`
	}
	return &scm{host: h, dir: filepath.Join(base, WindowsName)}, nil
}

func (w *scm) Kind() string       { return "windows" }
func (w *scm) ConfigPath() string { return filepath.Join(w.dir, "agent.properties") }

// args are the service's command line after the executable.
func (w *scm) args() []string {
	return []string{"run", "--config", w.ConfigPath(), "--data-dir", w.dir}
}

// restrict removes inherited permissions (ProgramData lets every user read)
// and grants full control to SYSTEM and Administrators only, by SID so that
// it works in every language.
func (w *scm) restrict(ctx context.Context) error {
	_, err := w.host.Run(ctx, "icacls", w.dir, "/inheritance:r", "/grant:r",
		"*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F")
	return err
}

func (w *scm) Preflight() error {
	if !w.host.IsAdmin() {
		return ErrNotAdmin
	}
	return nil
}

func (w *scm) Install(ctx context.Context, opts InstallOptions) ([]Step, error) {
	if !opts.DryRun && !w.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	var steps []Step
	if !exists(w.dir) {
		if !opts.DryRun {
			if err := os.MkdirAll(w.dir, 0o700); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Created, Target: w.dir})
	}
	if !opts.DryRun {
		if err := w.restrict(ctx); err != nil {
			return steps, err
		}
	}
	logs := filepath.Join(w.dir, "logs")
	action, err := WriteProperties(w.ConfigPath(), opts.Properties,
		[][2]string{{"logger.main.logDir", logs}, {"logger.channel.logDir", logs}}, opts.DryRun)
	if err != nil {
		return steps, err
	}
	steps = append(steps, Step{Action: action, Target: w.ConfigPath()})
	changed := action != Unchanged

	exe, err := w.host.Executable()
	if err != nil {
		return steps, err
	}
	target := "service " + WindowsName
	m, err := connect(managerAccess(opts.DryRun, windows.SC_MANAGER_CREATE_SERVICE))
	if err != nil {
		return steps, err
	}
	defer m.Disconnect()
	s, err := openService(m, serviceAccess(opts.DryRun, windows.SERVICE_ALL_ACCESS))
	switch {
	case errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST):
		if !opts.DryRun {
			if s, err = w.create(m, exe); err != nil {
				return steps, err
			}
			defer s.Close()
		}
		steps = append(steps, Step{Action: Created, Target: target})
		changed = true
	case err != nil:
		return steps, err
	default:
		defer s.Close()
		cfg, err := s.Config()
		if err != nil {
			return steps, err
		}
		if want := commandLine(exe, w.args()); cfg.BinaryPathName != want || cfg.StartType != mgr.StartAutomatic {
			cfg.BinaryPathName, cfg.StartType = want, mgr.StartAutomatic
			if !opts.DryRun {
				if err := s.UpdateConfig(cfg); err != nil {
					return steps, err
				}
			}
			steps = append(steps, Step{Action: Updated, Target: target})
			changed = true
		}
	}

	running := false
	if s != nil {
		q, err := s.Query()
		if err != nil {
			return steps, err
		}
		running = q.State == svc.Running
	}
	switch {
	case running && !changed:
		return append(steps, Step{Action: Unchanged, Target: target, Note: "running"}), nil
	case opts.DryRun:
	case running:
		if err := stop(s); err != nil {
			return steps, err
		}
		fallthrough
	default:
		if err := s.Start(); err != nil {
			return steps, err
		}
		if err := waitState(s, svc.Running); err != nil {
			return steps, err
		}
	}
	action = Started
	if running {
		action = Restarted
	}
	return append(steps, Step{Action: action, Target: target}), nil
}

// create registers the service: automatic start, restarted 10 s after any
// failure (including a non-zero exit, not only a crash).
func (w *scm) create(m *mgr.Mgr, exe string) (*mgr.Service, error) {
	s, err := m.CreateService(WindowsName, exe, mgr.Config{
		DisplayName: "Medplum Agent",
		Description: "Relays HL7 v2, ASTM, DICOM and TCP device traffic to a Medplum server.",
		StartType:   mgr.StartAutomatic,
	}, w.args()...)
	if err != nil {
		return nil, err
	}
	restart := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: 10 * time.Second}
	err = s.SetRecoveryActions([]mgr.RecoveryAction{restart, restart, restart}, uint32((24 * time.Hour).Seconds()))
	if err == nil {
		err = s.SetRecoveryActionsOnNonCrashFailures(true)
	}
	if err != nil {
		_ = s.Delete()
		s.Close()
		return nil, err
	}
	return s, nil
}

// commandLine is the BinaryPathName CreateService stores for exe and args.
func commandLine(exe string, args []string) string {
	s := syscall.EscapeArg(exe)
	for _, a := range args {
		s += " " + syscall.EscapeArg(a)
	}
	return s
}

// managerAccess and serviceAccess are the rights to ask for: a dry run
// only reads, so that it works without elevation.
func managerAccess(dryRun bool, write uint32) uint32 {
	if dryRun {
		return windows.SC_MANAGER_CONNECT
	}
	return windows.SC_MANAGER_CONNECT | write
}

func serviceAccess(dryRun bool, write uint32) uint32 {
	if dryRun {
		return windows.SERVICE_QUERY_STATUS | windows.SERVICE_QUERY_CONFIG
	}
	return write
}

// connect opens the service manager with only the rights asked for, so that
// status works without elevation.
func connect(access uint32) (*mgr.Mgr, error) {
	h, err := windows.OpenSCManager(nil, nil, access)
	if err != nil {
		return nil, fmt.Errorf("opening the service manager: %w", err)
	}
	return &mgr.Mgr{Handle: h}, nil
}

func openService(m *mgr.Mgr, access uint32) (*mgr.Service, error) {
	name, err := windows.UTF16PtrFromString(WindowsName)
	if err != nil {
		return nil, err
	}
	h, err := windows.OpenService(m.Handle, name, access)
	if err != nil {
		return nil, err
	}
	return &mgr.Service{Name: WindowsName, Handle: h}, nil
}

// stop asks the service to stop and waits until it has.
func stop(s *mgr.Service) error {
	q, err := s.Query()
	if err != nil {
		return err
	}
	if q.State == svc.Stopped {
		return nil
	}
	if q.State != svc.StopPending {
		if _, err := s.Control(svc.Stop); err != nil {
			return err
		}
	}
	return waitState(s, svc.Stopped)
}

// waitState polls until the service reaches want, for at most stateTimeout.
func waitState(s *mgr.Service, want svc.State) error {
	deadline := time.Now().Add(stateTimeout)
	for {
		q, err := s.Query()
		if err != nil {
			return err
		}
		if q.State == want {
			return nil
		}
		if want == svc.Running && q.State == svc.Stopped {
			return fmt.Errorf("service %s stopped while starting (exit code %d, service exit code %d); see the agent's log",
				WindowsName, q.Win32ExitCode, q.ServiceSpecificExitCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s did not reach state %s within %s", WindowsName, stateName(want), stateTimeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "start pending"
	case svc.StopPending:
		return "stop pending"
	case svc.Running:
		return "running"
	case svc.ContinuePending:
		return "continue pending"
	case svc.PausePending:
		return "pause pending"
	case svc.Paused:
		return "paused"
	}
	return fmt.Sprintf("state %d", s)
}

func (w *scm) Uninstall(ctx context.Context, opts UninstallOptions) ([]Step, error) {
	if !opts.DryRun && !w.host.IsAdmin() {
		return nil, ErrNotAdmin
	}
	var steps []Step
	target := "service " + WindowsName
	m, err := connect(managerAccess(opts.DryRun, 0))
	if err != nil {
		return nil, err
	}
	defer m.Disconnect()
	s, err := openService(m, serviceAccess(opts.DryRun, windows.SERVICE_QUERY_STATUS|windows.SERVICE_STOP|windows.DELETE))
	switch {
	case errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST):
	case err != nil:
		return nil, err
	default:
		defer s.Close()
		q, err := s.Query()
		if err != nil {
			return steps, err
		}
		if q.State != svc.Stopped {
			if !opts.DryRun {
				if err := stop(s); err != nil {
					return steps, err
				}
			}
			steps = append(steps, Step{Action: Stopped, Target: target})
		}
		if !opts.DryRun {
			if err := s.Delete(); err != nil {
				return steps, err
			}
		}
		steps = append(steps, Step{Action: Removed, Target: target})
	}
	if !opts.Purge {
		if exists(w.ConfigPath()) {
			steps = append(steps, Step{Action: Kept, Target: w.ConfigPath(), Note: "--purge deletes it with the state and logs"})
		}
		return steps, nil
	}
	return removePath(w.dir, w.dir, opts.DryRun, steps)
}

func (w *scm) Status(ctx context.Context) (Status, error) {
	st := Status{Manager: w.Kind(), Name: WindowsName, Config: w.ConfigPath(), State: "not installed"}
	m, err := connect(managerAccess(true, 0))
	if err != nil {
		return st, err
	}
	defer m.Disconnect()
	s, err := openService(m, serviceAccess(true, 0))
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	defer s.Close()
	q, err := s.Query()
	if err != nil {
		return st, err
	}
	cfg, err := s.Config()
	if err != nil {
		return st, err
	}
	st.Installed = true
	st.Enabled = cfg.StartType == mgr.StartAutomatic
	st.Running = q.State == svc.Running
	st.State = stateName(q.State)
	st.PID = int(q.ProcessId)
	st.UnitFile = cfg.BinaryPathName
	return st, nil
}
