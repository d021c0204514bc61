package devserver

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

const examplePath = "testdata/devserver-example.json"

func TestExampleConfig(t *testing.T) {
	c, err := LoadConfig(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{Config: c})

	var agent fhir.Agent
	if err := s.store.getAs("Agent", "3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6", &agent); err != nil {
		t.Fatal(err)
	}
	var channels []string
	for _, ch := range agent.Channel {
		channels = append(channels, ch.Name+" "+ch.Endpoint.Reference+" "+ch.TargetReference.Reference)
	}
	want := []string{
		"adt Endpoint/3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6-adt Bot/ack",
		"lab Endpoint/3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6-lab Bot/lab-reject",
		"raw Endpoint/raw-endpoint Bot/upper",
		"old Endpoint/3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6-old Bot/ack",
	}
	if diff := cmp.Diff(want, channels); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}
	if len(agent.Setting) != 2 || *agent.Setting[0].ValueBoolean != true || *agent.Setting[1].ValueInteger != 60 {
		t.Errorf("settings = %+v", agent.Setting)
	}
	var ep fhir.Endpoint
	if err := s.store.getAs("Endpoint", "3f0c6a8e-1b2d-4c5e-8f90-a1b2c3d4e5f6-old", &ep); err != nil || ep.Status != "off" {
		t.Errorf("endpoint old = %+v %v", ep, err)
	}
	var dev fhir.Device
	if err := s.store.getAs("Device", "lis", &dev); err != nil || dev.URL != "mllp://127.0.0.1:2575" {
		t.Errorf("device = %+v %v", dev, err)
	}
	login(t, s, "ci-client", "ci-secret")
}

// The example in the package documentation is the testdata file.
func TestDocExampleMatchesTestdata(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), examplePath+"):\n//\n")
	var b strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		code, ok := strings.CutPrefix(line, "//\t")
		if !ok {
			break
		}
		b.WriteString(code + "\n")
	}
	file, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(file), b.String()); diff != "" {
		t.Errorf("doc example differs from %s (-file +doc):\n%s", examplePath, diff)
	}
}

func TestConfigErrors(t *testing.T) {
	const client = `"clients":[{"clientId":"c","clientSecret":"s"}]`
	const agent = `"agents":[{"id":"a"}]`
	tests := []struct {
		name, json string
		want       []string // substrings of the error
	}{
		{"unknown field", `{` + client + `,` + agent + `,"agent":[]}`, []string{`unknown field "agent"`}},
		{"unknown nested field", `{` + client + `,"agents":[{"id":"a","chanels":[]}]}`, []string{`unknown field "chanels"`}},
		{"trailing data", `{` + client + `,` + agent + `} {}`, []string{"data after the top-level object"}},
		{"wrong type", `{"clients":{}}`, []string{"cannot unmarshal object"}},
		{"empty", `{}`, []string{"clients: at least one client is required", "agents: at least one agent is required"}},
		{"client problems", `{"clients":[{"clientId":"c"},{"clientId":"c","clientSecret":"s"},{"clientId":"a b","clientSecret":"s"}],` + agent + `}`,
			[]string{"clients[0].clientSecret: missing", `clients[1].clientId: duplicate id "c"`, `clients[2].clientId: "a b" is not a valid FHIR id`}},
		{"bot problems", `{` + client + `,` + agent + `,"bots":[{"id":"x","kind":"ack"},{"id":"y","kind":"nack"},{"id":"z","kind":"exec: "},{"kind":"echo"}]}`,
			[]string{`bots[1].kind: "nack" is not one of ack, echo, reject, exec:COMMAND`, "bots[2].kind: exec: needs a command", "bots[3].id: missing id"}},
		{"agent problems", `{` + client + `,"bots":[{"id":"b","kind":"ack"}],"agents":[{"id":"a","status":"on","settings":[{"name":"x"},{"name":"y","valueBoolean":true,"valueString":"s"}],` +
			`"channels":[{"name":"c","address":"mllp://0.0.0.0:1","bot":"b"},{"name":"c","bot":"nope","status":"down"},{"address":"x","bot":"b"},` +
			`{"name":"way-too-long-channel-name-for-an-endpoint-id-that-goes-on-and-on-and-on","address":"x","bot":"b"}]},{"id":"a"}]}`,
			[]string{
				`agents[0].status: "on" is not one of active, off, error`,
				"agents[0].settings[0]: needs exactly one of valueBoolean, valueInteger, valueDecimal, valueString (has 0)",
				"agents[0].settings[1]: needs exactly one of valueBoolean, valueInteger, valueDecimal, valueString (has 2)",
				`agents[0].channels[1].name: duplicate channel name "c"`,
				"agents[0].channels[1].address: missing",
				`agents[0].channels[1].bot: no bot with id "nope"`,
				`agents[0].channels[1].status: "down" is not an Endpoint status`,
				`agents[0].channels[1].endpointId: duplicate id "a-c"`,
				"agents[0].channels[2].name: missing",
				"agents[0].channels[3]: derived Endpoint id",
				`agents[1].id: duplicate id "a"`,
			}},
		{"device problems", `{` + client + `,` + agent + `,"devices":[{"id":"d"},{"url":"mllp://x:1"}]}`,
			[]string{"devices[0].url: missing", "devices[1].id: missing id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"clients":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want string
	}{
		{filepath.Join(dir, "missing.json"), "no such file or directory"},
		{bad, bad + ": invalid config:\nclients: at least one client is required\nagents: at least one agent is required"},
	}
	for _, tt := range tests {
		if _, err := LoadConfig(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadConfig(%s) = %v, want %q", tt.path, err, tt.want)
		}
	}
	if _, err := New(Options{Config: &Config{}}); err == nil {
		t.Error("New accepted an invalid config")
	}
}

func TestBanner(t *testing.T) {
	s := start(t, Options{})
	var b bytes.Buffer
	s.Banner(&b)
	for _, want := range []string{
		"  Client ID:      medplum-agent-dev\n",
		"  Client secret:  medplum-agent-dev-secret\n",
		"  Agent ID:       " + DefaultAgentID + " (dev-agent)\n",
		"    channel hl7        mllp://0.0.0.0:56000 -> Bot/ack\n",
		"  medplum-agent run " + s.BaseURL() + " medplum-agent-dev medplum-agent-dev-secret " + DefaultAgentID + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
	if got := shellQuote("it's a secret"); got != `'it'\''s a secret'` {
		t.Errorf("shellQuote = %s", got)
	}
}

func TestStartErrors(t *testing.T) {
	s := start(t, Options{})
	other, err := New(Options{Listen: strings.TrimSuffix(strings.TrimPrefix(s.BaseURL(), "http://"), "/")})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err == nil || !strings.Contains(err.Error(), "cannot listen on") {
		t.Errorf("Start on a taken port: %v", err)
	}
	if err := s.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
