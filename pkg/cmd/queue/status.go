package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// StatusOptions holds the inputs of `queue status`.
type StatusOptions struct {
	IO     *iostreams.IOStreams
	Now    func() time.Time
	DBPath string
	JSON   bool
}

// NewCmdStatus builds the command; runF replaces the run function in tests.
func NewCmdStatus(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IOStreams, Now: f.Now}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the queue depth per channel and state",
		Long: `Show how many messages each channel has in each state, how long the oldest
queued message has waited, the database size and which process is dispatching.

States: queued (waiting), claimed (handed to the link), inflight (sent, awaiting the
server), processed, rejected (the server or Bot refused it), failed (gave up, or the
outcome is unknown: see 'queue list'), nacked (the device was refused, e.g. a
duplicate control id).

Piped output is one tab-separated line per channel: channel, queued, claimed,
inflight, processed, rejected, failed, nacked, oldest queued age in ms (-1 if none).`,
		Example: `  medplum-agent queue status --data-dir /var/lib/medplum-agent
  medplum-agent queue status --db ./medplum-agent-queue.sqlite --json`,
		Args: cmdutil.NoArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if opts.DBPath, err = dbPath(cmd, f); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print the status as JSON")
	return cmd
}

type statusReport struct {
	Database   string          `json:"database"`
	SizeBytes  int64           `json:"sizeBytes"`
	Dispatcher *dispatcherInfo `json:"dispatcher"` // null when no process holds the lease
	Channels   []channelStatus `json:"channels"`
	Total      counts          `json:"total"`
}

type dispatcherInfo struct {
	Holder     string    `json:"holder"`
	AcquiredAt time.Time `json:"acquiredAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

type channelStatus struct {
	Channel string `json:"channel"`
	counts
	OldestQueuedAgeMs int64 `json:"oldestQueuedAgeMs"`
}

type counts struct {
	Queued    int64 `json:"queued"`
	Claimed   int64 `json:"claimed"`
	Inflight  int64 `json:"inflight"`
	Processed int64 `json:"processed"`
	Rejected  int64 `json:"rejected"`
	Failed    int64 `json:"failed"`
	Nacked    int64 `json:"nacked"`
}

func (c counts) cells() []string {
	out := make([]string, 0, 7)
	for _, n := range []int64{c.Queued, c.Claimed, c.Inflight, c.Processed, c.Rejected, c.Failed, c.Nacked} {
		out = append(out, strconv.FormatInt(n, 10))
	}
	return out
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	s, err := openDB(opts.DBPath, opts.Now)
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := buildStatus(ctx, s, opts)
	if err != nil {
		return err
	}
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	now := opts.Now()
	rows := make([][]string, 0, len(rep.Channels))
	for _, c := range rep.Channels {
		oldest := strconv.FormatInt(c.OldestQueuedAgeMs, 10)
		if opts.IO.IsStdoutTTY() {
			oldest = "-"
			if c.OldestQueuedAgeMs >= 0 {
				oldest = (time.Duration(c.OldestQueuedAgeMs) * time.Millisecond).Round(time.Second).String()
			}
		}
		rows = append(rows, append(append([]string{c.Channel}, c.cells()...), oldest))
	}
	if !opts.IO.IsStdoutTTY() {
		return printTable(opts.IO, nil, rows, nil)
	}
	r := opts.IO.OutRenderer()
	fmt.Fprintf(opts.IO.Out, "Queue %s (%s)\n", r.NewStyle().Bold(true).Render(rep.Database), humanize.IBytes(uint64(rep.SizeBytes)))
	switch d := rep.Dispatcher; {
	case d == nil:
		fmt.Fprintln(opts.IO.Out, "No process is dispatching: the agent is stopped, starting, or not using the queue.")
	case d.ExpiresAt.Before(now):
		fmt.Fprintf(opts.IO.Out, "No process is dispatching: the last lease expired %s ago.\n", age(now, d.ExpiresAt))
	default:
		fmt.Fprintf(opts.IO.Out, "Dispatching: process %s (lease expires in %s unless renewed)\n", d.Holder,
			d.ExpiresAt.Sub(now).Round(time.Second))
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(opts.IO.Out, "The queue is empty.")
		return err
	}
	t := rep.Total
	rows = append(rows, append(append([]string{"total"}, t.cells()...), ""))
	headers := []string{"CHANNEL", "QUEUED", "CLAIMED", "INFLIGHT", "PROCESSED", "REJECTED", "FAILED", "NACKED", "OLDEST QUEUED"}
	warn := r.NewStyle().Foreground(lipgloss.Color("1"))
	return printTable(opts.IO, headers, rows, func(row, col int, s lipgloss.Style) lipgloss.Style {
		switch {
		case row == len(rows)-1:
			return s.Bold(true)
		case (col == 5 || col == 6) && rows[row][col] != "0":
			return s.Inherit(warn)
		}
		return s
	})
}

func buildStatus(ctx context.Context, s *spool.Store, opts *StatusOptions) (*statusReport, error) {
	sum, err := s.Summary(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return nil, err
	}
	lease, err := s.Lease(ctx)
	if err != nil {
		return nil, err
	}
	rep := &statusReport{Database: opts.DBPath, SizeBytes: st.DBSizeBytes, Channels: []channelStatus{},
		Total: counts(st.CountsByState)}
	if lease.Held {
		rep.Dispatcher = &dispatcherInfo{Holder: lease.Holder, AcquiredAt: lease.AcquiredAt.UTC(), ExpiresAt: lease.ExpiresAt.UTC()}
	}
	now := opts.Now()
	for _, c := range sum {
		cs := channelStatus{Channel: c.Channel, counts: counts(c.Counts), OldestQueuedAgeMs: -1}
		if !c.OldestQueued.IsZero() {
			cs.OldestQueuedAgeMs = max(0, now.Sub(c.OldestQueued).Milliseconds())
		}
		rep.Channels = append(rep.Channels, cs)
	}
	return rep, nil
}
