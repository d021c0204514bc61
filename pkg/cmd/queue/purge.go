package queue

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// PurgeOptions holds the inputs of `queue purge`.
type PurgeOptions struct {
	IO        *iostreams.IOStreams
	Now       func() time.Time
	DBPath    string
	States    []spool.State
	OlderThan time.Duration
	Age       string // as given, for messages
	Channel   string
	Yes       bool
	JSON      bool
}

// NewCmdPurge builds the command; runF replaces the run function in tests.
func NewCmdPurge(f *cmdutil.Factory, runF func(context.Context, *PurgeOptions) error) *cobra.Command {
	opts := &PurgeOptions{IO: f.IOStreams, Now: f.Now}
	var states []string
	cmd := &cobra.Command{
		Use:   "purge --state STATE --older-than AGE",
		Short: "Delete settled messages",
		Long: `Delete processed, rejected, failed or nacked messages that settled longer ago
than --older-than. Messages still waiting to be delivered (queued, claimed,
inflight) are never deleted. The agent's own retention sweep does this hourly; purge
is for freeing space or clearing reviewed failures now.

Asks for confirmation on a terminal; --yes is required when standard input is not
one. Prints the number of messages deleted.`,
		Example: `  medplum-agent queue purge --state failed,rejected --older-than 30d
  medplum-agent queue purge --state processed --older-than 36h --channel adt-in --yes`,
		Args: cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(states) == 0 || opts.Age == "" {
				return cmdutil.FlagErrorf("--state and --older-than are required")
			}
			var err error
			if opts.States, err = parseStates(states, false); err != nil {
				return err
			}
			for _, st := range opts.States {
				if !st.Terminal() {
					return cmdutil.FlagErrorf("cannot purge %s messages: they have not been delivered yet", st)
				}
			}
			if opts.OlderThan, err = parseAge(opts.Age); err != nil {
				return err
			}
			if !opts.Yes && !opts.IO.IsStdinTTY() {
				return cmdutil.FlagErrorf("--yes is required when standard input is not a terminal")
			}
			if opts.DBPath, err = dbPath(cmd, f); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return purgeRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&states, "state", nil, "States to delete, comma-separated: processed, rejected, failed, nacked")
	fl.StringVar(&opts.Age, "older-than", "", "Only messages settled longer ago than this, such as 36h or 30d")
	fl.StringVar(&opts.Channel, "channel", "", "Only this `channel`")
	fl.BoolVarP(&opts.Yes, "yes", "y", false, "Do not ask for confirmation")
	fl.BoolVar(&opts.JSON, "json", false, "Print the result as JSON")
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(
		[]string{"processed", "rejected", "failed", "nacked"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func purgeRun(ctx context.Context, opts *PurgeOptions) error {
	s, err := openDB(opts.DBPath, opts.Now)
	if err != nil {
		return err
	}
	defer s.Close()
	filter := spool.Filter{States: opts.States, Channel: opts.Channel, Before: opts.Now().Add(-opts.OlderThan)}
	if !opts.Yes {
		n, err := s.Count(ctx, filter)
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintln(opts.IO.ErrOut, "No matching messages.")
			return report(opts, 0)
		}
		where := "all channels"
		if opts.Channel != "" {
			where = "channel " + opts.Channel
		}
		fmt.Fprintf(opts.IO.ErrOut, "Delete %d %s message(s) older than %s in %s? [y/N] ", n, joinStates(opts.States), opts.Age, where)
		if !confirmed(opts.IO.In) {
			fmt.Fprintln(opts.IO.ErrOut, "Nothing deleted.")
			return nil
		}
	}
	n, err := s.Purge(ctx, filter)
	if err != nil {
		return fmt.Errorf("purge stopped after deleting %d message(s): %w", n, err)
	}
	return report(opts, n)
}

func report(opts *PurgeOptions, n int64) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(map[string]int64{"deleted": n})
	}
	_, err := fmt.Fprintln(opts.IO.Out, n)
	return err
}

// confirmed reads one answer line; only y or yes agrees.
func confirmed(in io.Reader) bool {
	line, _ := bufio.NewReader(io.LimitReader(in, 256)).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func joinStates(states []spool.State) string {
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = string(s)
	}
	return strings.Join(parts, "/")
}
