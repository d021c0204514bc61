package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// Service managers DefaultRestart knows.
const (
	managerSystemd = "systemd"
	managerLaunchd = "launchd"
	managerWindows = "windows"
)

// DefaultRestart returns a Restart for the way the agent runs: through its
// service manager when it is the installed service (systemd unit
// medplum-agent run as root, launchd job dev.medplum-agent, Windows service
// MedplumAgent), otherwise by re-executing exe with argv in place (not
// possible on Windows). exe "" means os.Executable(), resolved now, before
// the binary is replaced; when the upgrade was staged, exe starts the staged
// binary (ExecStaged).
func DefaultRestart(exe string, argv []string) (func(context.Context) error, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	cgroup, _ := os.ReadFile("/proc/self/cgroup") // absent outside Linux
	switch detectManager(runtime.GOOS, os.Getenv, string(cgroup), service.IsWindowsService(), os.Geteuid()) {
	case managerSystemd:
		// --no-block: stopping the unit kills its whole cgroup, systemctl
		// included, so it must not wait for the job.
		return command("systemctl", "restart", "--no-block", service.Name+".service"), nil
	case managerLaunchd:
		// kickstart -k kills the running job (us) and starts it again.
		return command("launchctl", "kickstart", "-k", "system/"+service.LaunchdLabel), nil
	case managerWindows:
		// The SCM stops the service, and with it this process; a detached
		// helper outlives it to start the service again.
		return func(context.Context) error {
			script := fmt.Sprintf("net stop %[1]s & net start %[1]s", service.WindowsName)
			cmd := exec.Command("cmd.exe", "/C", script)
			cmd.SysProcAttr = detached()
			if err := cmd.Start(); err != nil {
				return err
			}
			return cmd.Process.Release()
		}, nil
	}
	return func(context.Context) error { return reexec(exe, argv) }, nil
}

// command runs an administration program in its own session, so that the
// stop it triggers does not kill it half-way.
func command(name string, args ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.SysProcAttr = detached()
		out, err := cmd.CombinedOutput()
		if err != nil {
			line := strings.Join(append([]string{name}, args...), " ")
			if msg := strings.TrimSpace(string(out)); msg != "" {
				return fmt.Errorf("%s: %w: %s", line, err, msg)
			}
			return fmt.Errorf("%s: %w", line, err)
		}
		return nil
	}
}

// detectManager tells which service manager to restart this process
// through, or "" to re-execute in place: systemd puts a service in the
// cgroup named after its unit, launchd sets XPC_SERVICE_NAME to the job
// label, and Windows asks the SCM.
func detectManager(goos string, getenv func(string) string, cgroup string, windowsService bool, euid int) string {
	switch goos {
	case "linux":
		// Only root may restart the unit: the packaged one runs as user
		// medplum-agent, whom systemd refuses (polkit's manage-units wants
		// an admin). Re-executing in place keeps the main PID that systemd
		// supervises.
		for line := range strings.SplitSeq(cgroup, "\n") {
			if strings.HasSuffix(line, "/"+service.Name+".service") && euid == 0 {
				return managerSystemd
			}
		}
	case "darwin":
		if getenv("XPC_SERVICE_NAME") == service.LaunchdLabel {
			return managerLaunchd
		}
	case "windows":
		if windowsService {
			return managerWindows
		}
	}
	return ""
}

// errNoReexec is returned where a process cannot replace itself.
var errNoReexec = errors.New("cannot restart in place: run the agent as the MedplumAgent service to upgrade it")
