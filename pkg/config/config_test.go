package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

const secret = "S3cr3t=Value#1"

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func defaultLogger(dir string) LoggerConfig {
	return LoggerConfig{Level: "INFO", Dir: dir, MaxFileSizeMB: 10, FilesToKeep: 10}
}

func TestLoad(t *testing.T) {
	work := t.TempDir()
	etc := filepath.Join(work, "etc")
	fileProps := "baseUrl=https://file.example.com\nclientId=file-id\nclientSecret=" + secret + "\nagentId=file-agent\n"
	writeFile(t, filepath.Join(work, DefaultFileName), fileProps)
	writeFile(t, filepath.Join(etc, "agent.properties"), fileProps+
		"logLevel=\nlogger.main.logLevel=debug\nlogger.main.logDir=logs\nlogger.main.maxFileSizeMb=5\n"+
		"logger.channel.filesToKeep=3\nlogger.channel.logDir=/var/log/agent\n")
	empty := t.TempDir()

	tests := []struct {
		name string
		src  Sources
		want *Config
		warn []string
	}{
		{
			name: "positional only",
			src:  Sources{Args: []string{"http://localhost:8103", "id", secret, "agent-1"}, WorkDir: empty},
			want: &Config{BaseURL: "http://localhost:8103/", ClientID: "id", ClientSecret: secret, AgentID: "agent-1",
				MainLog: defaultLogger(empty), ChannelLog: defaultLogger(empty), DataDir: empty},
		},
		{
			name: "positional log level overrides both loggers",
			src:  Sources{Args: []string{"https://x.example/base/", "id", secret, "a", "warn"}, WorkDir: empty},
			want: &Config{BaseURL: "https://x.example/base/", ClientID: "id", ClientSecret: secret, AgentID: "a",
				MainLog:    LoggerConfig{Level: "WARN", Dir: empty, MaxFileSizeMB: 10, FilesToKeep: 10},
				ChannelLog: LoggerConfig{Level: "WARN", Dir: empty, MaxFileSizeMB: 10, FilesToKeep: 10}, DataDir: empty},
		},
		{
			name: "environment only",
			src: Sources{Getenv: env("MEDPLUM_BASE_URL", "https://env.example.com/", "MEDPLUM_CLIENT_ID", "env-id",
				"MEDPLUM_CLIENT_SECRET", " "+secret+"\n", "MEDPLUM_AGENT_ID", "env-agent", "MEDPLUM_LOG_LEVEL", "DEBUG"), WorkDir: empty},
			want: &Config{BaseURL: "https://env.example.com/", ClientID: "env-id", ClientSecret: secret, AgentID: "env-agent",
				MainLog:    LoggerConfig{Level: "DEBUG", Dir: empty, MaxFileSizeMB: 10, FilesToKeep: 10},
				ChannelLog: LoggerConfig{Level: "DEBUG", Dir: empty, MaxFileSizeMB: 10, FilesToKeep: 10}, DataDir: empty},
		},
		{
			name: "agent.properties in the working directory",
			src:  Sources{Getenv: env(), WorkDir: work},
			want: &Config{BaseURL: "https://file.example.com/", ClientID: "file-id", ClientSecret: secret, AgentID: "file-agent",
				MainLog: defaultLogger(work), ChannelLog: defaultLogger(work), DataDir: work,
				File: filepath.Join(work, DefaultFileName)},
		},
		{
			name: "arguments beat environment beat file, field by field; empty values are unset",
			src: Sources{
				Args:    []string{"https://arg.example.com", "", "", "arg-agent", ""},
				Getenv:  env("MEDPLUM_CLIENT_ID", "env-id", "MEDPLUM_AGENT_ID", "env-agent", "MEDPLUM_CLIENT_SECRET", ""),
				WorkDir: work,
			},
			want: &Config{BaseURL: "https://arg.example.com/", ClientID: "env-id", ClientSecret: secret, AgentID: "arg-agent",
				MainLog: defaultLogger(work), ChannelLog: defaultLogger(work), DataDir: work,
				File: filepath.Join(work, DefaultFileName)},
		},
		{
			name: "--config with logger settings, relative to the file; --data-dir relative to the working directory",
			src:  Sources{File: "etc/agent.properties", DataDir: "state", Getenv: env(), WorkDir: work},
			want: &Config{BaseURL: "https://file.example.com/", ClientID: "file-id", ClientSecret: secret, AgentID: "file-agent",
				MainLog:    LoggerConfig{Level: "DEBUG", Dir: filepath.Join(etc, "logs"), MaxFileSizeMB: 5, FilesToKeep: 10},
				ChannelLog: LoggerConfig{Level: "INFO", Dir: "/var/log/agent", MaxFileSizeMB: 10, FilesToKeep: 3},
				DataDir:    filepath.Join(work, "state"), File: filepath.Join(etc, "agent.properties")},
		},
		{
			name: "environment log level overrides logger levels from the file",
			src:  Sources{File: filepath.Join(etc, "agent.properties"), Getenv: env("MEDPLUM_LOG_LEVEL", "error"), WorkDir: empty},
			want: &Config{BaseURL: "https://file.example.com/", ClientID: "file-id", ClientSecret: secret, AgentID: "file-agent",
				MainLog:    LoggerConfig{Level: "ERROR", Dir: filepath.Join(etc, "logs"), MaxFileSizeMB: 5, FilesToKeep: 10},
				ChannelLog: LoggerConfig{Level: "ERROR", Dir: "/var/log/agent", MaxFileSizeMB: 10, FilesToKeep: 3},
				DataDir:    etc, File: filepath.Join(etc, "agent.properties")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warn, err := Load(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("config mismatch (-want +got):\n%s", d)
			}
			if dir, err := DataDir(tt.src); err != nil || dir != got.DataDir {
				t.Errorf("DataDir = %q, %v; Load chose %q", dir, err, got.DataDir)
			}
			if d := cmp.Diff(tt.warn, warn); d != "" {
				t.Errorf("warnings mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestLoadProblems(t *testing.T) {
	work := t.TempDir()
	ok := []string{"https://x.example/", "id", secret, "agent"}
	tests := []struct {
		name  string
		src   Sources
		props string
		want  []Problem
	}{
		{
			name: "wrong number of arguments",
			src:  Sources{Args: []string{"https://x.example/", "id", secret}, Getenv: env("MEDPLUM_BASE_URL", "https://x.example/", "MEDPLUM_CLIENT_ID", "id", "MEDPLUM_CLIENT_SECRET", secret, "MEDPLUM_AGENT_ID", "a")},
			want: []Problem{{"arguments", "expected baseUrl clientId clientSecret agentId [logLevel], got 3 argument(s)"}},
		},
		{
			name: "too many arguments",
			src:  Sources{Args: append(ok[:4:4], "INFO", "extra")},
			want: []Problem{
				{"arguments", "expected baseUrl clientId clientSecret agentId [logLevel], got 6 argument(s)"},
				{"baseUrl", "missing (argument 1, MEDPLUM_BASE_URL, or baseUrl in the properties file)"},
				{"clientId", "missing (argument 2, MEDPLUM_CLIENT_ID, or clientId in the properties file)"},
				{"clientSecret", "missing (argument 3, MEDPLUM_CLIENT_SECRET, or clientSecret in the properties file)"},
				{"agentId", "missing (argument 4, MEDPLUM_AGENT_ID, or agentId in the properties file)"},
			},
		},
		{
			name: "bad URLs",
			src:  Sources{Args: []string{"localhost:8103", "id", secret, "agent"}},
			want: []Problem{{"baseUrl", `not an absolute http(s) URL: "localhost:8103" (from argument 1)`}},
		},
		{
			name: "ftp URL",
			src:  Sources{Args: []string{"ftp://x.example/", "id", secret, "agent"}},
			want: []Problem{{"baseUrl", `not an absolute http(s) URL: "ftp://x.example/" (from argument 1)`}},
		},
		{
			name: "URL with password",
			src:  Sources{Args: []string{"https://u:" + secret + "@x.example/", "id", secret, "agent"}},
			want: []Problem{{"baseUrl", "must not contain '@' (a user name or password) (from argument 1)"}},
		},
		{
			name: "URL with query",
			src:  Sources{Args: []string{"https://x.example/?a=1", "id", secret, "agent"}},
			want: []Problem{{"baseUrl", `must not have a query or fragment: "https://x.example/?a=1" (from argument 1)`}},
		},
		{
			name: "agent id with a path",
			src:  Sources{Args: []string{"https://x.example/", "id", secret, "a/../b"}},
			want: []Problem{{"agentId", `not a valid FHIR id (1-64 of A-Z a-z 0-9 - .): "a/../b" (from argument 4)`}},
		},
		{
			name: "bad level from the environment",
			src:  Sources{Args: ok, Getenv: env("MEDPLUM_LOG_LEVEL", "verbose")},
			want: []Problem{{"logLevel", `invalid log level "verbose" (from MEDPLUM_LOG_LEVEL); want one of NONE, ERROR, WARN, INFO, DEBUG`}},
		},
		{
			name: "bad logger settings in the file",
			src:  Sources{Args: ok},
			props: "logger.main.logLevel=TRACE\nlogger.main.maxFileSizeMb=0\nlogger.main.filesToKeep=-3\n" +
				"logger.channel.maxFileSizeMb=2000000\nlogger.channel.filesToKeep=99999999999999999999\n",
			want: []Problem{
				{"logger.main.logLevel", `invalid log level "TRACE" (from <dir>/agent.properties); want one of NONE, ERROR, WARN, INFO, DEBUG`},
				{"logger.main.maxFileSizeMb", `must be a positive integer, got "0" (from <dir>/agent.properties)`},
				{"logger.main.filesToKeep", `must be a positive integer, got "-3" (from <dir>/agent.properties)`},
				{"logger.channel.maxFileSizeMb", `must be at most 1048576, got "2000000" (from <dir>/agent.properties)`},
				{"logger.channel.filesToKeep", `must be at most 100000, got "99999999999999999999" (from <dir>/agent.properties)`},
			},
		},
		{
			name:  "unparsable file",
			src:   Sources{Args: ok},
			props: "clientSecret: hunter2\n",
			want:  []Problem{{"config", "<dir>/agent.properties: line 1: expected key=value"}},
		},
		{
			name: "--config names a directory",
			src:  Sources{Args: ok, File: "."},
			want: []Problem{{"config", "<dir> is not a regular file"}},
		},
		{
			name: "explicit --config that does not exist",
			src:  Sources{Args: ok, File: "nope.properties"},
			want: []Problem{{"config", "open <dir>/nope.properties: no such file or directory"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(work, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.props != "" {
				writeFile(t, filepath.Join(dir, DefaultFileName), tt.props)
			}
			src := tt.src
			src.WorkDir = dir
			if src.Getenv == nil {
				src.Getenv = env()
			}
			cfg, _, err := Load(src)
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load = %v, %v; want *Error", cfg, err)
			}
			for i := range cerr.Problems {
				cerr.Problems[i].Message = strings.ReplaceAll(cerr.Problems[i].Message, dir, "<dir>")
			}
			if d := cmp.Diff(tt.want, cerr.Problems); d != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", d)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error text contains the secret: %s", err)
			}
		})
	}
}

func TestLoadWarnings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, DefaultFileName)
	writeFile(t, path, "baseUrl=https://x.example\nclientId=id\nclientSecret="+secret+"\nagentId=a\n"+
		"color=blue\nlogger.main.rotate=daily\nlogger.other.logDir=/tmp\nlogger.channel.logLevel=WARN\n")
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, warn, err := Load(Sources{Getenv: env(), WorkDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + `: unknown setting "color" ignored`,
		path + `: unknown setting "logger.main.rotate" ignored; logger settings are logLevel, logDir, maxFileSizeMb, filesToKeep`,
		path + `: unknown setting "logger.other.logDir" ignored; logger settings are logger.main.* and logger.channel.*`,
	}
	if runtime.GOOS != "windows" {
		want = append([]string{path + " is readable by other users (mode 0644) but holds the client secret; chmod 600 it"}, want...)
	}
	if d := cmp.Diff(want, warn); d != "" {
		t.Errorf("warnings mismatch (-want +got):\n%s", d)
	}
}

func TestErrorGolden(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, DefaultFileName), "clientSecret=\nlogger.main.logLevel=LOUD\nlogger.channel.filesToKeep=many\n")
	_, _, err := Load(Sources{
		Args:    []string{"not a url", "", secret, "bad id"},
		Getenv:  env("MEDPLUM_LOG_LEVEL", "chatty"),
		WorkDir: dir,
	})
	if err == nil {
		t.Fatal("Load succeeded")
	}
	got := strings.ReplaceAll(err.Error(), dir, "<dir>") + "\n"
	golden := filepath.Join("testdata", "error.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("error text mismatch (-want +got):\n%s", d)
	}
}

func TestSecretNeverShown(t *testing.T) {
	cfg := Config{BaseURL: "https://x.example/", ClientID: "id", ClientSecret: secret, AgentID: "a",
		MainLog: defaultLogger("/d"), ChannelLog: defaultLogger("/d"), DataDir: "/d"}
	type wrapper struct{ C Config }
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out = append(out, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, &cfg))
	}
	out = append(out, fmt.Sprintf("%+v", wrapper{cfg}), cfg.String())
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg, "ptr", &cfg)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", cfg)
	out = append(out, logged.String())
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(js))
	for _, s := range out {
		if strings.Contains(s, secret) || strings.Contains(s, "S3cr3t") {
			t.Errorf("secret shown in %q", s)
		}
	}
	if !strings.Contains(cfg.String(), "ClientSecret:[REDACTED]") {
		t.Errorf("String() = %q, want the secret marked as redacted", cfg.String())
	}
	if !strings.Contains(logged.String(), `"clientSecret":"[REDACTED]"`) {
		t.Errorf("log = %q, want the secret marked as redacted", logged.String())
	}
}
