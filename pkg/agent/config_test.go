package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// addresses returns name → address of the running channels.
func (e *env) addresses() map[string]string {
	out := map[string]string{}
	for name, c := range e.channels() {
		out[name] = c.spec().address
	}
	return out
}

// reloadError reloads and returns the agent:error body, failing on success.
func (e *env) reloadError() string {
	e.t.Helper()
	r := e.reload()
	if r.Type != protocol.TypeError {
		e.t.Fatalf("reload answered %s, want %s", r.Type, protocol.TypeError)
	}
	return r.Body
}

func (e *env) reloadOK() {
	e.t.Helper()
	if r := e.reload(); r.Type != protocol.TypeReloadConfigResp || r.StatusCode != 200 {
		e.t.Fatalf("reload answered %s %d %s", r.Type, r.StatusCode, r.Body)
	}
}

func containsAll(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

// Scenario 9 at start-up: no snapshot, so Start fails with every problem.
func TestStartRefusesInvalidConfig(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "ok", address: mllpAddr(port, "")}, ch{name: "test", address: ""})
	err := e.agent.Start(context.Background())
	var ce *ConfigError
	if !errors.As(err, &ce) || !slices.Equal(ce.Problems, []string{"Invalid empty endpoint address for channel 'test'"}) {
		t.Fatalf("Start = %v, want a ConfigError about channel 'test'", err)
	}
	// Nothing is bound, the lock is released and no snapshot is written.
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Errorf("port still bound after a failed start: %v", err)
	} else {
		ln.Close()
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, snapshotFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot after a failed start: %v", err)
	}
	e.setAgent("active", nil, ch{name: "ok", address: mllpAddr(port, "")})
	e.agent = e.newAgent(e.ds.BaseURL())
	e.start()
	if e.agent.Stop(context.Background()) != nil {
		t.Error("Stop failed")
	}
}

// Scenarios 9–12: an invalid reload changes nothing and reports every
// problem in one agent:error.
func TestReloadRefusesInvalidConfig(t *testing.T) {
	okPort, bPort := freePort(t), freePort(t)
	okAddr := mllpAddr(okPort, "")
	tests := []struct {
		name  string
		chans []ch
		want  []string
	}{
		{
			name:  "empty address",
			chans: []ch{{name: "ok", address: okAddr}, {name: "test", address: ""}},
			want:  []string{"1 problem(s) found in agent config; no changes applied", "Invalid empty endpoint address for channel 'test'"},
		},
		{
			name:  "unsupported type",
			chans: []ch{{name: "ok", address: okAddr}, {name: "test", address: "foo:"}},
			want:  []string{"Unsupported endpoint type: foo:"},
		},
		{
			name:  "two bad channels",
			chans: []ch{{name: "ok", address: okAddr}, {name: "a", address: ""}, {name: "b", address: "foo:"}},
			want: []string{"2 problem(s) found in agent config; no changes applied",
				"Invalid empty endpoint address for channel 'a'", "Unsupported endpoint type: foo:"},
		},
		{
			name: "valid change with an invalid one",
			chans: []ch{
				{name: "ok", address: mllpAddr(okPort, "enhanced=true")},
				{name: "hl7-a", address: mllpAddr(bPort, "")},
				{name: "hl7-b", address: "not a url"},
			},
			want: []string{"Error while validating endpoint address for channel 'hl7-b'"},
		},
	}
	e := newEnv(t, ch{name: "ok", address: okAddr})
	e.start()
	before := e.channels()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.setAgent("active", nil, tt.chans...)
			containsAll(t, e.reloadError(), tt.want...)
			if diff := cmp.Diff(map[string]string{"ok": okAddr}, e.addresses()); diff != "" {
				t.Errorf("channels (-want +got):\n%s", diff)
			}
			if e.channels()["ok"] != before["ok"] {
				t.Error("channel 'ok' was replaced")
			}
		})
	}
}

// Scenario 13: a port held by another process fails the reload before
// anything changes.
func TestReloadPortInUse(t *testing.T) {
	okPort, busyPort := freePort(t), freePort(t)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", busyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	e := newEnv(t, ch{name: "ok", address: mllpAddr(okPort, "")})
	e.start()
	e.setAgent("active", nil,
		ch{name: "ok", address: mllpAddr(okPort, "enhanced=true")},
		ch{name: "new", address: mllpAddr(busyPort, "")})
	containsAll(t, e.reloadError(), "Channel 'new' cannot start", fmt.Sprintf("Unable to bind port %d: EADDRINUSE", busyPort))
	if diff := cmp.Diff(map[string]string{"ok": mllpAddr(okPort, "")}, e.addresses()); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}
}

// Scenarios 14 and 16: parameters change in place, connections of
// untouched channels survive, renames and moves rebind.
func TestReloadKeepsConnections(t *testing.T) {
	prod, staging, test, moved := freePort(t), freePort(t), freePort(t), freePort(t)
	e := newEnv(t,
		ch{name: "hl7-prod", address: mllpAddr(prod, "")},
		ch{name: "hl7-staging", address: mllpAddr(staging, "")},
		ch{name: "hl7-test", address: mllpAddr(test, "")})
	e.start()
	before := e.channels()
	devProd, devStaging := dial(t, prod), dial(t, staging)
	devProd.send(adt("p1"))
	devStaging.send(adt("s1"))
	if got := ackOf(devProd.recv()) + "," + ackOf(devStaging.recv()); got != "AA p1,AA s1" {
		t.Fatalf("before reload: %s", got)
	}

	// 14: same port, new parameters.
	e.setAgent("active", nil,
		ch{name: "hl7-prod", address: mllpAddr(prod, "enhanced=true")},
		ch{name: "hl7-staging", address: mllpAddr(staging, "")},
		ch{name: "hl7-test", address: mllpAddr(test, "")})
	e.reloadOK()
	if e.channels()["hl7-prod"] != before["hl7-prod"] {
		t.Error("hl7-prod was replaced by a parameter change")
	}
	devProd.send(adt("p2"))
	if got := ackOf(devProd.recv()); got != "CA p2" {
		t.Errorf("after enabling enhanced mode the same connection got %q, want CA p2", got)
	}
	if got := ackOf(devProd.recv()); got != "AA p2" {
		t.Errorf("then %q, want AA p2", got)
	}

	// 16: rename hl7-staging, move hl7-test, leave hl7-prod alone.
	e.setAgent("active", nil,
		ch{name: "hl7-prod", address: mllpAddr(prod, "enhanced=true")},
		ch{name: "hl7-dev", address: mllpAddr(staging, "")},
		ch{name: "hl7-test", address: mllpAddr(moved, "")})
	e.reloadOK()
	want := map[string]string{
		"hl7-prod": mllpAddr(prod, "enhanced=true"),
		"hl7-dev":  mllpAddr(staging, ""),
		"hl7-test": mllpAddr(moved, ""),
	}
	if diff := cmp.Diff(want, e.addresses()); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}
	devProd.send(adt("p3"))
	if got := ackOf(devProd.recv()) + "," + ackOf(devProd.recv()); got != "CA p3,AA p3" {
		t.Errorf("hl7-prod connection after the reload: %s", got)
	}
	d := dial(t, moved)
	d.send(adt("t1"))
	if got := ackOf(d.recv()); got != "AA t1" {
		t.Errorf("moved channel answered %q", got)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", test)); err == nil {
		c.Close()
		t.Error("hl7-test still listens on its old port")
	}
}

// Scenario 15: a parameter warning is applied, unless strict validation is on.
func TestReloadWarnings(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bogus := mllpAddr(port, "enhanced=bogus")
	e.setAgent("active", nil, ch{name: "test", address: bogus})
	e.reloadOK()
	e.waitMainLog("Invalid enhanced value 'bogus'")
	if got := e.addresses()["test"]; got != bogus {
		t.Errorf("address = %q, want %q", got, bogus)
	}

	e.setAgent("active", []fhir.AgentSetting{boolSetting("strictConfigValidation", true)},
		ch{name: "test", address: mllpAddr(port, "enhanced=bogus&x=1")})
	containsAll(t, e.reloadError(), "Invalid enhanced value 'bogus'")
	if got := e.addresses()["test"]; got != bogus {
		t.Errorf("address after a strict failure = %q, want %q", got, bogus)
	}
}

// failKind is a channel type whose start always fails, to exercise the
// rollback of a plan that validated.
var failKind = &channelKind{
	scheme: "fail",
	label:  "FAIL",
	parse:  func(url.Values) (any, []issue) { return nil, nil },
	open:   func(a *Agent, s channelSpec) channel { return &failChannel{cfg: s} },
}

type failChannel struct{ cfg channelSpec }

func (f *failChannel) start() error                           { return errors.New("Channel 'broken' cannot start: boom") }
func (f *failChannel) reconfigure(channelSpec) error          { return nil }
func (f *failChannel) stop(context.Context)                   {}
func (f *failChannel) handleResponse(*protocol.Message) error { return nil }
func (f *failChannel) spec() channelSpec                      { return f.cfg }

// Scenario 17: a channel failing to start after validation rolls the whole
// configuration back.
func TestReloadRollsBack(t *testing.T) {
	channelKinds = append(channelKinds, failKind)
	t.Cleanup(func() { channelKinds = channelKinds[:len(channelKinds)-1] })
	a, b, c := freePort(t), freePort(t), freePort(t)
	e := newEnv(t, ch{name: "a", address: mllpAddr(a, "")}, ch{name: "gone", address: mllpAddr(c, "")})
	e.start()
	before := e.addresses()
	dev := dial(t, a)

	e.setAgent("active", nil,
		ch{name: "a", address: mllpAddr(a, "enhanced=true")},
		ch{name: "b", address: mllpAddr(b, "")},
		ch{name: "broken", address: fmt.Sprintf("fail://h:%d", freePort(t))})
	containsAll(t, e.reloadError(), "Channel 'broken' cannot start: boom")
	e.waitMainLog("Rolled back to last-good config successfully")
	if diff := cmp.Diff(before, e.addresses()); diff != "" {
		t.Errorf("channels after rollback (-want +got):\n%s", diff)
	}
	// Channel a is back in original mode, on the same connection.
	dev.send(adt("1"))
	if got := ackOf(dev.recv()); got != "AA 1" {
		t.Errorf("after rollback got %q, want AA 1", got)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b)); err == nil {
		c.Close()
		t.Error("channel b of the failed plan is still listening")
	}
	dial(t, c).c.Close() // the removed channel was restored
}

// Scenario 18: the last-good snapshot.
func TestSnapshot(t *testing.T) {
	port := freePort(t)
	addr := mllpAddr(port, "")
	e := newEnv(t, ch{name: "test", address: addr})
	e.start()
	path := filepath.Join(e.dataDir, snapshotFileName)
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		AppliedAt    string          `json:"appliedAt"`
		AgentVersion string          `json:"agentVersion"`
		Agent        fhir.Agent      `json:"agent"`
		Endpoints    []fhir.Endpoint `json:"endpoints"`
	}
	if err := json.Unmarshal(first, &snap); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %d %s %t", snap.Agent.ID, snap.AgentVersion, len(snap.Endpoints), snap.Endpoints[0].Address, snap.AppliedAt != "")
	if want := fmt.Sprintf("%s %s 1 %s true", testAgentID, testVersion, addr); got != want {
		t.Errorf("snapshot %s, want %s", got, want)
	}

	// A failed reload leaves it alone.
	e.setAgent("active", nil, ch{name: "test", address: ""})
	e.reloadError()
	if now, _ := os.ReadFile(path); string(now) != string(first) {
		t.Error("a failed reload rewrote the snapshot")
	}
	e.agent.Stop(context.Background())

	// With the server unreachable the agent boots from the snapshot.
	e.agent = e.newAgent("http://127.0.0.1:1/")
	e.start2()
	if diff := cmp.Diff(map[string]string{"test": addr}, e.addresses()); diff != "" {
		t.Errorf("channels from the snapshot (-want +got):\n%s", diff)
	}
	e.agent.Stop(context.Background())

	// With the server's config invalid too; once connected the agent tries
	// the server's config again.
	failures := strings.Count(e.mainLogText(), "Reloading config failed")
	e.agent = e.newAgent(e.ds.BaseURL())
	e.start2()
	if diff := cmp.Diff(map[string]string{"test": addr}, e.addresses()); diff != "" {
		t.Errorf("channels from the snapshot (-want +got):\n%s", diff)
	}
	eventually(t, "a reload once live", func() bool {
		return strings.Count(e.mainLogText(), "Reloading config failed") > failures
	})
	e.agent.Stop(context.Background())

	// A snapshot of another agent is ignored.
	other := strings.Replace(string(first), testAgentID, "someone-else", 1)
	if err := os.WriteFile(path, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	e.agent = e.newAgent(e.ds.BaseURL())
	var ce *ConfigError
	if err := e.agent.Start(context.Background()); !errors.As(err, &ce) {
		t.Errorf("Start with a foreign snapshot = %v, want a ConfigError", err)
	}
	e.waitMainLog(`it belongs to agent \"someone-else\"`)
}

// start2 starts an agent that may not connect.
func (e *env) start2() {
	e.t.Helper()
	if err := e.agent.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { e.agent.Stop(context.Background()) })
}

// Scenario 19: Agent.status off runs no channel and refuses transmits.
func TestAgentStatusOff(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	e.setAgent("off", nil, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	if got := e.addresses(); len(got) != 0 {
		t.Errorf("channels with the agent off: %v", got)
	}
	for _, typ := range []string{protocol.TypeTransmitRequest, protocol.TypeTransmitResponse} {
		r := e.request(&protocol.Message{Type: typ, Channel: "test", Remote: "x", ContentType: protocol.ContentTypeHL7, Body: adt("1"), Callback: "cb-" + typ})
		if got := r.Type + " " + r.Body + " " + r.Callback; got != protocol.TypeError+" Agent.status is currently set to off cb-"+typ {
			t.Errorf("%s answered %q", typ, got)
		}
	}
	// Switching it on starts the channel.
	e.setAgent("active", nil, ch{name: "test", address: mllpAddr(port, "")})
	e.reloadOK()
	d := dial(t, port)
	d.send(adt("1"))
	if got := ackOf(d.recv()); got != "AA 1" {
		t.Errorf("got %q", got)
	}
}
