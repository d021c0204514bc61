// Package upgrade replaces the running agent binary with a release from the
// release manifest (protocol §5.2) and restarts it, on every platform.
//
// Plan fetches the manifest and applies the reference's version rules;
// Apply downloads the release asset for this OS and architecture, checks
// its SHA-256 against the release's checksums, swaps the binary atomically
// (keeping the previous one as <exe>.old), leaves upgrade.json for the new
// process to confirm the upgrade to the server, and restarts.
//
// Where the agent cannot write its executable's directory (a Linux package:
// root's /usr/bin, read-only under the unit's ProtectSystem=strict), Apply
// installs the new binary as <data-dir>/bin/medplum-agent instead, and run
// switches to it at start (ExecStaged) for as long as it is newer than the
// executable, so that a later package upgrade wins again.
package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// DefaultManifestURL is the reference's release manifest location; {tag}
// is "v<version>" or "latest".
const DefaultManifestURL = "https://meta.medplum.com/releases/{tag}.json"

// Limits of the network steps. An asset is a static binary of a few tens
// of MiB; the cap stops a wrong URL from filling the disk.
const (
	manifestTimeout  = 30 * time.Second
	downloadTimeout  = 10 * time.Minute
	maxManifestSize  = 1 << 20
	maxChecksumsSize = 1 << 20
	// DefaultMaxAssetSize bounds a downloaded asset.
	DefaultMaxAssetSize = 256 << 20
)

// versionPattern is the reference's rule for a requested version: a
// semver core with an optional 7-character build hash.
var versionPattern = regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9a-z]{7})?$`)

// Options configure Plan and Apply.
type Options struct {
	// ManifestURL is a template with {tag}; "" means DefaultManifestURL.
	ManifestURL string
	// App and CurrentVersion are sent as the query a=<app>&c=<current>;
	// CurrentVersion also decides whether there is anything to do.
	App, CurrentVersion string
	// HTTPClient fetches the manifest, checksums and asset; nil means a
	// client with the default (verifying) TLS settings.
	HTTPClient *http.Client
	// Executable is the binary to replace; "" means os.Executable().
	Executable string
	// DataDir receives upgrade.json for the new process.
	DataDir string
	// GOOS and GOARCH select the asset; "" means the running platform.
	GOOS, GOARCH string
	// MaxAssetSize bounds the download; 0 means DefaultMaxAssetSize.
	MaxAssetSize int64
	// Restart starts the new binary (see DefaultRestart). On success it
	// may not return at all, because the process is replaced or stopped.
	Restart func(ctx context.Context) error
	Logger  *slog.Logger
}

// Request is an agent:upgrade:request.
type Request struct {
	Version  string // "" means the latest release
	Force    bool
	Callback string
}

// Upgrade is a resolved upgrade (the result of Plan), ready to Apply.
type Upgrade struct {
	// UpToDate reports that the agent already runs the target version and
	// force was not set: there is nothing to apply (the agent answers 200).
	UpToDate bool
	// TargetVersion is the release's version, without the "v".
	TargetVersion string
	// Asset is the release file chosen for this platform.
	Asset Asset

	opts     Options
	req      Request
	manifest manifest
}

// Asset is one file of a release.
type Asset struct {
	Name string `json:"name"`
	URL  string `json:"browser_download_url"`
}

// manifest is the release description served at the manifest URL.
type manifest struct {
	TagName string  `json:"tag_name"`
	Assets  []Asset `json:"assets"`
}

// Plan validates req, fetches the release manifest and picks the asset for
// this platform. Errors carry the reference's texts, ready to be sent to
// the server as agent:error.
func Plan(ctx context.Context, opts Options, req Request) (*Upgrade, error) {
	opts = withDefaults(opts)
	invalid := fmt.Errorf("Error during upgrading to version 'v%s'. '%s' is not a valid version", req.Version, req.Version)
	tag := "latest"
	if req.Version != "" {
		if !versionPattern.MatchString(req.Version) {
			return nil, invalid
		}
		tag = "v" + req.Version
	}
	m, status, err := fetchManifest(ctx, opts, tag)
	if req.Version != "" && status == http.StatusNotFound {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	target := strings.TrimPrefix(m.TagName, "v")
	core, ok := parseCore(target)
	if !ok {
		return nil, fmt.Errorf("release manifest has an invalid tag_name %q", m.TagName)
	}
	p := &Upgrade{TargetVersion: target, opts: opts, req: req, manifest: m}
	if !req.Force && strings.HasPrefix(opts.CurrentVersion, target) {
		p.UpToDate = true
		return p, nil
	}
	// The reference refuses targets older than its first zero-downtime
	// release (4.2.4) without force. That line is its own history; ours is
	// that a downgrade may lose features the running agent relies on, so any
	// downgrade needs force.
	if cur, ok := parseCore(strings.SplitN(opts.CurrentVersion, "-", 2)[0]); !req.Force && ok && less(core, cur) {
		return nil, fmt.Errorf("WARNING: %s is older than the running version %s. We recommend against downgrading, but if you must, reissue the command with force set to true to downgrade.", target, opts.CurrentVersion)
	}
	asset, ok := selectAsset(m.Assets, target, opts.GOOS, opts.GOARCH)
	if !ok {
		return nil, fmt.Errorf("release v%s has no asset for %s/%s (looked for %s)", target, opts.GOOS, opts.GOARCH, strings.Join(assetNames(target, opts.GOOS, opts.GOARCH), ", "))
	}
	p.Asset = asset
	return p, nil
}

func withDefaults(o Options) Options {
	if o.ManifestURL == "" {
		o.ManifestURL = DefaultManifestURL
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.GOOS == "" {
		o.GOOS = runtime.GOOS
	}
	if o.GOARCH == "" {
		o.GOARCH = runtime.GOARCH
	}
	if o.MaxAssetSize <= 0 {
		o.MaxAssetSize = DefaultMaxAssetSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// fetchManifest returns the manifest and the HTTP status (0 when no
// answer came), so that Plan can tell "no such release" from an outage.
func fetchManifest(ctx context.Context, opts Options, tag string) (manifest, int, error) {
	u, err := url.Parse(strings.ReplaceAll(opts.ManifestURL, "{tag}", tag))
	if err != nil {
		return manifest{}, 0, fmt.Errorf("release manifest URL: %w", err)
	}
	q := u.Query()
	q.Set("a", opts.App)
	q.Set("c", opts.CurrentVersion)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, manifestTimeout)
	defer cancel()
	var m manifest
	status, err := get(ctx, opts.HTTPClient, u.String(), maxManifestSize, func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&m)
	})
	if err != nil {
		return manifest{}, status, fmt.Errorf("fetching release manifest: %w", err)
	}
	return m, status, nil
}

// errTooLarge is returned when a response exceeds its size cap.
var errTooLarge = errors.New("response too large")

// get fetches rawURL and hands at most limit bytes of a 200 body to read;
// a longer body fails with errTooLarge.
func get(ctx context.Context, c *http.Client, rawURL string, limit int64, read func(io.Reader) error) (int, error) {
	if err := checkURL(rawURL); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s", redact(rawURL), resp.Status)
	}
	lr := &limitReader{r: resp.Body, n: limit}
	if err := read(lr); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %w", redact(rawURL), err)
	}
	// Drain the rest so that an oversized body is noticed even when the
	// reader stopped early (a JSON decoder does).
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %w", redact(rawURL), err)
	}
	return resp.StatusCode, nil
}

// limitReader fails instead of truncating, so a cut-off body can never be
// taken for a complete one.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.n {
		return 0, errTooLarge
	}
	l.n -= int64(n)
	return n, err
}

// checkURL allows plain HTTP only on loopback, where nobody can tamper with
// it; everything else must be HTTPS (the checksums come from the same
// server, so they protect against corruption, not against an attacker).
func checkURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("refusing %s: release files are only fetched over HTTPS", redact(rawURL))
}

// redact drops the query, which may carry signed-URL credentials.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(invalid URL)"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}

// parseCore reads the X.Y.Z of a version, ignoring any suffix.
func parseCore(v string) ([3]int, bool) {
	var c [3]int
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return c, false
	}
	for i, s := range parts {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return c, false
		}
		c[i] = n
	}
	return c, true
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// binaryName is the program's file name inside archives and on disk.
func binaryName(goos string) string {
	if goos == "windows" {
		return "medplum-agent.exe"
	}
	return "medplum-agent"
}

// assetNames lists the acceptable asset names in order of preference: the
// goreleaser archive (name_template
// "{{.ProjectName}}_{{.Version}}_{{.Os}}_{{.Arch}}{{with .Arm}}v{{.}}{{end}}",
// zip on Windows, tar.gz elsewhere; 32-bit ARM is built as GOARM=7), then a
// plain binary.
func assetNames(version, goos, goarch string) []string {
	arch := goarch
	if goarch == "arm" {
		arch = "armv7"
	}
	archive, plain := ".tar.gz", ""
	if goos == "windows" {
		archive, plain = ".zip", ".exe"
	}
	return []string{
		fmt.Sprintf("medplum-agent_%s_%s_%s%s", version, goos, arch, archive),
		fmt.Sprintf("medplum-agent-%s-%s%s", goos, arch, plain),
	}
}

func selectAsset(assets []Asset, version, goos, goarch string) (Asset, bool) {
	for _, name := range assetNames(version, goos, goarch) {
		for _, a := range assets {
			if a.Name == name && a.URL != "" {
				return a, true
			}
		}
	}
	return Asset{}, false
}

// executable resolves the binary to replace through symlinks, so that the
// file itself is swapped, not a link to it.
func executable(o Options) (string, error) {
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return "", err
		}
	}
	return filepath.EvalSymlinks(exe)
}
