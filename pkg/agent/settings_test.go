package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/push"
)

func decimalSetting(name string, v float64) fhir.AgentSetting {
	return fhir.AgentSetting{Name: name, ValueDecimal: &v}
}

func stringSetting(name, v string) fhir.AgentSetting {
	return fhir.AgentSetting{Name: name, ValueString: &v}
}

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name     string
		list     []fhir.AgentSetting
		want     settings
		warnings []string
	}{
		{name: "none"},
		{
			name: "all valid",
			list: []fhir.AgentSetting{
				boolSetting("keepAlive", true), intSetting("maxClientsPerRemote", 3),
				intSetting("pushResponseTimeoutMs", 2500), intSetting("logStatsFreqSecs", 60),
				boolSetting("strictConfigValidation", true), stringSetting("unknownSetting", "x"),
			},
			want: settings{logStatsEvery: time.Minute, strict: true,
				push: push.Settings{KeepAlive: true, MaxClientsPerRemote: 3, ResponseTimeout: 2500 * time.Millisecond}},
		},
		{
			name: "integral decimal and zero",
			list: []fhir.AgentSetting{decimalSetting("maxClientsPerRemote", 4), intSetting("pushResponseTimeoutMs", 0)},
			want: settings{push: push.Settings{MaxClientsPerRemote: 4}},
		},
		{
			name: "negative and non-integers ignored",
			list: []fhir.AgentSetting{
				intSetting("maxClientsPerRemote", -1), decimalSetting("pushResponseTimeoutMs", 1.5),
				stringSetting("logStatsFreqSecs", "abc"), stringSetting("keepAlive", "yes"),
			},
			warnings: []string{
				"Invalid logStatsFreqSecs setting 'abc'; expected a non-negative integer. Ignoring.",
				"Invalid keepAlive setting 'yes'; expected a boolean. Ignoring.",
				"Invalid maxClientsPerRemote setting '-1'; expected a non-negative integer. Ignoring.",
				"Invalid pushResponseTimeoutMs setting '1.5'; expected a non-negative integer. Ignoring.",
			},
		},
		{
			name: "beyond the limits",
			list: []fhir.AgentSetting{
				intSetting("maxClientsPerRemote", 1001), intSetting("pushResponseTimeoutMs", 3600001),
				decimalSetting("logStatsFreqSecs", 1e300),
			},
			warnings: []string{
				"Invalid logStatsFreqSecs setting '1e+300'; expected at most 2147483647. Ignoring.",
				"Invalid maxClientsPerRemote setting '1001'; expected at most 1000. Ignoring.",
				"Invalid pushResponseTimeoutMs setting '3600001'; expected at most 3600000. Ignoring.",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, issues := parseSettings(tt.list)
			tt.want.queue = queueSettings{enabled: true, retry: unsetRetry()}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(settings{}, queueSettings{}, retryConfig{})); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
			var texts []string
			for _, is := range issues {
				if is.severity != isWarning {
					t.Errorf("issue %q has severity %d, want a warning", is.text, is.severity)
				}
				texts = append(texts, is.text)
			}
			if diff := cmp.Diff(tt.warnings, texts); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// Setting warnings are errors under strictConfigValidation, like channel
// parameter warnings.
func TestStrictSettings(t *testing.T) {
	agent, eps := agentOf("active", []fhir.AgentSetting{
		boolSetting("strictConfigValidation", true), intSetting("maxClientsPerRemote", -2),
	})
	_, err := buildPlan(agent, eps)
	var ce *ConfigError
	want := []string{"Invalid maxClientsPerRemote setting '-2'; expected a non-negative integer. Ignoring."}
	if !errors.As(err, &ce) || !cmp.Equal(ce.Problems, want) {
		t.Errorf("buildPlan = %v, want a ConfigError %q", err, want)
	}
}
