package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	devClient = "e2e-client"
	devSecret = "e2e-secret"
	devAgent  = "0b5e7a1c-3d2f-4e6a-9b8c-7d6e5f4a3b2c"
)

// site is one dev-server configuration with its channels on free ports.
type site struct {
	config string            // path of the dev server config file
	ports  map[string]string // channel name → port
}

// newSite writes a dev server config with one agent whose channels are
// "name=query" pairs (query may be empty) answered by the ack bot.
func newSite(t *testing.T, channels ...string) site {
	t.Helper()
	s := site{config: filepath.Join(t.TempDir(), "devserver.json"), ports: map[string]string{}}
	var chans []map[string]string
	for _, c := range channels {
		name, query, _ := strings.Cut(c, "=")
		port := freePort(t)
		s.ports[name] = port
		addr := "mllp://0.0.0.0:" + port
		if query != "" {
			addr += "?" + query
		}
		chans = append(chans, map[string]string{"name": name, "address": addr, "bot": "ack"})
	}
	cfg := map[string]any{
		"clients": []map[string]string{{"clientId": devClient, "clientSecret": devSecret}},
		"bots":    []map[string]string{{"id": "ack", "kind": "ack"}},
		"agents":  []map[string]any{{"id": devAgent, "name": "e2e", "status": "active", "channels": chans}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// startDevServer runs `dev-server` on a fixed port (so it can be restarted
// at the same address) and returns its base URL.
func startDevServer(t *testing.T, s site, listen string, extra ...string) (*proc, string) {
	t.Helper()
	p := startProc(t, "", append([]string{"dev-server", "--listen", listen, "--config", s.config}, extra...)...)
	waitFor(t, "dev-server", p.stdout, "Run an agent against it", 10*time.Second)
	return p, "http://" + listen + "/"
}

// startAgent runs the agent against baseURL and waits until every channel
// of the site accepts connections.
func startAgent(t *testing.T, s site, baseURL, dataDir string) *proc {
	t.Helper()
	p := startProc(t, "", "run", baseURL, devClient, devSecret, devAgent, "--data-dir", dataDir)
	t.Cleanup(func() {
		if t.Failed() {
			logMainTail(t, dataDir)
		}
	})
	for _, port := range s.ports {
		waitPort(t, port, 20*time.Second)
	}
	return p
}

// logMainTail logs the end of the agent's main logs in dataDir: its stderr
// is not a terminal, so that is where it wrote.
func logMainTail(t *testing.T, dataDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dataDir, "medplum-agent-main-*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s (last lines):\n%s", filepath.Base(f), strings.Join(lines[max(0, len(lines)-60):], "\n"))
	}
}

func recorded(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var m map[string]string
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("record line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// The README's quick start, with ports chosen for the test: run --dev, then
// hl7 send gets an AA made by the dev server's bot.
func TestRunDevAckBot(t *testing.T) {
	s := newSite(t, "hl7")
	record := filepath.Join(t.TempDir(), "record.jsonl")
	p := startProc(t, "", "run", "--dev", "--dev-listen", "127.0.0.1:"+freePort(t), "--dev-config", s.config,
		"--dev-record", record, "--data-dir", t.TempDir())
	waitPort(t, s.ports["hl7"], 20*time.Second)

	r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], adtWithID)
	if r.code != 0 || !strings.Contains(r.stdout, "MSA|AA|MSGID1|OK") || !strings.Contains(r.stdout, "|ACK^A01|") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rec := recorded(t, record)
	if len(rec) != 1 || rec[0]["channel"] != "hl7" || rec[0]["contentType"] != "x-application/hl7-v2+er7" ||
		!strings.Contains(rec[0]["body"], "|MSGID1|") || !strings.HasPrefix(rec[0]["callback"], "Agent/"+devAgent+"-") {
		t.Fatalf("record %v", rec)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("run exit %d after SIGTERM", code)
	}
}

func TestRunExitCodes(t *testing.T) {
	s := newSite(t, "hl7")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))

	t.Run("missing settings exit 78", func(t *testing.T) {
		r := runCmd(t, "", "run", "--data-dir", t.TempDir(), "--config", filepath.Join(t.TempDir(), "absent.properties"))
		if r.code != 78 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("invalid base URL exit 78", func(t *testing.T) {
		r := runCmd(t, "", "run", "not-a-url", devClient, devSecret, devAgent, "--data-dir", t.TempDir())
		if r.code != 78 || !strings.Contains(r.stderr, "baseUrl") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("wrong secret exit 4 and no secret in the output", func(t *testing.T) {
		r := runCmd(t, "", "run", base, devClient, "wrong-secret-value", devAgent, "--data-dir", t.TempDir())
		if r.code != 4 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if strings.Contains(r.stderr+r.stdout, "wrong-secret-value") {
			t.Fatalf("secret leaked: %s", r.stderr)
		}
	})
	t.Run("second instance on the same data dir refused", func(t *testing.T) {
		dir := t.TempDir()
		startAgent(t, s, base, dir)
		r := runCmd(t, "", "run", base, devClient, devSecret, devAgent, "--data-dir", dir)
		if r.code == 0 || !strings.Contains(r.stderr, "already running") {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
}

// The published Medplum CLI, as a device, gets the bot's ACK through our agent.
func TestRunMedplumCLIIntoAgent(t *testing.T) {
	medplum := peer(t, "medplum")
	s := newSite(t, "hl7")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	startAgent(t, s, base, t.TempDir())
	r := runPeer(t, medplum, "hl7", "send", "127.0.0.1", s.ports["hl7"], "--generate-example")
	got := lines(r.stdout)
	if r.code != 0 || len(got) != 2 || !strings.HasPrefix(got[0], "MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|") || !strings.HasPrefix(got[1], "MSA|AA|") {
		t.Fatalf("medplum hl7 send exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// 50 devices at once on one channel, and the enhanced-mode commit ACK.
func TestRunManyDevices(t *testing.T) {
	s := newSite(t, "hl7", "fast=enhanced=true")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	startAgent(t, s, base, t.TempDir())
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], "--generate-example", "--count", "1000", "--concurrency", "50", "--json")
	var rep struct {
		Messages int
		Acks     map[string]int
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || rep.Acks["AA"] != 1000 {
		t.Fatalf("exit %d report %s %s", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["fast"], adtWithID, "--return-ack", "first")
	if r.code != 0 || !strings.Contains(r.stdout, "MSA|CA|MSGID1|Commit Accept") {
		t.Fatalf("enhanced first: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["fast"], adtWithID, "--return-ack", "application")
	if r.code != 0 || !strings.Contains(r.stdout, "MSA|AA|MSGID1|OK") {
		t.Fatalf("enhanced application: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
}

// The server goes away mid-traffic: the agent reconnects by itself and the
// messages received meanwhile reach the server in order.
func TestRunServerRestart(t *testing.T) {
	s := newSite(t, "hl7")
	listen := "127.0.0.1:" + freePort(t)
	record := filepath.Join(t.TempDir(), "record.jsonl")
	srv, base := startDevServer(t, s, listen, "--record", record)
	startAgent(t, s, base, t.TempDir())
	if r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], adtWithID); r.code != 0 {
		t.Fatalf("before restart: exit %d %s", r.code, r.stderr)
	}
	srv.stop(t, syscall.SIGKILL)

	var senders []*proc
	for i := range 3 {
		msg := strings.ReplaceAll(adtWithID, "MSGID1", fmt.Sprintf("DOWN%d", i))
		senders = append(senders, startProc(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], msg, "--timeout", "60s"))
		time.Sleep(300 * time.Millisecond) // arrival order at the agent
	}
	startDevServer(t, s, listen, "--record", record)
	for i, p := range senders {
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("sender %d still waiting after the server came back", i)
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(p.stdout.String(), fmt.Sprintf("MSA|AA|DOWN%d|OK", i)) {
			t.Fatalf("sender %d: exit %d %s %s", i, code, p.stdout.String(), p.stderr.String())
		}
	}
	var order []string
	for _, m := range recorded(t, record) {
		for i := range 3 {
			if strings.Contains(m["body"], fmt.Sprintf("|DOWN%d|", i)) {
				order = append(order, fmt.Sprint(i))
			}
		}
	}
	if strings.Join(order, ",") != "0,1,2" {
		t.Fatalf("messages reached the restarted server in order %v, want 0,1,2", order)
	}
}

// Tokens that expire every few seconds: the agent logs in again by itself and
// every transmit is still accepted by the server.
func TestRunTokenExpiry(t *testing.T) {
	s := newSite(t, "hl7")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t), "--token-ttl", "2s")
	startAgent(t, s, base, t.TempDir())
	deadline := time.Now().Add(7 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		msg := strings.ReplaceAll(adtWithID, "MSGID1", fmt.Sprintf("TOK%d", n))
		if r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], msg, "--timeout", "10s"); r.code != 0 {
			t.Fatalf("message %d after %v: exit %d %s %s", n, time.Until(deadline), r.code, r.stdout, r.stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
