package queue

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is a data directory with a queue holding, in id order:
// 1 adt queued, 2 adt failed (timeout), 3 adt processed, 4 lab rejected,
// 5 lab queued with a blob-free DICOM-style body, 6 lab nacked.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, spool.DefaultFileName)
	s, err := spool.Open(spool.Options{Path: path, AgentID: "agent-1", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range []string{"adt", "adt", "adt", "lab", "lab", "lab"} {
		id := "MSG" + string(rune('1'+i))
		body := "MSH|^~\\&|DEV|FAC|MP|FAC|20250301120000||ADT^A01|" + id + "|P|2.5\rPID|1||" + id
		_, err := s.Intake(context.Background(), spool.Intake{Kind: spool.KindHL7, Channel: ch, Remote: "10.0.0.5:4000",
			ContentType: "x-application/hl7-v2+er7", ControlID: id, MsgType: "ADT^A01", Original: []byte(body), Body: body,
			Policy: spool.DefaultRetryPolicy(spool.RetryNormal)})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	settled := t0.Add(10 * time.Second).UnixMilli()
	for _, q := range []string{
		`UPDATE messages SET state = 'failed', attempt_count = 1, failed_attempts = 1, error_code = 'response-timeout',
			last_error = 'no response within 1m0s', errored_at = ?1 WHERE id = 2`,
		`UPDATE messages SET state = 'processed', attempt_count = 1, ack_outcome = 'delivered', server_status_code = 200,
			server_response_body = CAST('MSH|^~\&|MP|FAC|DEV|FAC|||ACK|A1|P|2.5' || char(13) || 'MSA|AA|MSG3' AS BLOB),
			processed_at = ?1 WHERE id = 3`,
		`UPDATE messages SET state = 'rejected', attempt_count = 2, failed_attempts = 0, error_code = 'server-status',
			last_error = 'Server returned 400: {"issue":"bad"}', server_status_code = 400, errored_at = ?1 WHERE id = 4`,
		`UPDATE messages SET state = 'nacked', error_code = 'duplicate', last_error = 'duplicate control id',
			ack_outcome = 'not_owed', errored_at = ?1 WHERE id = 6`,
	} {
		if _, err := db.Exec(q, settled); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type run struct {
	out, err string
	code     int
}

// execute runs `queue args...` against the data directory dir.
func execute(t *testing.T, dir string, tty bool, stdin string, args ...string) run {
	t.Helper()
	ios, in, out, errOut := iostreams.Test()
	ios.SetTTY(tty, tty, tty)
	in.WriteString(stdin)
	f := &cmdutil.Factory{
		IOStreams: ios,
		Now:       func() time.Time { return t0.Add(90 * time.Second) },
		WorkDir:   func() (string, error) { return dir, nil },
	}
	cmd := NewCmdQueue(f)
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if err != nil && !cmdutil.IsSilent(err) {
		errOut.WriteString("Error: " + err.Error() + "\n")
	}
	return run{out: out.String(), err: errOut.String(), code: cmdutil.ExitCode(err)}
}

func TestStatus(t *testing.T) {
	dir := fixture(t)
	tests := []struct {
		name string
		args []string
		tty  bool
		want string // exact stdout when set
		has  []string
	}{
		{name: "piped", args: []string{"status"},
			want: "adt\t1\t0\t0\t1\t0\t1\t0\t90000\nlab\t1\t0\t0\t0\t1\t0\t1\t90000\n"},
		{name: "terminal", args: []string{"status"}, tty: true,
			has: []string{"No process is dispatching", "CHANNEL", "OLDEST QUEUED", "adt", "1m30s", "total"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execute(t, dir, tt.tty, "", tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.err)
			}
			if tt.want != "" && r.out != tt.want {
				t.Errorf("stdout = %q, want %q", r.out, tt.want)
			}
			for _, h := range tt.has {
				if !strings.Contains(r.out, h) {
					t.Errorf("stdout lacks %q:\n%s", h, r.out)
				}
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	r := execute(t, fixture(t), false, "", "status", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var got statusReport
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("%v in %s", err, r.out)
	}
	if got.SizeBytes <= 0 || !strings.HasSuffix(got.Database, spool.DefaultFileName) {
		t.Errorf("database %q size %d", got.Database, got.SizeBytes)
	}
	got.SizeBytes, got.Database = 0, ""
	want := statusReport{
		Channels: []channelStatus{
			{Channel: "adt", counts: counts{Queued: 1, Processed: 1, Failed: 1}, OldestQueuedAgeMs: 90000},
			{Channel: "lab", counts: counts{Queued: 1, Rejected: 1, Nacked: 1}, OldestQueuedAgeMs: 90000},
		},
		Total: counts{Queued: 2, Processed: 1, Rejected: 1, Failed: 1, Nacked: 1},
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(channelStatus{})); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	if !strings.Contains(r.out, `"dispatcher": null`) || !strings.Contains(r.out, `"queued": 1`) {
		t.Errorf("JSON shape:\n%s", r.out)
	}
}

func TestList(t *testing.T) {
	dir := fixture(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "failed and rejected by default", args: []string{"list"},
			want: "4\tlab\trejected\t2\tMSG4\t2025-03-01T12:00:00Z\tserver-status\tServer returned 400: {\"issue\":\"bad\"}\n" +
				"2\tadt\tfailed\t1\tMSG2\t2025-03-01T12:00:00Z\tresponse-timeout\tno response within 1m0s\n"},
		{name: "by state and channel", args: []string{"list", "--state", "queued,nacked", "--channel", "lab"},
			want: "6\tlab\tnacked\t0\tMSG6\t2025-03-01T12:00:00Z\tduplicate\tduplicate control id\n" +
				"5\tlab\tqueued\t0\tMSG5\t2025-03-01T12:00:00Z\t\t\n"},
		{name: "older than", args: []string{"list", "--state", "all", "--older-than", "85s", "--limit", "2"},
			want: "5\tlab\tqueued\t0\tMSG5\t2025-03-01T12:00:00Z\t\t\n" +
				"1\tadt\tqueued\t0\tMSG1\t2025-03-01T12:00:00Z\t\t\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execute(t, dir, false, "", tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.err)
			}
			if d := cmp.Diff(tt.want, r.out); d != "" {
				t.Errorf("stdout (-want +got):\n%s", d)
			}
		})
	}

	r := execute(t, dir, false, "", "list", "--state", "all", "--json")
	var rows []jsonRow
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil || len(rows) != 6 {
		t.Fatalf("list --json: %d rows, %v\n%s", len(rows), err, r.out)
	}
	if rows[0].ID != 6 || rows[0].Body != "" || rows[4].LastError != "no response within 1m0s" || rows[4].RetryMode != "normal" {
		t.Errorf("json rows = %+v", rows)
	}
}

func TestShow(t *testing.T) {
	dir := fixture(t)
	r := execute(t, dir, false, "", "show", "3")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	for _, h := range []string{"State:         processed\n", "Server status: 200\n", "Ack:           delivered\n",
		"Message:\nMSH|^~\\&|DEV|FAC|MP|FAC|20250301120000||ADT^A01|MSG3|P|2.5\nPID|1||MSG3\n",
		"Response:\nMSH|^~\\&|MP|FAC|DEV|FAC|||ACK|A1|P|2.5\nMSA|AA|MSG3\n"} {
		if !strings.Contains(r.out, h) {
			t.Errorf("show lacks %q:\n%s", h, r.out)
		}
	}
	r = execute(t, dir, false, "", "show", "2", "--json")
	var row jsonRow
	if err := json.Unmarshal([]byte(r.out), &row); err != nil {
		t.Fatal(err)
	}
	if row.State != "failed" || row.ErrorCode != "response-timeout" || !strings.Contains(row.Body, "MSG2") ||
		!row.ErroredAt.Equal(t0.Add(10*time.Second)) || row.SeqNo != nil {
		t.Errorf("show --json = %+v", row)
	}
}

func TestRetry(t *testing.T) {
	dir := fixture(t)
	r := execute(t, dir, false, "", "retry", "2", "4")
	if r.code != 0 || r.out != "2\n4\n" {
		t.Fatalf("retry: exit %d out %q err %q", r.code, r.out, r.err)
	}
	r = execute(t, dir, false, "", "list", "--state", "queued")
	if !strings.HasPrefix(r.out, "5\t") || strings.Count(r.out, "\n") != 4 {
		t.Errorf("queued after retry:\n%s", r.out)
	}
	r = execute(t, dir, false, "", "retry", "1", "99", "--json")
	if r.code != cmdutil.ExitFailure || r.out != "{\"requeued\":[]}\n" ||
		!strings.Contains(r.err, "only failed or rejected") || !strings.Contains(r.err, "no message 99") {
		t.Errorf("retry of a queued and a missing id: exit %d out %q err %q", r.code, r.out, r.err)
	}
}

func TestPurge(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		tty      bool
		stdin    string
		wantCode int
		wantOut  string
		left     string // piped `list --state all` ids afterwards
	}{
		{name: "needs --yes when piped", args: []string{"--state", "failed", "--older-than", "1s"}, wantCode: cmdutil.ExitUsage, left: "654321"},
		{name: "never queued rows", args: []string{"--state", "queued", "--older-than", "1s", "--yes"}, wantCode: cmdutil.ExitUsage, left: "654321"},
		{name: "needs the filters", args: []string{"--yes"}, wantCode: cmdutil.ExitUsage, left: "654321"},
		{name: "too young", args: []string{"--state", "failed", "--older-than", "1d", "--yes"}, wantOut: "0\n", left: "654321"},
		{name: "with --yes", args: []string{"--state", "failed,rejected,nacked", "--older-than", "1m", "--yes"}, wantOut: "3\n", left: "531"},
		{name: "confirmed", args: []string{"--state", "processed", "--older-than", "1m", "--channel", "adt"}, tty: true, stdin: "y\n", wantOut: "1\n", left: "65421"},
		{name: "declined", args: []string{"--state", "processed", "--older-than", "1m"}, tty: true, stdin: "\n", left: "654321"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixture(t)
			r := execute(t, dir, tt.tty, tt.stdin, append([]string{"purge"}, tt.args...)...)
			if r.code != tt.wantCode || r.out != tt.wantOut {
				t.Fatalf("exit %d out %q err %q; want exit %d out %q", r.code, r.out, r.err, tt.wantCode, tt.wantOut)
			}
			l := execute(t, dir, false, "", "list", "--state", "all")
			var ids string
			for _, line := range strings.Split(strings.TrimSpace(l.out), "\n") {
				ids += strings.SplitN(line, "\t", 2)[0]
			}
			if ids != tt.left {
				t.Errorf("left %s, want %s", ids, tt.left)
			}
		})
	}
}

func TestMissingDatabase(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"status"}, {"list"}, {"show", "1"}, {"retry", "1"},
		{"purge", "--state", "failed", "--older-than", "1d", "--yes"}, {"status", "--db", filepath.Join(dir, "x.sqlite")}} {
		r := execute(t, dir, false, "", args...)
		if r.code != cmdutil.ExitConfig || !strings.Contains(r.err, "no queue database at") {
			t.Errorf("%v: exit %d err %q", args, r.code, r.err)
		}
	}
	if _, err := filepath.Glob(filepath.Join(dir, "*")); err != nil {
		t.Fatal(err)
	}
}

// TestWhileAgentRuns uses the CLI against a database another Store has open
// for writing, as the agent would.
func TestWhileAgentRuns(t *testing.T) {
	dir := fixture(t)
	agent, err := spool.Open(spool.Options{Path: filepath.Join(dir, spool.DefaultFileName), AgentID: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if r := execute(t, dir, false, "", "retry", "2"); r.code != 0 {
		t.Fatalf("retry: %d %s", r.code, r.err)
	}
	row, err := agent.Get(context.Background(), 2)
	if err != nil || row.State != spool.StateQueued {
		t.Fatalf("agent sees %v, %v", row.State, err)
	}
	if _, err := agent.Intake(context.Background(), spool.Intake{Kind: spool.KindBytes, Channel: "tcp", Body: "0248454c4c4f03",
		ContentType: "application/octet-stream"}); err != nil {
		t.Fatal(err)
	}
	r := execute(t, dir, false, "", "status")
	if !strings.Contains(r.out, "tcp\t1\t") {
		t.Errorf("status misses the new row:\n%s", r.out)
	}
}
