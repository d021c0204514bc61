package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

func TestNewCmdReplay(t *testing.T) {
	defaults := Options{
		Host: "127.0.0.1", Port: 4000, Files: []string{"a.astm"},
		ConnectTimeout: 5 * time.Second, Conn: ConnPerRun, Format: FormatAuto, Packing: astm.PackRecord,
		FrameSize: 240, Style: astm.FrameStyle{FirstNumber: '1'}, AckTimeout: 15 * time.Second, MaxAttempts: 6, ENQRetryDelay: 10 * time.Second,
		MaxENQAttempts: 6, ContentionDelay: time.Second, EOTWait: 200 * time.Millisecond, Repeat: 1,
	}
	with := func(f func(o *Options)) Options {
		o := defaults
		f(&o)
		return o
	}
	serial := func(cfg serialport.Config, files ...string) Options {
		return with(func(o *Options) { o.Host, o.Port, o.Serial, o.Files = "", 0, &cfg, files })
	}
	sc := serialport.NewConfig("/dev/ttyUSB0")
	sc.Baud, sc.Parity = 19200, "even"
	url := serialport.NewConfig("/dev/ttyS1")
	url.Baud, url.DataBits = 2400, 7
	tests := []struct {
		name    string
		args    string
		want    Options
		wantErr string
	}{
		{"defaults", "127.0.0.1 4000 a.astm", defaults, ""},
		{"several files and flags", "h 1 a b --format raw --pack stream --frame-size 0 --ack-timeout 300ms --repeat 5 --trace --json --corrupt 2,3",
			with(func(o *Options) {
				o.Host, o.Port, o.Files = "h", 1, []string{"a", "b"}
				o.Format, o.Packing, o.FrameSize, o.AckTimeout, o.Repeat = "raw", astm.PackStream, 0, 300*time.Millisecond, 5
				o.Trace, o.JSON, o.Corrupt = "-", true, []int{2, 3}
			}), ""},
		{"dialect and pacing", "h 1 a.astm --split header --start-fn 0 --checksum-case lower --trailer lf --inter-frame-delay 5ms --inter-transmission-delay 1s",
			with(func(o *Options) {
				o.Host, o.Port = "h", 1
				o.Split, o.Style = astm.SplitHeader, astm.FrameStyle{FirstNumber: '0', LowerChecksum: true, Trailer: astm.TrailerLF}
				o.FrameDelay, o.TransmissionDelay = 5*time.Millisecond, time.Second
			}), ""},
		{"one transmission per file, frames from 7, no trailer", "h 1 a.astm --split file --start-fn 7 --trailer none",
			with(func(o *Options) {
				o.Host, o.Port, o.Split, o.Style = "h", 1, astm.SplitFile, astm.FrameStyle{FirstNumber: '7', Trailer: astm.TrailerNone}
			}), ""},
		{"trace to a file", "h 1 a.astm --trace=t.script", with(func(o *Options) { o.Host, o.Port, o.Trace = "h", 1, "t.script" }), ""},
		{"serial device with flags", "--serial /dev/ttyUSB0 --baud 19200 --parity even a.astm b.astm", serial(sc, "a.astm", "b.astm"), ""},
		{"serial URL, a flag wins", "--serial serial:///dev/ttyS1?baud=9600&dataBits=7 --baud 2400 a.astm", serial(url, "a.astm"), ""},
		{"no files", "127.0.0.1 4000", Options{}, "give HOST PORT and at least one FILE"},
		{"no arguments", "", Options{}, "requires at least 1 arg"},
		{"bad port", "h 70000 a", Options{}, `invalid port "70000"`},
		{"bad format", "h 1 a --format hex", Options{}, `invalid --format "hex"`},
		{"bad pack", "h 1 a --pack x", Options{}, `invalid --pack "x"`},
		{"bad split", "h 1 a --split line", Options{}, `invalid --split "line": use blank, header or file`},
		{"start-fn above 7", "h 1 a --start-fn 8", Options{}, "invalid --start-fn 8: frame numbers go from 0 to 7"},
		{"negative start-fn", "h 1 a --start-fn -1", Options{}, "invalid --start-fn -1"},
		{"start-fn not a number", "h 1 a --start-fn one", Options{}, `invalid argument "one" for "--start-fn"`},
		{"bad checksum case", "h 1 a --checksum-case UPPER", Options{}, `invalid --checksum-case "UPPER": use upper or lower`},
		{"bad trailer", "h 1 a --trailer cr", Options{}, `invalid --trailer "cr": use crlf, lf or none`},
		{"negative frame delay", "h 1 a --inter-frame-delay -1ms", Options{}, "delays must not be negative"},
		{"negative transmission delay", "h 1 a --inter-transmission-delay -1s", Options{}, "delays must not be negative"},
		{"pacing without replies", "h 1 a --no-wait --inter-transmission-delay 1s", Options{}, "--no-wait bypasses"},
		{"bad conn", "h 1 a --conn sometimes", Options{}, `invalid --conn "sometimes"`},
		{"negative frame size", "h 1 a --frame-size -1", Options{}, "--frame-size must not be negative"},
		{"zero ack timeout", "h 1 a --ack-timeout 0", Options{}, "--ack-timeout must be positive"},
		{"zero attempts", "h 1 a --max-attempts 0", Options{}, "--max-attempts and --max-enq-attempts must be at least 1"},
		{"negative delay", "h 1 a --eot-wait -1s", Options{}, "delays must not be negative"},
		{"zero repeat", "h 1 a --repeat 0", Options{}, "--repeat must be at least 1"},
		{"corrupt without replies", "h 1 a --no-wait --corrupt 1", Options{}, "--corrupt needs replies"},
		{"serial flag without serial", "h 1 a --parity odd", Options{}, "--parity needs --serial"},
		{"bad baud", "--serial /dev/ttyS0 --baud 7 a", Options{}, `invalid baud "7"`},
		{"bad serial URL", "--serial serial:///dev/ttyS0?stopBits=3 a", Options{}, `invalid stopBits "3"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ios, _, _, _ := iostreams.Test()
			var got *Options
			cmd := NewCmdReplay(&cmdutil.Factory{IOStreams: ios}, func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(strings.Fields(tt.args))
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || cmdutil.ExitCode(err) != cmdutil.ExitUsage {
					t.Fatalf("error %v (exit %d), want a usage error containing %q", err, cmdutil.ExitCode(err), tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, *got, cmpopts.IgnoreFields(Options{}, "IO")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadInput(t *testing.T) {
	frame := func(fn int, text string) []byte { return astm.EncodeFrame(fn, []byte(text), true) }
	lit := func(s string) []byte {
		b, err := astm.ParseMnemonic(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badCS := append(bytes.Clone(frame(1, "H|x\r")[:len(frame(1, "H|x\r"))-4]), 'Z', 'Z', '\r', '\n')
	tests := []struct {
		name     string
		opts     Options
		data     string
		wantTxs  [][][]byte
		wantUnit [][]byte // --no-wait
		wantWarn []string
		wantErr  string
	}{
		{"records, two transmissions", Options{Format: FormatAuto}, "# comment\r\nH|a\r\nL|1\r\n\r\nH|b\n",
			[][][]byte{{frame(1, "H|a\r"), frame(2, "L|1\r")}, {frame(1, "H|b\r")}}, nil, nil, ""},
		// Checksums by hand: 37+48+7C+61+0D+03 = 6C, and so on.
		{"records, split at each H, dialect", Options{Format: FormatAuto, Split: astm.SplitHeader,
			Style: astm.FrameStyle{FirstNumber: '7', LowerChecksum: true, Trailer: astm.TrailerNone}}, "H|a\nL|1\nH|b\nP|1\nL|1\n",
			[][][]byte{
				{lit("<STX>7H|a<CR><ETX>6c"), lit("<STX>0L|1<CR><ETX>39")},
				{lit("<STX>7H|b<CR><ETX>6d"), lit("<STX>0P|1<CR><ETX>3d"), lit("<STX>1L|1<CR><ETX>3a")},
			}, nil, nil, ""},
		{"records, one transmission per file", Options{Format: FormatAuto, Split: astm.SplitFile}, "H|a\n\nL|1\n\n",
			[][][]byte{{frame(1, "H|a\r"), frame(2, "L|1\r")}}, nil, nil, ""},
		{"records, frame size 0 never splits", Options{Format: "records", FrameSize: 0}, strings.Repeat("R", 300),
			[][][]byte{{frame(1, strings.Repeat("R", 300)+"\r")}}, nil, nil, ""},
		{"records, no-wait units", Options{Format: FormatAuto, NoWait: true, FrameSize: 240}, "L|1\n",
			[][][]byte{{frame(1, "L|1\r")}}, [][]byte{{astm.ENQ}, frame(1, "L|1\r"), {astm.EOT}}, nil, ""},
		{"raw, two transmissions and an implicit one", Options{Format: FormatAuto},
			"\x05" + string(frame(1, "H|a\r")) + "\x04\x05\x04" + string(frame(1, "L|1\r")),
			[][][]byte{{frame(1, "H|a\r")}, nil, {frame(1, "L|1\r")}}, nil, nil, ""},
		{"raw, noise and a truncated frame are skipped", Options{Format: "raw"},
			"\x05junk" + string(frame(1, "H|a\r")) + "\x022L|\x04",
			[][][]byte{{frame(1, "H|a\r")}}, nil,
			[]string{"in: skipping bytes that are not a complete frame (junk); --no-wait sends them",
				"in: skipping bytes that are not a complete frame (<STX>2L|); --no-wait sends them"}, ""},
		{"raw, no-wait keeps everything", Options{Format: "raw", NoWait: true}, "\x05junk" + string(frame(1, "H|a\r")) + "\x04",
			[][][]byte{{frame(1, "H|a\r")}}, [][]byte{{astm.ENQ}, []byte("junk"), frame(1, "H|a\r"), {astm.EOT}}, nil, ""},
		{"raw, wrong checksum is reported and kept", Options{Format: "raw"}, "\x05" + string(badCS) + "\x04",
			[][][]byte{{badCS}}, nil,
			[]string{"in: transmission 1, frame 1: recorded checksum ZZ, computed " + string(frame(1, "H|x\r")[7:9]) + "; sent as recorded (--fix-checksums corrects it)"}, ""},
		{"raw, fix checksums", Options{Format: "raw", FixChecksums: true}, "\x05" + string(badCS) + "\x04",
			[][][]byte{{frame(1, "H|x\r")}}, nil, nil, ""},
		{"raw, renumber", Options{Format: "raw", Renumber: true}, "\x05" + string(frame(5, "H|a\r")) + string(frame(5, "L|1\r")) + "\x04",
			[][][]byte{{frame(1, "H|a\r"), frame(2, "L|1\r")}}, nil, nil, ""},
		{"mnemonic with comments", Options{Format: FormatAuto}, "# capture\n<ENQ>\n" + astm.FormatMnemonic(frame(1, "L|1\r")) + "\n  # done\n<EOT>\n",
			[][][]byte{{frame(1, "L|1\r")}}, nil, nil, ""},
		{"bad mnemonic", Options{Format: "mnemonic"}, "<ENQ>€", nil, nil, nil, "in: "},
		{"sender script refused", Options{Format: FormatAuto}, "@ role sender\n< <ENQ>\n", nil, nil, nil, "plays the LIS"},
		{"empty records", Options{Format: "records"}, "# nothing\n\n", nil, nil, nil, "nothing to send in records input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "in")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			var warnings []string
			warn := func(format string, args ...any) {
				warnings = append(warnings, strings.ReplaceAll(fmt.Sprintf(format, args...), path, "in"))
			}
			in, err := tt.opts.loadInput(path, warn)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || cmdutil.ExitCode(err) != cmdutil.ExitUsage {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantTxs, in.txs); diff != "" {
				t.Errorf("transmissions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantUnit, in.units); diff != "" {
				t.Errorf("no-wait units (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarn, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// hangUp, returned by a reply func, closes the connection.
const hangUp = 0xFF

// receiver is a loopback listener built from pkg/astm, or one that answers
// each byte with reply(b) (0: no answer).
func receiver(t *testing.T, reply func(b byte) byte) (string, func() []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bodies []string
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if reply != nil {
					buf := make([]byte, 512)
					for {
						n, err := c.Read(buf)
						for _, b := range buf[:n] {
							switch a := reply(b); a {
							case 0:
							case hangUp:
								return
							default:
								_, _ = c.Write([]byte{a})
							}
						}
						if err != nil {
							return
						}
					}
				}
				_ = astm.NewReceiver(astm.ReceiverOptions{}).Serve(ctx, c, func(s astm.Session) error {
					mu.Lock()
					defer mu.Unlock()
					bodies = append(bodies, s.Body)
					return nil
				})
			}()
		}
	}()
	t.Cleanup(func() { cancel(); l.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return bodies
	}
}

func TestReplayRun(t *testing.T) {
	dir := t.TempDir()
	records := filepath.Join(dir, "in.astm")
	if err := os.WriteFile(records, []byte("H|\\^&\nL|1|N\n\nH|\\^&\nL|1|N\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	headers := filepath.Join(dir, "headers.astm")
	if err := os.WriteFile(headers, []byte("H|\\^&\nL|1|N\nH|\\^&\nL|1|N\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "H|\\^&\nL|1|N\n"
	l02 := filepath.Join("..", "..", "..", "..", "testdata", "astm", "scenarios", "L02-happy-path-record-per-frame.script")
	s, err := astm.ParseScript(bytes.NewReader(mustRead(t, l02)))
	if err != nil {
		t.Fatal(err)
	}
	l02Body := s.Messages[0]
	tests := []struct {
		name       string
		reply      func(b byte) byte // nil: a pkg/astm receiver
		opts       func(o *Options)
		tty        bool
		wantCode   int
		wantBodies []string
		want       Summary
		wantErrOut string
	}{
		{"two transmissions, twice, with progress", nil, func(o *Options) { o.Repeat = 2 }, true, 0,
			[]string{body, body, body, body},
			Summary{Files: 1, Repeat: 2, Transmissions: 4, Accepted: 4, Frames: 8, ENQs: 4, BytesSent: 4 * 28, BytesReceived: 4 * 4}, "\r\x1b[K"},
		{"trace on standard error", nil, func(o *Options) { o.Trace = "-"; o.Conn = ConnPerTransmission }, false, 0,
			[]string{body, body},
			Summary{Files: 1, Repeat: 1, Transmissions: 2, Accepted: 2, Frames: 4, ENQs: 2, BytesSent: 2 * 28, BytesReceived: 2 * 4},
			"# in.astm\n> <ENQ>\n< <ACK>\n> <STX>1H|\\^&<CR><ETX>"},
		// Both transmissions start again at frame 0; frames are 12 bytes.
		{"dialect: lower case, LF, from 0, into our receiver", nil, func(o *Options) {
			o.Style, o.Trace = astm.FrameStyle{FirstNumber: '0', LowerChecksum: true, Trailer: astm.TrailerLF}, "-"
		}, false, 0, []string{body, body},
			Summary{Files: 1, Repeat: 1, Transmissions: 2, Accepted: 2, Frames: 4, ENQs: 2, BytesSent: 2 * 26, BytesReceived: 2 * 4},
			"> <STX>0H|\\^&<CR><ETX>e4<LF>\n< <ACK>\n> <STX>1L|1|N<CR><ETX>04<LF>\n< <ACK>\n> <EOT>\n< <ACK>\n" +
				"> <ENQ>\n< <ACK>\n> <STX>0H|\\^&<CR><ETX>e4<LF>\n"},
		{"split at each H, transmissions paced", nil, func(o *Options) {
			o.Files, o.Split, o.TransmissionDelay, o.Repeat = []string{headers}, astm.SplitHeader, 150*time.Millisecond, 2
		}, false, 0, []string{body, body, body, body},
			Summary{Files: 1, Repeat: 2, Transmissions: 4, Accepted: 4, Frames: 8, ENQs: 4, BytesSent: 4 * 28, BytesReceived: 4 * 4}, ""},
		{"one transmission per file, frames paced", nil, func(o *Options) { o.Split, o.FrameDelay = astm.SplitFile, 100*time.Millisecond }, false, 0,
			[]string{body + body},
			Summary{Files: 1, Repeat: 1, Transmissions: 1, Accepted: 1, Frames: 4, ENQs: 1, BytesSent: 1 + 4*13 + 1, BytesReceived: 6}, ""},
		{"frames NAKed", func(b byte) byte {
			switch b {
			case astm.ENQ:
				return astm.ACK
			case astm.LF:
				return astm.NAK
			}
			return 0
		}, func(o *Options) { o.MaxAttempts = 2 }, false, cmdutil.ExitRejected, nil,
			Summary{Files: 1, Repeat: 1, Transmissions: 1, NAKs: 2, Retransmissions: 1, ENQs: 1, BytesSent: 1 + 2*13 + 1, BytesReceived: 3,
				Error: "in.astm, transmission 1: astm: frame rejected too many times: frame 1 sent 2 times"}, ""},
		{"receiver interrupt honoured", func(b byte) byte {
			switch b {
			case astm.ENQ:
				return astm.ACK
			case astm.LF:
				return astm.EOT
			}
			return 0
		}, func(o *Options) { o.HonorInterrupt = true }, false, cmdutil.ExitRejected, nil,
			Summary{Files: 1, Repeat: 1, Transmissions: 1, Frames: 1, ENQs: 1, Interrupts: 1, BytesSent: 1 + 13 + 1, BytesReceived: 2,
				Error: "in.astm, transmission 1: astm: receiver interrupted the transmission after frame 1"}, ""},
		// A listener that hangs up right after EOT has still accepted the
		// transmission; the next one goes over a new connection.
		{"hang-up after EOT", func(b byte) byte {
			switch b {
			case astm.ENQ, astm.LF:
				return astm.ACK
			case astm.EOT:
				return hangUp
			}
			return 0
		}, func(*Options) {}, false, 0, nil,
			Summary{Files: 1, Repeat: 1, Transmissions: 2, Accepted: 2, Frames: 4, ENQs: 2, BytesSent: 2 * 28, BytesReceived: 2 * 3}, ""},
		{"no-wait in chunks", nil, func(o *Options) { o.NoWait, o.Chunk, o.ChunkDelay = true, 5, time.Millisecond }, false, 0,
			[]string{body, body},
			Summary{Files: 1, Repeat: 1, Transmissions: 2, Accepted: 2, Frames: 4, BytesSent: 2 * 28, BytesReceived: 2 * 4}, ""},
		{"script, traced", nil, func(o *Options) { o.Files, o.Trace = []string{l02}, "-" }, false, 0, []string{l02Body},
			Summary{Files: 1, Repeat: 1, Scripts: 1, BytesSent: 1 + 60 + 41 + 54 + 57 + 13 + 1, BytesReceived: 7}, "# " + l02 + "\n> <ENQ>\n< <ACK>\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port, bodies := receiver(t, tt.reply)
			ios, _, stdout, stderr := iostreams.Test()
			ios.SetTTY(false, false, tt.tty)
			opts := &Options{
				IO: ios, Host: "127.0.0.1", Files: []string{records}, ConnectTimeout: 5 * time.Second, Conn: ConnPerRun,
				Format: FormatAuto, FrameSize: 240, AckTimeout: 5 * time.Second, MaxAttempts: 6, MaxENQAttempts: 6,
				EOTWait: time.Second, Repeat: 1, JSON: true,
			}
			opts.Port, _ = strconv.Atoi(port)
			tt.opts(opts)
			start := time.Now()
			err := replayRun(context.Background(), opts)
			elapsed := time.Since(start)
			if code := cmdutil.ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit %d (%v), want %d", code, err, tt.wantCode)
			}
			var got Summary
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("summary: %v\n%s", err, stdout)
			}
			// Every frame but a transmission's first, and every transmission
			// but the run's first, waits its delay.
			least := time.Duration(got.Frames-got.Transmissions)*opts.FrameDelay + time.Duration(got.Transmissions-1)*opts.TransmissionDelay
			if elapsed < least {
				t.Errorf("took %s, want at least %s", elapsed, least)
			}
			tt.want.Target = "127.0.0.1:" + port
			got.Error = strings.ReplaceAll(got.Error, dir+string(filepath.Separator), "")
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Summary{}, "DurationSec", "SessionsPerSec", "BytesPerSec")); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBodies, bodies()); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
			if errOut := strings.ReplaceAll(stderr.String(), dir+string(filepath.Separator), ""); !strings.Contains(errOut, tt.wantErrOut) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErrOut)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReplayRunConnectFailures(t *testing.T) {
	records := filepath.Join(t.TempDir(), "in.astm")
	if err := os.WriteFile(records, []byte("L|1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		serial   *serialport.Config
		wantCode int
	}{
		{"refused", context.Background(), nil, cmdutil.ExitConnect},
		{"interrupted", ctx, nil, cmdutil.ExitInterrupted},
		{"no such serial device", context.Background(), &serialport.Config{Device: filepath.Join(t.TempDir(), "tty"), Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1"}, cmdutil.ExitConnect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ios, _, _, _ := iostreams.Test()
			opts := &Options{IO: ios, Host: "127.0.0.1", Port: port, Serial: tt.serial, Files: []string{records}, ConnectTimeout: time.Second,
				Conn: ConnPerRun, Format: FormatAuto, AckTimeout: time.Second, MaxAttempts: 1, MaxENQAttempts: 1, Repeat: 1}
			err := replayRun(tt.ctx, opts)
			if code := cmdutil.ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit %d (%v), want %d", code, err, tt.wantCode)
			}
			if tt.wantCode == cmdutil.ExitInterrupted && !errors.Is(err, cmdutil.ErrInterrupted) {
				t.Errorf("error %v, want ErrInterrupted", err)
			}
		})
	}
}
