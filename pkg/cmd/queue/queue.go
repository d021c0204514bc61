// Package queue implements `medplum-agent queue`: inspect and repair the
// durable queue in an agent's data directory, also while the agent runs.
package queue

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// NewCmdQueue builds the `queue` parent command.
func NewCmdQueue(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and repair the agent's durable message queue",
		Long: `Commands for the durable queue the agent keeps in its data directory
(medplum-agent-queue.sqlite). They are safe while the agent runs: reads never
block it, and retry and purge use short transactions.

Exit status 78 means the queue database does not exist or cannot be opened.`,
	}
	fl := cmd.PersistentFlags()
	fl.String("data-dir", "", "Agent data `directory` holding the queue (default: the current directory)")
	fl.String("db", "", "Queue database `file` (overrides --data-dir)")
	cmd.AddCommand(NewCmdStatus(f, nil))
	cmd.AddCommand(NewCmdList(f, nil))
	cmd.AddCommand(NewCmdShow(f, nil))
	cmd.AddCommand(NewCmdRetry(f, nil))
	cmd.AddCommand(NewCmdPurge(f, nil))
	return cmd
}

// dbPath resolves --db and --data-dir, inherited from the parent command.
func dbPath(cmd *cobra.Command, f *cmdutil.Factory) (string, error) {
	if p, _ := cmd.Flags().GetString("db"); p != "" {
		return p, nil
	}
	dir, _ := cmd.Flags().GetString("data-dir")
	if dir == "" {
		wd, err := f.WorkDir()
		if err != nil {
			return "", err
		}
		dir = wd
	}
	return filepath.Join(dir, spool.DefaultFileName), nil
}

// openDB opens an existing queue database without creating or migrating it.
func openDB(path string, now func() time.Time) (*spool.Store, error) {
	s, err := spool.Open(spool.Options{Path: path, Now: now, Existing: true})
	switch {
	case errors.Is(err, spool.ErrNoDatabase):
		return nil, cmdutil.WithCode(cmdutil.ExitConfig,
			fmt.Errorf("no queue database at %s: give the agent's --data-dir, or the file with --db", path))
	case err != nil:
		return nil, cmdutil.WithCode(cmdutil.ExitConfig, fmt.Errorf("cannot open the queue database: %w", err))
	}
	return s, nil
}

// parseStates reads --state values; "all" selects every state when allowAll.
func parseStates(values []string, allowAll bool) ([]spool.State, error) {
	var out []spool.State
	for _, v := range values {
		v = strings.ToLower(strings.TrimSpace(v))
		if v == "all" && allowAll {
			return nil, nil
		}
		st, err := spool.ParseState(v)
		if err != nil {
			return nil, cmdutil.FlagErrorf("invalid --state: %v", err)
		}
		out = append(out, st)
	}
	return out, nil
}

// parseAge reads --older-than: a Go duration, or whole days such as 7d.
func parseAge(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, cmdutil.FlagErrorf("invalid --older-than %q: use a duration such as 90m, 36h or 7d", v)
	}
	return d, nil
}

// printTable writes an aligned table with a header on a terminal and
// tab-separated rows without a header otherwise.
func printTable(io *iostreams.IOStreams, headers []string, rows [][]string, style func(row, col int, s lipgloss.Style) lipgloss.Style) error {
	if !io.IsStdoutTTY() {
		for _, r := range rows {
			if _, err := fmt.Fprintln(io.Out, strings.Join(r, "\t")); err != nil {
				return err
			}
		}
		return nil
	}
	r := io.OutRenderer()
	cell := r.NewStyle().PaddingRight(2)
	header := cell.Bold(true)
	t := table.New().
		Border(lipgloss.HiddenBorder()).BorderTop(false).BorderBottom(false).BorderLeft(false).BorderRight(false).
		BorderColumn(false).BorderHeader(false).
		Headers(headers...).Rows(rows...).
		StyleFunc(func(row, col int) lipgloss.Style {
			if row == table.HeaderRow {
				return header
			}
			if style != nil {
				return style(row, col, cell)
			}
			return cell
		})
	var b strings.Builder
	for line := range strings.Lines(t.Render()) {
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteByte('\n')
	}
	_, err := fmt.Fprint(io.Out, b.String())
	return err
}

// stateStyle colours a state name on a terminal.
func stateStyle(st spool.State, s lipgloss.Style) lipgloss.Style {
	switch st {
	case spool.StateFailed, spool.StateRejected:
		return s.Foreground(lipgloss.Color("1"))
	case spool.StateNacked:
		return s.Foreground(lipgloss.Color("3"))
	case spool.StateProcessed:
		return s.Foreground(lipgloss.Color("2"))
	}
	return s
}

// age formats how long ago t was, to the second.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(0, now.Sub(t)).Round(time.Second).String()
}

// jsonRow is the stable JSON form of a queued message.
type jsonRow struct {
	ID                  int64     `json:"id"`
	Channel             string    `json:"channel"`
	Kind                string    `json:"kind"`
	State               string    `json:"state"`
	Remote              string    `json:"remote"`
	ContentType         string    `json:"contentType"`
	ControlID           string    `json:"controlId,omitempty"`
	MsgType             string    `json:"msgType,omitempty"`
	RetryMode           string    `json:"retryMode"`
	Attempts            int       `json:"attempts"`
	FailedAttempts      int       `json:"failedAttempts"`
	CallbackID          string    `json:"callbackId"`
	SeqNo               *int64    `json:"seqNo,omitempty"`
	StatusCode          int       `json:"statusCode,omitempty"`
	AckOutcome          string    `json:"ackOutcome"`
	ErrorCode           string    `json:"errorCode,omitempty"`
	LastError           string    `json:"lastError,omitempty"`
	Blob                string    `json:"blob,omitempty"`
	ReceivedAt          time.Time `json:"receivedAt"`
	SentAt              time.Time `json:"sentAt,omitzero"`
	ProcessedAt         time.Time `json:"processedAt,omitzero"`
	ErroredAt           time.Time `json:"erroredAt,omitzero"`
	NextAttemptAt       time.Time `json:"nextAttemptAt,omitzero"`
	Body                string    `json:"body,omitempty"`
	Response            string    `json:"response,omitempty"`
	ResponseContentType string    `json:"responseContentType,omitempty"`
}

func toJSON(r spool.Row) jsonRow {
	utc := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC()
	}
	j := jsonRow{
		ID: r.ID, Channel: r.Channel, Kind: r.Kind, State: string(r.State), Remote: r.Remote,
		ContentType: r.ContentType, ControlID: r.ControlID, MsgType: r.MsgType, RetryMode: string(r.Policy.Mode),
		Attempts: r.Attempt, FailedAttempts: r.FailedAttempts, CallbackID: r.CallbackID, StatusCode: r.StatusCode,
		AckOutcome: string(r.AckOutcome), ErrorCode: r.ErrorCode, LastError: r.LastError, Blob: r.Blob,
		ReceivedAt: utc(r.ReceivedAt), SentAt: utc(r.SentAt), ProcessedAt: utc(r.ProcessedAt),
		ErroredAt: utc(r.ErroredAt), NextAttemptAt: utc(r.NextAttemptAt),
		Body: r.Body, Response: r.Response, ResponseContentType: r.ResponseContentType,
	}
	if r.SeqNo >= 0 {
		j.SeqNo = &r.SeqNo
	}
	return j
}

// parseID reads a message id argument.
func parseID(arg string) (int64, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id < 1 {
		return 0, cmdutil.FlagErrorf("invalid message id %q: must be a positive number", arg)
	}
	return id, nil
}

// notFound maps store lookups of a missing id to a plain error.
func notFound(err error, id int64) error {
	if errors.Is(err, spool.ErrNotFound) {
		return fmt.Errorf("no message %d in the queue", id)
	}
	return err
}
