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

	"github.com/medplum-agent/medplum-agent/pkg/internal/readonly"
)

// The whole self-upgrade: $upgrade on the dev server → the running 1.0.0
// agent fetches the release manifest, downloads and verifies 1.1.0, installs
// it and restarts (by re-executing itself in place, as it runs outside a
// service manager here, and as the packaged systemd unit's user does); the
// new process confirms to the server, which answers the operation 200 and
// reports the new version.
//
// With a writable install directory the executable is replaced. A read-only
// one stands for the Linux package (root's /usr/bin under
// ProtectSystem=strict): 1.1.0 goes to <data-dir>/bin, and the restarted
// 1.0.0 executable hands over to it before doing anything else.
func TestRunSelfUpgrade(t *testing.T) {
	dir := t.TempDir()
	v100 := buildVersion(t, dir, "1.0.0")
	v110 := buildVersion(t, dir, "1.1.0")
	rel := serveRelease(t, "1.1.0", v110, httptest.NewServer) // plain HTTP is accepted on loopback only

	tests := []struct {
		name        string
		readOnly    bool
		wantInstall string // version of the executable afterwards
	}{
		{name: "writable executable", wantInstall: "1.1.0"},
		{name: "read-only executable", readOnly: true, wantInstall: "1.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			installed := install(t, dir, v100)
			if tt.readOnly {
				if err := readonly.Dir(t, filepath.Dir(installed)); err != nil {
					if os.Getenv("E2E_REQUIRE_PEERS") == "1" {
						t.Fatalf("cannot make the install directory read-only: %v", err)
					}
					t.Skipf("cannot make the install directory read-only: %v", err)
				}
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
			p := startProc(t, installed, "run", baseURL, devClient, devSecret, devAgent, "--data-dir", dataDir)
			waitPort(t, s.ports["hl7"], 20*time.Second)

			r = srv.op("$upgrade", map[string]any{"version": "1.1.0", "timeout": 50000})
			if r.status != http.StatusOK {
				t.Fatalf("$upgrade answered %d %s", r.status, r.body)
			}
			if got := binaryVersion(t, installed); got != tt.wantInstall {
				t.Errorf("installed version = %q, want %s", got, tt.wantInstall)
			}
			staged := filepath.Join(dataDir, "bin", "medplum-agent")
			if tt.readOnly {
				if got := binaryVersion(t, staged); got != "1.1.0" {
					t.Errorf("staged version = %q, want 1.1.0", got)
				}
				waitFor(t, "agent", p.stderr, "Starting the upgraded binary", time.Second)
			} else if _, err := os.Stat(staged); err == nil {
				t.Errorf("%s exists, want the executable replaced in place", staged)
			}
			// The server learns the version from the next heartbeat (every 10 s).
			deadline := time.Now().Add(30 * time.Second)
			for v := ""; !strings.HasPrefix(v, "1.1.0"); time.Sleep(250 * time.Millisecond) {
				if v = param(t, srv.op("$status", nil), "version"); time.Now().After(deadline) {
					t.Fatalf("$status version = %q, want 1.1.0", v)
				}
			}
			select {
			case <-p.done:
				t.Fatalf("the agent exited (%v) instead of restarting in place", p.err)
			default:
			}
			// The upgraded agent still serves its channel.
			if r := runCmd(t, "", "hl7", "send", "127.0.0.1", s.ports["hl7"], adtWithID); r.code != 0 {
				t.Fatalf("after the upgrade: exit %d %s", r.code, r.stderr)
			}
		})
	}
}
