package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// RetryOptions holds the inputs of `queue retry`.
type RetryOptions struct {
	IO     *iostreams.IOStreams
	Now    func() time.Time
	DBPath string
	IDs    []int64
	JSON   bool
}

// NewCmdRetry builds the command; runF replaces the run function in tests.
func NewCmdRetry(f *cmdutil.Factory, runF func(context.Context, *RetryOptions) error) *cobra.Command {
	opts := &RetryOptions{IO: f.IOStreams, Now: f.Now}
	cmd := &cobra.Command{
		Use:   "retry ID...",
		Short: "Send failed or rejected messages again",
		Long: `Put failed or rejected messages back in their channel's queue, at their original
place in line and with a fresh attempt budget. A running agent sends them within a
few seconds; otherwise they go out when it starts.

A failed message with an ambiguous error (response-timeout, dispatch-failed,
interrupted) may already have been processed by the server: retrying it can
deliver it twice.`,
		Example: `  medplum-agent queue retry 1042
  medplum-agent queue list --json | jq -r '.[].id' | xargs medplum-agent queue retry`,
		Args: cmdutil.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.IDs = opts.IDs[:0]
			for _, a := range args {
				id, err := parseID(a)
				if err != nil {
					return err
				}
				opts.IDs = append(opts.IDs, id)
			}
			var err error
			if opts.DBPath, err = dbPath(cmd, f); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return retryRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print the requeued ids as JSON")
	return cmd
}

func retryRun(ctx context.Context, opts *RetryOptions) error {
	s, err := openDB(opts.DBPath, opts.Now)
	if err != nil {
		return err
	}
	defer s.Close()
	done := []int64{}
	var failed error
	for _, id := range opts.IDs {
		if err := s.Retry(ctx, id); err != nil {
			failed = notFound(err, id)
			fmt.Fprintf(opts.IO.ErrOut, "Error: %v\n", failed)
			continue
		}
		done = append(done, id)
		if !opts.JSON {
			fmt.Fprintf(opts.IO.Out, "%d\n", id)
		}
	}
	if opts.JSON {
		if err := json.NewEncoder(opts.IO.Out).Encode(map[string][]int64{"requeued": done}); err != nil {
			return err
		}
	}
	if len(done) > 0 && opts.IO.IsStderrTTY() {
		fmt.Fprintf(opts.IO.ErrOut, "Requeued %d message(s); a running agent sends them within a few seconds.\n", len(done))
	}
	if failed != nil {
		return cmdutil.Silent(cmdutil.ExitFailure)
	}
	return nil
}
