package e2e

import (
	"bytes"
	"fmt"
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
)

// newTCPSite is newSite with tcp:// (byte-stream) channels instead of
// mllp:// ones.
func newTCPSite(t *testing.T, channels ...string) site {
	t.Helper()
	s := newSite(t, channels...)
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, bytes.ReplaceAll(b, []byte(`"mllp://`), []byte(`"tcp://`)), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// startRunDev runs `run --dev` on the site's config, recording every
// transmit, and waits until its channels listen. It returns the record file.
func startRunDev(t *testing.T, s site) string {
	t.Helper()
	record := filepath.Join(t.TempDir(), "record.jsonl")
	startProc(t, "", "run", "--dev", "--dev-listen", "127.0.0.1:"+freePort(t), "--dev-config", s.config,
		"--dev-record", record, "--data-dir", t.TempDir())
	for _, port := range s.ports {
		waitPort(t, port, 20*time.Second)
	}
	return record
}

// waitRecorded waits until the record file holds n transmits of channel
// and returns them.
func waitRecorded(t *testing.T, record, channel string, n int) []map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []map[string]string
		if _, err := os.Stat(record); err == nil {
			for _, m := range recorded(t, record) {
				if m["channel"] == channel {
					got = append(got, m)
				}
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transmits of channel %s recorded, want %d", len(got), channel, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instrument sends a capture (ENQ, frames, EOT) unit by unit, as an
// instrument does, and checks that every unit is answered ACK (EOT too:
// the channel acknowledges it by default, as the reference does).
func instrument(c net.Conn, capture []byte) error {
	reply := make([]byte, 1)
	for i, u := range astm.SplitUnits(capture) {
		if _, err := c.Write(u); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, reply); err != nil {
			return fmt.Errorf("unit %d (%s): %w", i, astm.FormatMnemonic(u[:min(len(u), 8)]), err)
		}
		if reply[0] != astm.ACK {
			return fmt.Errorf("unit %d (%s) answered %s", i, astm.FormatMnemonic(u[:min(len(u), 8)]), astm.FormatMnemonic(reply))
		}
	}
	return nil
}

func dialChannel(t testing.TB, port string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// framedFixture is one framed/*.e1381.bin capture and the body it must
// deliver.
type framedFixture struct {
	name    string
	capture []byte
	body    string
}

func framedFixtures(t *testing.T) []framedFixture {
	t.Helper()
	bins, err := filepath.Glob(astmData("framed", "*.e1381.bin"))
	if err != nil || len(bins) == 0 {
		t.Fatalf("framed fixtures: %v %v", bins, err)
	}
	var out []framedFixture
	for _, bin := range bins {
		stem, _, _ := strings.Cut(filepath.Base(bin), ".")
		out = append(out, framedFixture{
			name:    filepath.Base(bin),
			capture: readData(t, bin),
			body:    string(readData(t, astmData("framed", stem+".body.txt"))),
		})
	}
	return out
}

// Every framed capture, written to the astm channel of `run --dev`,
// delivers exactly its golden body to the server.
func TestRunDevASTMFramedFixtures(t *testing.T) {
	s := newTCPSite(t, "astm=mode=astm")
	record := startRunDev(t, s)
	fixtures := framedFixtures(t)
	for i, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			c := dialChannel(t, s.ports["astm"])
			if err := instrument(c, f.capture); err != nil {
				t.Fatal(err)
			}
			got := waitRecorded(t, record, "astm", i+1)[i]
			if diff := cmp.Diff(f.body, got["body"]); diff != "" {
				t.Errorf("recorded body (-want +got):\n%s", diff)
			}
			if got["contentType"] != astm.ContentType || got["remote"] != "::ffff:"+c.LocalAddr().String() {
				t.Errorf("recorded %s from %s", got["contentType"], got["remote"])
			}
		})
	}
}

// 20 instruments at once, each on its own connection with its own capture.
func TestRunDevASTMManyInstruments(t *testing.T) {
	const instruments = 20
	s := newTCPSite(t, "astm=mode=astm")
	record := startRunDev(t, s)
	fixtures := framedFixtures(t)
	var mu sync.Mutex
	want := map[string]string{} // remote → body
	var wg sync.WaitGroup
	for i := range instruments {
		f := fixtures[i%len(fixtures)]
		c := dialChannel(t, s.ports["astm"])
		want["::ffff:"+c.LocalAddr().String()] = f.body // the agent listens dual-stack, like the reference
		wg.Go(func() {
			if err := instrument(c, f.capture); err != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Errorf("instrument %d (%s): %v", i, f.name, err)
			}
		})
	}
	wg.Wait()
	got := map[string]string{}
	for _, m := range waitRecorded(t, record, "astm", instruments) {
		got[m["remote"]] = m["body"]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bodies by remote (-want +got):\n%s", diff)
	}
}

// Scenario 46 through the binaries: the ack Bot's hex "06" reaches the
// device as one byte.
func TestRunDevByteStreamRaw(t *testing.T) {
	s := newTCPSite(t, "raw=startChar=%02&endChar=%03")
	record := startRunDev(t, s)
	c := dialChannel(t, s.ports["raw"])
	if _, err := c.Write([]byte("\x02HEL")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("LO\x03")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 1)
	if _, err := io.ReadFull(c, got); err != nil || got[0] != 0x06 {
		t.Fatalf("device read %x, %v; want 06", got, err)
	}
	m := waitRecorded(t, record, "raw", 1)[0]
	if m["contentType"] != "application/octet-stream" || m["body"] != "0248454c4c4f03" || m["remote"] != "::ffff:"+c.LocalAddr().String() {
		t.Errorf("recorded %v", m)
	}
}

// The default dev configuration has the astm channel.
func TestDevServerDefaultASTMChannel(t *testing.T) {
	p := startProc(t, "", "dev-server", "--listen", "127.0.0.1:"+freePort(t))
	waitFor(t, "dev-server banner", p.stdout, "tcp://0.0.0.0:56100?mode=astm -> Bot/ack", 10*time.Second)
}

// TestRunDevASTMThroughput measures (with E2E_BENCH=1) how fast `run --dev`
// takes the longest framed capture: sessions one after another on each
// connection, every unit waiting for its ACK as an instrument does, and
// every session counted only once it is in the dev server's record.
// TestASTMReplayThroughRunDev measures the same with `astm replay --repeat`.
func TestRunDevASTMThroughput(t *testing.T) {
	if os.Getenv("E2E_BENCH") != "1" {
		t.Skip("set E2E_BENCH=1 to measure")
	}
	var longest framedFixture
	for _, f := range framedFixtures(t) {
		if len(f.capture) > len(longest.capture) {
			longest = f
		}
	}
	s := newTCPSite(t, "astm=mode=astm")
	record := startRunDev(t, s)
	sent := 0
	waitAll := func(tb testing.TB) {
		deadline := time.Now().Add(time.Minute)
		for {
			b, err := os.ReadFile(record)
			if err != nil {
				tb.Fatal(err)
			}
			if n := bytes.Count(b, []byte("\n")); n >= sent {
				return
			} else if time.Now().After(deadline) {
				tb.Fatalf("%d sessions recorded, want %d", n, sent)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, conns := range []int{1, 8} {
		var cs []net.Conn
		for range conns {
			cs = append(cs, dialChannel(t, s.ports["astm"]))
		}
		res := testing.Benchmark(func(b *testing.B) {
			per := b.N/conns + 1
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Go(func() {
					for range per {
						if err := instrument(c, longest.capture); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			sent += per * conns
			waitAll(b)
			b.ReportMetric(float64(per*conns)/b.Elapsed().Seconds(), "sessions/s")
			b.ReportMetric(float64(per*conns*len(longest.capture))/b.Elapsed().Seconds()/1e6, "MB/s")
		})
		if res.N == 0 {
			t.Fatalf("%d connection(s): the measurement failed", conns)
		}
		t.Logf("%s, %d connection(s): %s", longest.name, conns, res)
	}
}

// The L scripts, played by `astm replay --format script` against the astm
// channel of `run --dev`: both of our sides, built, on the wire. Scripts
// run one after another, so the server records their messages in order.
func TestRunDevASTMListenerScripts(t *testing.T) {
	s := newTCPSite(t, "astm=mode=astm")
	record := startRunDev(t, s)
	paths, err := filepath.Glob(astmData("scenarios", "L*.script"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("L scripts: %v %v", paths, err)
	}
	var want []string
	for _, path := range paths {
		script, err := astm.ParseScript(bytes.NewReader(readData(t, path)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, script.Messages...)
		r := runCmd(t, "", "astm", "replay", "--format", "script", "--ack-timeout", "5s", "127.0.0.1", s.ports["astm"], path)
		if r.code != 0 {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", filepath.Base(path), r.code, r.stdout, r.stderr)
		}
	}
	// One more session marks the end of what the scripts delivered.
	want = append(want, "L|end\n")
	end := bytes.Join([][]byte{{astm.ENQ}, astm.EncodeFrame(1, []byte("L|end\r"), true), {astm.EOT}}, nil)
	if err := instrument(dialChannel(t, s.ports["astm"]), end); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range waitRecorded(t, record, "astm", len(want)) {
		got = append(got, m["body"])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("recorded bodies (-want +got):\n%s", diff)
	}
}
