package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// commandTimeout bounds one administration command. systemctl start waits
// for the agent's READY=1, which comes after its first connection to the
// server, so it gets more than a moment.
const commandTimeout = 2 * time.Minute

// maxCommandOutput bounds how much of a failed command's output goes into
// its error.
const maxCommandOutput = 2048

// osHost acts on the real system.
type osHost struct{}

func (osHost) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// The programs' messages are parsed or shown; keep them in English.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := bytes.TrimSpace(out)
		if len(msg) > maxCommandOutput {
			msg = append(msg[:maxCommandOutput:maxCommandOutput], "..."...)
		}
		line := strings.Join(append([]string{name}, args...), " ")
		if len(msg) > 0 {
			return out, fmt.Errorf("%s: %w: %s", line, err, msg)
		}
		return out, fmt.Errorf("%s: %w", line, err)
	}
	return out, nil
}

func (osHost) LookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return 0, 0, fmt.Errorf("%w %s", ErrUnknownUser, name)
		}
		return 0, 0, err
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("user %s: uid %q is not numeric", name, u.Uid)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("user %s: gid %q is not numeric", name, u.Gid)
	}
	return uid, gid, nil
}

func (osHost) Chown(path string, uid, gid int) error { return os.Chown(path, uid, gid) }

func (osHost) IsAdmin() bool { return isAdmin() }

func (osHost) Executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(exe)
}
