package servicecmd

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

type fakeManager struct {
	status service.Status
	steps  []service.Step
	err    error
	got    []service.UninstallOptions
}

func (m *fakeManager) Kind() string       { return "systemd" }
func (m *fakeManager) Preflight() error   { return nil }
func (m *fakeManager) ConfigPath() string { return "/etc/medplum-agent/agent.properties" }
func (m *fakeManager) Install(context.Context, service.InstallOptions) ([]service.Step, error) {
	return nil, errors.New("not used")
}
func (m *fakeManager) Uninstall(_ context.Context, o service.UninstallOptions) ([]service.Step, error) {
	m.got = append(m.got, o)
	return m.steps, m.err
}
func (m *fakeManager) Status(context.Context) (service.Status, error) { return m.status, m.err }

func run(t *testing.T, m *fakeManager, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	cmd := NewCmdService(&cmdutil.Factory{IOStreams: ios}, func(ctx context.Context, o *Options) error {
		o.Manager = func() (service.Manager, error) { return m, nil }
		return serviceRun(ctx, o)
	})
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	_, err := cmd.ExecuteC()
	if err != nil {
		errOut.WriteString("Error: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), cmdutil.ExitCode(err)
}

// expectRun runs the command and checks its output and exit code.
func expectRun(t *testing.T, m *fakeManager, args []string, wantOut, wantErr string, wantCode int) {
	t.Helper()
	out, errOut, code := run(t, m, args...)
	if code != wantCode {
		t.Errorf("exit %d, want %d", code, wantCode)
	}
	if diff := cmp.Diff(wantOut, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantErr, errOut); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

var running = service.Status{Manager: "systemd", Name: "medplum-agent.service", Installed: true, Enabled: true, Running: true,
	State: "active (running)", PID: 4242, UnitFile: "/usr/lib/systemd/system/medplum-agent.service", Config: "/etc/medplum-agent/agent.properties"}

func TestStatus(t *testing.T) {
	tests := []struct {
		name     string
		m        *fakeManager
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{
			name: "running",
			m:    &fakeManager{status: running},
			wantOut: "medplum-agent.service (systemd): active (running), enabled, pid 4242\n" +
				"  unit:   /usr/lib/systemd/system/medplum-agent.service\n  config: /etc/medplum-agent/agent.properties\n",
		},
		{
			name:    "not installed",
			m:       &fakeManager{status: service.Status{Manager: "systemd", Name: "medplum-agent.service", State: "not installed", Config: "/etc/medplum-agent/agent.properties"}},
			wantOut: "medplum-agent.service (systemd): not installed\n  config: /etc/medplum-agent/agent.properties\n",
			wantErr: "Install it with: sudo medplum-agent register ... --install-service\n",
		},
		{
			name: "json",
			m:    &fakeManager{status: running},
			args: []string{"--json"},
			wantOut: `{
  "manager": "systemd",
  "name": "medplum-agent.service",
  "installed": true,
  "enabled": true,
  "running": true,
  "state": "active (running)",
  "pid": 4242,
  "unitFile": "/usr/lib/systemd/system/medplum-agent.service",
  "config": "/etc/medplum-agent/agent.properties"
}
`,
		},
		{
			name:     "manager fails",
			m:        &fakeManager{err: errors.New("systemd is not running")},
			wantErr:  "Error: systemd is not running\n",
			wantCode: cmdutil.ExitFailure,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectRun(t, tt.m, append([]string{"status"}, tt.args...), tt.wantOut, tt.wantErr, tt.wantCode)
		})
	}
}

func TestUninstall(t *testing.T) {
	steps := []service.Step{
		{Action: service.Stopped, Target: "service medplum-agent.service"},
		{Action: service.Removed, Target: "/etc/systemd/system/medplum-agent.service"},
		{Action: service.Kept, Target: "/etc/medplum-agent/agent.properties", Note: "--purge deletes it with the state and logs"},
	}
	tests := []struct {
		name     string
		m        *fakeManager
		args     []string
		wantOpts service.UninstallOptions
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{
			name: "steps",
			m:    &fakeManager{steps: steps},
			wantOut: "service medplum-agent.service: stopped\n/etc/systemd/system/medplum-agent.service: removed\n" +
				"/etc/medplum-agent/agent.properties: kept (--purge deletes it with the state and logs)\n",
		},
		{
			name:     "dry run purge",
			m:        &fakeManager{steps: steps[:2]},
			args:     []string{"--purge", "--dry-run"},
			wantOpts: service.UninstallOptions{Purge: true, DryRun: true},
			wantOut: "service medplum-agent.service: would be stopped\n/etc/systemd/system/medplum-agent.service: would be removed\n" +
				"Dry run: nothing was changed.\n",
		},
		{
			name:    "nothing installed",
			m:       &fakeManager{},
			wantOut: "Nothing to uninstall: the service is not installed.\n",
		},
		{
			name:    "json",
			m:       &fakeManager{steps: steps[:1]},
			args:    []string{"--json"},
			wantOut: "{\n  \"dryRun\": false,\n  \"changed\": true,\n  \"steps\": [\n    {\n      \"action\": \"stopped\",\n      \"target\": \"service medplum-agent.service\"\n    }\n  ]\n}\n",
		},
		{
			name:     "not root",
			m:        &fakeManager{err: service.ErrNotAdmin},
			wantErr:  "Error: uninstalling the systemd service: " + service.ErrNotAdmin.Error() + "\n",
			wantCode: cmdutil.ExitFailure,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectRun(t, tt.m, append([]string{"uninstall"}, tt.args...), tt.wantOut, tt.wantErr, tt.wantCode)
			if diff := cmp.Diff([]service.UninstallOptions{tt.wantOpts}, tt.m.got); diff != "" {
				t.Errorf("Uninstall calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"status", "extra"}, {"uninstall", "x"}} {
		_, errOut, code := run(t, &fakeManager{}, args...)
		if code != cmdutil.ExitUsage || !strings.Contains(errOut, "unknown command") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}
