package astm

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func loadScript(t testing.TB, path string) *Script {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseScript(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestListenerScripts runs every L script against Serve over loopback TCP,
// once replying ACK to EOT and once silent. With ACK-on-EOT the optional
// "<?" reply is required; silent, it must not come within the window.
func TestListenerScripts(t *testing.T) {
	for _, path := range globTestdata(t, "scenarios/L*.script") {
		script := loadScript(t, path)
		if script.Role != "listener" {
			t.Fatalf("%s: role %q", path, script.Role)
		}
		for _, silent := range []bool{false, true} {
			name := strings.TrimSuffix(filepath.Base(path), ".script")
			if silent {
				name += "/silent-eot"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				runListenerScript(t, script, silent)
			})
		}
	}
}

func runListenerScript(t *testing.T, script *Script, silent bool) {
	client, server := tcpPair(t)
	s := serve(t, context.Background(), ReceiverOptions{SilentEOT: silent}, server)
	play := *script
	play.Steps = nil
	for _, st := range script.Steps {
		if st.Kind == StepReadOptional && !silent {
			st.Kind = StepRead
		}
		play.Steps = append(play.Steps, st)
	}
	if err := play.Play(context.Background(), client, PlayOptions{QuietWindow: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	client.Close()
	if err := s.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	want := script.Messages
	if script.NoMessage {
		want = nil
	}
	if diff := cmp.Diff(want, s.bodies()); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

// senderFromFlags applies the flags the S scripts use.
func senderFromFlags(t testing.TB, args []string) SenderOptions {
	t.Helper()
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	ackTimeout := fs.Duration("ack-timeout", DefaultReplyTimeout, "")
	busy := fs.Duration("enq-retry-delay", DefaultBusyDelay, "")
	contention := fs.Duration("contention-delay", DefaultContentionDelay, "")
	attempts := fs.Int("max-attempts", DefaultMaxAttempts, "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return SenderOptions{
		EstablishTimeout: *ackTimeout,
		FrameTimeout:     *ackTimeout,
		BusyDelay:        *busy,
		ContentionDelay:  *contention,
		MaxAttempts:      *attempts,
	}
}

// exitCode maps Send errors to the replay tool's exit codes.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrTimeout):
		return 124
	case errors.Is(err, ErrNAKLimit), errors.Is(err, ErrBusy), errors.Is(err, ErrContention), errors.Is(err, ErrInterrupted):
		return 3
	}
	return 1
}

// TestSenderScripts runs every S script with the script as the LIS and
// Sender as the instrument.
func TestSenderScripts(t *testing.T) {
	for _, path := range globTestdata(t, "scenarios/S*.script") {
		script := loadScript(t, path)
		if script.Role != "sender" || script.Exit == nil || script.Input == "" {
			t.Fatalf("%s: role %q, exit %v, input %q", path, script.Role, script.Exit, script.Input)
		}
		t.Run(strings.TrimSuffix(filepath.Base(path), ".script"), func(t *testing.T) {
			t.Parallel()
			input, err := os.ReadFile(filepath.Join(filepath.Dir(path), script.Input))
			if err != nil {
				t.Fatal(err)
			}
			tx := ParseTranscript(input, SplitBlank)
			if len(tx) != 1 {
				t.Fatalf("input has %d transmissions", len(tx))
			}
			client, server := tcpPair(t)
			sender := NewSender(senderFromFlags(t, script.Flags))
			type outcome struct {
				res Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := sender.Send(context.Background(), client, tx[0])
				done <- outcome{res, err}
			}()
			if err := script.Play(context.Background(), server, PlayOptions{}); err != nil {
				t.Fatal(err)
			}
			out := <-done
			if got := exitCode(out.err); got != *script.Exit {
				t.Errorf("exit code %d (%v), want %d", got, out.err, *script.Exit)
			}
			// Nothing may follow the final EOT.
			_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, _ := server.Read(make([]byte, 1)); n != 0 {
				t.Error("sender wrote after EOT")
			}
			if *script.Exit == 0 && out.res.Frames != len(tx[0]) {
				t.Errorf("Result.Frames = %d, want %d", out.res.Frames, len(tx[0]))
			}
		})
	}
}

func TestParseScriptHeaders(t *testing.T) {
	s := loadScript(t, filepath.Join(testdata, "scenarios/S02-sender-enq-nak-busy-retry.script"))
	want := &Script{
		Role:  "sender",
		Title: "the listener is busy (NAK to ENQ): the sender waits at least the ENQ retry delay (E1381: 10 s) and bids again",
		Input: "inputs/l-only.astm",
		Flags: []string{"--enq-retry-delay", "300ms"},
		Steps: []Step{
			{Line: 5, Kind: StepRead, Data: []byte{ENQ}},
			{Line: 6, Kind: StepWrite, Data: []byte{NAK}},
			{Line: 7, Kind: StepMinGap, Dur: 300 * time.Millisecond},
			{Line: 8, Kind: StepRead, Data: []byte{ENQ}},
			{Line: 9, Kind: StepWrite, Data: []byte{ACK}},
			{Line: 10, Kind: StepRead, Data: []byte("\x021L|1|N\r\x0304\r\n")},
			{Line: 11, Kind: StepWrite, Data: []byte{ACK}},
			{Line: 12, Kind: StepRead, Data: []byte{EOT}},
		},
		Exit: new(int),
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("ParseScript (-want +got):\n%s", diff)
	}
}

func TestParseScript(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Script
		wantErr string
	}{
		{
			name: "directives and expectations",
			in: "# c\r\n@ role listener\r\n\r\n! chunk 1\n! sleep 10ms\n< none 5ms\n<? <ACK>\n! close\n" +
				"= message a\\\\b\\n\\r\\t\n= no-message\n= exit 124\n",
			want: &Script{
				Role: "listener",
				Steps: []Step{
					{Line: 4, Kind: StepChunk, N: 1},
					{Line: 5, Kind: StepSleep, Dur: 10 * time.Millisecond},
					{Line: 6, Kind: StepQuiet, Dur: 5 * time.Millisecond},
					{Line: 7, Kind: StepReadOptional, Data: []byte{ACK}},
					{Line: 8, Kind: StepClose},
				},
				Messages:  []string{"a\\b\n\r\t"},
				NoMessage: true,
				Exit:      ptr(124),
			},
		},
		{name: "unknown op", in: "? x", wantErr: "line 1: unknown line"},
		{name: "unknown header", in: "@ color red", wantErr: "line 1: unknown header"},
		{name: "bad role", in: "@ role both", wantErr: "role \"both\""},
		{name: "empty write", in: "> ", wantErr: "with no bytes"},
		{name: "bad bytes", in: "> \u20ac", wantErr: "not one byte"},
		{name: "bad duration", in: "! sleep soon", wantErr: "line 1"},
		{name: "negative duration", in: "< none -1s", wantErr: "negative duration"},
		{name: "negative chunk", in: "! chunk -1", wantErr: "negative chunk"},
		{name: "unknown directive", in: "! jump", wantErr: "unknown directive"},
		{name: "bad escape", in: "= message \\q", wantErr: "unknown escape"},
		{name: "dangling escape", in: "= message a\\", wantErr: "dangling"},
		{name: "bad exit", in: "= exit x", wantErr: "exit code"},
		{name: "unknown expectation", in: "= maybe", wantErr: "unknown expectation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScript(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, s); diff != "" {
				t.Errorf("ParseScript (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestPlayFailures checks that Play reports what the other side did wrong.
func TestPlayFailures(t *testing.T) {
	tests := []struct {
		name   string
		script string
		peer   string // what the other side writes at once
		want   string
	}{
		{"wrong byte", "< <ACK>", "<NAK>", "script line 1: unexpected bytes: want <ACK>, got <NAK>"},
		{"nothing", "< <ACK>", "", "script line 1: nothing more within 100ms: want <ACK>, got "},
		{"optional but wrong", "<? <ACK>", "<NAK>", "script line 1: unexpected bytes: want <ACK>, got <NAK>"},
		{"not quiet", "< none 50ms", "<ACK>", "script line 1: expected nothing for 50ms, got <ACK>"},
		{"too soon", "> <ENQ>\n! min-gap 10s\n< <ACK>", "<ACK>", "script line 3: arrived"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScript(strings.NewReader(tt.script))
			if err != nil {
				t.Fatal(err)
			}
			client, server := tcpPair(t)
			if _, err := server.Write(mnemonic(t, tt.peer)); err != nil {
				t.Fatal(err)
			}
			err = s.Play(context.Background(), client, PlayOptions{ReadTimeout: 100 * time.Millisecond})
			var ee *ExpectError
			if !errors.As(err, &ee) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Play = %v, want an ExpectError containing %q", err, tt.want)
			}
		})
	}
}

func TestPlayChunkTraceAndClose(t *testing.T) {
	s, err := ParseScript(strings.NewReader("! chunk 2\n> <ENQ>abc\n< <ACK>\n! close\n"))
	if err != nil {
		t.Fatal(err)
	}
	client, server := tcpPair(t)
	var trace []string
	go func() {
		b := make([]byte, 4)
		if _, err := io.ReadFull(server, b); err == nil {
			_, _ = server.Write([]byte{ACK})
		}
	}()
	err = s.Play(context.Background(), client, PlayOptions{Trace: func(dir byte, unit []byte) {
		trace = append(trace, string(dir)+" "+FormatMnemonic(unit))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"> <ENQ>a", "> bc", "< <ACK>"}, trace); diff != "" {
		t.Errorf("trace (-want +got):\n%s", diff)
	}
	if _, err := client.Write([]byte{ENQ}); err == nil {
		t.Error("connection still open after ! close")
	}
}

func FuzzParseScript(f *testing.F) {
	for _, p := range globTestdata(f, "scenarios/*.script") {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("! chunk 99999999999999999999\n= message \\")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseScript(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, st := range s.Steps {
			if st.Dur < 0 || st.N < 0 || (st.Kind <= StepReadOptional && len(st.Data) == 0) {
				t.Fatalf("invalid step %+v", st)
			}
		}
	})
}
