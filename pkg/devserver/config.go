package devserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

// Fixed defaults, documented so that scripts and CI can rely on them.
const (
	DefaultClientID     = "medplum-agent-dev"
	DefaultClientSecret = "medplum-agent-dev-secret"
	DefaultAgentID      = "7d3c5f2e-9a41-4b8e-b6c2-1f0e8d4a5c93"
	DefaultChannel      = "hl7"
	DefaultAddress      = "mllp://0.0.0.0:56000"
	DefaultASTMChannel  = "astm"
	DefaultASTMAddress  = "tcp://0.0.0.0:56100?mode=astm"
	DefaultDICOMChannel = "dicom"
	DefaultDICOMAddress = "dicom://0.0.0.0:56104"
	DefaultListen       = "127.0.0.1:8103"
)

// BotKindSystem is the Identifier.system under which a Bot resource carries
// its built-in kind (ack, echo, reject, exec:COMMAND) in Identifier.value.
const BotKindSystem = "urn:medplum-agent:dev-server:bot-kind"

// maxConfigSize bounds the config file read; real files are a few KiB.
const maxConfigSize = 4 << 20

// Config is the dev server's initial data set, read from the --config file.
// See the package documentation for the file format.
type Config struct {
	Clients []ClientConfig `json:"clients"`
	Bots    []BotConfig    `json:"bots"`
	Agents  []AgentConfig  `json:"agents"`
	Devices []DeviceConfig `json:"devices"`
}

// ClientConfig is one set of client credentials (a ClientApplication).
type ClientConfig struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// BotConfig is one Bot; Kind selects the built-in behaviour.
type BotConfig struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// AgentConfig is one Agent resource and its channels.
type AgentConfig struct {
	ID       string              `json:"id"`
	Name     string              `json:"name"`
	Status   string              `json:"status"`
	Settings []fhir.AgentSetting `json:"settings"`
	Channels []ChannelConfig     `json:"channels"`
}

// ChannelConfig becomes an Endpoint (address, status) plus an Agent.channel
// entry pointing at that Endpoint and at Bot/<Bot>.
type ChannelConfig struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Bot     string `json:"bot"`
	Status  string `json:"status"`
	// EndpointID defaults to "<agent id>-<channel name>".
	EndpointID string `json:"endpointId"`
}

// DeviceConfig is a push destination; URL is what $push sends as remote.
type DeviceConfig struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	URL  string `json:"url"`
}

// DefaultConfig returns one client, one Agent with channel "hl7" on
// mllp://0.0.0.0:56000 and channel "astm" on tcp://0.0.0.0:56100?mode=astm,
// both answered by Bot "ack" (which gives ASTM sessions an empty answer, so
// nothing is written back to the instrument), and Bots "echo" and "reject"
// that a channel can be switched to at runtime. Channel "dicom" on
// dicom://0.0.0.0:56104 stores instances as Binary resources and sends
// their JSON to "ack" too.
func DefaultConfig() *Config {
	return &Config{
		Clients: []ClientConfig{{ClientID: DefaultClientID, ClientSecret: DefaultClientSecret}},
		Bots: []BotConfig{
			{ID: "ack", Name: "ack", Kind: "ack"},
			{ID: "echo", Name: "echo", Kind: "echo"},
			{ID: "reject", Name: "reject", Kind: "reject"},
		},
		Agents: []AgentConfig{{
			ID:     DefaultAgentID,
			Name:   "dev-agent",
			Status: "active",
			Channels: []ChannelConfig{
				{Name: DefaultChannel, Address: DefaultAddress, Bot: "ack"},
				{Name: DefaultASTMChannel, Address: DefaultASTMAddress, Bot: "ack"},
				{Name: DefaultDICOMChannel, Address: DefaultDICOMAddress, Bot: "ack"},
			},
		}},
	}
}

// LoadConfig reads and validates a config file. Unknown fields are errors.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxConfigSize)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates config JSON. Unknown fields are errors.
func ParseConfig(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid config: data after the top-level object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// fhirID is the FHIR id grammar.
var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

var (
	agentStatuses    = map[string]bool{"": true, "active": true, "off": true, "error": true}
	endpointStatuses = map[string]bool{"": true, "active": true, "suspended": true, "error": true, "off": true, "entered-in-error": true, "test": true}
)

// Validate reports every problem of the config at once, each prefixed with
// its location (e.g. `agents[0].channels[1].bot`).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	checkID := func(where, id string, seen map[string]bool) {
		switch {
		case id == "":
			bad("%s: missing id", where)
		case !fhirID.MatchString(id):
			bad("%s: %q is not a valid FHIR id (letters, digits, '-', '.', at most 64)", where, id)
		case seen[id]:
			bad("%s: duplicate id %q", where, id)
		}
		seen[id] = true
	}

	if len(c.Clients) == 0 {
		bad("clients: at least one client is required")
	}
	clients := map[string]bool{}
	for i, cl := range c.Clients {
		checkID(fmt.Sprintf("clients[%d].clientId", i), cl.ClientID, clients)
		if cl.ClientSecret == "" {
			bad("clients[%d].clientSecret: missing", i)
		}
	}

	bots := map[string]bool{}
	for i, b := range c.Bots {
		checkID(fmt.Sprintf("bots[%d].id", i), b.ID, bots)
		if _, err := parseBotKind(b.Kind); err != nil {
			bad("bots[%d].kind: %v", i, err)
		}
	}

	if len(c.Agents) == 0 {
		bad("agents: at least one agent is required")
	}
	agents := map[string]bool{}
	endpoints := map[string]bool{}
	for i, a := range c.Agents {
		where := fmt.Sprintf("agents[%d]", i)
		checkID(where+".id", a.ID, agents)
		if !agentStatuses[a.Status] {
			bad("%s.status: %q is not one of active, off, error", where, a.Status)
		}
		for j, s := range a.Settings {
			if s.Name == "" {
				bad("%s.settings[%d].name: missing", where, j)
			}
			if n := settingValues(s); n != 1 {
				bad("%s.settings[%d]: needs exactly one of valueBoolean, valueInteger, valueDecimal, valueString (has %d)", where, j, n)
			}
		}
		names := map[string]bool{}
		for j, ch := range a.Channels {
			cw := fmt.Sprintf("%s.channels[%d]", where, j)
			switch {
			case ch.Name == "":
				bad("%s.name: missing", cw)
			case names[ch.Name]:
				bad("%s.name: duplicate channel name %q", cw, ch.Name)
			}
			names[ch.Name] = true
			if ch.Address == "" {
				bad("%s.address: missing", cw)
			}
			switch {
			case ch.Bot == "":
				bad("%s.bot: missing", cw)
			case !bots[ch.Bot]:
				bad("%s.bot: no bot with id %q", cw, ch.Bot)
			}
			if !endpointStatuses[ch.Status] {
				bad("%s.status: %q is not an Endpoint status (active, off, ...)", cw, ch.Status)
			}
			if ch.EndpointID == "" && ch.Name != "" && a.ID != "" {
				if id := ch.endpointID(a.ID); !fhirID.MatchString(id) {
					bad("%s: derived Endpoint id %q is not a valid FHIR id; set endpointId", cw, id)
					continue
				}
			}
			checkID(cw+".endpointId", ch.endpointID(a.ID), endpoints)
		}
	}

	devices := map[string]bool{}
	for i, d := range c.Devices {
		checkID(fmt.Sprintf("devices[%d].id", i), d.ID, devices)
		if d.URL == "" {
			bad("devices[%d].url: missing", i)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config:\n%w", errors.Join(errs...))
	}
	return nil
}

func settingValues(s fhir.AgentSetting) int {
	n := 0
	for _, set := range []bool{s.ValueBoolean != nil, s.ValueInteger != nil, s.ValueDecimal != nil, s.ValueString != nil} {
		if set {
			n++
		}
	}
	return n
}

func (ch ChannelConfig) endpointID(agentID string) string {
	if ch.EndpointID != "" {
		return ch.EndpointID
	}
	return agentID + "-" + ch.Name
}

// resources turns a validated config into the FHIR resources the server
// starts with, in an order where references point backwards.
func (c *Config) resources() []any {
	var out []any
	for _, cl := range c.Clients {
		out = append(out, map[string]any{
			"resourceType": "ClientApplication",
			"id":           cl.ClientID,
			"name":         cl.ClientID,
			"secret":       cl.ClientSecret,
		})
	}
	for _, b := range c.Bots {
		name := b.Name
		if name == "" {
			name = b.ID
		}
		out = append(out, map[string]any{
			"resourceType": "Bot",
			"id":           b.ID,
			"name":         name,
			"identifier":   []fhir.Identifier{{System: BotKindSystem, Value: b.Kind}},
		})
	}
	for _, d := range c.Devices {
		dev := map[string]any{"resourceType": "Device", "id": d.ID, "url": d.URL}
		if d.Name != "" {
			dev["deviceName"] = []map[string]string{{"name": d.Name, "type": "user-friendly-name"}}
		}
		out = append(out, dev)
	}
	for _, a := range c.Agents {
		agent := fhir.Agent{ResourceType: "Agent", ID: a.ID, Name: a.Name, Status: a.Status, Setting: a.Settings}
		if agent.Status == "" {
			agent.Status = "active"
		}
		if agent.Name == "" {
			agent.Name = a.ID
		}
		for _, ch := range a.Channels {
			eid := ch.endpointID(a.ID)
			status := ch.Status
			if status == "" {
				status = "active"
			}
			out = append(out, fhir.Endpoint{ResourceType: "Endpoint", ID: eid, Name: ch.Name, Status: status, Address: ch.Address})
			agent.Channel = append(agent.Channel, fhir.AgentChannel{
				Name:            ch.Name,
				Endpoint:        fhir.Reference{Reference: "Endpoint/" + eid},
				TargetReference: fhir.Reference{Reference: "Bot/" + ch.Bot},
			})
		}
		out = append(out, agent)
	}
	return out
}

// botKind is a parsed Bot kind.
type botKind struct {
	name    string // ack, echo, reject or exec
	command string // exec only
}

func parseBotKind(s string) (botKind, error) {
	switch s {
	case "ack", "echo", "reject":
		return botKind{name: s}, nil
	case "":
		return botKind{}, errors.New("missing (ack, echo, reject or exec:COMMAND)")
	}
	if cmd, ok := strings.CutPrefix(s, "exec:"); ok {
		if strings.TrimSpace(cmd) == "" {
			return botKind{}, errors.New("exec: needs a command, as in exec:cat")
		}
		return botKind{name: "exec", command: cmd}, nil
	}
	return botKind{}, fmt.Errorf("%q is not one of ack, echo, reject, exec:COMMAND", s)
}
