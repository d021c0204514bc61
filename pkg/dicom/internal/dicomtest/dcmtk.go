package dicomtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireTools skips the test unless every dcmtk tool named is on PATH.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("dcmtk tool %s not found on PATH (install dcmtk to run the interop tests)", n)
		}
	}
}

// Env is the environment for dcmtk tools: dcmtk 3.6.7 leaves Nagle on unless
// TCP_NODELAY is set, which costs ~45 ms per message (dicom.md 5.4).
func Env(nodelay bool) []string {
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "TCP_NODELAY=") {
			env = append(env, e)
		}
	}
	if nodelay {
		env = append(env, "TCP_NODELAY=1")
	}
	return env
}

// Result is a finished tool run.
type Result struct {
	Code   int
	Output string // stdout and stderr interleaved
}

// Run runs a dcmtk tool to completion with TCP_NODELAY=1.
func Run(t testing.TB, name string, args ...string) Result {
	t.Helper()
	return RunEnv(t, Env(true), name, args...)
}

// RunEnv is Run with an explicit environment.
func RunEnv(t testing.TB, env []string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return Result{Code: code, Output: string(out)}
}

// Process is a tool running in the background.
type Process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop kills the process and waits for it.
func (p *Process) Stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// Start runs a tool in the background with TCP_NODELAY=1; it is killed at
// cleanup.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = Env(true)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	return p
}

// StartSCP starts a dcmtk SCP whose last argument is the port, on a free
// port, and waits until it accepts connections. It returns the address.
func StartSCP(t testing.TB, name string, args ...string) (string, *Process) {
	t.Helper()
	port := FreePort(t)
	p := Start(t, name, append(args, strconv.Itoa(port))...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	WaitListening(t, addr, p)
	return addr, p
}

// FreePort returns a port that was free a moment ago. dcmtk SCPs cannot
// listen on port 0, so there is a small window for a clash.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitListening polls until addr accepts a TCP connection. The probe
// connection is closed at once, which dcmtk logs as a dropped association.
func WaitListening(t testing.TB, addr string, p *Process) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %s", p.cmd.Path, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s: %s", p.cmd.Path, addr, p.Output())
		}
	}
}

const (
	templateInstance = "1.2.826.0.1.3680043.9.7133.2.100000"
	templateNumber   = "[100000]"
)

// instanceDump is a Secondary Capture dataset for dump2dcm (dicom.md 5.3).
const instanceDump = `(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [` + templateInstance + `]
(0008,0020) DA [20260101]
(0008,0060) CS [OT]
(0008,0064) CS [WSD]
(0010,0010) PN [Test^Patient]
(0010,0020) LO [PID001]
(0020,000d) UI [1.2.826.0.1.3680043.9.7133.3.1]
(0020,000e) UI [1.2.826.0.1.3680043.9.7133.4.1]
(0020,0013) IS ` + templateNumber + `
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US %d
(0028,0011) US %d
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW =%s
`

// MakeInstances writes n Secondary Capture instances of side×side 16-bit
// random pixels (side 512 gives the 525 KB files of dicom.md 5.3) in
// explicit VR little endian to dir as img001.dcm..., and returns their
// paths. dump2dcm builds one template; the copies differ in SOP instance
// UID and instance number, patched in place at equal length.
func MakeInstances(t testing.TB, dir string, n, side int) []string {
	t.Helper()
	RequireTools(t, "dump2dcm")
	work := t.TempDir()
	pix := make([]byte, side*side*2)
	rand.Read(pix)
	pixPath := filepath.Join(work, "pix.raw")
	dumpPath := filepath.Join(work, "t.dump")
	tmplPath := filepath.Join(work, "t.dcm")
	if err := os.WriteFile(pixPath, pix, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dumpPath, fmt.Appendf(nil, instanceDump, side, side, pixPath), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := Run(t, "dump2dcm", "-q", "+te", dumpPath, tmplPath); r.Code != 0 {
		t.Fatalf("dump2dcm: %s", r.Output)
	}
	tmpl, err := os.ReadFile(tmplPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(tmpl, []byte(templateInstance)) != 2 {
		t.Fatal("template instance UID not found twice (meta and dataset)")
	}
	paths := make([]string, n)
	for i := range n {
		id := strconv.Itoa(100001 + i)
		b := bytes.ReplaceAll(tmpl, []byte(templateInstance), []byte(templateInstance[:len(templateInstance)-6]+id))
		b = bytes.Replace(b, []byte(templateNumber[1:7]), []byte(id), 1)
		paths[i] = filepath.Join(dir, fmt.Sprintf("img%03d.dcm", i+1))
		if err := os.WriteFile(paths[i], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// InstanceUID returns the SOP instance UID MakeInstances gave file i (0-based).
func InstanceUID(i int) string {
	return templateInstance[:len(templateInstance)-6] + strconv.Itoa(100001+i)
}
