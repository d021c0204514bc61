package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// server is a client of the dev server's HTTP API, as curl would be.
type server struct {
	t     *testing.T
	base  string
	token string
}

// response is one HTTP answer.
type response struct {
	status      int
	contentType string
	location    string // Content-Location
	body        string
}

// login gets a token with the site's client credentials.
func login(t *testing.T, base string) *server {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {devClient}, "client_secret": {devSecret}}
	resp, err := http.PostForm(base+"oauth2/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: status %d, %v", resp.StatusCode, err)
	}
	return &server{t: t, base: base, token: tok.AccessToken}
}

// call sends a request to path (relative to the base URL); body is sent
// as JSON unless nil.
func (s *server) call(method, path string, body any, header ...string) response {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/fhir+json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"),
		location: resp.Header.Get("Content-Location"), body: string(b)}
}

// op calls an Agent operation of the site's agent.
func (s *server) op(name string, params map[string]any, header ...string) response {
	s.t.Helper()
	var body any // a nil map would be sent as "null"
	if params != nil {
		body = params
	}
	return s.call(http.MethodPost, "fhir/R4/Agent/"+devAgent+"/"+name, body, header...)
}

func (s *server) put(resource map[string]any) {
	s.t.Helper()
	r := s.call(http.MethodPut, fmt.Sprintf("fhir/R4/%s/%s", resource["resourceType"], resource["id"]), resource)
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		s.t.Fatalf("PUT %v: %d %s", resource["id"], r.status, r.body)
	}
}

// moveChannel points the Endpoint of channel name at a new port.
func (s *server) moveChannel(name, port string) {
	s.t.Helper()
	path := "fhir/R4/Endpoint/" + devAgent + "-" + name
	r := s.call(http.MethodGet, path, nil)
	var ep map[string]any
	if err := json.Unmarshal([]byte(r.body), &ep); r.status != http.StatusOK || err != nil {
		s.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	ep["address"] = "mllp://0.0.0.0:" + port
	s.put(ep)
}

// param returns a string-valued output parameter of a Parameters body.
func param(t *testing.T, r response, name string) string {
	t.Helper()
	var p fhir.Parameters
	if err := json.Unmarshal([]byte(r.body), &p); err != nil || r.status != http.StatusOK {
		t.Fatalf("answer %d %s: %v", r.status, r.body, err)
	}
	for _, pp := range p.Parameter {
		switch {
		case pp.Name != name:
		case pp.ValueString != nil:
			return *pp.ValueString
		case pp.ValueCode != nil:
			return *pp.ValueCode
		}
	}
	t.Fatalf("no parameter %q in %s", name, r.body)
	return ""
}

func device(id, address string) map[string]any {
	return map[string]any{"resourceType": "Device", "id": id, "url": address}
}

func message(id string) string { return strings.ReplaceAll(adtWithID, "MSGID1", id) }

func pushParams(destination, body, returnAck string) map[string]any {
	p := map[string]any{"destination": destination, "contentType": "x-application/hl7-v2+er7", "body": body,
		"waitForResponse": true}
	if returnAck != "" {
		p["returnAck"] = returnAck
	}
	return p
}

// Scenarios 29–33 and 35 through $push: `hl7 listen` as the device, plain
// and enhanced, and the system ping.
func TestOpsPushAndPing(t *testing.T) {
	s := newSite(t, "hl7")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	startAgent(t, s, base, t.TempDir())
	srv := login(t, base)
	plain, plainPort := startListen(t)
	enhanced, enhancedPort := startListen(t, "--enhanced")
	refused := freePort(t)
	srv.put(device("plain", "mllp://127.0.0.1:"+plainPort))
	srv.put(device("enhanced", "mllp://127.0.0.1:"+enhancedPort))
	srv.put(device("enhanced-app", "mllp://127.0.0.1:"+enhancedPort+"?defaultReturnAck=application"))
	srv.put(device("nobody", "mllp://127.0.0.1:"+refused))

	tests := []struct {
		name        string
		params      map[string]any
		status      int
		contentType string
		bodyHas     string
	}{
		{"29 AA from hl7 listen", pushParams("Device/plain", message("PUSH1"), ""),
			200, "x-application/hl7-v2+er7", "MSA|AA|PUSH1"},
		{"30 missing MSH-10", pushParams("Device/plain", message(""), ""),
			400, "application/fhir+json", "MSH.10 is missing but required"},
		{"31 invalid returnAck", pushParams("Device/plain", message("PUSH2"), "bogus"),
			400, "application/fhir+json", "Invalid value for returnAck; expected: 'first' or 'application', received: bogus"},
		{"32 enhanced, first", pushParams("Device/enhanced", message("PUSH3"), "first"),
			200, "x-application/hl7-v2+er7", "MSA|CA|PUSH3"},
		{"32 enhanced, application", pushParams("Device/enhanced", message("PUSH4"), "application"),
			200, "x-application/hl7-v2+er7", "MSA|AA|PUSH4"},
		{"32 defaultReturnAck=application", pushParams("Device/enhanced-app", message("PUSH5"), ""),
			200, "x-application/hl7-v2+er7", "MSA|AA|PUSH5"},
		{"33 connection refused", pushParams("Device/nobody", message("PUSH6"), ""),
			400, "application/fhir+json", "connect ECONNREFUSED 127.0.0.1:" + refused},
		{"35 ping", map[string]any{"destination": "127.0.0.1", "contentType": "x-application/ping", "body": "PING",
			"waitForResponse": true}, 200, "x-application/ping", "ping statistics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := srv.op("$push", tt.params)
			if r.status != tt.status || !strings.HasPrefix(r.contentType, tt.contentType) || !strings.Contains(r.body, tt.bodyHas) {
				t.Errorf("$push answered %d %s %q, want %d %s containing %q", r.status, r.contentType, r.body, tt.status, tt.contentType, tt.bodyHas)
			}
		})
	}
	for l, ids := range map[*proc][]string{plain: {"PUSH1"}, enhanced: {"PUSH3", "PUSH4", "PUSH5"}} {
		for _, id := range ids {
			waitFor(t, "device output", l.stdout, "|"+id+"|", 10*time.Second)
		}
	}

	t.Run("respond-async", func(t *testing.T) {
		r := srv.op("$push", pushParams("Device/plain", message("ASYNC1"), ""), "Prefer", "respond-async")
		loc, err := url.Parse(r.location)
		if r.status != http.StatusAccepted || err != nil || r.location == "" {
			t.Fatalf("$push answered %d %s", r.status, r.body)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			job := srv.call(http.MethodGet, strings.TrimPrefix(loc.Path, "/"), nil)
			if job.status == http.StatusOK {
				if !strings.Contains(job.body, `"completed"`) || !strings.Contains(job.body, `MSA|AA|ASYNC1`) {
					t.Errorf("job %s", job.body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job still %d: %s", job.status, job.body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// hl7Conn is a device holding one MLLP connection open to a channel.
type hl7Conn struct {
	t  *testing.T
	c  net.Conn
	rd *mllp.Reader
}

func dialHL7(t *testing.T, port string) *hl7Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &hl7Conn{t: t, c: c, rd: mllp.NewReader(c, 0)}
}

// exchange sends a message and returns the MSA of its ACK.
func (h *hl7Conn) exchange(id string) string {
	h.t.Helper()
	if err := mllp.WriteFrame(h.c, []byte(message(id))); err != nil {
		h.t.Fatal(err)
	}
	h.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	p, err := h.rd.ReadFrame()
	if err != nil {
		h.t.Fatalf("reading the ACK of %s: %v", id, err)
	}
	m, err := hl7.Parse(string(p))
	if err != nil {
		h.t.Fatalf("ACK %q: %v", p, err)
	}
	return string(hl7.AckCodeOf(m)) + " " + m.Get("MSA-2")
}

func refuses(port string) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	if err == nil {
		c.Close()
	}
	return err != nil
}

// Scenario 41 and the reload rules: $reload-config and then SIGHUP move
// channel b to a new port, while a device keeps its connection to channel
// a open and keeps getting ACKs on it.
func TestOpsReload(t *testing.T) {
	s := newSite(t, "a", "b")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	agent := startAgent(t, s, base, t.TempDir())
	srv := login(t, base)
	dev := dialHL7(t, s.ports["a"])
	if got := dev.exchange("R1"); got != "AA R1" {
		t.Fatalf("before the reload: %q", got)
	}

	moved := freePort(t)
	srv.moveChannel("b", moved)
	r := srv.op("$reload-config", nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"OperationOutcome"`) || !strings.Contains(r.body, `"id":"allok"`) {
		t.Fatalf("$reload-config answered %d %s", r.status, r.body)
	}
	if refuses(moved) || !refuses(s.ports["b"]) {
		t.Errorf("after $reload-config: new port refuses %v, old port refuses %v", refuses(moved), refuses(s.ports["b"]))
	}
	if got := dev.exchange("R2"); got != "AA R2" {
		t.Errorf("same connection after $reload-config: %q", got)
	}

	again := freePort(t)
	srv.moveChannel("b", again)
	if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitPort(t, again, 20*time.Second)
	if !refuses(moved) {
		t.Error("after SIGHUP the previous port still accepts")
	}
	if got := dev.exchange("R3"); got != "AA R3" {
		t.Errorf("same connection after SIGHUP: %q", got)
	}
	if got := dialHL7(t, again).exchange("R4"); got != "AA R4" {
		t.Errorf("moved channel: %q", got)
	}
}

// Scenarios 42–44 through $stats, $fetch-logs and $upgrade, and $status.
func TestOpsStatsLogsUpgrade(t *testing.T) {
	s := newSite(t, "hl7")
	_, base := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	startAgent(t, s, base, t.TempDir())
	srv := login(t, base)
	_, port := startListen(t)
	srv.put(device("lis", "mllp://127.0.0.1:"+port))
	if r := srv.op("$push", pushParams("Device/lis", message("STAT1"), "")); r.status != 200 {
		t.Fatalf("$push answered %d %s", r.status, r.body)
	}
	if got := dialHL7(t, s.ports["hl7"]).exchange("STAT2"); got != "AA STAT2" {
		t.Fatalf("inbound: %q", got)
	}

	t.Run("43 stats", func(t *testing.T) {
		var st map[string]json.RawMessage
		if err := json.Unmarshal([]byte(param(t, srv.op("$stats", nil), "stats")), &st); err != nil {
			t.Fatal(err)
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range st {
				if !yield(k) {
					return
				}
			}
		})
		// durableQueue: the queue is on by default.
		want := []string{"byteStreamLinksOpen", "channelStats", "clientStats", "durableQueue", "hl7ClientCount", "hl7ConnectionsOpen", "hl7QueueDepth",
			"live", "outstandingHeartbeats", "ping", "webSocketQueueDepth"}
		if diff := cmp.Diff(want, keys); diff != "" {
			t.Errorf("stats keys (-want +got):\n%s", diff)
		}
		type rtt struct {
			RTT struct {
				Count        int `json:"count"`
				PendingCount int `json:"pendingCount"`
			} `json:"rtt"`
		}
		var clients, channels map[string]rtt
		var count int
		var live bool
		for _, f := range []struct {
			key string
			v   any
		}{{"clientStats", &clients}, {"channelStats", &channels}, {"hl7ClientCount", &count}, {"live", &live}} {
			if err := json.Unmarshal(st[f.key], f.v); err != nil {
				t.Fatalf("%s: %v", f.key, err)
			}
		}
		client := clients["mllp://127.0.0.1:"+port+"?encoding=utf-8"]
		if count != 1 || !live || client.RTT.Count != 1 || channels["hl7"].RTT.Count != 1 {
			t.Errorf("hl7ClientCount %d, live %v, clientStats %v, channelStats %v", count, live, clients, channels)
		}
	})

	t.Run("42 logs", func(t *testing.T) {
		logs := strings.Split(param(t, srv.op("$fetch-logs", map[string]any{"limit": 5}), "logs"), "\n")
		if len(logs) != 5 {
			t.Fatalf("%d log entries, want 5: %q", len(logs), logs)
		}
		for _, l := range logs {
			var e struct {
				Level, Msg, Timestamp string
			}
			if err := json.Unmarshal([]byte(l), &e); err != nil || e.Level == "" || e.Msg == "" || e.Timestamp == "" {
				t.Errorf("log entry %q: %v", l, err)
			}
		}
		r := srv.op("$fetch-logs", map[string]any{"limit": "invalid_limit"})
		if want := "Invalid limit: invalid_limit - must be a valid positive integer less than or equal to 1000"; r.status != 400 || !strings.Contains(r.body, want) {
			t.Errorf("invalid limit answered %d %s", r.status, r.body)
		}
	})

	t.Run("44 upgrade refused", func(t *testing.T) {
		// Self-upgrade works on every platform (TestRunSelfUpgrade); an
		// invalid version is refused with the reference's text.
		r := srv.op("$upgrade", map[string]any{"version": "not-a-version"})
		if r.status != 400 || !strings.Contains(r.body, "'not-a-version' is not a valid version") {
			t.Errorf("$upgrade answered %d %s", r.status, r.body)
		}
	})

	t.Run("status", func(t *testing.T) {
		if got := param(t, srv.op("$status", nil), "status"); got != "connected" {
			t.Errorf("$status = %q", got)
		}
	})
}

// The last-good snapshot: with the server down the agent starts from it,
// its channels take messages (an enhanced channel commits at once), and
// when the server comes back at the same address the agent connects and
// the messages received meanwhile arrive.
func TestOpsBootFromSnapshot(t *testing.T) {
	s := newSite(t, "hl7", "fast=enhanced=true")
	listen := "127.0.0.1:" + freePort(t)
	record := filepath.Join(t.TempDir(), "record.jsonl")
	dataDir := t.TempDir()
	srvProc, base := startDevServer(t, s, listen, "--record", record)
	agent := startAgent(t, s, base, dataDir)
	if code := agent.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("agent exit %d", code)
	}
	srvProc.stop(t, syscall.SIGTERM)

	startAgent(t, s, base, dataDir) // server down: from the snapshot
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["fast"], message("SNAP1"), "--return-ack", "first")
	if r.code != 0 || !strings.Contains(r.stdout, "MSA|CA|SNAP1") {
		t.Fatalf("enhanced channel with the server down: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	waiting := startProc(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], message("SNAP2"), "--timeout", "60s")

	_, base = startDevServer(t, s, listen, "--record", record)
	srv := login(t, base)
	deadline := time.Now().Add(40 * time.Second)
	for param(t, srv.op("$status", nil), "status") != "connected" {
		if time.Now().After(deadline) {
			t.Fatal("agent did not connect to the restarted server")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-waiting.done:
	case <-time.After(60 * time.Second):
		t.Fatal("sender still waiting after the server came back")
	}
	if code := waiting.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(waiting.stdout.String(), "MSA|AA|SNAP2") {
		t.Fatalf("sender: exit %d %s %s", code, waiting.stdout.String(), waiting.stderr.String())
	}
	var got []string
	for _, m := range recorded(t, record) {
		for _, id := range []string{"SNAP1", "SNAP2"} {
			if strings.Contains(m["body"], "|"+id+"|") {
				got = append(got, m["channel"]+" "+id)
			}
		}
	}
	// FIFO holds per channel; the two channels are delivered independently.
	slices.Sort(got)
	if diff := cmp.Diff([]string{"fast SNAP1", "hl7 SNAP2"}, got); diff != "" {
		t.Errorf("recorded after the restart (-want +got):\n%s", diff)
	}
}
