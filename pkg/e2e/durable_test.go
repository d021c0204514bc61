package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // for the integrity check

	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// durableSenders are the connections of the load tests.
const durableSenders = 8

// loadDevice sends numbered messages on one connection, one at a time, and
// records the control id of every message that got a CA, in order. A
// message without an answer (the agent was killed, the disk was full) is
// sent again, on a new connection if need be, with the same bytes.
type loadDevice struct {
	n    int
	port string
	cas  []string // CA'd control ids, in CA order
	nak  atomic.Int64
	seq  int
	conn net.Conn
	rd   *mllp.Reader
}

func (d *loadDevice) msg(id string) string {
	return "MSH|^~\\&|LOAD|HOSP|RCV|FAC|20240101120000||ADT^A01^ADT_A01|" + id + "|P|2.5\rPID|1||" + id + "^^^HOSP^MR||DOE^JOHN"
}

// run sends until stop is closed; then the message in progress is finished
// or abandoned unacknowledged.
func (d *loadDevice) run(stop <-chan struct{}) {
	defer func() {
		if d.conn != nil {
			d.conn.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("D%d-%06d", d.n, d.seq)
		if d.exchange(id) {
			d.cas = append(d.cas, id)
			d.seq++
		}
		// Paced (8 devices × at most 200 msg/s), so that the backlog of an
		// outage drains within the test's deadline on a busy CI machine.
		// The guarantee under test is the same at any rate.
		time.Sleep(loadPace)
	}
}

// loadPace is each load device's pause between messages.
const loadPace = 5 * time.Millisecond

// exchange sends id and reports whether it got a CA; other answers (the
// Bot's AAs relayed for earlier messages) are skipped.
func (d *loadDevice) exchange(id string) bool {
	if d.conn == nil {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+d.port, time.Second)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		d.conn, d.rd = c, mllp.NewReader(c, 0)
	}
	fail := func() bool {
		d.conn.Close()
		d.conn = nil
		return false
	}
	d.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := mllp.WriteFrame(d.conn, []byte(d.msg(id))); err != nil {
		return fail()
	}
	for {
		p, err := d.rd.ReadFrame()
		if err != nil {
			return fail()
		}
		m, err := hl7.Parse(string(p))
		if err != nil || m.Get("MSA-2") != id {
			continue
		}
		switch hl7.AckCodeOf(m) {
		case hl7.CA:
			return true
		case hl7.CE, hl7.CR:
			d.nak.Add(1)
			time.Sleep(20 * time.Millisecond)
			return false
		}
	}
}

// runLoad starts the devices; the returned function stops them and returns
// them once they have finished.
func runLoad(port string) func() []*loadDevice {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	devs := make([]*loadDevice, durableSenders)
	for i := range devs {
		devs[i] = &loadDevice{n: i, port: port}
		wg.Go(func() { devs[i].run(stop) })
	}
	return func() []*loadDevice {
		close(stop)
		wg.Wait()
		return devs
	}
}

func caCount(devs []*loadDevice) int {
	n := 0
	for _, d := range devs {
		n += len(d.cas)
	}
	return n
}

// checkDelivered waits until every CA'd control id is in the records, then
// checks that first arrivals follow each connection's CA order, and
// returns the number of duplicates.
func checkDelivered(t *testing.T, devs []*loadDevice, records ...string) int {
	t.Helper()
	want := map[string]bool{}
	for _, d := range devs {
		for _, id := range d.cas {
			want[id] = true
		}
	}
	var arrivals []string
	deadline := time.Now().Add(120 * time.Second)
	for {
		arrivals = arrivals[:0]
		for _, r := range records {
			if _, err := os.Stat(r); err != nil {
				continue
			}
			for _, m := range recorded(t, r) {
				if msg, err := hl7.Parse(m["body"]); err == nil {
					arrivals = append(arrivals, msg.ControlID())
				}
			}
		}
		seen := map[string]bool{}
		for _, id := range arrivals {
			seen[id] = true
		}
		var missing []string
		for id := range want {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("%d of %d acknowledged messages never reached the server, e.g. %v", len(missing), len(want), missing[:min(10, len(missing))])
		}
		time.Sleep(200 * time.Millisecond)
	}
	first := map[string]bool{}
	last := map[int]int{} // device → seq of its latest first arrival
	dups := 0
	for _, id := range arrivals {
		if first[id] {
			dups++
			continue
		}
		first[id] = true
		var dev, seq int
		if _, err := fmt.Sscanf(id, "D%d-%d", &dev, &seq); err != nil {
			continue
		}
		if prev, ok := last[dev]; ok && seq < prev {
			t.Errorf("device %d: %s arrived after seq %d", dev, id, prev)
		}
		last[dev] = seq
	}
	return dups
}

// The crash test: 8 devices under load on an enhanced=true channel, the
// agent killed with SIGKILL at random points and restarted on the same
// data dir; every message that got a CA reaches the server, in order per
// connection.
func TestDurableCrash(t *testing.T) {
	s := newSite(t, "hl7=enhanced=true")
	listen := "127.0.0.1:" + freePort(t)
	record := filepath.Join(t.TempDir(), "record.jsonl")
	_, base := startDevServer(t, s, listen, "--record", record)
	dataDir := t.TempDir()
	agent := startAgent(t, s, base, dataDir)
	stop := runLoad(s.ports["hl7"])
	const kills = 3
	for range kills {
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
		agent.stop(t, syscall.SIGKILL)
		agent = startAgent(t, s, base, dataDir)
	}
	time.Sleep(time.Second)
	devs := stop()
	dups := checkDelivered(t, devs, record)
	t.Logf("crash test: %d kills, %d messages CA'd, %d duplicates at the server, 0 lost", kills, caCount(devs), dups)
	if caCount(devs) == 0 {
		t.Fatal("no message was acknowledged")
	}
}

// A server outage under load: CAs keep coming while the server is down,
// and everything arrives once it is back. E2E_OUTAGE_SECS sets the length
// (default 10).
func TestDurableOutage(t *testing.T) {
	outage := 10 * time.Second
	if v, err := strconv.Atoi(os.Getenv("E2E_OUTAGE_SECS")); err == nil && v > 0 {
		outage = time.Duration(v) * time.Second
	}
	s := newSite(t, "hl7=enhanced=true")
	listen := "127.0.0.1:" + freePort(t)
	dir := t.TempDir()
	before, after := filepath.Join(dir, "before.jsonl"), filepath.Join(dir, "after.jsonl")
	srv, base := startDevServer(t, s, listen, "--record", before)
	startAgent(t, s, base, t.TempDir())
	stop := runLoad(s.ports["hl7"])
	time.Sleep(time.Second)
	srv.stop(t, syscall.SIGKILL)
	devs := stopWhile(outage, stop)
	startDevServer(t, s, listen, "--record", after)
	dups := checkDelivered(t, devs, before, after)
	t.Logf("outage of %s: %d messages CA'd, %d duplicates, 0 lost", outage, caCount(devs), dups)
}

// stopWhile lets the load run for d, then stops it.
func stopWhile(d time.Duration, stop func() []*loadDevice) []*loadDevice {
	time.Sleep(d)
	return stop()
}

// A full disk: the queue on a 64 MiB tmpfs. Devices get CE while it is
// full, the database stays intact, and messages flow again once space is
// freed.
func TestDurableFullDisk(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("E2E_REQUIRE_PEERS") == "1" {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("ls", "-la", mnt).CombinedOutput()
			t.Logf("the small file system at the end:\n%s", out)
		}
	})

	s := newSite(t, "hl7=enhanced=true")
	dbPath := filepath.Join(mnt, "queue.sqlite")
	setAgentSettings(t, s, map[string]any{"name": "queueDbPath", "valueString": dbPath})
	listen := "127.0.0.1:" + freePort(t)
	record := filepath.Join(t.TempDir(), "record.jsonl")
	_, base := startDevServer(t, s, listen, "--record", record)
	agent := startAgent(t, s, base, t.TempDir())

	// Fill the file system, leaving the database what it has now.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()

	stop := runLoad(s.ports["hl7"])
	time.Sleep(2 * time.Second)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	devs := stop()
	var naks int64
	for _, d := range devs {
		naks += d.nak.Load()
	}
	if naks == 0 {
		t.Error("no CE while the disk was full")
	}
	dups := checkDelivered(t, devs, record)
	if caCount(devs) == 0 {
		t.Error("no CA after space was freed")
	}
	agent.stop(t, syscall.SIGTERM)
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var integrity string
	if err := db.QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check: %q %v", integrity, err)
	}
	t.Logf("full disk: %d CE, %d CA'd, %d duplicates, integrity ok", naks, caCount(devs), dups)
}

// setAgentSettings adds Agent.setting entries to the site's config.
func setAgentSettings(t *testing.T, s site, settings ...map[string]any) {
	t.Helper()
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["agents"].([]any)[0].(map[string]any)["settings"] = settings
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The benchmark (E2E_BENCH=1): enhanced-mode CA throughput and latency
// over 8 connections, with the durable queue on and off.
func TestDurableBench(t *testing.T) {
	if os.Getenv("E2E_BENCH") != "1" {
		t.Skip("set E2E_BENCH=1")
	}
	count := "50000"
	if v := os.Getenv("E2E_BENCH_COUNT"); v != "" {
		count = v
	}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("durableQueue=", on), func(t *testing.T) {
			s := newSite(t, "hl7=enhanced=true&appLevelAck=NE")
			setAgentSettings(t, s, map[string]any{"name": "durableQueue", "valueBoolean": on})
			_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
			startAgent(t, s, base, t.TempDir())
			r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], "--count", count, "--concurrency", "8",
				"--return-ack", "first", "--json", "--generate-example")
			if r.code != 0 {
				t.Fatalf("hl7 send: exit %d %s", r.code, r.stderr)
			}
			t.Logf("durableQueue=%v: %s", on, strings.TrimSpace(r.stdout))
		})
	}
}
