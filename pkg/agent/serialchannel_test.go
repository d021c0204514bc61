package agent

import (
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

// ptyPair is a virtual null-modem: socat links two pseudo-terminals at the
// paths a and b.
type ptyPair struct {
	a, b string
	cmd  *exec.Cmd
	done chan struct{}
}

// startPTYs starts socat with links in dir; it skips without socat, unless
// E2E_REQUIRE_PEERS=1.
func startPTYs(t *testing.T, dir string) *ptyPair {
	t.Helper()
	bin, err := exec.LookPath("socat")
	if err != nil {
		if os.Getenv("E2E_REQUIRE_PEERS") == "1" {
			t.Fatal("socat is not installed")
		}
		t.Skip("socat is not installed")
	}
	p := &ptyPair{a: filepath.Join(dir, "a"), b: filepath.Join(dir, "b"), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "pty,raw,echo=0,link="+p.a, "pty,raw,echo=0,link="+p.b)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	eventually(t, "socat links", func() bool {
		_, errA := os.Stat(p.a)
		_, errB := os.Stat(p.b)
		return errA == nil && errB == nil
	})
	return p
}

// stop ends socat, which removes the links: both devices are unplugged.
func (p *ptyPair) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(waitFor):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// openSerialChannel opens a serial channel in the agent the way converge
// does, for as long as the plan does not accept addresses without a port.
// The server learns about the channel, so that it takes its messages, but
// the agent is not told to reload.
func (e *env) openSerialChannel(name, address string) channel {
	e.t.Helper()
	e.setAgent("active", nil, ch{name: name, address: address})
	u, err := url.Parse(address)
	if err != nil {
		e.t.Fatal(err)
	}
	params, issues := serialKind.parse(u.Query())
	if len(issues) > 0 {
		e.t.Fatalf("issues: %v", issueTexts(issues))
	}
	spec := channelSpec{name: name, address: address, kind: serialKind, params: params}
	c := serialKind.open(e.agent, spec)
	if err := c.start(); err != nil {
		e.t.Fatal(err)
	}
	e.agent.applyMu.Lock()
	defer e.agent.applyMu.Unlock()
	e.agent.channels[name] = c
	e.agent.publish()
	return c
}

func openInstrument(t *testing.T, dev string) *serialport.Conn {
	t.Helper()
	c, err := serialport.Open(serialport.NewConfig(dev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// An ASTM instrument on a serial line, unplugged and plugged back in, then
// the same line switched to raw framing.
func TestSerialChannel(t *testing.T) {
	dir := t.TempDir()
	pty := startPTYs(t, dir)
	e := newEnv(t)
	tr := e.recordTransmits()
	e.start()
	address := "serial://" + pty.a + "?baud=19200&mode=astm"
	c := e.openSerialChannel("lab", address)
	opened := func(n int) {
		t.Helper()
		eventually(t, "serial port opened", func() bool { return strings.Count(e.mainLogText(), "Serial port opened") >= n })
	}
	opened(1)

	script := loadASTMScript(t, astmTestdata+"scenarios/L02-happy-path-record-per-frame.script")
	for i := range script.Steps {
		if script.Steps[i].Kind == astm.StepReadOptional {
			script.Steps[i].Kind = astm.StepRead // ackEot is on
		}
	}
	if err := script.Play(t.Context(), openInstrument(t, pty.b), astm.PlayOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs := tr.wait(t, 1)
	if msgs[0].Remote != pty.a || msgs[0].ContentType != astm.ContentType || msgs[0].Body != script.Messages[0] {
		t.Errorf("transmit %+v", msgs[0])
	}

	// Unplugged: the channel keeps trying and picks the device up again.
	pty.stop()
	e.waitMainLog("Serial port unavailable; retrying")
	pty = startPTYs(t, dir)
	opened(2)
	if err := script.Play(t.Context(), openInstrument(t, pty.b), astm.PlayOptions{}); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, 2)

	// Raw framing: the ack Bot's answer goes back down the line.
	e.agent.applyMu.Lock()
	p, _ := serialKind.parse(url.Values{"startChar": {"\x02"}, "endChar": {"\x03"}})
	err := c.reconfigure(channelSpec{name: "lab", address: "serial://" + pty.a + "?startChar=%02&endChar=%03", kind: serialKind, params: p})
	e.agent.applyMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	opened(3)
	inst := openInstrument(t, pty.b)
	if _, err := inst.Write([]byte("\x02HI\x03")); err != nil {
		t.Fatal(err)
	}
	inst.SetReadDeadline(time.Now().Add(waitFor))
	got := make([]byte, 1)
	if _, err := io.ReadFull(inst, got); err != nil || got[0] != 0x06 {
		t.Errorf("instrument read %x, %v; want 06", got, err)
	}
	if diff := cmp.Diff([]string{script.Messages[0], script.Messages[0], "02484903"}, bodies(tr.wait(t, 3), "lab")); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
}
