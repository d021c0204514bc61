package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

func astmData(parts ...string) string {
	return filepath.Join(append([]string{projectRoot, "testdata", "astm"}, parts...)...)
}

func readData(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// astmReceiver is an in-test listener built from pkg/astm. It records the
// delivered sessions and every byte the instrument sent.
type astmReceiver struct {
	mu       sync.Mutex
	sessions []astm.Session
	wire     bytes.Buffer
	served   int // connections whose Serve returned
}

// teeConn records what the receiver reads; it stays an astm.Conn.
type teeConn struct {
	net.Conn
	r *astmReceiver
}

func (c teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.r.mu.Lock()
	c.r.wire.Write(b[:n])
	c.r.mu.Unlock()
	return n, err
}

func (r *astmReceiver) serve(ctx context.Context, rw io.ReadWriter, opts astm.ReceiverOptions) {
	_ = astm.NewReceiver(opts).Serve(ctx, rw, func(s astm.Session) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.sessions = append(r.sessions, s)
		return nil
	})
	r.mu.Lock()
	r.served++
	r.mu.Unlock()
}

// startASTMReceiver listens on a loopback port until the test ends.
func startASTMReceiver(t *testing.T, opts astm.ReceiverOptions) (*astmReceiver, string) {
	t.Helper()
	r := &astmReceiver{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
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
				r.serve(ctx, teeConn{c, r}, opts)
			}()
		}
	}()
	t.Cleanup(func() { cancel(); l.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return r, port
}

// waitServed waits until n connections have ended on the receiver side, so
// that every session they carried has been delivered or discarded.
func (r *astmReceiver) waitServed(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		served := r.served
		r.mu.Unlock()
		if served >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver saw %d connections end, want %d", served, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *astmReceiver) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.sessions {
		out = append(out, s.Body)
	}
	return out
}

func (r *astmReceiver) wireBytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.wire.Bytes())
}

// replaySummary is the part of `astm replay --json` the tests check.
type replaySummary struct {
	Transmissions   int    `json:"transmissions"`
	Accepted        int    `json:"accepted"`
	Scripts         int    `json:"scripts"`
	Frames          int    `json:"frames"`
	NAKs            int    `json:"naks"`
	Retransmissions int    `json:"retransmissions"`
	BytesSent       int64  `json:"bytesSent"`
	BytesReceived   int64  `json:"bytesReceived"`
	Error           string `json:"error"`
}

func parseSummary(t *testing.T, r result) replaySummary {
	t.Helper()
	var s replaySummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, r.stdout)
	}
	return s
}

// bodyOf is what a listener delivers for a records file: each line with
// "\n", for files without a golden body.
func bodyOf(records []byte) string {
	var sb strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(string(records), "\n"), "\n") {
		sb.WriteString(line + "\n")
	}
	return sb.String()
}

func TestASTMReplayRecordsFiles(t *testing.T) {
	files, err := filepath.Glob(astmData("records", "*.astm"))
	if err != nil || len(files) != 6 {
		t.Fatalf("records fixtures: %v %v", files, err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".astm")
		t.Run(name, func(t *testing.T) {
			rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
			r := runCmd(t, "", "astm", "replay", "127.0.0.1", port, file, "--json")
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			rcv.waitServed(t, 1)
			want := bodyOf(readData(t, file))
			golden := astmData("framed", name+".body.txt")
			if _, err := os.Stat(golden); err == nil {
				want = string(readData(t, golden))
				// The tool must put exactly the golden record-packing bytes
				// on the wire, every reply being ACK.
				if diff := cmp.Diff(readData(t, astmData("framed", name+".record.e1381.bin")), rcv.wireBytes()); diff != "" {
					t.Errorf("wire bytes differ from the golden framing (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff([]string{want}, rcv.bodies()); diff != "" {
				t.Errorf("delivered bodies (-want +got):\n%s", diff)
			}
			s := parseSummary(t, r)
			if s.Transmissions != 1 || s.Accepted != 1 || s.NAKs != 0 || s.Retransmissions != 0 || s.BytesSent != int64(len(rcv.wireBytes())) {
				t.Errorf("summary %+v, want 1 accepted transmission, no NAKs and %d bytes sent", s, len(rcv.wireBytes()))
			}
		})
	}
}

func TestASTMReplayPackingGoldens(t *testing.T) {
	src := astmData("records", "immucor-galileo-result.astm")
	body := string(readData(t, astmData("framed", "immucor-galileo-result.body.txt")))
	for _, pack := range []string{"record", "frame-per-record", "stream"} {
		t.Run(pack, func(t *testing.T) {
			rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
			r := runCmd(t, "", "astm", "replay", "127.0.0.1", port, src, "--pack", pack)
			if r.code != 0 {
				t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
			}
			rcv.waitServed(t, 1)
			if diff := cmp.Diff(readData(t, astmData("framed", "immucor-galileo-result."+pack+".e1381.bin")), rcv.wireBytes()); diff != "" {
				t.Errorf("wire bytes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{body}, rcv.bodies()); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
		})
	}
}

// Captures (raw bytes and mnemonic text) replay byte for byte and deliver
// their golden bodies.
func TestASTMReplayCaptures(t *testing.T) {
	bins, _ := filepath.Glob(astmData("framed", "*.e1381.bin"))
	txts, _ := filepath.Glob(astmData("framed", "*.e1381.txt"))
	if len(bins) != 5 || len(txts) != 5 {
		t.Fatalf("framed fixtures: %d bin, %d txt", len(bins), len(txts))
	}
	for _, file := range append(bins, txts...) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			stem := strings.TrimSuffix(strings.TrimSuffix(file, ".bin"), ".txt")
			name, _, _ := strings.Cut(filepath.Base(stem), ".")
			rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
			r := runCmd(t, "", "astm", "replay", "127.0.0.1", port, file)
			if r.code != 0 {
				t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
			}
			rcv.waitServed(t, 1)
			if diff := cmp.Diff(readData(t, stem+".bin"), rcv.wireBytes()); diff != "" {
				t.Errorf("wire bytes (-want +got):\n%s", diff)
			}
			want := string(readData(t, astmData("framed", name+".body.txt")))
			if diff := cmp.Diff([]string{want}, rcv.bodies()); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
			if r.stderr != "" {
				t.Errorf("unexpected diagnostics: %s", r.stderr)
			}
		})
	}
}

// The S scripts play the LIS: the tool replays the script's input with its
// flags against a fake LIS that runs the script, and must exit as it says.
func TestASTMReplaySenderScripts(t *testing.T) {
	scripts, _ := filepath.Glob(astmData("scenarios", "S*.script"))
	if len(scripts) != 7 {
		t.Fatalf("found %d S scripts, want 7", len(scripts))
	}
	for _, path := range scripts {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".script"), func(t *testing.T) {
			t.Parallel()
			s, err := astm.ParseScript(bytes.NewReader(readData(t, path)))
			if err != nil {
				t.Fatal(err)
			}
			if s.Role != "sender" || s.Input == "" || s.Exit == nil {
				t.Fatalf("script lacks role sender, input or exit: %+v", s)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			type outcome struct {
				play  error
				extra []byte // bytes the tool sent after the script ended
			}
			done := make(chan outcome, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- outcome{play: err}
					return
				}
				defer c.Close()
				o := outcome{play: s.Play(context.Background(), c.(*net.TCPConn), astm.PlayOptions{})}
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				o.extra, _ = io.ReadAll(c)
				done <- o
			}()
			_, port, _ := net.SplitHostPort(l.Addr().String())
			args := append([]string{"astm", "replay", "127.0.0.1", port, filepath.Join(filepath.Dir(path), s.Input)}, s.Flags...)
			r := runCmd(t, "", args...)
			o := <-done
			if o.play != nil {
				t.Errorf("the fake LIS: %v", o.play)
			}
			if len(o.extra) > 0 {
				t.Errorf("the tool sent %s after the script ended", astm.FormatMnemonic(o.extra))
			}
			if r.code != *s.Exit {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, *s.Exit, r.stdout, r.stderr)
			}
		})
	}
}

// The L scripts play the instrument, so --format script runs them as the
// tool's side against a listener, which must deliver what they expect.
func TestASTMReplayListenerScripts(t *testing.T) {
	scripts, _ := filepath.Glob(astmData("scenarios", "L*.script"))
	if len(scripts) != 17 {
		t.Fatalf("found %d L scripts, want 17", len(scripts))
	}
	for _, path := range scripts {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".script"), func(t *testing.T) {
			t.Parallel()
			s, err := astm.ParseScript(bytes.NewReader(readData(t, path)))
			if err != nil {
				t.Fatal(err)
			}
			rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
			r := runCmd(t, "", "astm", "replay", "--format", "script", "--ack-timeout", "2s", "127.0.0.1", port, path, "--json")
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			rcv.waitServed(t, 1)
			if diff := cmp.Diff(s.Messages, rcv.bodies()); diff != "" {
				t.Errorf("delivered messages (-want +got):\n%s", diff)
			}
			if got := parseSummary(t, r); got.Scripts != 1 {
				t.Errorf("summary %+v, want 1 script", got)
			}
		})
	}
}

// serveBytes runs a fake listener that answers each byte it reads with
// reply(b) (0: no answer), one connection at a time, until the test ends.
func serveBytes(t *testing.T, reply func(b byte) byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			for {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				n, err := c.Read(buf)
				for _, b := range buf[:n] {
					if a := reply(b); a != 0 {
						_, _ = c.Write([]byte{a})
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// nakFrames accepts ENQ and rejects every frame.
func nakFrames(b byte) byte {
	switch b {
	case astm.ENQ:
		return astm.ACK
	case astm.LF:
		return astm.NAK
	}
	return 0
}

func TestASTMReplayExitCodes(t *testing.T) {
	records := astmData("scenarios", "inputs", "h-p-l.astm")
	sender := astmData("scenarios", "S01-sender-happy-path.script")
	l02 := astmData("scenarios", "L02-happy-path-record-per-frame.script")
	tests := []struct {
		name     string
		peer     func(b byte) byte // nil: nothing listens (usage errors never connect)
		args     []string          // after HOST PORT
		wantCode int
		wantErr  string
		want     *replaySummary
	}{
		{"refused", nil, []string{records}, 5, "could not connect to 127.0.0.1:", nil},
		{"silent peer", func(byte) byte { return 0 }, []string{records, "--ack-timeout", "300ms", "--json"}, 124,
			"no reply to ENQ within 300ms", &replaySummary{Transmissions: 1, BytesSent: 2, Error: "no reply to ENQ"}}, // ENQ, then EOT
		{"NAK exhaustion", nakFrames, []string{records, "--max-attempts", "3", "--json"}, 3,
			"frame 1 sent 3 times", // ENQ, a 60-byte frame three times, EOT; ACK and three NAKs back.
			&replaySummary{Transmissions: 1, NAKs: 3, Retransmissions: 2, BytesSent: 182, BytesReceived: 4, Error: "frame rejected too many times"}},
		{"listener busy", func(b byte) byte {
			if b == astm.ENQ {
				return astm.NAK
			}
			return 0
		}, []string{records, "--max-enq-attempts", "2", "--enq-retry-delay", "10ms"}, 3, "2 ENQs answered NAK", nil},
		{"script expectation fails", nakFrames, []string{l02, "--ack-timeout", "1s"}, 3, "script line 6: unexpected bytes: want <ACK>, got <NAK>", nil},
		{"no files", nil, nil, 2, "give HOST PORT and at least one FILE", nil},
		{"missing file", nil, []string{"/nonexistent.astm"}, 2, "no such file", nil},
		{"sender script", nil, []string{sender}, 2, "plays the LIS", nil},
		{"bad format", nil, []string{records, "--format", "hex"}, 2, `invalid --format "hex"`, nil},
		{"bad pack", nil, []string{records, "--pack", "x"}, 2, `invalid --pack "x"`, nil},
		{"bad split", nil, []string{records, "--split", "H"}, 2, `invalid --split "H"`, nil},
		{"bad start-fn", nil, []string{records, "--start-fn", "8"}, 2, "invalid --start-fn 8", nil},
		{"bad checksum case", nil, []string{records, "--checksum-case", "mixed"}, 2, `invalid --checksum-case "mixed"`, nil},
		{"bad trailer", nil, []string{records, "--trailer", "cr"}, 2, `invalid --trailer "cr"`, nil},
		{"serial flag without serial", nil, []string{records, "--baud", "9600"}, 2, "--baud needs --serial", nil},
		{"bad repeat", nil, []string{records, "--repeat", "0"}, 2, "--repeat must be at least 1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			if tt.peer != nil {
				port = serveBytes(t, tt.peer)
			}
			r := runCmd(t, "", append([]string{"astm", "replay", "127.0.0.1", port}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.wantErr)
			}
			if tt.want == nil {
				return
			}
			got := parseSummary(t, r)
			if !strings.Contains(got.Error, tt.want.Error) {
				t.Errorf("summary error %q lacks %q", got.Error, tt.want.Error)
			}
			got.Error = tt.want.Error
			if diff := cmp.Diff(*tt.want, got); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// --trace writes a two-sided mnemonic trace that replays as a script.
func TestASTMReplayTrace(t *testing.T) {
	input := astmData("scenarios", "inputs", "h-p-l.astm")
	rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
	traceFile := filepath.Join(t.TempDir(), "session.script")
	r := runCmd(t, "", "astm", "replay", "127.0.0.1", port, input, "--trace="+traceFile)
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
	r2 := runCmd(t, "", "astm", "replay", "127.0.0.1", port, input, "--trace")
	if r2.code != 0 {
		t.Fatalf("exit %d\nstderr: %s", r2.code, r2.stderr)
	}
	want := strings.Join([]string{
		"@ role listener",
		"@ title astm replay to 127.0.0.1:" + port,
		"# " + input,
		"> <ENQ>",
		"< <ACK>",
		`> <STX>1H|\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>EF<CR><LF>`,
		"< <ACK>",
		"> <STX>2P|1||PID123||Doe^Jane||19800101|F<CR><ETX>E4<CR><LF>",
		"< <ACK>",
		"> <STX>3L|1|N<CR><ETX>06<CR><LF>",
		"< <ACK>",
		"> <EOT>",
		"< <ACK>",
	}, "\n") + "\n"
	if diff := cmp.Diff(want, string(readData(t, traceFile))); diff != "" {
		t.Errorf("trace file (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, r2.stderr); diff != "" {
		t.Errorf("trace on standard error (-want +got):\n%s", diff)
	}

	// The trace is a script: replaying it delivers the same message again.
	r3 := runCmd(t, "", "astm", "replay", "127.0.0.1", port, traceFile, "--ack-timeout", "2s")
	if r3.code != 0 {
		t.Fatalf("replaying the trace: exit %d\nstderr: %s", r3.code, r3.stderr)
	}
	rcv.waitServed(t, 3)
	body := "H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000\nP|1||PID123||Doe^Jane||19800101|F\nL|1|N\n"
	if diff := cmp.Diff([]string{body, body, body}, rcv.bodies()); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
}

func TestASTMReplayOptions(t *testing.T) {
	galileo := astmData("records", "immucor-galileo-result.astm")
	galileoBody := string(readData(t, astmData("framed", "immucor-galileo-result.body.txt")))
	raw := astmData("framed", "immucor-galileo-result.stream.e1381.bin")
	// Two messages with no blank line between: one transmission unless
	// --split header.
	twice := filepath.Join(t.TempDir(), "twice.astm")
	if err := os.WriteFile(twice, append(append(readData(t, galileo), '\n'), readData(t, galileo)...), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string // after HOST PORT
		conns      int
		wantBodies []string
		want       replaySummary // BytesSent and BytesReceived are checked when set
	}{
		{"repeat over one connection", []string{galileo, "--repeat", "3"}, 1, []string{galileoBody, galileoBody, galileoBody},
			replaySummary{Transmissions: 3, Accepted: 3, Frames: 57}},
		{"connection per transmission", []string{galileo, galileo, "--conn", "per-transmission"}, 2, []string{galileoBody, galileoBody},
			replaySummary{Transmissions: 2, Accepted: 2, Frames: 38}},
		{"dialect: lower-case checksums, LF trailers, frames from 0", []string{galileo, "--start-fn", "0", "--checksum-case", "lower", "--trailer", "lf"},
			1, []string{galileoBody}, replaySummary{Transmissions: 1, Accepted: 1, Frames: 19}},
		{"split at each H, paced", []string{twice, "--split", "header", "--inter-frame-delay", "1ms", "--inter-transmission-delay", "10ms"},
			1, []string{galileoBody, galileoBody}, replaySummary{Transmissions: 2, Accepted: 2, Frames: 38}},
		{"without --split header, one transmission", []string{twice}, 1, []string{galileoBody + galileoBody},
			replaySummary{Transmissions: 1, Accepted: 1, Frames: 38}},
		{"corrupt frame 2 is NAKed and resent", []string{galileo, "--corrupt", "2"}, 1, []string{galileoBody},
			replaySummary{Transmissions: 1, Accepted: 1, Frames: 19, NAKs: 1, Retransmissions: 1}},
		// A stream written a byte at a time without waiting still delivers;
		// the listener answers ENQ, 5 frames and EOT.
		{"no-wait chunk 1", []string{raw, "--no-wait", "--chunk", "1"}, 1, []string{galileoBody},
			replaySummary{Transmissions: 1, Accepted: 1, Frames: 5, BytesSent: 1073, BytesReceived: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv, port := startASTMReceiver(t, astm.ReceiverOptions{})
			r := runCmd(t, "", append([]string{"astm", "replay", "127.0.0.1", port, "--json"}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			rcv.waitServed(t, tt.conns)
			got := parseSummary(t, r)
			if tt.want.BytesSent == 0 {
				got.BytesSent, got.BytesReceived = 0, 0
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBodies, rcv.bodies()); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
		})
	}
}

// startPTYPair links two pseudo-terminals with socat, a virtual null-modem.
func startPTYPair(t *testing.T) (string, string) {
	t.Helper()
	socat := peer(t, "socat")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	p := startProc(t, socat, "-d", "-d", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	waitFor(t, "socat", p.stderr, "starting data transfer loop", 10*time.Second)
	return a, b
}

func TestASTMReplaySerial(t *testing.T) {
	input := astmData("records", "horiba-yumizen-h550-result.astm")
	body := string(readData(t, astmData("framed", "horiba-yumizen-h550-result.body.txt")))
	for _, tc := range []struct {
		name   string
		serial func(dev string) []string
	}{
		{"device path", func(dev string) []string { return []string{"--serial", dev, "--baud", "115200"} }},
		{"serial URL", func(dev string) []string {
			return []string{"--serial", "serial://" + dev + "?baud=19200&parity=even&dataBits=7"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startPTYPair(t)
			port, err := serialport.Open(serialport.NewConfig(b))
			if err != nil {
				t.Fatal(err)
			}
			rcv := &astmReceiver{}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan struct{})
			go func() { defer close(served); rcv.serve(ctx, port, astm.ReceiverOptions{}) }()
			defer func() { cancel(); port.Close(); <-served }()

			r := runCmd(t, "", append(append([]string{"astm", "replay"}, tc.serial(a)...), input, "--json")...)
			if r.code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			// The tool waited for the ACK of EOT, which follows delivery.
			if diff := cmp.Diff([]string{body}, rcv.bodies()); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
			if s := parseSummary(t, r); s.Accepted != 1 || s.Frames != 78 || s.NAKs != 0 {
				t.Errorf("summary %+v, want 1 accepted transmission of 78 frames", s)
			}
		})
	}
}

func TestASTMReplaySerialMissingDevice(t *testing.T) {
	r := runCmd(t, "", "astm", "replay", "--serial", filepath.Join(t.TempDir(), "ttyNONE"), astmData("scenarios", "inputs", "l-only.astm"))
	if r.code != 5 || !strings.Contains(r.stderr, "could not open") {
		t.Fatalf("exit %d stderr %q, want 5 and could not open", r.code, r.stderr)
	}
	r = runCmd(t, "", "astm", "replay", "--serial", "serial:///dev/ttyS0?dataBits=9", astmData("scenarios", "inputs", "l-only.astm"))
	if r.code != 2 || !strings.Contains(r.stderr, `invalid dataBits "9"`) {
		t.Fatalf("exit %d stderr %q, want 2 and the dataBits error", r.code, r.stderr)
	}
}

// The longest fixture through the real agent (run --dev, mode=astm, ack
// bot): every session reaches the server intact. ASTM_BENCH_REPEAT scales
// it into the benchmark of sessions/s and bytes/s, which it logs.
func TestASTMReplayThroughRunDev(t *testing.T) {
	repeat := "20"
	if n := os.Getenv("ASTM_BENCH_REPEAT"); n != "" {
		repeat = n
	}
	port := freePort(t)
	config := filepath.Join(t.TempDir(), "devserver.json")
	cfg := map[string]any{
		"clients": []map[string]string{{"clientId": devClient, "clientSecret": devSecret}},
		"bots":    []map[string]string{{"id": "ack", "kind": "ack"}},
		"agents": []map[string]any{{"id": devAgent, "name": "e2e", "status": "active", "channels": []map[string]string{
			{"name": "astm", "address": "tcp://0.0.0.0:" + port + "?mode=astm", "bot": "ack"},
		}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "record.jsonl")
	startProc(t, "", "run", "--dev", "--dev-listen", "127.0.0.1:"+freePort(t), "--dev-config", config,
		"--dev-record", record, "--data-dir", t.TempDir())
	waitPort(t, port, 20*time.Second)

	input := astmData("records", "horiba-yumizen-h550-result.astm")
	r := runCmd(t, "", "astm", "replay", "127.0.0.1", port, input, "--repeat", repeat, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var s struct {
		replaySummary
		SessionsPerSec float64 `json:"sessionsPerSec"`
		BytesPerSec    float64 `json:"bytesPerSec"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s.Accepted != s.Transmissions || s.Frames != 78*s.Accepted || s.NAKs != 0 {
		t.Fatalf("summary %+v, want every transmission accepted, 78 frames each", s.replaySummary)
	}
	t.Logf("%d sessions of %d bytes: %.1f sessions/s, %.0f bytes/s", s.Accepted, s.BytesSent/int64(s.Accepted), s.SessionsPerSec, s.BytesPerSec)

	body := string(readData(t, astmData("framed", "horiba-yumizen-h550-result.body.txt")))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rec []map[string]string
		if _, err := os.Stat(record); err == nil {
			rec = recorded(t, record)
		}
		if len(rec) == s.Accepted {
			for i, m := range rec {
				if m["channel"] != "astm" || m["contentType"] != astm.ContentType || m["body"] != body {
					t.Fatalf("record %d: channel %q, content type %q, body of %d bytes", i, m["channel"], m["contentType"], len(m["body"]))
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server recorded %d transmits, want %d", len(rec), s.Accepted)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
