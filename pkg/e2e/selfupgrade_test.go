package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The whole self-upgrade: $upgrade on the dev server → the running 1.0.0
// agent fetches the release manifest, downloads and verifies 1.1.0, swaps
// its executable and restarts (by re-executing itself, as it runs outside a
// service manager here); the new process confirms to the server, which
// answers the operation 200 and reports the new version.
func TestRunSelfUpgrade(t *testing.T) {
	dir := t.TempDir()
	v100 := buildVersion(t, dir, "1.0.0")
	v110 := buildVersion(t, dir, "1.1.0")

	rel := serveRelease(t, "1.1.0", v110, httptest.NewServer) // plain HTTP is accepted on loopback only

	installed := filepath.Join(dir, "install", "medplum-agent")
	if err := os.MkdirAll(filepath.Dir(installed), 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(v100)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(installed, old, 0o755); err != nil {
		t.Fatal(err)
	}

	s := newSite(t, "hl7")
	_, baseURL := startDevServer(t, s, "127.0.0.1:"+freePort(t))
	srv := login(t, baseURL)
	// The release manifest comes from the Agent setting upgradeManifestUrl.
	r := srv.call(http.MethodGet, "fhir/R4/Agent/"+devAgent, nil)
	var agentRes map[string]any
	if err := json.Unmarshal([]byte(r.body), &agentRes); err != nil {
		t.Fatal(err)
	}
	agentRes["setting"] = []map[string]any{{"name": "upgradeManifestUrl", "valueString": rel.URL + "/releases/{tag}.json"}}
	srv.put(agentRes)

	dataDir := filepath.Join(dir, "data")
	startProc(t, installed, "run", baseURL, devClient, devSecret, devAgent, "--data-dir", dataDir)
	waitPort(t, s.ports["hl7"], 20*time.Second)

	r = srv.op("$upgrade", map[string]any{"version": "1.1.0", "timeout": 50000})
	if r.status != http.StatusOK {
		t.Fatalf("$upgrade answered %d %s", r.status, r.body)
	}
	if got := binaryVersion(t, installed); got != "1.1.0" {
		t.Errorf("installed version = %q, want 1.1.0", got)
	}
	// The server learns the version from the next heartbeat (every 10 s).
	deadline := time.Now().Add(30 * time.Second)
	for v := ""; !strings.HasPrefix(v, "1.1.0"); time.Sleep(250 * time.Millisecond) {
		if v = param(t, srv.op("$status", nil), "version"); time.Now().After(deadline) {
			t.Fatalf("$status version = %q, want 1.1.0", v)
		}
	}
	// The upgraded agent still serves its channel.
	if r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], adtWithID); r.code != 0 {
		t.Fatalf("after the upgrade: exit %d %s", r.code, r.stderr)
	}
}
