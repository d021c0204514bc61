// Package run implements `medplum-agent run`: the agent daemon, optionally
// with an embedded dev server (--dev).
package run

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/agent"
	"github.com/medplum-agent/medplum-agent/pkg/auth"
	"github.com/medplum-agent/medplum-agent/pkg/build"
	devcmd "github.com/medplum-agent/medplum-agent/pkg/cmd/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/config"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/logging"
	"github.com/medplum-agent/medplum-agent/pkg/service"
	"github.com/medplum-agent/medplum-agent/pkg/upgrade"
	"github.com/medplum-agent/medplum-agent/pkg/wslink"
)

// Options holds the inputs of `run`.
type Options struct {
	IO      *iostreams.IOStreams
	Logger  func() *slog.Logger
	Getenv  func(string) string
	WorkDir func() (string, error)

	Args            []string
	ConfigFile      string
	DataDir         string
	CAFile          string
	ShutdownTimeout time.Duration

	Dev       bool
	DevServer devcmd.ServerFlags
}

// NewCmdRun builds the command; runF replaces the run function in tests.
func NewCmdRun(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Logger: f.Logger, Getenv: f.Getenv, WorkDir: f.WorkDir}
	cmd := &cobra.Command{
		Use:   "run [baseUrl clientId clientSecret agentId [logLevel]]",
		Short: "Run the agent: relay device traffic to a Medplum server",
		Long: `Run the Medplum agent. It logs in with OAuth2 client credentials, reads its Agent and
Endpoint resources, opens the channels they describe (mllp://host:port?...), and relays every
message over one WebSocket to the server, whose Bot answers go back to the device.

Settings come from, in order of precedence: the positional arguments; the environment
(MEDPLUM_BASE_URL, MEDPLUM_CLIENT_ID, MEDPLUM_CLIENT_SECRET, MEDPLUM_AGENT_ID,
MEDPLUM_LOG_LEVEL); the properties file (--config, else agent.properties in the working
directory). State and logs go to --data-dir (default: beside the properties file).

--dev starts an embedded dev server on loopback and connects the agent to it: a channel
"hl7" on mllp://0.0.0.0:56000 answered by an ack bot, no Medplum account needed.

SIGTERM or SIGINT stops gracefully (exit 0); SIGHUP reloads the configuration. Exit
status 78 means the configuration is invalid, 4 that the credentials were refused.`,
		Example: `  medplum-agent run --dev
  medplum-agent run https://api.medplum.com/ $CLIENT_ID $CLIENT_SECRET $AGENT_ID
  medplum-agent run --config /etc/medplum-agent/agent.properties --data-dir /var/lib/medplum-agent`,
		Args: cmdutil.RangeArgs(0, 5),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Args = args
			if len(args) > 0 && len(args) < 4 {
				return cmdutil.FlagErrorf("expected baseUrl clientId clientSecret agentId [logLevel], got %d argument(s)", len(args))
			}
			if opts.Dev && len(args) > 0 {
				return cmdutil.FlagErrorf("--dev takes no positional arguments")
			}
			if !opts.Dev {
				for _, name := range []string{"dev-listen", "dev-config", "dev-record", "dev-token-ttl"} {
					if cmd.Flags().Changed(name) {
						return cmdutil.FlagErrorf("--%s needs --dev", name)
					}
				}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			if service.IsWindowsService() {
				// The service manager, not a terminal, starts and stops us.
				return service.RunAsService(service.WindowsName, func(ctx context.Context) error { return runRun(ctx, opts) })
			}
			return runRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.ConfigFile, "config", "", "Properties `FILE` (default agent.properties in the working directory)")
	fl.StringVar(&opts.DataDir, "data-dir", "", "Directory for state files and logs (default: beside the config)")
	fl.StringVar(&opts.CAFile, "ca-file", "", "PEM `FILE` of extra CA certificates to trust for the server")
	fl.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "How long to let exchanges in progress finish on stop")
	fl.BoolVar(&opts.Dev, "dev", false, "Start an embedded dev server and connect to it")
	devcmd.AddServerFlags(cmd, &opts.DevServer, "dev-")
	return cmd
}

func runRun(ctx context.Context, opts *Options) error {
	wd, err := opts.WorkDir()
	if err != nil {
		return err
	}
	src := config.Sources{Args: opts.Args, Getenv: opts.Getenv, File: opts.ConfigFile, WorkDir: wd, DataDir: opts.DataDir}
	if opts.Dev && src.DataDir == "" {
		src.DataDir = devDataDir()
	}
	// First, before the dev server, the data dir lock or a channel holds
	// anything: a newer binary that a self-upgrade staged takes over.
	if dataDir, err := config.DataDir(src); err == nil {
		upgrade.ExecStaged(ctx, dataDir, build.AgentVersion(), opts.Logger())
	}

	if opts.Dev {
		closeDev, err := startDev(opts, &src)
		if err != nil {
			return err
		}
		defer closeDev()
	}

	cfg, warnings, err := config.Load(src)
	if err != nil {
		return cmdutil.WithCode(cmdutil.ExitConfig, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(opts.IO.ErrOut, "warning: %s\n", w)
	}

	tlsCfg, err := tlsConfig(opts.CAFile)
	if err != nil {
		return cmdutil.WithCode(cmdutil.ExitConfig, err)
	}

	mainLog, channelLog, err := openLogs(cfg, opts)
	if err != nil {
		return cmdutil.WithCode(cmdutil.ExitConfig, err)
	}
	defer channelLog.Close()
	defer mainLog.Close()

	// Created before anything can replace the executable: it records how to
	// start this program again after a self-upgrade.
	restart, err := upgrade.DefaultRestart("", os.Args)
	if err != nil {
		mainLog.Slog().Warn("Self-upgrade is not available", "err", err)
		restart = nil
	}
	a, err := agent.New(agent.Options{
		Config:    cfg,
		Version:   build.AgentVersion(),
		TLSConfig: tlsCfg,
		// No overall timeout: a Binary upload may take minutes. Each request
		// carries its own deadline (the FHIR and token clients default to 30 s).
		HTTPClient: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsCfg}},
		MainLog:    mainLog,
		ChannelLog: channelLog.Slog(),
		// Leave room for the link to flush after exchanges finish.
		ShutdownTimeout: opts.ShutdownTimeout,
		UpgradeRestart:  restart,
	})
	if err != nil {
		return cmdutil.WithCode(cmdutil.ExitConfig, err)
	}
	if err := a.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: a clean stop
		}
		return startError(err)
	}
	_ = service.Notify(service.Ready)
	if opts.Dev {
		fmt.Fprintf(opts.IO.ErrOut, "Agent running. Try: medplum-agent hl7 send localhost 56000 --generate-example\n")
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			_ = service.Notify(service.Reloading)
			if err := a.Reload(ctx); err != nil {
				mainLog.Slog().Error("reload failed; the running configuration is unchanged", "error", err)
			}
			_ = service.Notify(service.Ready)
		case <-ctx.Done():
			_ = service.Notify(service.Stopping)
			sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout+5*time.Second)
			defer cancel()
			if err := a.Stop(sctx); err != nil {
				mainLog.Slog().Warn("stop did not finish cleanly", "error", err)
			}
			return nil
		}
	}
}

// devDataDir is where --dev keeps its state unless --data-dir says
// otherwise: a per-user folder.
func devDataDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "medplum-agent-dev")
}

// startDev starts the embedded dev server and points the configuration at
// it.
func startDev(opts *Options, src *config.Sources) (func() error, error) {
	devCfg, err := opts.DevServer.LoadConfig()
	if err != nil {
		return nil, err
	}
	srv, closeDev, err := devcmd.Start(opts.DevServer, devCfg, opts.Logger())
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.IO.ErrOut, "Dev server listening on %s (client %s, agent %s)\n",
		srv.BaseURL(), devCfg.Clients[0].ClientID, devCfg.Agents[0].ID)
	src.Args = []string{srv.BaseURL(), devCfg.Clients[0].ClientID, devCfg.Clients[0].ClientSecret, devCfg.Agents[0].ID}
	src.File = "" // the dev server is the whole configuration
	src.Getenv = func(string) string { return "" }
	return closeDev, nil
}

func tlsConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	return wslink.TLSConfigFromCAFile(caFile)
}

// openLogs opens the main log (mirrored as text on stderr when it is a
// terminal) and the channel log, which holds message content and so never
// goes to the console.
func openLogs(cfg *config.Config, opts *Options) (*logging.Logger, *logging.Logger, error) {
	var console = opts.IO.ErrOut
	if !opts.IO.IsStderrTTY() {
		console = nil
	}
	mainLog, err := logging.New(logging.Options{
		Dir: cfg.MainLog.Dir, Name: "main", Level: cfg.MainLog.Level,
		MaxFileSizeMB: cfg.MainLog.MaxFileSizeMB, FilesToKeep: cfg.MainLog.FilesToKeep, Console: console,
	})
	if err != nil {
		return nil, nil, err
	}
	channelLog, err := logging.New(logging.Options{
		Dir: cfg.ChannelLog.Dir, Name: "channels", Level: cfg.ChannelLog.Level,
		MaxFileSizeMB: cfg.ChannelLog.MaxFileSizeMB, FilesToKeep: cfg.ChannelLog.FilesToKeep,
	})
	if err != nil {
		mainLog.Close()
		return nil, nil, err
	}
	return mainLog, channelLog, nil
}

// startError maps a failed start to an exit code.
func startError(err error) error {
	var ce *agent.ConfigError
	var le *agent.LockedError
	switch {
	case errors.As(err, &ce):
		return cmdutil.WithCode(cmdutil.ExitConfig, err)
	case auth.IsCredentialsError(err):
		return cmdutil.WithCode(cmdutil.ExitAuth, err)
	case errors.As(err, &le):
		return cmdutil.WithCode(cmdutil.ExitFailure, err)
	}
	return err
}
