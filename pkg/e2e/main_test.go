// Package e2e runs the built medplum-agent binary against itself, the dev
// server and real third-party peers (@medplum/cli from npm, Debian's
// python3-hl7 and dcmtk), all on 127.0.0.1.
//
// Peers are looked up on PATH and in the project's .peers/ folder (filled by
// `make peers`). A missing peer skips its test, unless E2E_REQUIRE_PEERS=1
// (set by `make test`), in which case it fails: CI must not pass by skipping.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binary      string // the built medplum-agent
	projectRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		return 1
	}
	projectRoot = filepath.Dir(strings.TrimSpace(string(out)))
	dir, err := os.MkdirTemp("", "medplum-agent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "medplum-agent")
	build := exec.Command("go", "build", "-o", binary, "./cmd/medplum-agent")
	build.Dir = projectRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building medplum-agent:", err)
		return 1
	}
	return m.Run()
}

// result of one finished command.
type result struct {
	stdout, stderr string
	code           int
}

// runCmd runs the binary to completion (bounded by a minute) with stdin.
func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// proc is a long-running command started in the background.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// startProc starts the binary (or another program when name is not "") and
// stops it at the end of the test.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	if name == "" {
		name = binary
	}
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = append(os.Environ(), "NO_COLOR=1")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", filepath.Base(name), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// signal sends sig and waits (bounded) for the exit code.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("process did not exit after %v", sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitFor polls a buffer until it contains s.
func waitFor(t *testing.T, what string, b *syncBuffer, s string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if out := b.String(); strings.Contains(out, s) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %q did not appear within %v; got:\n%s", what, s, d, b.String())
	return ""
}

// startListen starts `hl7 listen` on a free loopback port and returns its port.
func startListen(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	p := startProc(t, "", append([]string{"hl7", "listen", "0", "--host", "127.0.0.1"}, args...)...)
	out := waitFor(t, "hl7 listen", p.stderr, "Listening on ", 10*time.Second)
	line := out[strings.Index(out, "Listening on ")+len("Listening on "):]
	line, _, _ = strings.Cut(line, "\n")
	_, port, err := net.SplitHostPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parsing %q: %v", line, err)
	}
	return p, port
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		l.Close()
		// The kernel may offer a closed port again; a test that binds two
		// of them later would find them the same.
		if _, dup := portsGiven.LoadOrStore(port, true); !dup {
			return port
		}
	}
}

var portsGiven sync.Map

// waitPort waits until something accepts connections on 127.0.0.1:port.
func waitPort(t *testing.T, port string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listening on port %s after %v", port, d)
}

// peer finds a third-party program, or skips (fails when peers are required).
func peer(t *testing.T, name string) string {
	t.Helper()
	candidates := []string{filepath.Join(projectRoot, ".peers", "node_modules", ".bin", name)}
	if p, err := exec.LookPath(name); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	if os.Getenv("E2E_REQUIRE_PEERS") == "1" {
		t.Fatalf("test peer %q is not installed; run `make peers`", name)
	}
	t.Skipf("test peer %q is not installed; run `make peers`", name)
	return ""
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
