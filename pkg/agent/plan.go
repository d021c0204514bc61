package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/push"
)

// issue is one finding of validation.
type issue struct {
	severity severity
	text     string
}

type severity int8

const (
	// isNotice is worth logging but is no fault (a channel switched off).
	isNotice severity = iota
	// isWarning is logged and a default used, unless the
	// strictConfigValidation setting promotes it to an error.
	isWarning
	isError
)

func problem(format string, a ...any) issue { return issue{isError, fmt.Sprintf(format, a...)} }
func warning(format string, a ...any) issue { return issue{isWarning, fmt.Sprintf(format, a...)} }
func notice(format string, a ...any) issue  { return issue{isNotice, fmt.Sprintf(format, a...)} }

// settings are the agent-wide Agent.setting values this package acts on.
type settings struct {
	logStatsEvery time.Duration // 0: off
	strict        bool
	push          push.Settings
	queue         queueSettings
	upgradeURL    string // release manifest URL template; "" = the default
}

// Upper bounds of integer settings: far above any sensible value, low
// enough that durations cannot overflow and pools stay bounded.
const (
	maxLogStatsFreqSecs    = 1<<31 - 1
	maxClientsPerRemote    = 1000
	maxPushResponseTimeout = time.Hour
)

func parseSettings(list []fhir.AgentSetting) (settings, []issue) {
	var s settings
	var issues []issue
	find := func(name string) *fhir.AgentSetting {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
		return nil
	}
	integer := func(name string, limit int64) int64 {
		v := find(name)
		if v == nil {
			return 0
		}
		n, is := readIntSetting(v, limit)
		if is != nil {
			issues = append(issues, *is)
		}
		return n
	}
	boolean := func(name string) bool {
		v := find(name)
		switch {
		case v == nil:
			return false
		case v.ValueBoolean == nil:
			issues = append(issues, warning("Invalid %s setting '%s'; expected a boolean. Ignoring.", name, settingText(v)))
			return false
		}
		return *v.ValueBoolean
	}
	s.logStatsEvery = time.Duration(integer("logStatsFreqSecs", maxLogStatsFreqSecs)) * time.Second
	s.strict = boolean("strictConfigValidation")
	var qIssues []issue
	s.queue, qIssues = parseQueueSettings(find)
	issues = append(issues, qIssues...)
	if v := find("upgradeManifestUrl"); v != nil {
		if v.ValueString == nil {
			issues = append(issues, warning("Invalid upgradeManifestUrl setting '%s'; expected a string. Ignoring.", settingText(v)))
		} else {
			s.upgradeURL = *v.ValueString
		}
	}
	s.push = push.Settings{
		KeepAlive:           boolean("keepAlive"),
		MaxClientsPerRemote: int(integer("maxClientsPerRemote", maxClientsPerRemote)),
		ResponseTimeout:     time.Duration(integer("pushResponseTimeoutMs", maxPushResponseTimeout.Milliseconds())) * time.Millisecond,
	}
	return s, issues
}

// readIntSetting reads a non-negative integer setting of at most limit. Any
// other value is a warning and reads as 0 (unset), as in the reference;
// an integral valueDecimal counts, since JSON does not tell them apart.
func readIntSetting(v *fhir.AgentSetting, limit int64) (int64, *issue) {
	var n int64
	switch {
	case v.ValueInteger != nil:
		n = *v.ValueInteger
	case v.ValueDecimal != nil && *v.ValueDecimal == math.Trunc(*v.ValueDecimal):
		// Clamped first: converting an out-of-range float is undefined.
		n = int64(max(min(*v.ValueDecimal, float64(limit)+1), -1))
	default:
		n = -1
	}
	switch {
	case n < 0:
		is := warning("Invalid %s setting '%s'; expected a non-negative integer. Ignoring.", v.Name, settingText(v))
		return 0, &is
	case n > limit:
		is := warning("Invalid %s setting '%s'; expected at most %d. Ignoring.", v.Name, settingText(v), limit)
		return 0, &is
	}
	return n, nil
}

// settingText renders a setting's value for a warning.
func settingText(v *fhir.AgentSetting) string {
	switch {
	case v.ValueInteger != nil:
		return strconv.FormatInt(*v.ValueInteger, 10)
	case v.ValueDecimal != nil:
		return strconv.FormatFloat(*v.ValueDecimal, 'g', -1, 64)
	case v.ValueString != nil:
		return *v.ValueString
	case v.ValueBoolean != nil:
		return strconv.FormatBool(*v.ValueBoolean)
	}
	return ""
}

// channelSpec is a validated channel: what to run, under which name.
type channelSpec struct {
	name    string
	address string
	kind    *channelKind
	port    int    // 0 for device channels
	device  string // serial device path, "" for port channels
	params  any    // the kind's parsed URL parameters
}

// plan is a fully validated configuration: the state the agent should be
// in, not a diff, so it can be applied again later to roll back.
type plan struct {
	active   bool // Agent.status is not "off"
	settings settings
	channels []channelSpec
	warnings []string // notices and warnings, logged when the plan is applied

	// The documents the plan was built from, kept for the snapshot.
	agent     json.RawMessage
	endpoints []json.RawMessage
}

const maxPort = 65535

// buildPlan validates an Agent and its Endpoints (aligned with
// agent.Channel; nil where the read failed) and returns the plan, or a
// *ConfigError listing every error. It has no side effects.
func buildPlan(agent *fhir.Agent, endpoints []*fhir.Endpoint) (*plan, error) {
	p := &plan{active: agent.Status != "off"}
	st, issues := parseSettings(agent.Setting)
	p.settings = st
	if !p.active {
		issues = append(issues, notice("Agent status is currently 'off'. All channels are disconnected until status is set back to 'active'"))
	} else {
		var chIssues []issue
		p.channels, chIssues = validateChannels(agent.Channel, endpoints)
		issues = append(issues, chIssues...)
	}
	var errs []string
	for _, is := range issues {
		if is.severity == isNotice || is.severity == isWarning && !st.strict {
			p.warnings = append(p.warnings, is.text)
		} else {
			errs = append(errs, is.text)
		}
	}
	if len(errs) > 0 {
		return nil, &ConfigError{Problems: errs}
	}
	return p, nil
}

// validateChannels checks every channel, in order, and returns the ones to
// run. Channels whose Endpoint has status "off" are left out, like removed
// ones.
func validateChannels(defs []fhir.AgentChannel, endpoints []*fhir.Endpoint) ([]channelSpec, []issue) {
	var specs []channelSpec
	var issues []issue
	names := map[string]bool{}
	inUse := map[string]channelSpec{} // port or device → first channel using it
	for i, def := range defs {
		if names[def.Name] {
			issues = append(issues, problem("Invalid agent config. Duplicate channel name '%s'", def.Name))
			continue
		}
		names[def.Name] = true
		ep := endpoints[i]
		if ep == nil {
			issues = append(issues, problem("Unable to read endpoint '%s' for channel '%s'", def.Endpoint.Reference, def.Name))
			continue
		}
		if ep.Status == "off" {
			issues = append(issues, notice("Channel '%s' currently has status of 'off'. Channel will not start until status is set to 'active'", def.Name))
			continue
		}
		spec, chIssues := validateChannel(def.Name, ep.Address)
		issues = append(issues, chIssues...)
		if spec == nil {
			continue
		}
		if other, ok := inUse[spec.resource()]; ok {
			issues = append(issues, problem("Invalid agent config. Both '%s' (%s) and '%s' (%s) declare use of %s",
				other.name, other.address, spec.name, spec.address, spec.resource()))
			continue
		}
		inUse[spec.resource()] = *spec
		specs = append(specs, *spec)
	}
	return specs, issues
}

// resource names what a channel holds exclusively: its port, or its device.
func (s channelSpec) resource() string {
	if s.device != "" {
		return "device " + s.device
	}
	return "port " + strconv.Itoa(s.port)
}

// validateChannel parses one Endpoint address. It returns nil when the
// channel cannot run; parameter warnings come back with a usable spec.
func validateChannel(name, address string) (*channelSpec, []issue) {
	if address == "" {
		return nil, []issue{problem("Invalid empty endpoint address for channel '%s'", name)}
	}
	u, err := parseAddress(address)
	if err != nil {
		return nil, []issue{problem("Error while validating endpoint address for channel '%s': %v", name, err)}
	}
	kind := kindOf(address)
	if kind == nil {
		return nil, []issue{problem("Unsupported endpoint type: %s", address)}
	}
	port, device := 0, ""
	if kind.device {
		if device = u.Path; device == "" || device == "/" {
			return nil, []issue{problem("Missing device path in endpoint address for channel '%s'", name)}
		}
	} else if port, err = strconv.Atoi(u.Port()); err != nil || port < 1 || port > maxPort {
		return nil, []issue{problem("Invalid port '%s' in endpoint address for channel '%s'; expected an integer from 1 to %d",
			u.Port(), name, maxPort)}
	}
	params, issues := kind.parse(u.Query())
	failed := false
	for i := range issues {
		issues[i].text = fmt.Sprintf("[%s:%s] %s", kind.label, name, issues[i].text)
		failed = failed || issues[i].severity == isError
	}
	if failed {
		return nil, issues
	}
	return &channelSpec{name: name, address: address, kind: kind, port: port, device: device, params: params}, issues
}

// parseAddress parses an Endpoint address the way a WHATWG URL parser
// accepts it as far as the agent cares: a scheme is required ("not a url"
// is invalid, "foo:" is a valid URL of an unsupported type).
func parseAddress(address string) (*url.URL, error) {
	u, err := url.Parse(address)
	if err != nil || u.Scheme == "" {
		return nil, errors.New("Invalid URL")
	}
	return u, nil
}

// kindOf selects the channel kind by the address's prefix, as the reference
// does (so "mllps://…" is an HL7 channel too).
func kindOf(address string) *channelKind {
	for _, k := range channelKinds {
		if strings.HasPrefix(address, k.scheme) {
			return k
		}
	}
	return nil
}
