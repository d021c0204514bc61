package register

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/config"
	"github.com/medplum-agent/medplum-agent/pkg/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// The dev server's data set; explicit so that changes to its defaults do not
// move these tests.
const (
	clientID = "test-client"
	secret   = "test-secret-1234"
	agentID  = "7d3c5f2e-0000-4b8e-b6c2-1f0e8d4a5c93"
	address  = "mllp://0.0.0.0:56000"
)

func testConfig() *devserver.Config {
	return &devserver.Config{
		Clients: []devserver.ClientConfig{{ClientID: clientID, ClientSecret: secret}},
		Bots:    []devserver.BotConfig{{ID: "ack", Kind: "ack"}, {ID: "echo", Kind: "echo"}},
		Agents: []devserver.AgentConfig{{
			ID: agentID, Name: "dev-agent", Status: "active",
			Channels: []devserver.ChannelConfig{{Name: "hl7", Address: address, Bot: "ack"}},
		}},
	}
}

func TestParseChannel(t *testing.T) {
	tests := []struct {
		in      string
		want    Channel
		wantErr string
	}{
		{in: "adt=mllp://0.0.0.0:56000,bot=Bot/ack", want: Channel{Name: "adt", Address: "mllp://0.0.0.0:56000", Bot: "Bot/ack"}},
		{in: "lab=tcp://0.0.0.0:5000?startChar=%02,x,bot=echo", want: Channel{Name: "lab", Address: "tcp://0.0.0.0:5000?startChar=%02,x", Bot: "Bot/echo"}},
		{in: "pacs=dicom://0.0.0.0:104", want: Channel{Name: "pacs", Address: "dicom://0.0.0.0:104"}},
		{in: "adt", wantErr: "want NAME=URL"},
		{in: "a b=mllp://h:1", wantErr: "invalid channel name"},
		{in: "adt=http://h:1", wantErr: "want mllp://"},
		{in: "adt=mllp://h", wantErr: "port must be"},
		{in: "adt=mllp://h:70000", wantErr: "port must be"},
		{in: "adt=mllp://h:1,bot=Bot/a/b", wantErr: "invalid bot"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseChannel(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewCmdRegister(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    *Options
		wantErr string
	}{
		{
			name: "name and channels",
			args: []string{"--name", "lab", "--channel", "adt=mllp://0.0.0.0:56000,bot=Bot/ack", "--channel", "raw=tcp://0.0.0.0:5000", "--dry-run", "--json"},
			want: &Options{Name: "lab", Channels: []Channel{{Name: "adt", Address: "mllp://0.0.0.0:56000", Bot: "Bot/ack"}, {Name: "raw", Address: "tcp://0.0.0.0:5000"}},
				Timeout: 30 * time.Second, DryRun: true, JSON: true},
		},
		{
			name: "agent id",
			args: []string{"--agent-id", "abc-1", "--base-url", "https://x.test", "--client-id", "c", "--client-secret-file", "s.txt", "--dir", "d", "--timeout", "5s"},
			want: &Options{AgentID: "abc-1", BaseURL: "https://x.test", ClientID: "c", ClientSecretFile: "s.txt", Dir: "d", Timeout: 5 * time.Second},
		},
		{name: "neither", args: nil, wantErr: "give either --agent-id or --name"},
		{name: "both", args: []string{"--agent-id", "a", "--name", "b"}, wantErr: "give either --agent-id or --name"},
		{name: "channel with agent id", args: []string{"--agent-id", "a", "--channel", "x=mllp://h:1"}, wantErr: "--channel needs --name"},
		{name: "bad agent id", args: []string{"--agent-id", "a/b"}, wantErr: "not a FHIR id"},
		{name: "bad name", args: []string{"--name", "a,b"}, wantErr: "may not contain"},
		{name: "bad channel", args: []string{"--name", "a", "--channel", "x=ftp://h:1"}, wantErr: "want mllp://"},
		{name: "twice", args: []string{"--name", "a", "--channel", "x=mllp://h:1", "--channel", "x=mllp://h:2"}, wantErr: "given twice"},
		{name: "two secrets", args: []string{"--name", "a", "--client-secret", "s", "--client-secret-file", "f"}, wantErr: "only one of"},
		{name: "dir and service", args: []string{"--name", "a", "--dir", "d", "--install-service"}, wantErr: "drop --dir"},
		{name: "timeout", args: []string{"--name", "a", "--timeout", "0s"}, wantErr: "--timeout must be positive"},
		{name: "positional", args: []string{"--name", "a", "extra"}, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ios, _, _, _ := iostreams.Test()
			var got *Options
			cmd := NewCmdRegister(&cmdutil.Factory{IOStreams: ios}, func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			_, err := cmd.ExecuteC()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if code := cmdutil.ExitCode(err); code != cmdutil.ExitUsage {
					t.Errorf("exit code %d, want %d", code, cmdutil.ExitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Options{}, "IO", "Getenv", "WorkDir", "Prompt", "Service")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

// harness runs register against an in-process dev server.
type harness struct {
	t   *testing.T
	srv *devserver.Server
	wd  string
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv, err := devserver.New(devserver.Options{Listen: "127.0.0.1:0", HeartbeatInterval: -1, Config: testConfig()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &harness{t: t, srv: srv, wd: t.TempDir(), env: map[string]string{
		"MEDPLUM_BASE_URL":      srv.BaseURL(),
		"MEDPLUM_CLIENT_ID":     clientID,
		"MEDPLUM_CLIENT_SECRET": secret,
	}}
}

type outcome struct {
	stdout, stderr string
	code           int
}

// run executes register; setup may replace the injected functions.
func (h *harness) run(setup func(*Options), args ...string) outcome {
	h.t.Helper()
	ios, in, out, errOut := iostreams.Test()
	in.WriteString(secret + "\n")
	f := &cmdutil.Factory{
		IOStreams: ios,
		Getenv:    func(k string) string { return h.env[k] },
		WorkDir:   func() (string, error) { return h.wd, nil },
		Now:       time.Now,
	}
	cmd := NewCmdRegister(f, func(ctx context.Context, o *Options) error {
		if setup != nil {
			setup(o)
		}
		return registerRun(ctx, o)
	})
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	_, err := cmd.ExecuteC()
	if err != nil && !cmdutil.IsSilent(err) {
		errOut.WriteString("Error: " + err.Error() + "\n")
	}
	o := outcome{stdout: out.String(), stderr: errOut.String(), code: cmdutil.ExitCode(err)}
	if strings.Contains(o.stdout+o.stderr, secret) {
		h.t.Errorf("the client secret appeared in the output:\n%s\n%s", o.stdout, o.stderr)
	}
	return o
}

func (h *harness) props() map[string]string {
	h.t.Helper()
	path := filepath.Join(h.wd, config.DefaultFileName)
	f, err := os.Open(path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		h.t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		h.t.Errorf("agent.properties mode %#o, want 0600", fi.Mode().Perm())
	}
	p, err := config.ReadProperties(f)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// resources returns the stored resources of a type, decoded.
func resources[T any](h *harness, typ string) []T {
	h.t.Helper()
	var out []T
	for _, raw := range h.srv.Resources(typ) {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestRegisterByName(t *testing.T) {
	h := newHarness(t)
	adt := "adt=mllp://0.0.0.0:57000,bot=Bot/ack"
	lab := "lab=tcp://0.0.0.0:57001,bot=echo"

	// First run creates two Endpoints and the Agent.
	o := h.run(nil, "--name", "lab-site", "--channel", adt, "--channel", lab)
	if o.code != 0 {
		t.Fatalf("exit %d: %s", o.code, o.stderr)
	}
	agents := resources[fhir.Agent](h, "Agent")
	if len(agents) != 2 {
		t.Fatalf("%d Agents, want the default one and the new one", len(agents))
	}
	a := agents[1]
	eps := resources[fhir.Endpoint](h, "Endpoint")
	if len(eps) != 3 {
		t.Fatalf("%d Endpoints, want 3", len(eps))
	}
	wantAgent := fhir.Agent{
		ResourceType: "Agent", ID: a.ID, Meta: a.Meta, Name: "lab-site", Status: "active",
		Identifier: []fhir.Identifier{{System: AgentNameSystem, Value: "lab-site"}},
		Channel: []fhir.AgentChannel{
			{Name: "adt", Endpoint: fhir.Reference{Reference: "Endpoint/" + eps[1].ID}, TargetReference: fhir.Reference{Reference: "Bot/ack"}},
			{Name: "lab", Endpoint: fhir.Reference{Reference: "Endpoint/" + eps[2].ID}, TargetReference: fhir.Reference{Reference: "Bot/echo"}},
		},
	}
	if diff := cmp.Diff(wantAgent, a); diff != "" {
		t.Errorf("Agent (-want +got):\n%s", diff)
	}
	if eps[1].Address != "mllp://0.0.0.0:57000" || eps[2].Address != "tcp://0.0.0.0:57001" || eps[1].Status != "active" {
		t.Errorf("Endpoints: %+v", eps[1:])
	}
	wantProps := map[string]string{"baseUrl": h.srv.BaseURL(), "clientId": clientID, "clientSecret": secret, "agentId": a.ID}
	if diff := cmp.Diff(wantProps, h.props()); diff != "" {
		t.Errorf("agent.properties (-want +got):\n%s", diff)
	}
	propsPath := filepath.Join(h.wd, "agent.properties")
	wantOut := "Agent lab-site (Agent/" + a.ID + "): created\n" +
		"  channel adt  mllp://0.0.0.0:57000 -> Bot/ack  (Endpoint/" + eps[1].ID + "): created\n" +
		"  channel lab  tcp://0.0.0.0:57001 -> Bot/echo  (Endpoint/" + eps[2].ID + "): created\n" +
		"agent.properties " + propsPath + ": created\n"
	if diff := cmp.Diff(wantOut, o.stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if want := "Start the agent with: medplum-agent run --config " + propsPath + "\n"; o.stderr != want {
		t.Errorf("stderr = %q, want %q", o.stderr, want)
	}

	// Second run: nothing changes, and it says so.
	versions := func() []string {
		var v []string
		for _, typ := range []string{"Agent", "Endpoint"} {
			for _, r := range resources[struct{ Meta fhir.Meta }](h, typ) {
				v = append(v, r.Meta.VersionID)
			}
		}
		return v
	}
	before := versions()
	o = h.run(nil, "--name", "lab-site", "--channel", adt, "--channel", lab)
	if o.code != 0 {
		t.Fatalf("second run: exit %d: %s", o.code, o.stderr)
	}
	if diff := cmp.Diff(before, versions()); diff != "" {
		t.Errorf("second run changed resources (-before +after):\n%s", diff)
	}
	wantOut = "Agent lab-site (Agent/" + a.ID + "): unchanged\n" +
		"  channel adt  mllp://0.0.0.0:57000 -> Bot/ack  (Endpoint/" + eps[1].ID + "): unchanged\n" +
		"  channel lab  tcp://0.0.0.0:57001 -> Bot/echo  (Endpoint/" + eps[2].ID + "): unchanged\n" +
		"agent.properties " + propsPath + ": unchanged\n" +
		"Nothing to do: everything was already up to date.\n"
	if diff := cmp.Diff(wantOut, o.stdout); diff != "" {
		t.Errorf("second run stdout (-want +got):\n%s", diff)
	}

	// A new address updates that Endpoint only; the Bot is kept.
	o = h.run(nil, "--name", "lab-site", "--channel", "adt=mllp://0.0.0.0:57010", "--json")
	if o.code != 0 {
		t.Fatalf("third run: exit %d: %s", o.code, o.stderr)
	}
	var res Result
	if err := json.Unmarshal([]byte(o.stdout), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, o.stdout)
	}
	wantRes := Result{
		Changed: true, BaseURL: h.srv.BaseURL(), ClientID: clientID,
		Agent:      Resource{Reference: "Agent/" + a.ID, Name: "lab-site", Action: "unchanged"},
		Endpoints:  []EndpointResult{{Channel: "adt", Address: "mllp://0.0.0.0:57010", Bot: "Bot/ack", Reference: "Endpoint/" + eps[1].ID, Action: "updated"}},
		Properties: service.Step{Action: service.Unchanged, Target: propsPath},
	}
	if diff := cmp.Diff(wantRes, res); diff != "" {
		t.Errorf("--json (-want +got):\n%s", diff)
	}
	if got := resources[fhir.Endpoint](h, "Endpoint")[1].Address; got != "mllp://0.0.0.0:57010" {
		t.Errorf("address after update = %s", got)
	}
}

func TestRegisterDryRun(t *testing.T) {
	h := newHarness(t)
	o := h.run(nil, "--name", "new-site", "--channel", "adt=mllp://0.0.0.0:57000,bot=ack", "--dry-run")
	if o.code != 0 {
		t.Fatalf("exit %d: %s", o.code, o.stderr)
	}
	want := "Agent new-site (new Agent): would be created\n" +
		"  channel adt  mllp://0.0.0.0:57000 -> Bot/ack  (new Endpoint): would be created\n" +
		"agent.properties " + filepath.Join(h.wd, "agent.properties") + ": would be created\n" +
		"Dry run: nothing was changed.\n"
	if diff := cmp.Diff(want, o.stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if n := len(h.srv.Resources("Agent")) + len(h.srv.Resources("Endpoint")); n != 2 {
		t.Errorf("dry run stored resources: %d Agents+Endpoints, want the 2 defaults", n)
	}
	if _, err := os.Stat(filepath.Join(h.wd, "agent.properties")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote agent.properties: %v", err)
	}
}

// An Agent made elsewhere is found by its name, keeps its Bot, and gets
// register's identifier once.
func TestRegisterAdoptsExistingAgent(t *testing.T) {
	h := newHarness(t)
	args := []string{"--name", "dev-agent", "--channel", "hl7=" + address, "--dir", "conf"}
	o := h.run(nil, args...)
	if o.code != 0 {
		t.Fatalf("exit %d: %s", o.code, o.stderr)
	}
	wantOut := "Agent dev-agent (Agent/" + agentID + "): updated\n" +
		"  channel hl7  mllp://0.0.0.0:56000 -> Bot/ack  (Endpoint/" + agentID + "-hl7): unchanged\n" +
		"agent.properties " + filepath.Join(h.wd, "conf", "agent.properties") + ": created\n"
	if diff := cmp.Diff(wantOut, o.stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	agents := resources[fhir.Agent](h, "Agent")
	if len(agents) != 1 || len(agents[0].Identifier) != 1 || agents[0].Channel[0].TargetReference.Reference != "Bot/ack" {
		t.Errorf("Agents: %+v", agents)
	}
	if o = h.run(nil, args...); !strings.Contains(o.stdout, "Nothing to do") {
		t.Errorf("second run:\n%s", o.stdout)
	}
}

// An Agent needs no channels to be registered; no empty arrays are sent.
func TestRegisterWithoutChannels(t *testing.T) {
	h := newHarness(t)
	for _, want := range []string{"created", "unchanged"} {
		o := h.run(nil, "--name", "bare")
		if o.code != 0 || !strings.Contains(o.stdout, "): "+want+"\n") {
			t.Fatalf("exit %d, stdout %q; want %s", o.code, o.stdout, want)
		}
	}
	raw := h.srv.Resources("Agent")[1]
	if strings.Contains(string(raw), "null") || strings.Contains(string(raw), `"channel"`) {
		t.Errorf("Agent = %s", raw)
	}
}

func TestRegisterAgentID(t *testing.T) {
	h := newHarness(t)
	o := h.run(nil, "--agent-id", agentID)
	if o.code != 0 {
		t.Fatalf("exit %d: %s", o.code, o.stderr)
	}
	if want := "Agent dev-agent (Agent/" + agentID + "): verified, channels hl7\n"; !strings.HasPrefix(o.stdout, want) {
		t.Errorf("stdout = %q, want prefix %q", o.stdout, want)
	}
	if got := h.props()["agentId"]; got != agentID {
		t.Errorf("agentId = %q", got)
	}
}

func TestRegisterCredentials(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prompt := func(answer string, err error) func(*Options) {
		return func(o *Options) {
			o.Prompt = func(context.Context, string) (string, error) { return answer, err }
		}
	}
	tests := []struct {
		name      string
		dropEnv   []string
		setup     func(*Options)
		args      []string
		wantCode  int
		wantInErr string
	}{
		{name: "environment", wantCode: 0},
		{name: "secret file", dropEnv: []string{"MEDPLUM_CLIENT_SECRET"}, args: []string{"--client-secret-file", secretFile}},
		{name: "secret on stdin", dropEnv: []string{"MEDPLUM_CLIENT_SECRET"}, args: []string{"--client-secret-file", "-"}},
		{name: "prompt", dropEnv: []string{"MEDPLUM_CLIENT_SECRET"}, setup: prompt(secret, nil)},
		{name: "no secret, not interactive", dropEnv: []string{"MEDPLUM_CLIENT_SECRET"}, wantCode: cmdutil.ExitUsage, wantInErr: "missing client secret"},
		{name: "prompt interrupted", dropEnv: []string{"MEDPLUM_CLIENT_SECRET"}, setup: prompt("", cmdutil.ErrInterrupted), wantCode: cmdutil.ExitInterrupted},
		{name: "wrong secret", args: []string{"--client-secret", "nope"}, wantCode: cmdutil.ExitAuth, wantInErr: "client credentials rejected"},
		{name: "unknown client", args: []string{"--client-id", "nobody"}, wantCode: cmdutil.ExitAuth},
		{name: "missing base url", dropEnv: []string{"MEDPLUM_BASE_URL"}, wantCode: cmdutil.ExitUsage, wantInErr: "missing --base-url"},
		{name: "bad base url", args: []string{"--base-url", "ftp://x"}, wantCode: cmdutil.ExitUsage, wantInErr: "invalid --base-url"},
		{name: "password in base url", args: []string{"--base-url", "https://u:" + secret + "@h/"}, wantCode: cmdutil.ExitUsage, wantInErr: "must not contain '@'"},
		{name: "missing agent", args: []string{"--agent-id", "nope"}, wantCode: cmdutil.ExitFailure, wantInErr: "Agent/nope not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, k := range tt.dropEnv {
				delete(h.env, k)
			}
			args := tt.args
			if !strings.Contains(strings.Join(args, " "), "--agent-id") {
				args = append(args, "--agent-id", agentID)
			}
			o := h.run(tt.setup, args...)
			if o.code != tt.wantCode {
				t.Fatalf("exit %d, want %d: %s", o.code, tt.wantCode, o.stderr)
			}
			if !strings.Contains(o.stderr, tt.wantInErr) {
				t.Errorf("stderr = %q, want %q in it", o.stderr, tt.wantInErr)
			}
			_, err := os.Stat(filepath.Join(h.wd, "agent.properties"))
			if written := err == nil; written != (tt.wantCode == 0) {
				t.Errorf("agent.properties written = %v with exit %d", written, o.code)
			}
		})
	}
}

func TestRegisterServerErrors(t *testing.T) {
	// A port nothing listens on: bind, note it, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()

	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantInErr string
	}{
		{name: "unreachable", args: []string{"--base-url", closed, "--agent-id", "a"}, wantCode: cmdutil.ExitConnect, wantInErr: "cannot reach " + closed},
		{name: "unknown bot", args: []string{"--name", "x", "--channel", "adt=mllp://0.0.0.0:1,bot=Bot/missing"}, wantCode: cmdutil.ExitFailure, wantInErr: "Bot/missing not found"},
		{name: "new channel without bot", args: []string{"--name", "x", "--channel", "adt=mllp://0.0.0.0:1"}, wantCode: cmdutil.ExitFailure, wantInErr: "name its Bot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			o := h.run(nil, tt.args...)
			if o.code != tt.wantCode || !strings.Contains(o.stderr, tt.wantInErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", o.code, o.stderr, tt.wantCode, tt.wantInErr)
			}
			if n := len(h.srv.Resources("Agent")); n != 1 {
				t.Errorf("%d Agents after a failure, want 1", n)
			}
		})
	}
}

// fakeManager records Install calls.
type fakeManager struct {
	got       []service.InstallOptions
	steps     []service.Step
	err       error
	preflight error
}

func (m *fakeManager) Preflight() error { return m.preflight }

func (m *fakeManager) Kind() string       { return "systemd" }
func (m *fakeManager) ConfigPath() string { return "/etc/medplum-agent/agent.properties" }
func (m *fakeManager) Install(_ context.Context, o service.InstallOptions) ([]service.Step, error) {
	m.got = append(m.got, o)
	return m.steps, m.err
}
func (m *fakeManager) Uninstall(context.Context, service.UninstallOptions) ([]service.Step, error) {
	return nil, nil
}
func (m *fakeManager) Status(context.Context) (service.Status, error) { return service.Status{}, nil }

func TestRegisterInstallService(t *testing.T) {
	steps := []service.Step{
		{Action: service.Created, Target: "user medplum-agent"},
		{Action: service.Created, Target: "/etc/medplum-agent/agent.properties"},
		{Action: service.Kept, Target: "/usr/lib/systemd/system/medplum-agent.service", Note: "installed by the package"},
		{Action: service.Started, Target: "service medplum-agent.service"},
	}
	tests := []struct {
		name       string
		preflight  error
		err        error
		args       []string
		wantCode   int
		wantOut    string
		wantErr    string
		wantDryRun bool
	}{
		{
			name: "installed",
			wantOut: "Agent dev-agent (Agent/" + agentID + "): verified, channels hl7\n" +
				"agent.properties /etc/medplum-agent/agent.properties: created\n" +
				"user medplum-agent: created\n" +
				"/usr/lib/systemd/system/medplum-agent.service: kept (installed by the package)\n" +
				"service medplum-agent.service: started\n",
		},
		{name: "not root", preflight: service.ErrNotAdmin, wantCode: cmdutil.ExitFailure, wantErr: "run register with sudo"},
		{
			name: "not root, dry run", preflight: service.ErrNotAdmin, args: []string{"--dry-run"},
			wantOut: "Agent dev-agent (Agent/" + agentID + "): verified, channels hl7\n" +
				"agent.properties /etc/medplum-agent/agent.properties: would be created\n" +
				"user medplum-agent: would be created\n" +
				"/usr/lib/systemd/system/medplum-agent.service: kept (installed by the package)\n" +
				"service medplum-agent.service: would be started\n" +
				"Dry run: nothing was changed.\n",
			wantDryRun: true,
		},
		{name: "install fails", err: errors.New("systemctl start medplum-agent.service: exit status 1"), wantCode: cmdutil.ExitFailure,
			wantErr: "installing the systemd service: systemctl start medplum-agent.service: exit status 1 (the server side is done"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			m := &fakeManager{steps: steps, err: tt.err, preflight: tt.preflight}
			if tt.err != nil {
				m.steps = nil
			}
			o := h.run(func(o *Options) { o.Service = func() (service.Manager, error) { return m, nil } },
				append([]string{"--agent-id", agentID, "--install-service"}, tt.args...)...)
			if o.code != tt.wantCode || !strings.Contains(o.stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q", o.code, o.stderr)
			}
			if diff := cmp.Diff(tt.wantOut, o.stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			want := []service.InstallOptions{{DryRun: tt.wantDryRun, Properties: [][2]string{
				{"baseUrl", h.srv.BaseURL()}, {"clientId", clientID}, {"clientSecret", secret}, {"agentId", agentID},
			}}}
			if tt.preflight != nil && !tt.wantDryRun {
				want = nil // stopped before the server was asked anything
			}
			if diff := cmp.Diff(want, m.got); diff != "" {
				t.Errorf("Install calls (-want +got):\n%s", diff)
			}
		})
	}
}
