package echo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/internal/scptest"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/shared"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

func testFactory() (*cmdutil.Factory, *bytes.Buffer) {
	ios, _, out, _ := iostreams.Test()
	return &cmdutil.Factory{
		IOStreams: ios,
		Logger:    func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Now:       time.Now,
	}, out
}

func TestNewCmdEcho(t *testing.T) {
	defaults := shared.Association{CallingAE: "MEDPLUM", CalledAE: "ANY-SCP", Timeout: 30 * time.Second, MaxPDU: 65536}
	tests := []struct {
		name     string
		args     []string
		want     Options
		wantCode int
	}{
		{name: "defaults", args: []string{"127.0.0.1", "104"},
			want: Options{Addr: "127.0.0.1:104", Assoc: defaults, Count: 1}},
		{name: "every flag", args: []string{"pacs", "11112", "--calling-ae", "GOSCU", "--called-ae", "STORESCP",
			"--timeout", "5s", "--max-pdu", "16384", "--count", "100", "--json"},
			want: Options{Addr: "pacs:11112", Count: 100, JSON: true,
				Assoc: shared.Association{CallingAE: "GOSCU", CalledAE: "STORESCP", Timeout: 5 * time.Second, MaxPDU: 16384}}},
		{name: "IPv6 host", args: []string{"::1", "104", "-n", "2"},
			want: Options{Addr: "[::1]:104", Assoc: defaults, Count: 2}},
		{name: "one argument", args: []string{"127.0.0.1"}, wantCode: 2},
		{name: "port not a number", args: []string{"127.0.0.1", "x"}, wantCode: 2},
		{name: "port out of range", args: []string{"127.0.0.1", "65536"}, wantCode: 2},
		{name: "count zero", args: []string{"h", "104", "--count", "0"}, wantCode: 2},
		{name: "timeout zero", args: []string{"h", "104", "--timeout", "0s"}, wantCode: 2},
		{name: "AE title too long", args: []string{"h", "104", "--called-ae", "ABCDEFGHIJKLMNOPQ"}, wantCode: 2},
		{name: "AE title blank", args: []string{"h", "104", "--calling-ae", "  "}, wantCode: 2},
		{name: "AE title with backslash", args: []string{"h", "104", "--calling-ae", `A\B`}, wantCode: 2},
		{name: "max PDU too small", args: []string{"h", "104", "--max-pdu", "1024"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := testFactory()
			var got *Options
			cmd := NewCmdEcho(f, func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.Execute()
			if code := cmdutil.ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d", code, err, tt.wantCode)
			}
			if tt.wantCode != 0 {
				return
			}
			if diff := cmp.Diff(tt.want, *got, cmpopts.IgnoreFields(Options{}, "IO", "Logger")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

// rtt hides the round-trip times, which vary.
var rtt = regexp.MustCompile(`[0-9]+\.[0-9]{3}`)

func TestEchoRun(t *testing.T) {
	failing := func(context.Context, assoc.EchoRequest) dimse.Status { return dimse.StatusProcessingFailure }
	tests := []struct {
		name     string
		peer     func(t *testing.T, interrupt func()) string // returns the address
		flags    []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{
			name:  "three echoes",
			peer:  func(t *testing.T, _ func()) string { return scptest.Start(t, &assoc.Server{AETitle: "GOSCP"}) },
			flags: []string{"--called-ae", "GOSCP", "--count", "3"},
			wantOut: "echo 1: Success, N ms\necho 2: Success, N ms\necho 3: Success, N ms\n" +
				"3 echoes to ADDR, 3 successful, round trip min N ms, avg N ms, max N ms\n",
		},
		{
			name: "failure status",
			peer: func(t *testing.T, _ func()) string {
				return scptest.Start(t, &assoc.Server{Handlers: assoc.Handlers{OnEcho: failing}})
			},
			flags:    []string{"--count", "2"},
			wantCode: 3,
			wantOut: "echo 1: Failure: processing failure (0x0110), N ms\necho 2: Failure: processing failure (0x0110), N ms\n" +
				"2 echoes to ADDR, 0 successful, round trip min N ms, avg N ms, max N ms\n",
			wantErr: "2 of 2 echoes did not succeed",
		},
		{
			name:     "called AE not recognized",
			peer:     func(t *testing.T, _ func()) string { return scptest.Start(t, &assoc.Server{AETitle: "GOSCP"}) },
			flags:    []string{"--called-ae", "WRONGAE"},
			wantCode: 3,
			wantErr:  "ADDR rejected the association: rejected permanent, source: service user, reason: called AE title not recognized (result 1, source 1, reason 7)",
		},
		{
			name: "calling AE not recognized",
			peer: func(t *testing.T, _ func()) string {
				return scptest.Start(t, &assoc.Server{AllowedCallers: []string{"FRIEND"}})
			},
			wantCode: 3,
			wantErr:  "reason: calling AE title not recognized (result 1, source 1, reason 3)",
		},
		{
			name:     "aborted by the peer",
			peer:     func(t *testing.T, _ func()) string { return scptest.Raw(t, scptest.AbortAfterRQ) },
			wantCode: 3,
			wantErr:  "ADDR aborted the association (source: service provider, reason: unexpected PDU)",
		},
		{
			name: "verification not accepted",
			peer: func(t *testing.T, _ func()) string {
				return scptest.Raw(t, scptest.RefuseContexts(pdu.ResultAbstractSyntaxNotSupported))
			},
			wantCode: 3,
			wantErr:  "no accepted presentation context for Verification",
		},
		{
			name: "nothing listening",
			peer: func(t *testing.T, _ func()) string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ln.Close()
				return ln.Addr().String()
			},
			wantCode: 5,
			wantErr:  "could not connect to ADDR: connection refused",
		},
		{
			name:     "peer hangs up",
			peer:     func(t *testing.T, _ func()) string { return scptest.Raw(t, scptest.Hangup) },
			wantCode: 5,
			wantErr:  "connection to ADDR lost",
		},
		{
			name: "interrupted while waiting for the peer",
			peer: func(t *testing.T, interrupt func()) string {
				return scptest.Raw(t, func(c net.Conn) { interrupt(); scptest.Silent(c) })
			},
			wantCode: 130,
		},
		{
			name:     "silent peer",
			peer:     func(t *testing.T, _ func()) string { return scptest.Raw(t, scptest.Silent) },
			flags:    []string{"--timeout", "200ms"},
			wantCode: 124,
			wantErr:  "ADDR did not answer within 200ms",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr := tt.peer(t, cancel)
			code, out, err := run(ctx, t, addr, tt.flags...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d", code, err, tt.wantCode)
			}
			out = strings.ReplaceAll(rtt.ReplaceAllString(out, "N"), addr, "ADDR")
			if tt.wantOut != "" || out != "" {
				if diff := cmp.Diff(tt.wantOut, out); diff != "" {
					t.Errorf("stdout (-want +got):\n%s", diff)
				}
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), addr, "ADDR"), tt.wantErr)) {
				t.Errorf("error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func run(ctx context.Context, t *testing.T, addr string, flags ...string) (int, string, error) {
	t.Helper()
	f, out := testFactory()
	host, port, _ := net.SplitHostPort(addr)
	cmd := NewCmdEcho(f, nil)
	cmd.SetArgs(append([]string{host, port}, flags...))
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(ctx)
	return cmdutil.ExitCode(err), out.String(), err
}

func TestEchoJSON(t *testing.T) {
	addr := scptest.Start(t, &assoc.Server{})
	code, out, err := run(context.Background(), t, addr, "--count", "5", "--json")
	if code != 0 {
		t.Fatalf("exit code %d: %v", code, err)
	}
	var got Report
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	want := Report{Target: addr, Echoes: 5, OK: 5, Statuses: map[string]int{"0x0000": 5}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Report{}, "RTT"), cmpopts.IgnoreUnexported(Report{})); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if r := got.RTT; r.Min <= 0 || r.Min > r.Avg || r.Avg > r.Max {
		t.Errorf("round trips min %v avg %v max %v are not ordered", r.Min, r.Avg, r.Max)
	}
}
