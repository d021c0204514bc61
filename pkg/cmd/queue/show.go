package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// ShowOptions holds the inputs of `queue show`.
type ShowOptions struct {
	IO     *iostreams.IOStreams
	Now    func() time.Time
	DBPath string
	ID     int64
	JSON   bool
}

// NewCmdShow builds the command; runF replaces the run function in tests.
func NewCmdShow(f *cmdutil.Factory, runF func(context.Context, *ShowOptions) error) *cobra.Command {
	opts := &ShowOptions{IO: f.IOStreams, Now: f.Now}
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one queued message with its body and the server's answer",
		Long: `Show everything the queue knows about one message: its state and timestamps,
the attempts made, the last error, the message as dispatched and the server's last
answer (HL7 segments on separate lines).`,
		Example: `  medplum-agent queue show 1042
  medplum-agent queue show 1042 --json | jq -r .body`,
		Args: cmdutil.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if opts.ID, err = parseID(args[0]); err != nil {
				return err
			}
			if opts.DBPath, err = dbPath(cmd, f); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return showRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print the message as JSON")
	return cmd
}

func showRun(ctx context.Context, opts *ShowOptions) error {
	s, err := openDB(opts.DBPath, opts.Now)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.Get(ctx, opts.ID)
	if err != nil {
		return notFound(err, opts.ID)
	}
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(toJSON(r))
	}
	bold := opts.IO.OutRenderer().NewStyle().Bold(true)
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%s %s\n", bold.Render(fmt.Sprintf("%-14s", name+":")), value)
		}
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	state := string(r.State)
	if r.ErrorCode != "" {
		state += " (" + r.ErrorCode + ")"
	}
	field("ID", fmt.Sprint(r.ID))
	field("Channel", r.Channel)
	field("Kind", r.Kind)
	field("State", state)
	field("Remote", r.Remote)
	field("Control ID", r.ControlID)
	field("Message type", r.MsgType)
	if r.SeqNo >= 0 {
		field("Sequence", fmt.Sprint(r.SeqNo))
	}
	field("Retry mode", string(r.Policy.Mode))
	field("Attempts", fmt.Sprintf("%d (%d failed)", r.Attempt, r.FailedAttempts))
	field("Callback", r.CallbackID)
	field("Received", when(r.ReceivedAt))
	field("Sent", when(r.SentAt))
	field("Processed", when(r.ProcessedAt))
	field("Errored", when(r.ErroredAt))
	field("Next attempt", when(r.NextAttemptAt))
	if r.StatusCode != 0 {
		field("Server status", fmt.Sprint(r.StatusCode))
	}
	field("Ack", string(r.AckOutcome))
	field("Last error", r.LastError)
	if r.Blob != "" {
		field("Blob", s.BlobPath(r.Blob))
	}
	section := func(title, body string) {
		if body != "" {
			fmt.Fprintf(&b, "\n%s\n%s\n", bold.Render(title), strings.TrimRight(lines(body), "\n"))
		}
	}
	section("Message:", r.Body)
	section("Response:", r.Response)
	_, err = fmt.Fprint(opts.IO.Out, b.String())
	return err
}

// lines turns HL7 segment separators into line breaks for reading.
func lines(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}
