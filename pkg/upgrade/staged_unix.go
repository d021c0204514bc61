//go:build unix

package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/medplum-agent/medplum-agent/pkg/build"
)

// stagedEnv marks a process that ExecStaged started, so that it never
// re-executes again, whatever it finds on disk.
const stagedEnv = "MEDPLUM_AGENT_STAGED"

// probeTimeout bounds `<staged binary> version --json`.
const probeTimeout = 5 * time.Second

// canReplace reports whether this process may create and rename files in
// dir. access(2) also answers EROFS for a read-only mount, which stops root
// too.
func canReplace(dir string) bool {
	return unix.Access(dir, unix.W_OK|unix.X_OK) == nil
}

// ExecStaged replaces this process with the binary a self-upgrade staged in
// dataDir (see installPath) when that one is newer than running, the version
// of this binary; otherwise it returns and this binary runs, so that a
// package upgrade that installs a newer executable wins over an older staged
// copy. run calls it first: the descriptors it holds by then are all
// close-on-exec, and it holds no lock or port yet.
func ExecStaged(ctx context.Context, dataDir, running string, log *slog.Logger) {
	self, err := os.Executable()
	if err != nil {
		log.Warn("Not looking for an upgraded binary", "err", err)
		return
	}
	path := stagedPath(dataDir)
	version, use, err := checkStaged(ctx, path, self, running, os.Geteuid())
	switch {
	case err != nil:
		log.Warn("Ignoring the upgraded binary", "path", path, "err", err)
	case use:
		log.Info("Starting the upgraded binary", "path", path, "version", version, "previousVersion", running)
		err := syscall.Exec(path, os.Args, append(os.Environ(), stagedEnv+"=1"))
		log.Error("Cannot start the upgraded binary; running this one", "path", path, "err", err)
	case version != "":
		log.Info("The installed binary is not older than the upgraded one; using it", "path", path, "stagedVersion", version, "version", running)
	}
}

// checkStaged decides whether run switches to the binary at path: never in
// a process ExecStaged started. The binary must be a regular file, not self
// (the running executable), and, with its directory, owned by root or uid
// and writable by nobody else: whoever can change it runs code as the
// agent. It must also be newer than running by its own `version --json`,
// which proves that it starts, too. The staged version is returned whenever
// it was read; an error says why a file that is there cannot be used.
func checkStaged(ctx context.Context, path, self, running string, uid int) (string, bool, error) {
	if os.Getenv(stagedEnv) != "" {
		return "", false, nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if st, err := os.Stat(self); err == nil && os.SameFile(fi, st) {
		return "", false, nil
	}
	if !fi.Mode().IsRegular() {
		return "", false, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return "", false, err
	}
	for _, f := range []fs.FileInfo{fi, dir} {
		if err := trusted(f, uid); err != nil {
			return "", false, err
		}
	}
	version, err := stagedVersion(ctx, path)
	if err != nil {
		return "", false, err
	}
	staged, ok := parseCore(version)
	if !ok {
		return "", false, fmt.Errorf("it reports an invalid version %q", version)
	}
	cur, ok := parseCore(running)
	if !ok {
		return version, false, fmt.Errorf("this binary's version %q is invalid", running)
	}
	return version, less(cur, staged), nil
}

// trusted checks that only root or uid can change f.
func trusted(f fs.FileInfo, uid int) error {
	st, ok := f.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", f.Name())
	}
	if st.Uid != 0 && int64(st.Uid) != int64(uid) {
		return fmt.Errorf("%s is owned by uid %d, neither root nor this user", f.Name(), st.Uid)
	}
	if f.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %#o)", f.Name(), f.Mode().Perm())
	}
	return nil
}

// stagedVersion runs `<path> version --json`.
func stagedVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version", "--json").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", path, err)
	}
	var info build.Info
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("%s version: %w", path, err)
	}
	return info.Version, nil
}
