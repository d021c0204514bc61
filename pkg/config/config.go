// Package config loads the agent's start-up settings from positional
// arguments, MEDPLUM_* environment variables and an agent.properties file,
// in that order of precedence, field by field.
//
// It reads the reference agent's keys but not its parsing quirks (see
// ReadProperties), and it is strict where the reference is lenient: an
// invalid log level or logger number is a Problem, not a warning with a
// silent default, because a typo in a clinical deployment should stop the
// start-up rather than quietly change what gets logged.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/logging"
)

// DefaultFileName is looked for in the working directory when no --config
// is given.
const DefaultFileName = "agent.properties"

// Defaults of the logger settings.
const (
	DefaultLevel         = "INFO"
	DefaultMaxFileSizeMB = 10
	DefaultFilesToKeep   = 10

	maxFileSizeMBLimit = 1 << 20 // 1 TiB; keeps MB→bytes far from overflow
	filesToKeepLimit   = 100_000
)

const redacted = "[REDACTED]"

// LoggerConfig configures one of the two file loggers.
type LoggerConfig struct {
	Level         string // NONE, ERROR, WARN, INFO or DEBUG
	Dir           string // absolute
	MaxFileSizeMB int
	FilesToKeep   int
}

// Config is the validated start-up configuration. Its String, Format and
// LogValue methods never show ClientSecret, and encoding/json skips it.
type Config struct {
	BaseURL      string // absolute http(s) URL ending in "/"
	ClientID     string
	ClientSecret string `json:"-"`
	AgentID      string

	MainLog    LoggerConfig
	ChannelLog LoggerConfig

	DataDir string // absolute; holds state files
	File    string // properties file used, "" if none
}

// Sources are the inputs Load combines.
type Sources struct {
	// Args are the positional arguments of `run`: none, or baseUrl
	// clientId clientSecret agentId [logLevel].
	Args []string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// File is the --config value. "" means agent.properties in WorkDir,
	// which may then be absent.
	File string
	// WorkDir resolves relative paths; "" means the current directory.
	WorkDir string
	// DataDir is the --data-dir value. "" means the directory of the
	// properties file, else WorkDir.
	DataDir string
}

// Problem is one missing or invalid setting.
type Problem struct {
	Key, Message string
}

// Error lists every problem found, so an operator can fix them in one go.
// It never contains the client secret.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  - %s: %s", p.Key, p.Message)
	}
	return b.String()
}

// A setting that can come from all three sources.
type setting struct {
	key string // properties key
	env string
	arg int // index among the positional arguments
}

var (
	baseURLSetting      = setting{"baseUrl", "MEDPLUM_BASE_URL", 0}
	clientIDSetting     = setting{"clientId", "MEDPLUM_CLIENT_ID", 1}
	clientSecretSetting = setting{"clientSecret", "MEDPLUM_CLIENT_SECRET", 2}
	agentIDSetting      = setting{"agentId", "MEDPLUM_AGENT_ID", 3}
	logLevelSetting     = setting{"logLevel", "MEDPLUM_LOG_LEVEL", 4}
)

// Logger keys: logger.<type>.<prop>, as in the reference.
var (
	loggerTypes = []string{"main", "channel"}
	loggerProps = []string{"logLevel", "logDir", "maxFileSizeMb", "filesToKeep"}
)

// loader carries the state of one Load call.
type loader struct {
	args     []string
	getenv   func(string) string
	props    map[string]string
	file     string
	problems []Problem
	warnings []string
}

func (l *loader) problem(key, format string, a ...any) {
	l.problems = append(l.problems, Problem{Key: key, Message: fmt.Sprintf(format, a...)})
}

// lookup returns the first non-empty value of s, with a description of
// where it came from. Empty values count as unset at every level.
func (l *loader) lookup(s setting) (value, from string) {
	if s.arg < len(l.args) {
		if v := strings.TrimSpace(l.args[s.arg]); v != "" {
			return v, "argument " + strconv.Itoa(s.arg+1)
		}
	}
	if v := strings.TrimSpace(l.getenv(s.env)); v != "" {
		return v, s.env
	}
	if v := l.props[s.key]; v != "" {
		return v, l.file
	}
	return "", ""
}

// required looks s up and reports it missing if no source has it.
func (l *loader) required(s setting) (value, from string) {
	value, from = l.lookup(s)
	if value == "" {
		l.problem(s.key, "missing (argument %d, %s, or %s in the properties file)", s.arg+1, s.env, s.key)
	}
	return value, from
}

// Load combines and validates the sources. Invalid or missing settings are
// reported together as *Error. Warnings are about settings that were
// ignored; they never fail the load.
func Load(src Sources) (*Config, []string, error) {
	l := &loader{getenv: src.Getenv}
	if l.getenv == nil {
		l.getenv = os.Getenv
	}
	workDir, err := absWorkDir(src.WorkDir)
	if err != nil {
		return nil, nil, err
	}

	switch n := len(src.Args); {
	case n == 0:
	case n < 4 || n > 5:
		l.problem("arguments", "expected baseUrl clientId clientSecret agentId [logLevel], got %d argument(s)", n)
	default:
		l.args = src.Args
	}
	l.loadFile(workDir, src.File)

	cfg := &Config{File: l.file}
	var from string
	cfg.BaseURL, from = l.required(baseURLSetting)
	if cfg.BaseURL != "" {
		cfg.BaseURL = l.checkBaseURL(cfg.BaseURL, from)
	}
	cfg.ClientID, _ = l.required(clientIDSetting)
	cfg.ClientSecret, _ = l.required(clientSecretSetting)
	cfg.AgentID, from = l.required(agentIDSetting)
	if cfg.AgentID != "" && !validID(cfg.AgentID) {
		l.problem(agentIDSetting.key, "not a valid FHIR id (1-64 of A-Z a-z 0-9 - .): %q (from %s)", cfg.AgentID, from)
	}

	base := baseDir(workDir, src.File)
	cfg.DataDir = dataDir(workDir, src)
	level, from := l.lookup(logLevelSetting)
	if level != "" {
		level = l.checkLevel(logLevelSetting.key, level, from)
	}
	cfg.MainLog = l.loggerConfig("main", base, cfg.DataDir)
	cfg.ChannelLog = l.loggerConfig("channel", base, cfg.DataDir)
	if level != "" {
		// The top-level level overrides both loggers, as in the reference.
		cfg.MainLog.Level, cfg.ChannelLog.Level = level, level
	}
	l.warnUnknownKeys()

	if len(l.problems) > 0 {
		return nil, l.warnings, &Error{Problems: l.problems}
	}
	return cfg, l.warnings, nil
}

// DataDir is the data directory Load would choose for src, found without
// reading the properties file: run needs it before anything else.
func DataDir(src Sources) (string, error) {
	workDir, err := absWorkDir(src.WorkDir)
	if err != nil {
		return "", err
	}
	return dataDir(workDir, src), nil
}

func absWorkDir(dir string) (string, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("working directory: %w", err)
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	return abs, nil
}

// baseDir is the properties file's directory (file is the --config value;
// "" means agent.properties in workDir). Relative log directories are taken
// relative to it, so that the result does not depend on the service's
// working directory; it is also the default data directory.
func baseDir(workDir, file string) string {
	if file == "" {
		return workDir
	}
	return filepath.Dir(absIn(workDir, file))
}

func dataDir(workDir string, src Sources) string {
	if src.DataDir != "" {
		return absIn(workDir, src.DataDir)
	}
	return baseDir(workDir, src.File)
}

// loadFile reads the properties file, if any, into l.props.
func (l *loader) loadFile(workDir, name string) {
	explicit := name != ""
	path := filepath.Join(workDir, DefaultFileName)
	if explicit {
		path = absIn(workDir, name)
	}
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return
		}
		l.problem("config", "%v", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		l.problem("config", "%v", err)
		return
	}
	if !fi.Mode().IsRegular() {
		// A FIFO or device could block the start-up forever.
		l.problem("config", "%s is not a regular file", path)
		return
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		l.warnings = append(l.warnings, fmt.Sprintf("%s is readable by other users (mode %#o) but holds the client secret; chmod 600 it", path, fi.Mode().Perm()))
	}
	props, err := ReadProperties(f)
	if err != nil {
		l.problem("config", "%s: %v", path, err)
		return
	}
	l.props, l.file = props, path
}

// absIn resolves p against dir unless it is absolute.
func absIn(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// checkBaseURL validates the URL and normalises it to end with "/".
func (l *loader) checkBaseURL(raw, from string) string {
	key := baseURLSetting.key
	if strings.Contains(raw, "@") {
		// Checked first and not echoed: user info may hold a password,
		// and one with '#' or '/' in it does not even parse as such.
		l.problem(key, "must not contain '@' (a user name or password) (from %s)", from)
		return raw
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		l.problem(key, "not an absolute http(s) URL: %q (from %s)", raw, from)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		l.problem(key, "must not have a query or fragment: %q (from %s)", raw, from)
	default:
		s := u.String()
		if !strings.HasSuffix(s, "/") {
			s += "/"
		}
		return s
	}
	return raw
}

// validID reports whether s is a FHIR resource id. The agent id becomes part
// of request paths, so anything else could change which URL is requested.
func validID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return s != ""
}

// checkLevel returns the canonical upper-case level name, or "" after
// reporting an invalid one.
func (l *loader) checkLevel(key, value, from string) string {
	if _, _, err := logging.ParseLevel(value); err != nil {
		l.problem(key, "invalid log level %q (from %s); want one of %s", value, from, strings.Join(logging.LevelNames, ", "))
		return ""
	}
	return strings.ToUpper(strings.TrimSpace(value))
}

// loggerConfig reads logger.<typ>.* from the properties file.
func (l *loader) loggerConfig(typ, base, dataDir string) LoggerConfig {
	c := LoggerConfig{Level: DefaultLevel, Dir: dataDir, MaxFileSizeMB: DefaultMaxFileSizeMB, FilesToKeep: DefaultFilesToKeep}
	prefix := "logger." + typ + "."
	if v := l.props[prefix+"logLevel"]; v != "" {
		c.Level = cmp.Or(l.checkLevel(prefix+"logLevel", v, l.file), c.Level)
	}
	if v := l.props[prefix+"logDir"]; v != "" {
		c.Dir = absIn(base, v)
	}
	c.MaxFileSizeMB = l.positiveInt(prefix+"maxFileSizeMb", maxFileSizeMBLimit, c.MaxFileSizeMB)
	c.FilesToKeep = l.positiveInt(prefix+"filesToKeep", filesToKeepLimit, c.FilesToKeep)
	return c
}

func (l *loader) positiveInt(key string, limit, def int) int {
	v := l.props[key]
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	switch {
	case strings.Trim(v, "0123456789") != "" || (err == nil && n < 1):
		l.problem(key, "must be a positive integer, got %q (from %s)", v, l.file)
	case err != nil || n > limit:
		l.problem(key, "must be at most %d, got %q (from %s)", limit, v, l.file)
	default:
		return n
	}
	return def
}

// warnUnknownKeys reports properties that Load does not use, in key order.
func (l *loader) warnUnknownKeys() {
	known := []string{baseURLSetting.key, clientIDSetting.key, clientSecretSetting.key, agentIDSetting.key, logLevelSetting.key}
	for _, key := range slices.Sorted(maps.Keys(l.props)) {
		if slices.Contains(known, key) {
			continue
		}
		rest, isLogger := strings.CutPrefix(key, "logger.")
		if !isLogger {
			l.warnings = append(l.warnings, fmt.Sprintf("%s: unknown setting %q ignored", l.file, key))
			continue
		}
		typ, prop, _ := strings.Cut(rest, ".")
		switch {
		case !slices.Contains(loggerTypes, typ):
			l.warnings = append(l.warnings, fmt.Sprintf("%s: unknown setting %q ignored; logger settings are logger.main.* and logger.channel.*", l.file, key))
		case !slices.Contains(loggerProps, prop):
			l.warnings = append(l.warnings, fmt.Sprintf("%s: unknown setting %q ignored; logger settings are %s", l.file, key, strings.Join(loggerProps, ", ")))
		}
	}
}

// String describes the configuration with the secret redacted.
func (c Config) String() string {
	secret := ""
	if c.ClientSecret != "" {
		secret = redacted
	}
	return fmt.Sprintf("Config{BaseURL:%s ClientID:%s ClientSecret:%s AgentID:%s MainLog:%+v ChannelLog:%+v DataDir:%s File:%s}",
		c.BaseURL, c.ClientID, secret, c.AgentID, c.MainLog, c.ChannelLog, c.DataDir, c.File)
}

// Format makes every fmt verb, including %#v and %+v, print String, so the
// secret cannot leak through a debug print.
func (c Config) Format(f fmt.State, _ rune) {
	io.WriteString(f, c.String())
}

// LogValue logs the configuration with the secret redacted.
func (c Config) LogValue() slog.Value {
	logger := func(key string, lc LoggerConfig) slog.Attr {
		return slog.Group(key, "level", lc.Level, "dir", lc.Dir, "maxFileSizeMb", lc.MaxFileSizeMB, "filesToKeep", lc.FilesToKeep)
	}
	return slog.GroupValue(
		slog.String("baseUrl", c.BaseURL),
		slog.String("clientId", c.ClientID),
		slog.String("clientSecret", redacted),
		slog.String("agentId", c.AgentID),
		logger("mainLog", c.MainLog),
		logger("channelLog", c.ChannelLog),
		slog.String("dataDir", c.DataDir),
		slog.String("file", c.File),
	)
}
