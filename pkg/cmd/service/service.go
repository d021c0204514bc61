// Package servicecmd implements `medplum-agent service status|uninstall`,
// and the rendering of service steps shared with `register`.
package servicecmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// Options holds the inputs of the service subcommands.
type Options struct {
	IO *iostreams.IOStreams
	// Manager returns the platform's service manager.
	Manager func() (service.Manager, error)

	Verb   string // status or uninstall
	Purge  bool
	DryRun bool
	JSON   bool
}

// NewCmdService builds `service` and its subcommands; runF replaces the run
// function of both in tests.
func NewCmdService(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service <command>",
		Short: "Inspect or remove the agent's system service",
		Long: `Inspect or remove the system service that 'medplum-agent register --install-service'
set up: a systemd unit on Linux (medplum-agent.service), a launchd job on macOS
(dev.medplum-agent), a Windows service (MedplumAgent).`,
	}
	run := func(opts *Options) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return serviceRun(c.Context(), opts)
		}
	}

	status := &Options{IO: f.IOStreams, Manager: service.New, Verb: "status"}
	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the agent's service is installed, enabled and running",
		Long: `Ask the service manager about the agent's service and print its state, process id,
unit file and configuration path. The exit status is 0 whenever the service manager
answered, whatever the state; use --json to test it in scripts.`,
		Example: `  medplum-agent service status
  medplum-agent service status --json | jq -r .state`,
		Args: cmdutil.NoArgs(),
		RunE: run(status),
	}
	statusCmd.Flags().BoolVar(&status.JSON, "json", false, "Print the status as JSON")

	uninstall := &Options{IO: f.IOStreams, Manager: service.New, Verb: "uninstall"}
	uninstallCmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the agent's service",
		Long: `Stop the agent's service, disable it and remove what register installed. The
configuration is kept unless --purge is given, which also deletes the state directory
(including messages still waiting in the durable queue) and the logs. A unit installed
by the deb or rpm package stays until the package is removed. Needs root (Administrator
on Windows).`,
		Example: `  sudo medplum-agent service uninstall
  sudo medplum-agent service uninstall --purge --dry-run`,
		Args: cmdutil.NoArgs(),
		RunE: run(uninstall),
	}
	fl := uninstallCmd.Flags()
	fl.BoolVar(&uninstall.Purge, "purge", false, "Also delete the configuration, state and logs")
	fl.BoolVar(&uninstall.DryRun, "dry-run", false, "Show what would be removed, change nothing")
	fl.BoolVar(&uninstall.JSON, "json", false, "Print the steps as JSON")

	cmd.AddCommand(statusCmd, uninstallCmd)
	return cmd
}

func serviceRun(ctx context.Context, opts *Options) error {
	m, err := opts.Manager()
	if err != nil {
		return err
	}
	if opts.Verb == "status" {
		return statusRun(ctx, opts, m)
	}
	return uninstallRun(ctx, opts, m)
}

func statusRun(ctx context.Context, opts *Options, m service.Manager) error {
	st, err := m.Status(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return encodeJSON(opts, st)
	}
	r := opts.IO.OutRenderer()
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s", r.NewStyle().Bold(true).Render(st.Name), st.Manager, stateStyle(r, st).Render(st.State))
	if st.Installed {
		enabled := "disabled"
		if st.Enabled {
			enabled = "enabled"
		}
		fmt.Fprintf(&b, ", %s", enabled)
	}
	if st.PID > 0 {
		fmt.Fprintf(&b, ", pid %d", st.PID)
	}
	b.WriteString("\n")
	if st.UnitFile != "" {
		fmt.Fprintf(&b, "  unit:   %s\n", st.UnitFile)
	}
	fmt.Fprintf(&b, "  config: %s\n", st.Config)
	if _, err := fmt.Fprint(opts.IO.Out, b.String()); err != nil {
		return err
	}
	if !st.Installed {
		fmt.Fprintln(opts.IO.ErrOut, "Install it with: sudo medplum-agent register ... --install-service")
	}
	return nil
}

func stateStyle(r *lipgloss.Renderer, st service.Status) lipgloss.Style {
	switch {
	case st.Running:
		return r.NewStyle().Foreground(lipgloss.Color("2"))
	case st.Installed:
		return r.NewStyle().Foreground(lipgloss.Color("1"))
	}
	return r.NewStyle().Faint(true)
}

// uninstallResult is the --json form of uninstall.
type uninstallResult struct {
	DryRun  bool           `json:"dryRun"`
	Changed bool           `json:"changed"`
	Steps   []service.Step `json:"steps"`
}

func uninstallRun(ctx context.Context, opts *Options, m service.Manager) error {
	steps, err := m.Uninstall(ctx, service.UninstallOptions{Purge: opts.Purge, DryRun: opts.DryRun})
	if err != nil {
		// Tell what was done before the failure; the error says the rest.
		for _, s := range steps {
			fmt.Fprint(opts.IO.ErrOut, StepLine(opts.IO.ErrRenderer(), s, opts.DryRun))
		}
		return fmt.Errorf("uninstalling the %s service: %w", m.Kind(), err)
	}
	return printSteps(opts, steps)
}

func printSteps(opts *Options, steps []service.Step) error {
	if opts.JSON {
		if steps == nil {
			steps = []service.Step{}
		}
		return encodeJSON(opts, uninstallResult{DryRun: opts.DryRun, Changed: service.Changed(steps), Steps: steps})
	}
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(StepLine(opts.IO.OutRenderer(), s, opts.DryRun))
	}
	switch {
	case len(steps) == 0:
		b.WriteString("Nothing to uninstall: the service is not installed.\n")
	case opts.DryRun:
		b.WriteString("Dry run: nothing was changed.\n")
	}
	_, err := fmt.Fprint(opts.IO.Out, b.String())
	return err
}

func encodeJSON(opts *Options, v any) error {
	enc := json.NewEncoder(opts.IO.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// StepLine renders one step as "target: action (note)\n".
func StepLine(r *lipgloss.Renderer, s service.Step, dryRun bool) string {
	line := s.Target + ": " + ActionText(r, s.Action, dryRun)
	if s.Note != "" {
		line += " (" + s.Note + ")"
	}
	return line + "\n"
}

// ActionText renders an action word, coloured by kind on a terminal, and as
// "would be <action>" in a dry run.
func ActionText(r *lipgloss.Renderer, action service.Action, dryRun bool) string {
	text := string(action)
	if dryRun && action.Changes() {
		text = "would be " + text
	}
	var st lipgloss.Style
	switch action {
	case service.Created, service.Enabled, service.Started, service.Verified:
		st = r.NewStyle().Foreground(lipgloss.Color("2"))
	case service.Updated, service.Restarted:
		st = r.NewStyle().Foreground(lipgloss.Color("3"))
	case service.Removed, service.Stopped, service.Disabled:
		st = r.NewStyle().Foreground(lipgloss.Color("1"))
	default:
		st = r.NewStyle().Faint(true)
	}
	return st.Render(text)
}
