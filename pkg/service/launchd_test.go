package service

import (
	"context"
	"encoding/xml"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLaunchdInstall(t *testing.T) {
	job := "job system/dev.medplum-agent"
	fresh := []Step{
		{Action: Created, Target: macStateDir},
		{Action: Created, Target: macConfig},
		{Action: Created, Target: plistPath},
		{Action: Started, Target: job},
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, f *fakeHost, m Manager)
		opts      InstallOptions
		wantSteps []Step
		wantCalls []string
	}{
		{
			name:      "fresh host",
			opts:      InstallOptions{Properties: testProps},
			wantSteps: fresh,
			wantCalls: []string{"launchctl print system/dev.medplum-agent", "launchctl enable system/dev.medplum-agent",
				"launchctl bootstrap system /Library/LaunchDaemons/dev.medplum-agent.plist"},
		},
		{
			name:      "dry run",
			opts:      InstallOptions{Properties: testProps, DryRun: true},
			wantSteps: fresh,
			wantCalls: []string{"launchctl print system/dev.medplum-agent"},
		},
		{
			name:      "second run is a no-op",
			setup:     install(testProps),
			opts:      InstallOptions{Properties: testProps},
			wantSteps: []Step{{Action: Unchanged, Target: macConfig}, {Action: Unchanged, Target: plistPath}, {Action: Unchanged, Target: job, Note: "loaded"}},
			wantCalls: []string{"launchctl print system/dev.medplum-agent"},
		},
		{
			name:      "new secret restarts",
			setup:     install(testProps),
			opts:      InstallOptions{Properties: withSecret("rotated")},
			wantSteps: []Step{{Action: Updated, Target: macConfig}, {Action: Unchanged, Target: plistPath}, {Action: Restarted, Target: job}},
			wantCalls: []string{"launchctl print system/dev.medplum-agent", "launchctl kickstart -k system/dev.medplum-agent"},
		},
		{
			name: "moved binary reloads the job",
			setup: func(t *testing.T, f *fakeHost, m Manager) {
				install(testProps)(t, f, m)
				f.exe = "/opt/medplum/medplum-agent"
			},
			opts:      InstallOptions{Properties: testProps},
			wantSteps: []Step{{Action: Unchanged, Target: macConfig}, {Action: Updated, Target: plistPath}, {Action: Restarted, Target: job}},
			wantCalls: []string{"launchctl print system/dev.medplum-agent", "launchctl bootout system/dev.medplum-agent",
				"launchctl bootstrap system /Library/LaunchDaemons/dev.medplum-agent.plist"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHost(t)
			m := NewLaunchd(f, f.root)
			if tt.setup != nil {
				tt.setup(t, f, m)
			}
			f.takeCalls()
			steps, err := m.Install(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
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

func TestLaunchdPlist(t *testing.T) {
	tests := []struct {
		exe     string
		want    string
		wantErr bool
	}{
		{exe: "/usr/local/bin/medplum-agent", want: "/usr/local/bin/medplum-agent"},
		{exe: "/opt/a&b/medplum-agent", want: "/opt/a&b/medplum-agent"},
		{exe: "/opt/medplum/medplum-agent", want: "/opt/medplum/medplum-agent"},
		{exe: "/Users/me/medplum-agent", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.exe, func(t *testing.T) {
			b, err := renderPlist(tt.exe)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The plist stays well-formed XML and runs the binary first.
			var doc struct {
				Dict struct {
					Arrays []struct {
						Strings []string `xml:"string"`
					} `xml:"array"`
				} `xml:"dict"`
			}
			if err := xml.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			args := doc.Dict.Arrays[0].Strings
			want := []string{tt.want, "run", "--config", macConfig, "--data-dir", macStateDir}
			if diff := cmp.Diff(want, args); diff != "" {
				t.Errorf("ProgramArguments (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLaunchdUninstallAndStatus(t *testing.T) {
	f := newFakeHost(t)
	m := NewLaunchd(f, f.root)
	install(testProps)(t, f, m)
	st, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Manager: "launchd", Name: LaunchdLabel, Config: macConfig, Installed: true, Enabled: true, Running: true,
		State: "running", PID: 4242, UnitFile: plistPath}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	f.takeCalls()
	steps, err := m.Uninstall(context.Background(), UninstallOptions{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	wantSteps := []Step{{Action: Stopped, Target: "job system/dev.medplum-agent"}, {Action: Removed, Target: plistPath}, {Action: Removed, Target: macStateDir}}
	if diff := cmp.Diff(wantSteps, steps); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if got := strings.Join(f.takeCalls(), "\n"); got != "launchctl print system/dev.medplum-agent\nlaunchctl bootout system/dev.medplum-agent" {
		t.Errorf("commands:\n%s", got)
	}
	st, err = m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Installed || st.State != "not installed" {
		t.Errorf("after uninstall: %+v", st)
	}
}
