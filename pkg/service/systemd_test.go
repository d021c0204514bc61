package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const showCall = "systemctl show medplum-agent.service --property=LoadState,ActiveState,SubState,UnitFileState,MainPID,FragmentPath"

const useraddCall = "useradd --system --user-group --home-dir /var/lib/medplum-agent --no-create-home --shell /usr/sbin/nologin --comment Medplum agent medplum-agent"

func TestSystemdInstall(t *testing.T) {
	svcTarget := "service medplum-agent.service"
	fresh := []Step{
		{Action: Created, Target: "user medplum-agent"},
		{Action: Created, Target: "/etc/medplum-agent"},
		{Action: Created, Target: "/etc/medplum-agent/agent.properties"},
		{Action: Created, Target: "/etc/systemd/system/medplum-agent.service"},
		{Action: Enabled, Target: svcTarget},
		{Action: Started, Target: svcTarget},
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, f *fakeHost, m Manager) // runs before the Install under test
		opts      InstallOptions
		wantSteps []Step
		wantCalls []string
		wantErr   string
	}{
		{
			name:      "fresh host",
			opts:      InstallOptions{Properties: testProps},
			wantSteps: fresh,
			wantCalls: []string{useraddCall, "systemctl daemon-reload", showCall,
				"systemctl enable medplum-agent.service", "systemctl start medplum-agent.service"},
		},
		{
			name:      "dry run changes nothing",
			opts:      InstallOptions{Properties: testProps, DryRun: true},
			wantSteps: fresh,
			wantCalls: []string{showCall},
		},
		{
			name:      "second run is a no-op",
			setup:     install(testProps),
			opts:      InstallOptions{Properties: testProps},
			wantSteps: []Step{{Action: Unchanged, Target: "/etc/medplum-agent/agent.properties"}, {Action: Unchanged, Target: "/etc/systemd/system/medplum-agent.service"}, {Action: Unchanged, Target: svcTarget, Note: "running"}},
			wantCalls: []string{showCall},
		},
		{
			name:      "new secret restarts",
			setup:     install(testProps),
			opts:      InstallOptions{Properties: withSecret("rotated")},
			wantSteps: []Step{{Action: Updated, Target: "/etc/medplum-agent/agent.properties"}, {Action: Unchanged, Target: "/etc/systemd/system/medplum-agent.service"}, {Action: Restarted, Target: svcTarget}},
			wantCalls: []string{showCall, "systemctl restart medplum-agent.service"},
		},
		{
			name:  "stopped service is started",
			setup: func(t *testing.T, f *fakeHost, m Manager) { install(testProps)(t, f, m); f.active = false },
			opts:  InstallOptions{Properties: testProps},
			wantSteps: []Step{{Action: Unchanged, Target: "/etc/medplum-agent/agent.properties"}, {Action: Unchanged, Target: "/etc/systemd/system/medplum-agent.service"},
				{Action: Started, Target: svcTarget}},
			wantCalls: []string{showCall, "systemctl start medplum-agent.service"},
		},
		{
			name: "packaged unit is used",
			setup: func(t *testing.T, f *fakeHost, m Manager) {
				writeTestFile(t, filepath.Join(f.root, packagedUnit), string(systemdUnit))
				f.users[Name] = 990
			},
			opts: InstallOptions{Properties: testProps},
			wantSteps: []Step{
				{Action: Created, Target: "/etc/medplum-agent"},
				{Action: Created, Target: "/etc/medplum-agent/agent.properties"},
				{Action: Kept, Target: packagedUnit, Note: "installed by the package"},
				{Action: Enabled, Target: svcTarget},
				{Action: Started, Target: svcTarget},
			},
			wantCalls: []string{showCall, "systemctl enable medplum-agent.service", "systemctl start medplum-agent.service"},
		},
		{
			name:    "needs root",
			setup:   func(t *testing.T, f *fakeHost, m Manager) { f.admin = false },
			opts:    InstallOptions{Properties: testProps},
			wantErr: ErrNotAdmin.Error(),
		},
		{
			name:    "needs systemd",
			setup:   func(t *testing.T, f *fakeHost, m Manager) { os.Remove(filepath.Join(f.root, systemdRunning)) },
			opts:    InstallOptions{Properties: testProps},
			wantErr: "systemd is not running",
		},
		{
			name: "binary in a home directory",
			setup: func(t *testing.T, f *fakeHost, m Manager) {
				f.exe = "/home/me/go/bin/medplum-agent"
				f.users[Name] = 990
			},
			opts:      InstallOptions{Properties: testProps},
			wantSteps: []Step{{Action: Created, Target: "/etc/medplum-agent"}, {Action: Created, Target: "/etc/medplum-agent/agent.properties"}},
			wantErr:   "cannot run /home/me/go/bin/medplum-agent",
		},
		{
			name:      "failing start is reported",
			setup:     func(t *testing.T, f *fakeHost, m Manager) { f.failOn = "systemctl start medplum-agent.service" },
			opts:      InstallOptions{Properties: testProps},
			wantSteps: fresh[:5],
			wantCalls: []string{useraddCall, "systemctl daemon-reload", showCall, "systemctl enable medplum-agent.service", "systemctl start medplum-agent.service"},
			wantErr:   "systemctl start medplum-agent.service: exit status 1: boom",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			m := NewSystemd(f, f.root)
			if tt.setup != nil {
				tt.setup(t, f, m)
			}
			f.takeCalls()
			steps, err := m.Install(context.Background(), tt.opts)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Install error = %v, want %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantSteps, steps); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCalls, f.takeCalls()); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

// install runs a successful Install with props.
func install(props [][2]string) func(*testing.T, *fakeHost, Manager) {
	return func(t *testing.T, f *fakeHost, m Manager) {
		t.Helper()
		if _, err := m.Install(context.Background(), InstallOptions{Properties: props}); err != nil {
			t.Fatal(err)
		}
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSystemdInstallFiles(t *testing.T) {
	f := newFakeHost(t)
	m := NewSystemd(f, f.root)
	// A setting added by hand survives; the log directories default to the
	// unit's LogsDirectory.
	writeTestFile(t, filepath.Join(f.root, linuxConfig), "# old\nlogLevel=DEBUG\nclientSecret=old\n")
	if _, err := m.Install(context.Background(), InstallOptions{Properties: testProps}); err != nil {
		t.Fatal(err)
	}
	wantProps := "baseUrl=https://example.test/\nclientId=client-1\nclientSecret=s3cret=with=equals\nagentId=agent-1\n" +
		"logger.main.logDir=/var/log/medplum-agent\nlogger.channel.logDir=/var/log/medplum-agent\nlogLevel=DEBUG\n"
	if diff := cmp.Diff(wantProps, f.read(t, linuxConfig)); diff != "" {
		t.Errorf("agent.properties (-want +got):\n%s", diff)
	}
	if got := f.mode(t, linuxConfig); got != 0o600 {
		t.Errorf("agent.properties mode = %#o, want 0600", got)
	}
	wantOwners := map[string]string{linuxConfig: "990:990"}
	if diff := cmp.Diff(wantOwners, f.chowns); diff != "" {
		t.Errorf("owners (-want +got):\n%s", diff)
	}
	unit := f.read(t, localUnit)
	if !strings.Contains(unit, "\nExecStart=/usr/local/bin/medplum-agent run --config /etc/medplum-agent/agent.properties --data-dir /var/lib/medplum-agent\n") {
		t.Errorf("unit ExecStart not pointed at the binary:\n%s", unit)
	}
	if got := f.mode(t, localUnit); got != 0o644 {
		t.Errorf("unit mode = %#o, want 0644", got)
	}
}

func TestSystemdUninstall(t *testing.T) {
	svcTarget := "service medplum-agent.service"
	tests := []struct {
		name      string
		installed bool
		opts      UninstallOptions
		wantSteps []Step
		wantCalls []string
		gone      []string // paths that must no longer exist
		kept      []string
	}{
		{
			name:      "keeps the configuration",
			installed: true,
			wantSteps: []Step{{Action: Stopped, Target: svcTarget}, {Action: Disabled, Target: svcTarget}, {Action: Removed, Target: localUnit},
				{Action: Kept, Target: linuxConfig, Note: "--purge deletes it with the state and logs"}},
			wantCalls: []string{showCall, "systemctl stop medplum-agent.service", "systemctl disable medplum-agent.service", "systemctl daemon-reload"},
			gone:      []string{localUnit},
			kept:      []string{linuxConfig, linuxStateDir},
		},
		{
			name:      "purge",
			installed: true,
			opts:      UninstallOptions{Purge: true},
			wantSteps: []Step{{Action: Stopped, Target: svcTarget}, {Action: Disabled, Target: svcTarget}, {Action: Removed, Target: localUnit},
				{Action: Removed, Target: linuxConfigDir}, {Action: Removed, Target: linuxStateDir}},
			wantCalls: []string{showCall, "systemctl stop medplum-agent.service", "systemctl disable medplum-agent.service", "systemctl daemon-reload"},
			gone:      []string{localUnit, linuxConfigDir, linuxStateDir},
		},
		{
			name:      "dry run",
			installed: true,
			opts:      UninstallOptions{Purge: true, DryRun: true},
			wantSteps: []Step{{Action: Stopped, Target: svcTarget}, {Action: Disabled, Target: svcTarget}, {Action: Removed, Target: localUnit},
				{Action: Removed, Target: linuxConfigDir}, {Action: Removed, Target: linuxStateDir}},
			wantCalls: []string{showCall},
			kept:      []string{localUnit, linuxConfig, linuxStateDir},
		},
		{
			name:      "nothing installed",
			wantCalls: []string{showCall},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			m := NewSystemd(f, f.root)
			if tt.installed {
				install(testProps)(t, f, m)
				writeTestFile(t, filepath.Join(f.root, linuxStateDir, "queue.sqlite"), "x")
			}
			f.takeCalls()
			steps, err := m.Uninstall(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantSteps, steps); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCalls, f.takeCalls()); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			for _, p := range tt.gone {
				if exists(filepath.Join(f.root, p)) {
					t.Errorf("%s still exists", p)
				}
			}
			for _, p := range tt.kept {
				if !exists(filepath.Join(f.root, p)) {
					t.Errorf("%s was removed", p)
				}
			}
		})
	}
}

func TestSystemdStatus(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fakeHost, m Manager)
		want  Status
	}{
		{
			name: "not installed",
			want: Status{Manager: "systemd", Name: unitName, Config: linuxConfig, State: "not installed"},
		},
		{
			name:  "running",
			setup: install(testProps),
			want: Status{Manager: "systemd", Name: unitName, Config: linuxConfig, Installed: true, Enabled: true, Running: true,
				State: "active (running)", PID: 4242, UnitFile: localUnit},
		},
		{
			name:  "stopped",
			setup: func(t *testing.T, f *fakeHost, m Manager) { install(testProps)(t, f, m); f.active = false },
			want: Status{Manager: "systemd", Name: unitName, Config: linuxConfig, Installed: true, Enabled: true,
				State: "inactive (dead)", UnitFile: localUnit},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			m := NewSystemd(f, f.root)
			if tt.setup != nil {
				tt.setup(t, f, m)
			}
			got, err := m.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSystemdPreflight(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *fakeHost)
		want  error
	}{
		{name: "ready"},
		{name: "not root", setup: func(f *fakeHost) { f.admin = false }, want: ErrNotAdmin},
		{name: "no systemd", setup: func(f *fakeHost) { os.Remove(filepath.Join(f.root, systemdRunning)) }, want: errNoSystemd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			m := NewSystemd(f, f.root)
			if err := m.Preflight(); !errors.Is(err, tt.want) {
				t.Errorf("Preflight = %v, want %v", err, tt.want)
			}
			if len(f.calls) > 0 {
				t.Errorf("Preflight ran commands: %v", f.calls)
			}
			if _, err := m.Status(context.Background()); tt.want == errNoSystemd && !errors.Is(err, errNoSystemd) {
				t.Errorf("Status = %v, want errNoSystemd", err)
			}
		})
	}
}

// The shipped unit keeps the settings the packaging and the issue rely on.
func TestUnitFile(t *testing.T) {
	unit := string(systemdUnit)
	for _, line := range []string{
		"Type=notify",
		"ExecStart=/usr/bin/medplum-agent run --config /etc/medplum-agent/agent.properties --data-dir /var/lib/medplum-agent",
		"User=medplum-agent",
		"StateDirectory=medplum-agent",
		"LogsDirectory=medplum-agent",
		"Restart=on-failure",
		"RestartPreventExitStatus=78",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"SupplementaryGroups=dialout",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
	if strings.Contains(unit, "\nAmbientCapabilities=CAP_NET_BIND_SERVICE") {
		t.Error("CAP_NET_BIND_SERVICE must stay opt-in")
	}
}
