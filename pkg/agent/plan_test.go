package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

func agentOf(status string, settings []fhir.AgentSetting, addrs ...string) (*fhir.Agent, []*fhir.Endpoint) {
	agent := &fhir.Agent{ResourceType: "Agent", ID: testAgentID, Status: status, Setting: settings}
	var eps []*fhir.Endpoint
	for i, addr := range addrs {
		name := fmt.Sprint("c", i)
		agent.Channel = append(agent.Channel, fhir.AgentChannel{Name: name, Endpoint: fhir.Reference{Reference: "Endpoint/" + name}})
		eps = append(eps, &fhir.Endpoint{ResourceType: "Endpoint", Address: addr})
	}
	return agent, eps
}

func boolSetting(name string, v bool) fhir.AgentSetting {
	return fhir.AgentSetting{Name: name, ValueBoolean: &v}
}

func intSetting(name string, v int64) fhir.AgentSetting {
	return fhir.AgentSetting{Name: name, ValueInteger: &v}
}

// Scenarios 9, 10, 11, 12 and 15 at the validation level, plus the rest of
// the issue catalogue.
func TestBuildPlan(t *testing.T) {
	strict := []fhir.AgentSetting{boolSetting("strictConfigValidation", true)}
	tests := []struct {
		name     string
		status   string
		settings []fhir.AgentSetting
		addrs    []string
		mutate   func(*fhir.Agent, []*fhir.Endpoint)
		errors   []string // nil: the plan is valid
		warnings []string
		ports    []int
	}{
		{
			name:  "valid",
			addrs: []string{"mllp://0.0.0.0:2575", "mllp://localhost:2576?encoding=iso-8859-1&enhanced=aa"},
			ports: []int{2575, 2576},
		},
		{
			name:   "empty address",
			addrs:  []string{""},
			errors: []string{"Invalid empty endpoint address for channel 'c0'"},
		},
		{
			name:   "unsupported type",
			addrs:  []string{"foo:"},
			errors: []string{"Unsupported endpoint type: foo:"},
		},
		{
			name:   "two problems at once",
			addrs:  []string{"mllp://h:1", "", "foo:"},
			errors: []string{"Invalid empty endpoint address for channel 'c1'", "Unsupported endpoint type: foo:"},
		},
		{
			name:   "not a url",
			addrs:  []string{"mllp://h:1?enhanced=true", "not a url"},
			errors: []string{"Error while validating endpoint address for channel 'c1': Invalid URL"},
		},
		{
			name:   "missing and out of range ports",
			addrs:  []string{"mllp://h", "mllp://h:0", "mllp://h:65536"},
			errors: []string{"Invalid port '' in endpoint address for channel 'c0'; expected an integer from 1 to 65535", "Invalid port '0' in endpoint address for channel 'c1'; expected an integer from 1 to 65535", "Invalid port '65536' in endpoint address for channel 'c2'; expected an integer from 1 to 65535"},
		},
		{
			name:   "duplicate port",
			addrs:  []string{"mllp://a:2575", "mllp://b:2575?enhanced=true"},
			errors: []string{"Invalid agent config. Both 'c0' (mllp://a:2575) and 'c1' (mllp://b:2575?enhanced=true) declare use of port 2575"},
		},
		{
			name:   "duplicate name",
			addrs:  []string{"mllp://a:1", "mllp://a:2"},
			mutate: func(a *fhir.Agent, _ []*fhir.Endpoint) { a.Channel[1].Name = "c0" },
			errors: []string{"Invalid agent config. Duplicate channel name 'c0'"},
		},
		{
			name:   "endpoint not read",
			addrs:  []string{"mllp://a:1"},
			mutate: func(_ *fhir.Agent, eps []*fhir.Endpoint) { eps[0] = nil },
			errors: []string{"Unable to read endpoint 'Endpoint/c0' for channel 'c0'"},
		},
		{
			name:   "unknown encoding",
			addrs:  []string{"mllp://a:1?encoding=klingon"},
			errors: []string{"[HL7:c0] Unsupported encoding 'klingon'"},
		},
		{
			name:  "parameter warnings",
			addrs: []string{"mllp://a:1?enhanced=bogus&appLevelAck=XX&messagesPerMin=abc&idleTimeout=-1"},
			warnings: []string{
				"[HL7:c0] Invalid enhanced value 'bogus'; expected 'true' or 'aa'. Using standard mode (enhanced mode disabled).",
				"[HL7:c0] Invalid appLevelAck value 'XX'; expected one of AL, ER, NE, SU. Using AL.",
				"[HL7:c0] Invalid messagesPerMin: 'abc'; must be a valid integer. Creating channel without a set messagesPerMin...",
				"[HL7:c0] Invalid idleTimeout: '-1'; must be a whole number of seconds. Creating channel without an idle timeout...",
			},
			ports: []int{1},
		},
		{
			name:     "strict promotes warnings",
			settings: strict,
			addrs:    []string{"mllp://a:1?enhanced=bogus"},
			errors:   []string{"[HL7:c0] Invalid enhanced value 'bogus'; expected 'true' or 'aa'. Using standard mode (enhanced mode disabled)."},
		},
		{
			name:     "invalid setting",
			settings: []fhir.AgentSetting{intSetting("logStatsFreqSecs", -5)},
			warnings: []string{"Invalid logStatsFreqSecs setting '-5'; expected a non-negative integer. Ignoring."},
		},
		{
			name:     "endpoint off is left out, even when strict",
			settings: strict,
			addrs:    []string{"mllp://a:1", "mllp://a:2"},
			mutate:   func(_ *fhir.Agent, eps []*fhir.Endpoint) { eps[0].Status = "off" },
			warnings: []string{"Channel 'c0' currently has status of 'off'. Channel will not start until status is set to 'active'"},
			ports:    []int{2},
		},
		{
			name:     "agent off runs nothing",
			status:   "off",
			addrs:    []string{""},
			warnings: []string{"Agent status is currently 'off'. All channels are disconnected until status is set back to 'active'"},
		},
		{
			name:   "unsupported scheme",
			addrs:  []string{"mllp://a:1", "ftp://a:2"},
			errors: []string{"Unsupported endpoint type: ftp://a:2"},
		},
		{
			name:   "serial device without a path",
			addrs:  []string{"serial://?baud=9600"},
			errors: []string{"Missing device path in endpoint address for channel 'c0'"},
		},
		{
			name:   "two channels on one serial device",
			addrs:  []string{"serial:///dev/ttyS9?mode=astm", "serial:///dev/ttyS9?startChar=%02&endChar=%03"},
			errors: []string{"Invalid agent config. Both 'c0' (serial:///dev/ttyS9?mode=astm) and 'c1' (serial:///dev/ttyS9?startChar=%02&endChar=%03) declare use of device /dev/ttyS9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent, eps := agentOf(tt.status, tt.settings, tt.addrs...)
			if tt.mutate != nil {
				tt.mutate(agent, eps)
			}
			p, err := buildPlan(agent, eps)
			if tt.errors != nil {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want *ConfigError", err)
				}
				if diff := cmp.Diff(tt.errors, ce.Problems); diff != "" {
					t.Errorf("problems (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ports []int
			for _, s := range p.channels {
				ports = append(ports, s.port)
			}
			if diff := cmp.Diff(tt.ports, ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, p.warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if p.active != (tt.status != "off") {
				t.Errorf("active = %v", p.active)
			}
		})
	}
}

func TestConfigErrorText(t *testing.T) {
	err := &ConfigError{Problems: []string{"first", "second"}}
	want := "2 problem(s) found in agent config; no changes applied\nfirst\nsecond"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestParseHL7Params(t *testing.T) {
	tests := []struct {
		query string
		want  hl7Params
	}{
		{"", hl7Params{encoding: "utf-8", appLevelAck: "AL"}},
		{"encoding=latin1&enhanced=TRUE&appLevelAck=su&assignSeqNo=True&messagesPerMin=60&idleTimeout=30",
			hl7Params{encoding: "latin1", enhanced: enhancedStandard, appLevelAck: "SU", assignSeqNo: true,
				messagesPerMin: 60, idleTimeout: 30 * time.Second}},
		{"enhanced=aa&assignSeqNo=yes&messagesPerMin=0", hl7Params{encoding: "utf-8", enhanced: enhancedAA, appLevelAck: "AL"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			u, _ := parseAddress("mllp://h:1?" + tt.query)
			got, issues := parseHL7Params(u.Query())
			if len(issues) > 0 {
				t.Errorf("issues: %v", issues)
			}
			tt.want.queue = channelQueueParams{retry: unsetRetry()}
			opt := cmp.AllowUnexported(hl7Params{}, channelQueueParams{}, retryConfig{})
			if diff := cmp.Diff(tt.want, *got.(*hl7Params), opt); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
		})
	}
}
