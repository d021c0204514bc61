// Package register implements `medplum-agent register`: check or create the
// agent's server resources and write its agent.properties.
package register

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/medplum-agent/medplum-agent/pkg/auth"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/config"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// maxSecretFile bounds --client-secret-file; a secret is a few dozen bytes.
const maxSecretFile = 64 << 10

// Options holds the inputs of `register`.
type Options struct {
	IO      *iostreams.IOStreams
	Getenv  func(string) string
	WorkDir func() (string, error)
	// Prompt asks for the client secret without echo; it fails when
	// standard input is not a terminal.
	Prompt func(ctx context.Context, prompt string) (string, error)
	// Service returns the platform's service manager (--install-service).
	Service func() (service.Manager, error)

	BaseURL          string
	ClientID         string
	ClientSecret     string
	ClientSecretFile string
	AgentID          string
	Name             string
	Channels         []Channel
	Dir              string
	Timeout          time.Duration
	DryRun           bool
	JSON             bool
	InstallService   bool
}

// NewCmdRegister builds the command; runF replaces the run function in tests.
func NewCmdRegister(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Getenv: f.Getenv, WorkDir: f.WorkDir, Prompt: terminalPrompt(f.IOStreams), Service: service.New}
	var channels []string
	cmd := &cobra.Command{
		Use:   "register (--agent-id ID | --name NAME --channel NAME=URL[,bot=Bot/ID]...)",
		Short: "Set up this agent on a Medplum server and write its agent.properties",
		Long: `Set up the agent's credentials and server resources, then write agent.properties
(mode 0600) for 'medplum-agent run'.

The client credentials come from --base-url, --client-id and --client-secret, or from
MEDPLUM_BASE_URL, MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET. The secret may also be
read from --client-secret-file (- for standard input) or typed at a prompt, which keeps
it out of the shell history and the process list.

With --agent-id, register checks that the credentials can log in and read that Agent.

With --name, register makes sure an Agent of that name exists with one Endpoint per
--channel, each channel answered by its Bot, creating or correcting only what differs:
running it again with the same flags changes nothing and says so. A channel already on
the Agent keeps its Bot when bot= is left out. Channels on the Agent that are not named
are left alone. The Agent and Endpoints it creates carry identifiers
(` + AgentNameSystem + ` and ` + ChannelSystem + `) by which
later runs find them.

agent.properties goes to --dir (default: the working directory). Settings already in the
file other than baseUrl, clientId, clientSecret and agentId are kept.

--install-service installs the agent as a system service and starts it: on Linux a
systemd unit running as user medplum-agent with its configuration in
/etc/medplum-agent/agent.properties; on macOS a launchd job; on Windows a service named
MedplumAgent. It needs root (Administrator on Windows).

--dry-run logs in and looks, and shows what would be created or written.

Exit status: 0 done (or nothing to do), 2 bad flags, 4 credentials refused,
5 server unreachable, 1 anything else.`,
		Example: `  # Against a local dev server (medplum-agent dev-server prints these values):
  medplum-agent register --base-url http://127.0.0.1:8103/ --client-id medplum-agent-dev \
    --client-secret-file secret.txt --name lab --channel adt=mllp://0.0.0.0:56000,bot=Bot/ack

  # An Agent made in the Medplum app; the secret is asked for:
  export MEDPLUM_BASE_URL=https://api.medplum.com/ MEDPLUM_CLIENT_ID=...
  medplum-agent register --agent-id 0f6a3c1e-... --dir /opt/medplum-agent

  # Install and start the service (Linux: systemd, as user medplum-agent):
  sudo -E medplum-agent register --name lab --channel adt=mllp://0.0.0.0:56000,bot=Bot/ack \
    --install-service

  # What would change, as JSON:
  medplum-agent register --name lab --channel adt=mllp://0.0.0.0:2575 --dry-run --json`,
		Args: cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (opts.AgentID == "") == (opts.Name == "") {
				return cmdutil.FlagErrorf("give either --agent-id or --name")
			}
			if opts.AgentID != "" && len(channels) > 0 {
				return cmdutil.FlagErrorf("--channel needs --name: with --agent-id the Agent's channels are used as they are")
			}
			if opts.AgentID != "" && !fhirID.MatchString(opts.AgentID) {
				return cmdutil.FlagErrorf("invalid --agent-id %q: not a FHIR id", opts.AgentID)
			}
			if err := checkName(opts.Name); opts.Name != "" && err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			seen := map[string]bool{}
			for _, s := range channels {
				c, err := ParseChannel(s)
				if err != nil {
					return &cmdutil.FlagError{Err: err}
				}
				if seen[c.Name] {
					return cmdutil.FlagErrorf("channel %s is given twice", c.Name)
				}
				seen[c.Name] = true
				opts.Channels = append(opts.Channels, c)
			}
			if opts.ClientSecret != "" && opts.ClientSecretFile != "" {
				return cmdutil.FlagErrorf("give only one of --client-secret and --client-secret-file")
			}
			if opts.InstallService && opts.Dir != "" {
				return cmdutil.FlagErrorf("--install-service writes the service's own agent.properties; drop --dir")
			}
			if opts.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout must be positive")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return registerRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.BaseURL, "base-url", "", "Medplum server `URL` (default $MEDPLUM_BASE_URL)")
	fl.StringVar(&opts.ClientID, "client-id", "", "OAuth2 client `ID` (default $MEDPLUM_CLIENT_ID)")
	fl.StringVar(&opts.ClientSecret, "client-secret", "", "OAuth2 client `SECRET` (default $MEDPLUM_CLIENT_SECRET; visible to other users in the process list)")
	fl.StringVar(&opts.ClientSecretFile, "client-secret-file", "", "Read the client secret from `FILE` (- for standard input)")
	fl.StringVar(&opts.AgentID, "agent-id", "", "Check and use this existing Agent `ID`")
	fl.StringVar(&opts.Name, "name", "", "Create or update the Agent with this `NAME`")
	fl.StringArrayVar(&channels, "channel", nil, "Channel of the Agent, as `NAME=URL[,bot=Bot/ID]` (repeatable), e.g. adt=mllp://0.0.0.0:56000,bot=Bot/ack")
	fl.StringVar(&opts.Dir, "dir", "", "Write agent.properties into `DIR` (default: the working directory)")
	fl.DurationVar(&opts.Timeout, "timeout", 30*time.Second, "How long to wait for the server")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "Show what would be created or written, change nothing")
	fl.BoolVar(&opts.JSON, "json", false, "Print the result as JSON")
	fl.BoolVar(&opts.InstallService, "install-service", false, "Install and start the agent as a system service (needs root)")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagFilename("client-secret-file")
	return cmd
}

// checkName keeps Agent names to what a FHIR search can match exactly:
// ',', '|', '$' and '\' have meanings in search values.
func checkName(name string) error {
	switch {
	case strings.TrimSpace(name) != name || name == "":
		return fmt.Errorf("invalid --name %q: empty or with surrounding space", name)
	case len(name) > 200:
		return errors.New("invalid --name: longer than 200 bytes")
	case strings.ContainsAny(name, `,|$\`) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("invalid --name %q: it may not contain , | $ \\ or control characters", name)
	}
	return nil
}

// credentials are the resolved client credentials.
type credentials struct {
	baseURL, clientID, clientSecret string
}

// resolve fills in the credentials: flags, then files, then the
// environment, then a prompt.
func (o *Options) resolve(ctx context.Context) (credentials, error) {
	c := credentials{
		baseURL:  firstOf(o.BaseURL, o.Getenv("MEDPLUM_BASE_URL")),
		clientID: firstOf(o.ClientID, o.Getenv("MEDPLUM_CLIENT_ID")),
	}
	if c.baseURL == "" {
		return c, cmdutil.FlagErrorf("missing --base-url (or MEDPLUM_BASE_URL)")
	}
	base, err := normalizeBaseURL(c.baseURL)
	if err != nil {
		return c, &cmdutil.FlagError{Err: err}
	}
	c.baseURL = base
	if c.clientID == "" {
		return c, cmdutil.FlagErrorf("missing --client-id (or MEDPLUM_CLIENT_ID)")
	}
	switch {
	case o.ClientSecret != "":
		c.clientSecret = o.ClientSecret
	case o.ClientSecretFile != "":
		if c.clientSecret, err = o.readSecretFile(); err != nil {
			return c, err
		}
	case strings.TrimSpace(o.Getenv("MEDPLUM_CLIENT_SECRET")) != "":
		c.clientSecret = strings.TrimSpace(o.Getenv("MEDPLUM_CLIENT_SECRET"))
	default:
		if c.clientSecret, err = o.Prompt(ctx, "Client secret for "+c.clientID+": "); err != nil {
			if errors.Is(err, errNotInteractive) {
				return c, cmdutil.FlagErrorf("missing client secret: give --client-secret-file, MEDPLUM_CLIENT_SECRET or --client-secret")
			}
			return c, err
		}
	}
	c.clientSecret = strings.TrimSpace(c.clientSecret)
	if c.clientSecret == "" {
		return c, cmdutil.FlagErrorf("the client secret is empty")
	}
	return c, nil
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

func (o *Options) readSecretFile() (string, error) {
	var r io.Reader = o.IO.In
	if o.ClientSecretFile != "-" {
		f, err := os.Open(o.ClientSecretFile)
		if err != nil {
			return "", cmdutil.WithCode(cmdutil.ExitUsage, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("reading the client secret: %w", err)
	}
	if len(b) > maxSecretFile {
		return "", cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("%s is larger than %d KiB: not a client secret", o.ClientSecretFile, maxSecretFile>>10))
	}
	return string(b), nil
}

// normalizeBaseURL checks the server URL and gives it the trailing "/"
// the rest of the agent expects.
func normalizeBaseURL(raw string) (string, error) {
	if strings.Contains(raw, "@") {
		// Not echoed: it may hold a password, which need not even parse as one.
		return "", errors.New("invalid --base-url: it must not contain '@' (a user name or password)")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "", fmt.Errorf("invalid --base-url %q: want http(s)://HOST/", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("invalid --base-url %q: it must not have a query or fragment", raw)
	}
	s := u.String()
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s, nil
}

var errNotInteractive = errors.New("standard input is not a terminal")

// terminalPrompt reads a line from the terminal without echo. Ctrl-C
// cancels ctx (the root command traps the signal), so the read is
// abandoned and the terminal restored rather than waited for.
func terminalPrompt(ios *iostreams.IOStreams) func(context.Context, string) (string, error) {
	return func(ctx context.Context, prompt string) (string, error) {
		f, ok := ios.In.(*os.File)
		if !ok || !ios.IsStdinTTY() {
			return "", errNotInteractive
		}
		fd := int(f.Fd())
		state, err := term.GetState(fd)
		if err != nil {
			return "", err
		}
		fmt.Fprint(ios.ErrOut, prompt)
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			b, err := term.ReadPassword(fd)
			done <- result{b, err}
		}()
		select {
		case r := <-done:
			fmt.Fprintln(ios.ErrOut)
			return string(r.b), r.err
		case <-ctx.Done():
			_ = term.Restore(fd, state)
			fmt.Fprintln(ios.ErrOut)
			return "", cmdutil.ErrInterrupted
		}
	}
}

// Result is what register did, printed as the summary or as --json.
type Result struct {
	DryRun     bool             `json:"dryRun"`
	Changed    bool             `json:"changed"`
	BaseURL    string           `json:"baseUrl"`
	ClientID   string           `json:"clientId"`
	Agent      Resource         `json:"agent"`
	Endpoints  []EndpointResult `json:"endpoints,omitempty"`
	Properties service.Step     `json:"properties"`
	Service    []service.Step   `json:"service,omitempty"`
}

func registerRun(ctx context.Context, opts *Options) error {
	creds, err := opts.resolve(ctx)
	if err != nil {
		return err
	}
	if u, _ := url.Parse(creds.baseURL); u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(opts.IO.ErrOut, "warning: %s is not https: the client secret and tokens cross the network unencrypted\n", creds.baseURL)
	}
	var m service.Manager
	if opts.InstallService {
		if m, err = opts.Service(); err != nil {
			return err
		}
		// Fail before the server is changed when the service cannot be installed.
		if err := m.Preflight(); err != nil && !opts.DryRun {
			if errors.Is(err, service.ErrNotAdmin) {
				err = fmt.Errorf("%w: run register with sudo (as Administrator on Windows)", err)
			}
			return fmt.Errorf("--install-service: %w", err)
		}
	}
	res := &Result{DryRun: opts.DryRun, BaseURL: creds.baseURL, ClientID: creds.clientID}
	if err := talkToServer(ctx, opts, creds, res); err != nil {
		return serverError(creds.baseURL, err)
	}
	props := [][2]string{
		{"baseUrl", creds.baseURL},
		{"clientId", creds.clientID},
		{"clientSecret", creds.clientSecret},
		{"agentId", strings.TrimPrefix(res.Agent.Reference, "Agent/")},
	}
	if res.Agent.Reference == "" {
		props[3][1] = "(new Agent id)" // dry run: the Agent does not exist yet
	}
	if m != nil {
		if err := installService(ctx, m, opts, props, res); err != nil {
			return err
		}
	} else if err := writeLocal(opts, props, res); err != nil {
		return err
	}
	res.Changed = res.Agent.Action.Changes() || service.Changed(append([]service.Step{res.Properties}, res.Service...))
	for _, e := range res.Endpoints {
		res.Changed = res.Changed || e.Action.Changes()
	}
	return printResult(opts, res)
}

// talkToServer logs in, then checks or sets up the Agent, all within
// --timeout.
func talkToServer(ctx context.Context, opts *Options, creds credentials, res *Result) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	hc := &http.Client{
		Timeout:   opts.Timeout,
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second},
	}
	defer hc.CloseIdleConnections()
	cc := &auth.ClientCredentials{BaseURL: creds.baseURL, ClientID: creds.clientID, ClientSecret: creds.clientSecret, HTTPClient: hc}
	// Log in first, so refused credentials are told apart from missing rights.
	if _, err := cc.Token(ctx); err != nil {
		return err
	}
	s := &server{
		fc:     fhir.NewClient(creds.baseURL, cc.Token, hc),
		base:   creds.baseURL + "fhir/R4/",
		token:  cc.Token,
		hc:     hc,
		dryRun: opts.DryRun,
		bots:   map[string]bool{},
	}
	var err error
	if opts.AgentID != "" {
		res.Agent, err = s.verifyAgent(ctx, opts.AgentID)
		return err
	}
	res.Agent, res.Endpoints, err = s.ensureAgent(ctx, opts.Name, opts.Channels)
	return err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serverError gives server failures their exit codes: 4 when the
// credentials are refused or lack the rights, 5 when the server cannot be
// reached.
func serverError(base string, err error) error {
	var fe *fhir.Error
	var ue *url.Error
	switch {
	case errors.Is(err, context.Canceled):
		return cmdutil.ErrInterrupted
	case auth.IsCredentialsError(err):
		return cmdutil.WithCode(cmdutil.ExitAuth, err)
	case errors.As(err, &fe) && (fe.Status == http.StatusUnauthorized || fe.Status == http.StatusForbidden):
		return cmdutil.WithCode(cmdutil.ExitAuth, fmt.Errorf("the client may not do this: %w", err))
	case errors.Is(err, context.DeadlineExceeded):
		return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("no answer from %s in time (--timeout): %w", base, err))
	case errors.As(err, &ue):
		return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("cannot reach %s: %w", base, err))
	}
	return err
}

// writeLocal writes agent.properties into --dir.
func writeLocal(opts *Options, props [][2]string, res *Result) error {
	dir := opts.Dir
	wd, err := opts.WorkDir()
	if err != nil {
		return err
	}
	switch {
	case dir == "":
		dir = wd
	case !filepath.IsAbs(dir):
		dir = filepath.Join(wd, dir)
	}
	if !opts.DryRun {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	path := filepath.Join(dir, config.DefaultFileName)
	action, err := service.WriteProperties(path, props, nil, opts.DryRun)
	if err != nil {
		return err
	}
	res.Properties = service.Step{Action: action, Target: path}
	return nil
}

// installService writes the service's agent.properties and installs and
// starts the service.
func installService(ctx context.Context, m service.Manager, opts *Options, props [][2]string, res *Result) error {
	steps, err := m.Install(ctx, service.InstallOptions{Properties: props, DryRun: opts.DryRun})
	for _, s := range steps {
		if s.Target == m.ConfigPath() {
			res.Properties = s
		} else {
			res.Service = append(res.Service, s)
		}
	}
	if err != nil {
		return fmt.Errorf("installing the %s service: %w (the server side is done; register can be run again)", m.Kind(), err)
	}
	return nil
}
