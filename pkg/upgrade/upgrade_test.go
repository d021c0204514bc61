package upgrade

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// entry is one file of a test archive.
type entry struct {
	name, body string
	symlink    bool
}

func tarGz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if e.symlink {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, e.body, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if !e.symlink {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
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

func zipOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// release is what the test server publishes.
type release struct {
	tag    string            // tag_name
	assets map[string][]byte // by name
	// checksums overrides the computed checksums.txt; "-" publishes none.
	checksums string
}

// releaseServer serves manifests under /releases/ (latest.json and
// v<ver>.json) and files under /dl/, over TLS. It records the manifest
// queries.
type releaseServer struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values
}

func serve(t *testing.T, rel release) *releaseServer {
	t.Helper()
	rs := &releaseServer{}
	files := map[string][]byte{}
	var m manifest
	m.TagName = rel.tag
	var lines []string
	for name, body := range rel.assets {
		files[name] = body
		lines = append(lines, sum(body)+"  "+name)
	}
	switch rel.checksums {
	case "":
		files[ChecksumsName] = []byte(strings.Join(lines, "\n") + "\n")
	case "-":
	default:
		files[ChecksumsName] = []byte(rel.checksums)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/releases/{file}", func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		rs.queries = append(rs.queries, r.URL.Query())
		rs.mu.Unlock()
		if f := r.PathValue("file"); f != "latest.json" && f != rel.tag+".json" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(m)
	})
	mux.HandleFunc("/dl/{file}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.PathValue("file")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	})
	rs.Server = httptest.NewTLSServer(mux)
	t.Cleanup(rs.Close)
	for name := range files {
		m.Assets = append(m.Assets, Asset{Name: name, URL: rs.URL + "/dl/" + name})
	}
	return rs
}

// fixture is an installed "old" binary, a data dir and a recording Restart.
type fixture struct {
	exe, dataDir string
	restarts     int
	restartErr   error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{exe: filepath.Join(dir, "bin", "medplum-agent"), dataDir: filepath.Join(dir, "data")}
	if err := os.MkdirAll(filepath.Dir(f.exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.exe, []byte("old binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) options(rs *releaseServer) Options {
	return Options{
		ManifestURL:    rs.URL + "/releases/{tag}.json",
		App:            "medplum-agent",
		CurrentVersion: "4.2.9-abcdef1",
		HTTPClient:     rs.Client(),
		Executable:     f.exe,
		DataDir:        f.dataDir,
		GOOS:           "linux",
		GOARCH:         "amd64",
		Restart: func(context.Context) error {
			f.restarts++
			return f.restartErr
		},
	}
}

// state is what an upgrade leaves behind.
type state struct {
	Exe, Old, UpgradeJSON string
	Restarts              int
	Stray                 []string // temp files left next to the binary
}

// readOr reads a file, or returns "<none>" when there is none.
func readOr(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (f *fixture) state(t *testing.T) state {
	t.Helper()
	s := state{Exe: readOr(t, f.exe), Old: readOr(t, f.exe+".old"), UpgradeJSON: readOr(t, filepath.Join(f.dataDir, FileName)), Restarts: f.restarts}
	ents, err := os.ReadDir(filepath.Dir(f.exe))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			s.Stray = append(s.Stray, e.Name())
		}
	}
	return s
}

var unchanged = state{Exe: "old binary", Old: "<none>", UpgradeJSON: "<none>"}

func TestPlanVersionRules(t *testing.T) {
	archive := "medplum-agent_4.3.0_linux_amd64.tar.gz"
	tests := []struct {
		name     string
		tag      string
		current  string
		goos     string
		req      Request
		wantErr  string
		wantPlan *Upgrade // compared on UpToDate, TargetVersion, Asset.Name
		wantTag  string   // manifest requested
	}{
		{name: "latest", tag: "v4.3.0", req: Request{}, wantPlan: &Upgrade{TargetVersion: "4.3.0", Asset: Asset{Name: archive}}},
		{name: "explicit version", tag: "v4.3.0", req: Request{Version: "4.3.0"}, wantPlan: &Upgrade{TargetVersion: "4.3.0", Asset: Asset{Name: archive}}},
		{name: "invalid version", tag: "v4.3.0", req: Request{Version: "4.3"}, wantErr: "Error during upgrading to version 'v4.3'. '4.3' is not a valid version"},
		{name: "version with v", tag: "v4.3.0", req: Request{Version: "v4.3.0"}, wantErr: "Error during upgrading to version 'vv4.3.0'. 'v4.3.0' is not a valid version"},
		{name: "unknown release", tag: "v4.3.0", req: Request{Version: "9.9.9"}, wantErr: "Error during upgrading to version 'v9.9.9'. '9.9.9' is not a valid version"},
		{name: "already current", tag: "v4.2.9", req: Request{}, wantPlan: &Upgrade{UpToDate: true, TargetVersion: "4.2.9"}},
		{name: "already current forced", tag: "v4.2.9", req: Request{Force: true}, wantPlan: &Upgrade{TargetVersion: "4.2.9", Asset: Asset{Name: "medplum-agent_4.2.9_linux_amd64.tar.gz"}}},
		{name: "downgrade needs force", tag: "v0.9.0", req: Request{Version: "0.9.0"}, wantErr: "WARNING: 0.9.0 is older than the running version"},
		{name: "before zero downtime forced", tag: "v4.2.3", req: Request{Version: "4.2.3", Force: true}, wantPlan: &Upgrade{TargetVersion: "4.2.3", Asset: Asset{Name: "medplum-agent_4.2.3_linux_amd64.tar.gz"}}},
		{name: "no asset for platform", tag: "v4.3.0", goos: "freebsd", wantErr: "release v4.3.0 has no asset for freebsd/amd64"},
		{name: "bad tag", tag: "latest", wantErr: `release manifest has an invalid tag_name "latest"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ver := strings.TrimPrefix(tt.tag, "v")
			rs := serve(t, release{tag: tt.tag, assets: map[string][]byte{
				"medplum-agent_" + ver + "_linux_amd64.tar.gz": tarGz(t, entry{name: "medplum-agent", body: "new"}),
			}})
			opts := newFixture(t).options(rs)
			if tt.goos != "" {
				opts.GOOS = tt.goos
			}
			p, err := Plan(context.Background(), opts, tt.req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Plan error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := &Upgrade{UpToDate: p.UpToDate, TargetVersion: p.TargetVersion, Asset: Asset{Name: p.Asset.Name}}
			if diff := cmp.Diff(tt.wantPlan, got, cmp.AllowUnexported(Upgrade{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			rs.mu.Lock()
			defer rs.mu.Unlock()
			wantQuery := []url.Values{{"a": {"medplum-agent"}, "c": {"4.2.9-abcdef1"}}}
			if diff := cmp.Diff(wantQuery, rs.queries); diff != "" {
				t.Errorf("manifest queries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAssetNames(t *testing.T) {
	tests := []struct {
		goos, goarch string
		want         []string
	}{
		{"linux", "amd64", []string{"medplum-agent_1.2.3_linux_amd64.tar.gz", "medplum-agent-linux-amd64"}},
		{"linux", "arm", []string{"medplum-agent_1.2.3_linux_armv7.tar.gz", "medplum-agent-linux-armv7"}},
		{"darwin", "arm64", []string{"medplum-agent_1.2.3_darwin_arm64.tar.gz", "medplum-agent-darwin-arm64"}},
		{"windows", "amd64", []string{"medplum-agent_1.2.3_windows_amd64.zip", "medplum-agent-windows-amd64.exe"}},
	}
	for _, tt := range tests {
		t.Run(tt.goos+"/"+tt.goarch, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, assetNames("1.2.3", tt.goos, tt.goarch)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestApply(t *testing.T) {
	const newBin = "new binary"
	tests := []struct {
		name      string
		goos      string
		assets    map[string][]byte
		checksums string
		callback  string
		want      string // upgrade.json
	}{
		{
			name:     "goreleaser tar.gz",
			assets:   map[string][]byte{"medplum-agent_4.3.0_linux_amd64.tar.gz": tarGz(t, entry{name: "medplum-agent_4.3.0_linux_amd64/README.md", body: "docs"}, entry{name: "medplum-agent_4.3.0_linux_amd64/completions/_medplum-agent", body: "zsh"}, entry{name: "medplum-agent_4.3.0_linux_amd64/medplum-agent", body: newBin})},
			callback: "cb-1",
			want:     `{"previousVersion":"4.2.9-abcdef1","targetVersion":"4.3.0","callback":"cb-1"}`,
		},
		{
			name:   "goreleaser zip on windows",
			goos:   "windows",
			assets: map[string][]byte{"medplum-agent_4.3.0_windows_amd64.zip": zipOf(t, entry{name: "medplum-agent_4.3.0_windows_amd64/LICENSE", body: "x"}, entry{name: "medplum-agent_4.3.0_windows_amd64/medplum-agent.exe", body: newBin})},
			want:   `{"previousVersion":"4.2.9-abcdef1","targetVersion":"4.3.0","callback":null}`,
		},
		{
			name:   "plain binary with .sha256",
			assets: map[string][]byte{"medplum-agent-linux-amd64": []byte(newBin), "medplum-agent-linux-amd64.sha256": []byte(sum([]byte(newBin)) + "\n")},
			// checksums.txt lists other files only
			checksums: strings.Repeat("0", 64) + "  other\n",
			want:      `{"previousVersion":"4.2.9-abcdef1","targetVersion":"4.3.0","callback":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			rs := serve(t, release{tag: "v4.3.0", assets: tt.assets, checksums: tt.checksums})
			opts := f.options(rs)
			if tt.goos != "" {
				opts.GOOS = tt.goos
			}
			p, err := Plan(context.Background(), opts, Request{Callback: tt.callback})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Apply(context.Background()); err != nil {
				t.Fatal(err)
			}
			want := state{Exe: newBin, Old: "old binary", UpgradeJSON: tt.want, Restarts: 1}
			if diff := cmp.Diff(want, f.state(t)); diff != "" {
				t.Errorf("after Apply (-want +got):\n%s", diff)
			}
			for path, mode := range map[string]os.FileMode{f.exe: 0o755, filepath.Join(f.dataDir, FileName): 0o600} {
				if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
					t.Errorf("%s: mode %v (%v), want %v", path, st.Mode().Perm(), err, mode)
				}
			}
		})
	}
}

func TestApplyRefuses(t *testing.T) {
	bin := entry{name: "medplum-agent", body: "new binary"}
	tarName := "medplum-agent_4.3.0_linux_amd64.tar.gz"
	tests := []struct {
		name      string
		assets    map[string][]byte
		checksums string
		maxSize   int64
		wantErr   string
	}{
		{name: "checksum mismatch", assets: map[string][]byte{tarName: tarGz(t, bin)}, checksums: strings.Repeat("ab", 32) + "  " + tarName + "\n", wantErr: "checksum mismatch for " + tarName},
		{name: "no checksum", assets: map[string][]byte{tarName: tarGz(t, bin)}, checksums: "-", wantErr: "release v4.3.0 has no SHA-256 checksum for " + tarName + "; refusing to install it"},
		{name: "tar path traversal", assets: map[string][]byte{tarName: tarGz(t, entry{name: "../../etc/cron.d/x", body: "evil"}, bin)}, wantErr: `unsafe path "../../etc/cron.d/x" in archive`},
		{name: "tar absolute path", assets: map[string][]byte{tarName: tarGz(t, bin, entry{name: "/usr/bin/medplum-agent", body: "evil"})}, wantErr: `unsafe path "/usr/bin/medplum-agent" in archive`},
		{name: "tar symlink program", assets: map[string][]byte{tarName: tarGz(t, entry{name: "medplum-agent", body: "/bin/sh", symlink: true})}, wantErr: "medplum-agent in the archive is not a regular file"},
		{name: "tar two programs", assets: map[string][]byte{tarName: tarGz(t, bin, entry{name: "dir/medplum-agent", body: "other"})}, wantErr: "more than one program in the archive (dir/medplum-agent)"},
		{name: "tar without program", assets: map[string][]byte{tarName: tarGz(t, entry{name: "d/a/medplum-agent", body: "too deep"})}, wantErr: "no medplum-agent in the archive"},
		{name: "not an archive", assets: map[string][]byte{tarName: []byte("plain text")}, wantErr: "unpacking " + tarName},
		{name: "too large", assets: map[string][]byte{tarName: tarGz(t, bin)}, maxSize: 16, wantErr: "response too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			rs := serve(t, release{tag: "v4.3.0", assets: tt.assets, checksums: tt.checksums})
			opts := f.options(rs)
			opts.MaxAssetSize = tt.maxSize
			p, err := Plan(context.Background(), opts, Request{})
			if err != nil {
				t.Fatal(err)
			}
			err = p.Apply(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply error = %v, want %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(unchanged, f.state(t)); diff != "" {
				t.Errorf("after refusal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyZipTraversal(t *testing.T) {
	f := newFixture(t)
	name := "medplum-agent_4.3.0_windows_amd64.zip"
	rs := serve(t, release{tag: "v4.3.0", assets: map[string][]byte{name: zipOf(t, entry{name: `..\..\evil.exe`, body: "x"}, entry{name: "medplum-agent.exe", body: "new"})}})
	opts := f.options(rs)
	opts.GOOS = "windows"
	p, err := Plan(context.Background(), opts, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(context.Background()); err == nil || !strings.Contains(err.Error(), `unsafe path "..\\..\\evil.exe"`) {
		t.Fatalf("Apply error = %v", err)
	}
	if diff := cmp.Diff(unchanged, f.state(t)); diff != "" {
		t.Errorf("after refusal (-want +got):\n%s", diff)
	}
}

func TestApplyRollsBackWhenRestartFails(t *testing.T) {
	f := newFixture(t)
	f.restartErr = errors.New("systemctl: access denied")
	rs := serve(t, release{tag: "v4.3.0", assets: map[string][]byte{"medplum-agent-linux-amd64": []byte("new binary")}})
	p, err := Plan(context.Background(), f.options(rs), Request{Callback: "cb"})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "restarting: systemctl: access denied") {
		t.Fatalf("Apply error = %v", err)
	}
	want := unchanged
	want.Restarts = 1
	if diff := cmp.Diff(want, f.state(t)); diff != "" {
		t.Errorf("after rollback (-want +got):\n%s", diff)
	}
}

func TestApplyUpToDate(t *testing.T) {
	f := newFixture(t)
	rs := serve(t, release{tag: "v4.2.9", assets: map[string][]byte{}})
	p, err := Plan(context.Background(), f.options(rs), Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(context.Background()); err == nil {
		t.Fatal("Apply of an up-to-date plan succeeded")
	}
	if diff := cmp.Diff(unchanged, f.state(t)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url  string
		want bool
	}{
		{"https://meta.medplum.com/releases/latest.json", true},
		{"http://127.0.0.1:8080/x", true},
		{"http://[::1]:8080/x", true},
		{"http://localhost/x", true},
		{"http://meta.medplum.com/releases/latest.json?sig=secret", false},
		{"file:///etc/passwd", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := checkURL(tt.url)
			if (err == nil) != tt.want {
				t.Fatalf("checkURL = %v, want ok=%v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the query: %v", err)
			}
		})
	}
}

func TestFindChecksum(t *testing.T) {
	h := strings.Repeat("ab", 32)
	tests := []struct {
		name, text, file string
		single           bool
		want             string
	}{
		{"goreleaser list", fmt.Sprintf("%s  a.tar.gz\n%s  b.tar.gz\n", strings.Repeat("0", 64), h), "b.tar.gz", false, h},
		{"binary marker", h + " *b\n", "b", false, h},
		{"upper case", strings.ToUpper(h) + "  b\n", "b", false, h},
		{"absent", h + "  a\n", "b", false, ""},
		{"bare digest in .sha256", h + "\n", "b", true, h},
		{"bare digest in list", h + "\n", "b", false, ""},
		{"not a digest", "abc  b\n", "b", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := findChecksum(tt.text, tt.file, tt.single); got != tt.want {
				t.Errorf("findChecksum = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDetectManager(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	none := env(nil)
	tests := []struct {
		name, goos, cgroup string
		getenv             func(string) string
		winService         bool
		euid               int
		want               string
	}{
		{"systemd unit as root", "linux", "0::/system.slice/medplum-agent.service\n", none, false, 0, managerSystemd},
		{"systemd unit as its user", "linux", "0::/system.slice/medplum-agent.service\n", none, false, 998, ""},
		{"other unit", "linux", "0::/system.slice/ssh.service\n", none, false, 0, ""},
		{"user session", "linux", "0::/user.slice/user-1000.slice/session-2.scope\n", none, false, 1000, ""},
		{"launchd job", "darwin", "", env(map[string]string{"XPC_SERVICE_NAME": "dev.medplum-agent"}), false, 0, managerLaunchd},
		{"terminal on mac", "darwin", "", env(map[string]string{"XPC_SERVICE_NAME": "0"}), false, 501, ""},
		{"windows service", "windows", "", none, true, -1, managerWindows},
		{"windows console", "windows", "", none, false, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := detectManager(tt.goos, tt.getenv, tt.cgroup, tt.winService, tt.euid); got != tt.want {
				t.Errorf("detectManager = %q, want %q", got, tt.want)
			}
		})
	}
}
