// Package devserver implements `medplum-agent dev-server`, and the shared
// start-up used by `run --dev`.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// ServerFlags are the dev server's options, shared with `run --dev`.
type ServerFlags struct {
	Listen   string
	Config   string
	Record   string
	TokenTTL time.Duration
}

// Options holds the inputs of `dev-server`.
type Options struct {
	IO     *iostreams.IOStreams
	Logger func() *slog.Logger
	Server ServerFlags
}

// NewCmdDevServer builds the command; runF replaces the run function in tests.
func NewCmdDevServer(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Logger: f.Logger}
	cmd := &cobra.Command{
		Use:   "dev-server",
		Short: "Run a local Medplum-compatible server for agents, tests and CI",
		Long: `Run a Medplum-compatible server on loopback: the OAuth2 token endpoint, FHIR R4
read/search/create for Agent, Endpoint, Bot, Device, Binary and AuditEvent, the agent
WebSocket (/ws/agent) with built-in bots (ack, echo, reject, exec:COMMAND), and the
Agent operations $push, $reload-config, $status, $bulk-status, $stats, $fetch-logs and
$upgrade, so an agent can be driven with curl.

Without --config it serves one client (id medplum-agent-dev, secret
medplum-agent-dev-secret) and one agent (7d3c5f2e-9a41-4b8e-b6c2-1f0e8d4a5c93) whose
channel "hl7" listens on mllp://0.0.0.0:56000 and runs the ack bot. The config file
format is described in the README.`,
		Example: `  medplum-agent dev-server
  medplum-agent dev-server --listen 127.0.0.1:9103 --config site.json --record transmits.jsonl`,
		Args: cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return devServerRun(cmd.Context(), opts)
		},
	}
	AddServerFlags(cmd, &opts.Server, "")
	return cmd
}

// AddServerFlags registers the dev server flags, with a prefix for `run --dev`.
func AddServerFlags(cmd *cobra.Command, s *ServerFlags, prefix string) {
	fl := cmd.Flags()
	fl.StringVar(&s.Listen, prefix+"listen", devserver.DefaultListen, "Address of the dev server")
	fl.StringVar(&s.Config, prefix+"config", "", "Dev server configuration `FILE` (JSON: clients, bots, agents, devices)")
	fl.StringVar(&s.Record, prefix+"record", "", "Append every received transmit to `FILE` as one JSON line")
	fl.DurationVar(&s.TokenTTL, prefix+"token-ttl", devserver.DefaultTokenTTL, "Lifetime of the access tokens it issues")
}

// LoadConfig reads --config, or returns the documented defaults.
func (s ServerFlags) LoadConfig() (*devserver.Config, error) {
	if s.Config == "" {
		return devserver.DefaultConfig(), nil
	}
	cfg, err := devserver.LoadConfig(s.Config)
	if err != nil {
		return nil, cmdutil.WithCode(cmdutil.ExitConfig, err)
	}
	return cfg, nil
}

// Start builds and starts a dev server serving cfg. The returned close
// function stops it and closes the record file.
func Start(s ServerFlags, cfg *devserver.Config, logger *slog.Logger) (*devserver.Server, func() error, error) {
	opt := devserver.Options{Listen: s.Listen, Logger: logger, Config: cfg, TokenTTL: s.TokenTTL}
	var record io.WriteCloser
	if s.Record != "" {
		// The record holds message content: owner-only, appended across runs.
		f, err := os.OpenFile(s.Record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, nil, cmdutil.WithCode(cmdutil.ExitConfig, err)
		}
		record, opt.Record = f, f
	}
	srv, err := devserver.New(opt)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		if record != nil {
			record.Close()
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("dev server: %s is already in use (choose another with --listen)", s.Listen))
		}
		return nil, nil, cmdutil.WithCode(cmdutil.ExitConfig, fmt.Errorf("dev server: %w", err))
	}
	closeAll := func() error {
		err := srv.Close()
		if record != nil {
			if cerr := record.Close(); err == nil {
				err = cerr
			}
		}
		return err
	}
	return srv, closeAll, nil
}

func devServerRun(ctx context.Context, opts *Options) error {
	cfg, err := opts.Server.LoadConfig()
	if err != nil {
		return err
	}
	srv, closeAll, err := Start(opts.Server, cfg, opts.Logger())
	if err != nil {
		return err
	}
	defer closeAll()
	srv.Banner(opts.IO.Out)
	<-ctx.Done()
	return nil
}
