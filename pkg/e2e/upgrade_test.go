package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/upgrade"
)

// buildVersion builds the agent with the given version stamped in.
func buildVersion(t *testing.T, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, "medplum-agent-"+version)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out,
		"-ldflags", "-X github.com/medplum-agent/medplum-agent/pkg/build.Version="+version, "./cmd/medplum-agent")
	cmd.Dir = projectRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", version, err, b)
	}
	return out
}

// install copies exe to <dir>/install/medplum-agent.
func install(t *testing.T, dir, exe string) string {
	t.Helper()
	installed := filepath.Join(dir, "install", "medplum-agent")
	if err := os.MkdirAll(filepath.Dir(installed), 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(installed, old, 0o755); err != nil {
		t.Fatal(err)
	}
	return installed
}

// binaryVersion runs `<exe> version --json`.
func binaryVersion(t *testing.T, exe string) string {
	t.Helper()
	out, err := exec.Command(exe, "version", "--json").Output()
	if err != nil {
		t.Fatalf("%s version: %v", exe, err)
	}
	var v struct{ Version string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s version: %v: %s", exe, err, out)
	}
	return v.Version
}

// goreleaserArchive packs exe as goreleaser does: a tar.gz wrapped in a
// directory named like the archive, next to the docs.
func goreleaserArchive(t *testing.T, name, exe string) []byte {
	t.Helper()
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []struct {
		name string
		body []byte
	}{{"README.md", []byte("readme")}, {"medplum-agent", bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: name + "/" + f.name, Mode: 0o755, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestUpgradeReplacesBinary publishes a real 1.1.0 build from a local
// manifest and asset server and upgrades a copy of a real 1.0.0 build.
// serveRelease serves version as a release whose manifest answers both
// /releases/latest.json and /releases/v<version>.json, with exe packed as
// goreleaser does and its checksum in checksums.txt.
func serveRelease(t *testing.T, version, exe string, newServer func(http.Handler) *httptest.Server) *httptest.Server {
	t.Helper()
	base := fmt.Sprintf("medplum-agent_%s_%s_%s", version, runtime.GOOS, runtime.GOARCH)
	archive := goreleaserArchive(t, base, exe)
	digest := sha256.Sum256(archive)
	files := map[string][]byte{
		base + ".tar.gz": archive,
		"checksums.txt":  []byte(hex.EncodeToString(digest[:]) + "  " + base + ".tar.gz\n"),
	}
	mux := http.NewServeMux()
	srv := newServer(mux)
	t.Cleanup(srv.Close)
	manifest := func(w http.ResponseWriter, r *http.Request) {
		var assets []map[string]string
		for name := range files {
			assets = append(assets, map[string]string{"name": name, "browser_download_url": srv.URL + "/dl/" + name})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"tag_name": "v" + version, "assets": assets})
	}
	mux.HandleFunc("/releases/latest.json", manifest)
	mux.HandleFunc("/releases/v"+version+".json", manifest)
	mux.HandleFunc("/dl/{file}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(files[r.PathValue("file")])
	})
	return srv
}

func TestUpgradeReplacesBinary(t *testing.T) {
	dir := t.TempDir()
	v100 := buildVersion(t, dir, "1.0.0")
	v110 := buildVersion(t, dir, "1.1.0")

	srv := serveRelease(t, "1.1.0", v110, httptest.NewTLSServer)

	installed := install(t, dir, v100)
	if got := binaryVersion(t, installed); got != "1.0.0" {
		t.Fatalf("installed version before = %q", got)
	}

	dataDir := filepath.Join(dir, "data")
	restarts := 0
	opts := upgrade.Options{
		ManifestURL:    srv.URL + "/releases/{tag}.json",
		App:            "medplum-agent",
		CurrentVersion: "1.0.0",
		HTTPClient:     srv.Client(),
		Executable:     installed,
		DataDir:        dataDir,
		Restart:        func(context.Context) error { restarts++; return nil },
	}
	p, err := upgrade.Plan(context.Background(), opts, upgrade.Request{Callback: "upgrade-cb"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}

	if got := binaryVersion(t, installed); got != "1.1.0" {
		t.Errorf("installed version after = %q, want 1.1.0", got)
	}
	if got := binaryVersion(t, installed+".old"); got != "1.0.0" {
		t.Errorf("backup version = %q, want 1.0.0", got)
	}
	if restarts != 1 {
		t.Errorf("restarts = %d, want 1", restarts)
	}
	var handoff map[string]any
	b, err := os.ReadFile(filepath.Join(dataDir, "upgrade.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &handoff); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"previousVersion": "1.0.0", "targetVersion": "1.1.0", "callback": "upgrade-cb"}
	if diff := cmp.Diff(want, handoff); diff != "" {
		t.Errorf("upgrade.json (-want +got):\n%s", diff)
	}
}
