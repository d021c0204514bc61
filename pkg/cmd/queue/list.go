package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// ListOptions holds the inputs of `queue list`.
type ListOptions struct {
	IO        *iostreams.IOStreams
	Now       func() time.Time
	DBPath    string
	States    []spool.State // nil: every state
	Channel   string
	OlderThan time.Duration
	Limit     int
	JSON      bool
}

// NewCmdList builds the command; runF replaces the run function in tests.
func NewCmdList(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IOStreams, Now: f.Now}
	var states []string
	var olderThan string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List queued messages, by default the failed and rejected ones",
		Long: `List messages newest first, without their bodies (see 'queue show'). By default
only failed and rejected messages are listed, with the reason they stopped.

Piped output is one tab-separated line per message: id, channel, state, attempts,
control id, received (RFC 3339), error code, last error.`,
		Example: `  medplum-agent queue list
  medplum-agent queue list --state queued,inflight --channel adt-in
  medplum-agent queue list --state all --limit 1000 --json`,
		Args: cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if opts.States, err = parseStates(states, true); err != nil {
				return err
			}
			if olderThan != "" {
				if opts.OlderThan, err = parseAge(olderThan); err != nil {
					return err
				}
			}
			if opts.Limit < 1 {
				return cmdutil.FlagErrorf("--limit must be at least 1")
			}
			if opts.DBPath, err = dbPath(cmd, f); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return listRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&states, "state", []string{"failed", "rejected"}, "States to list, comma-separated, or all")
	fl.StringVar(&opts.Channel, "channel", "", "Only this `channel`")
	fl.StringVar(&olderThan, "older-than", "", "Only messages settled (or received) longer ago than this, such as 36h or 7d")
	fl.IntVarP(&opts.Limit, "limit", "L", 100, "Maximum number of messages (at most 10000)")
	fl.BoolVar(&opts.JSON, "json", false, "Print a JSON array")
	_ = cmd.RegisterFlagCompletionFunc("state", stateCompletion)
	return cmd
}

func stateCompletion(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	names := []string{"all"}
	for _, s := range spool.States {
		names = append(names, string(s))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// maxErrorWidth keeps a table row on one line; 'queue show' has the rest.
const maxErrorWidth = 60

func ellipsis(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func listRun(ctx context.Context, opts *ListOptions) error {
	s, err := openDB(opts.DBPath, opts.Now)
	if err != nil {
		return err
	}
	defer s.Close()
	now := opts.Now()
	filter := spool.Filter{States: opts.States, Channel: opts.Channel, Limit: opts.Limit}
	if opts.OlderThan > 0 {
		filter.Before = now.Add(-opts.OlderThan)
	}
	rows, err := s.List(ctx, filter)
	if err != nil {
		return err
	}
	if opts.JSON {
		out := make([]jsonRow, 0, len(rows))
		for _, r := range rows {
			out = append(out, toJSON(r))
		}
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tty := opts.IO.IsStdoutTTY()
	if tty && len(rows) == 0 {
		_, err := fmt.Fprintln(opts.IO.Out, "No matching messages.")
		return err
	}
	cells := make([][]string, 0, len(rows))
	for _, r := range rows {
		received, lastError := r.ReceivedAt.UTC().Format(time.RFC3339), r.LastError
		if tty {
			received, lastError = age(now, r.ReceivedAt)+" ago", ellipsis(lastError, maxErrorWidth)
		}
		cells = append(cells, []string{strconv.FormatInt(r.ID, 10), r.Channel, string(r.State),
			strconv.Itoa(r.Attempt), r.ControlID, received, r.ErrorCode, lastError})
	}
	headers := []string{"ID", "CHANNEL", "STATE", "ATTEMPTS", "CONTROL ID", "RECEIVED", "CODE", "LAST ERROR"}
	return printTable(opts.IO, headers, cells, func(row, col int, s lipgloss.Style) lipgloss.Style {
		if col == 2 {
			return stateStyle(rows[row].State, s)
		}
		return s
	})
}
