package upgrade

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// FileName is the handoff file the new process reads from the data dir.
const FileName = "upgrade.json"

// ChecksumsName is the release's checksum list (goreleaser's checksum
// name_template, sha256).
const ChecksumsName = "checksums.txt"

// Apply downloads and verifies the asset, swaps the executable (or the
// staged binary, see installPath), writes upgrade.json and restarts. Until
// the swap nothing is changed; a failure after it (writing upgrade.json,
// restarting) puts the old binary back.
func (p *Upgrade) Apply(ctx context.Context) error {
	if p.UpToDate {
		return fmt.Errorf("already running version %s", p.opts.CurrentVersion)
	}
	if p.opts.DataDir == "" || p.opts.Restart == nil {
		return errors.New("upgrade: DataDir and Restart are required")
	}
	exe, err := executable(p.opts)
	if err != nil {
		return fmt.Errorf("locating the executable: %w", err)
	}
	dst, err := p.installPath(exe)
	if err != nil {
		return err
	}
	log := p.opts.Logger.With("targetVersion", p.TargetVersion, "asset", p.Asset.Name)

	dlCtx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	// The checksum comes first: without one there is no point downloading.
	want, err := p.checksum(dlCtx)
	if err != nil {
		return err
	}
	log.Info("Downloading upgrade")
	tmp, err := p.download(dlCtx, filepath.Dir(dst), want)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op once renamed into place

	old := dst + ".old"
	if err := swap(dst, old, tmp); err != nil {
		return fmt.Errorf("replacing %s: %w", dst, err)
	}
	log.Info("Installed the new binary", "path", dst, "backup", old)
	upgradeFile := filepath.Join(p.opts.DataDir, FileName)
	if err := p.writeUpgradeFile(upgradeFile); err != nil {
		return rollback(log, dst, old, "", fmt.Errorf("writing %s: %w", FileName, err))
	}
	log.Info("Restarting into the new version")
	if err := p.opts.Restart(ctx); err != nil {
		return rollback(log, dst, old, upgradeFile, fmt.Errorf("restarting: %w", err))
	}
	return nil
}

// stagedPath is where installPath puts the new binary when the executable
// cannot be replaced.
func stagedPath(dataDir string) string {
	return filepath.Join(dataDir, "bin", binaryName(runtime.GOOS))
}

// installPath is where the new binary goes: over exe, or, when this process
// cannot write exe's directory (a Linux package: /usr/bin is root's, and
// read-only under the unit's ProtectSystem=strict), into the data dir, from
// where run starts it while it is newer than exe (see ExecStaged). So a
// forced reinstall or downgrade cannot work there, and is refused.
func (p *Upgrade) installPath(exe string) (string, error) {
	if canReplace(filepath.Dir(exe)) {
		return exe, nil
	}
	target, _ := parseCore(p.TargetVersion) // checked by Plan
	if cur, ok := parseCore(p.opts.CurrentVersion); ok && !less(cur, target) {
		return "", fmt.Errorf("cannot replace %s, and %s would not take over from %s there: use the package manager", exe, p.TargetVersion, p.opts.CurrentVersion)
	}
	dst := stagedPath(p.opts.DataDir)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", fmt.Errorf("cannot write %s, nor create %s: %w", exe, filepath.Dir(dst), err)
	}
	return dst, nil
}

// rollback puts the previous binary back (or removes the first staged one,
// which had none) and removes the handoff file, so that the still-running
// old agent reports cause itself.
func rollback(log *slog.Logger, exe, old, upgradeFile string, cause error) error {
	errs := []error{cause}
	undo := os.Rename(old, exe)
	if errors.Is(undo, fs.ErrNotExist) {
		undo = os.Remove(exe)
	}
	if undo != nil {
		errs = append(errs, fmt.Errorf("rolling back to %s: %w", old, undo))
	}
	if upgradeFile != "" {
		if err := os.Remove(upgradeFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	log.Error("Upgrade failed; the previous version stays", "err", err)
	return err
}

// checksum finds the asset's expected SHA-256: in the release's
// checksums.txt ("<hex>  <name>" lines), else in "<asset>.sha256". An
// asset without either is refused.
func (p *Upgrade) checksum(ctx context.Context) (string, error) {
	for _, a := range p.manifest.Assets {
		if a.Name != ChecksumsName && a.Name != p.Asset.Name+".sha256" {
			continue
		}
		var sum string
		_, err := get(ctx, p.opts.HTTPClient, a.URL, maxChecksumsSize, func(r io.Reader) error {
			b, err := io.ReadAll(r)
			sum = findChecksum(string(b), p.Asset.Name, a.Name != ChecksumsName)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("fetching %s: %w", a.Name, err)
		}
		if sum != "" {
			return sum, nil
		}
	}
	return "", fmt.Errorf("release v%s has no SHA-256 checksum for %s; refusing to install it", p.TargetVersion, p.Asset.Name)
}

// findChecksum returns the SHA-256 listed for name; single says the file
// is a per-asset .sha256, whose first line may be the bare digest.
func findChecksum(text, name string, single bool) string {
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !isSHA256(fields[0]) {
			continue
		}
		file := ""
		if len(fields) > 1 {
			file = strings.TrimPrefix(fields[1], "*") // binary-mode marker of sha256sum
		}
		if file == name || (single && i == 0 && file == "") {
			return strings.ToLower(fields[0])
		}
	}
	return ""
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// download fetches the asset into dir (the destination's, so that the final
// rename stays on one file system), checks its digest and returns the path
// of the new binary, synced and executable.
func (p *Upgrade) download(ctx context.Context, dir, want string) (string, error) {
	f, err := os.CreateTemp(dir, ".medplum-agent-download-*")
	if err != nil {
		return "", fmt.Errorf("cannot write in %s: %w", dir, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	h := sha256.New()
	_, err = get(ctx, p.opts.HTTPClient, p.Asset.URL, p.opts.MaxAssetSize, func(r io.Reader) error {
		_, err := io.Copy(io.MultiWriter(f, h), r)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", p.Asset.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("checksum mismatch for %s: got sha256 %s, want %s; refusing to install it", p.Asset.Name, got, want)
	}

	out, err := os.CreateTemp(dir, ".medplum-agent-new-*")
	if err != nil {
		return "", err
	}
	if err := p.unpack(f, out); err != nil {
		out.Close()
		os.Remove(out.Name())
		return "", fmt.Errorf("unpacking %s: %w", p.Asset.Name, err)
	}
	// Sync before the rename, so that a crash cannot leave an empty or
	// partial file under the executable's name.
	err = errors.Join(out.Chmod(0o755), out.Sync(), out.Close())
	if err != nil {
		os.Remove(out.Name())
		return "", err
	}
	return out.Name(), nil
}

// unpack copies the program out of the downloaded asset into out.
func (p *Upgrade) unpack(f *os.File, out io.Writer) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	name := binaryName(p.opts.GOOS)
	limit := p.opts.MaxAssetSize
	switch {
	case strings.HasSuffix(p.Asset.Name, ".tar.gz"):
		return extractTarGz(f, out, name, limit)
	case strings.HasSuffix(p.Asset.Name, ".zip"):
		st, err := f.Stat()
		if err != nil {
			return err
		}
		return extractZip(f, st.Size(), out, name, limit)
	}
	_, err := io.Copy(out, f)
	return err
}

// entryPath checks an archive entry's name and reports whether it is the
// program: named name, at the top or in the one directory goreleaser wraps
// everything in. Absolute names and ".." make the whole archive suspect.
func entryPath(entry, name string) (bool, error) {
	clean := path.Clean(strings.ReplaceAll(entry, `\`, "/"))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(entry, ":") {
		return false, fmt.Errorf("unsafe path %q in archive", entry)
	}
	return path.Base(clean) == name && strings.Count(clean, "/") <= 1, nil
}

func extractTarGz(r io.Reader, out io.Writer, name string, limit int64) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	found := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		match, err := entryPath(hdr.Name, name)
		if err != nil {
			return err
		}
		if !match {
			continue
		}
		if err := checkEntry(found, hdr.Typeflag == tar.TypeReg, hdr.Size, limit, hdr.Name); err != nil {
			return err
		}
		found = true
		if _, err := io.Copy(out, tr); err != nil {
			return err
		}
	}
	if !found {
		return fmt.Errorf("no %s in the archive", name)
	}
	return nil
}

func extractZip(r io.ReaderAt, size int64, out io.Writer, name string, limit int64) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return err
	}
	var bin *zip.File
	for _, f := range zr.File {
		match, err := entryPath(f.Name, name)
		if err != nil {
			return err
		}
		if !match {
			continue
		}
		if err := checkEntry(bin != nil, f.Mode().IsRegular(), int64(f.UncompressedSize64), limit, f.Name); err != nil {
			return err
		}
		bin = f
	}
	if bin == nil {
		return fmt.Errorf("no %s in the archive", name)
	}
	rc, err := bin.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	// The zip reader checks the CRC and the declared size while copying.
	_, err = io.Copy(out, &limitReader{r: rc, n: limit})
	return err
}

// checkEntry refuses a second program, a link in its place, or one that
// would unpack beyond the size cap.
func checkEntry(dup, regular bool, size, limit int64, entry string) error {
	switch {
	case dup:
		return fmt.Errorf("more than one program in the archive (%s)", entry)
	case !regular:
		return fmt.Errorf("%s in the archive is not a regular file", entry)
	case size < 0 || size > limit:
		return fmt.Errorf("%s in the archive is too large (%d bytes)", entry, size)
	}
	return nil
}

// swap moves tmp to exe, keeping the previous binary, if any, as old.
// Where possible old is a hard link made first, so exe never goes missing;
// Windows cannot overwrite a running program but can rename it, so there
// (or when links are unavailable) exe is renamed away first.
func swap(exe, old, tmp string) error {
	if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	undo := func() error { return nil }
	switch _, err := os.Lstat(exe); {
	case errors.Is(err, fs.ErrNotExist):
		// The first staged binary: there is nothing to keep.
	case err != nil:
		return err
	case runtime.GOOS != "windows" && os.Link(exe, old) == nil:
		undo = func() error { return os.Remove(old) }
	default:
		if err := os.Rename(exe, old); err != nil {
			return err
		}
		undo = func() error { return os.Rename(old, exe) }
	}
	if err := os.Rename(tmp, exe); err != nil {
		return errors.Join(err, undo())
	}
	// The renames already happened; making them durable is best effort.
	_ = atomicfile.SyncDir(filepath.Dir(exe))
	return nil
}

// handoff is what the new process reads at start (agent ops.go).
type handoff struct {
	PreviousVersion string  `json:"previousVersion"`
	TargetVersion   string  `json:"targetVersion"`
	Callback        *string `json:"callback"` // null when nobody waits, as the reference writes it
}

// writeUpgradeFile writes upgrade.json atomically with mode 0600.
func (p *Upgrade) writeUpgradeFile(dst string) error {
	h := handoff{PreviousVersion: p.opts.CurrentVersion, TargetVersion: p.TargetVersion}
	if p.req.Callback != "" {
		h.Callback = &p.req.Callback
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.opts.DataDir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteBytes(dst, 0o600, data)
}
