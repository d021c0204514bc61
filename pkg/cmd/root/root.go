// Package root builds the command tree and maps errors to exit codes.
package root

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/build"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/completion"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/version"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// NewCmdRoot builds the whole command tree.
func NewCmdRoot(f *cmdutil.Factory) *cobra.Command {
	var logLevel string
	var noColor bool
	cmd := &cobra.Command{
		Use:   "medplum-agent",
		Short: "Medplum edge agent and clinical integration toolkit",
		Long: `medplum-agent relays HL7 v2 (MLLP), ASTM, DICOM and raw TCP traffic from devices inside a
hospital network to a Medplum server over one authenticated WebSocket, and ships the
command-line tools to test those devices.`,
		Version:       version.Format(build.Get()),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			lvl, err := parseLevel(logLevel)
			if err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			f.IOStreams.SetLogLevel(lvl)
			f.IOStreams.SetNoColor(noColor)
			return nil
		},
	}
	cmd.SetVersionTemplate("{{.Version}}\n")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	cmd.PersistentFlags().StringVar(&logLevel, "log-level", "info", "Diagnostics level: debug, info, warn or error")
	cmd.PersistentFlags().BoolVar(&noColor, "no-color", false, "Disable colour output (also NO_COLOR=1)")
	_ = cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))

	cmd.AddCommand(version.NewCmdVersion(f, nil))
	cmd.AddCommand(completion.NewCmdCompletion(f))
	addCommands(cmd, f)
	return cmd
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// Main runs the CLI and returns the process exit code.
func Main() int {
	f := cmdutil.New()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := NewCmdRoot(f)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return cmdutil.ExitOK
	}
	if isUsageError(err) {
		err = &cmdutil.FlagError{Err: err}
	}
	if !cmdutil.IsSilent(err) {
		fmt.Fprintf(f.IOStreams.ErrOut, "Error: %s\n", err)
		var fe *cmdutil.FlagError
		if errors.As(err, &fe) && cmd != nil {
			fmt.Fprintf(f.IOStreams.ErrOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	return cmdutil.ExitCode(err)
}

// isUsageError recognises the few usage errors cobra reports as plain errors.
func isUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.HasPrefix(msg, "invalid argument")
}
