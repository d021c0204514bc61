package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runPeer runs a third-party program to completion, bounded by 30 s.
func runPeer(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir() // the medplum CLI loads a .env from its working directory
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish within 30 s; stdout %s stderr %s", name, args, out.String(), errOut.String())
	}
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// The published Medplum CLI sends its example message into our listener.
func TestInteropMedplumSendIntoOurListen(t *testing.T) {
	medplum := peer(t, "medplum")
	l, port := startListen(t)
	r := runPeer(t, medplum, "hl7", "send", "127.0.0.1", port, "--generate-example")
	if r.code != 0 {
		t.Fatalf("medplum hl7 send exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	got := lines(r.stdout)
	if len(got) != 2 || !strings.HasPrefix(got[0], "MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|") || !strings.HasPrefix(got[1], "MSA|AA|") {
		t.Fatalf("medplum printed:\n%s", r.stdout)
	}
	out := waitFor(t, "listener", l.stdout, "PV1|", 5*time.Second)
	// The ACK must carry the control id the Medplum CLI generated.
	msh := lines(out)[0]
	id := strings.Split(msh, "|")[9]
	if !strings.HasSuffix(got[1], "|"+id+"|OK") {
		t.Fatalf("ACK %q does not answer MSH-10 %q", got[1], id)
	}
}

// Our sender into the published Medplum CLI listener.
func TestInteropOurSendIntoMedplumListen(t *testing.T) {
	medplum := peer(t, "medplum")
	port := freePort(t)
	p := startProc(t, medplum, "hl7", "listen", port)
	waitPort(t, port, 30*time.Second)
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, adtWithID)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := lines(r.stdout)
	if len(got) != 2 || got[1] != "MSA|AA|MSGID1|OK" || !strings.HasPrefix(got[0], "MSH|^~\\&|RCV|DEST|LAB|HOSP|") {
		t.Fatalf("ACK from medplum hl7 listen:\n%s", r.stdout)
	}
	waitFor(t, "medplum listen", p.stdout, "PID|1||12345^^^HOSP^MR||DOE^JANE", 5*time.Second)

	// The load mode works against it too (and is the Node side of the benchmark).
	r = runCmd(t, "", "hl7", "send", "127.0.0.1", port, "--generate-example", "--count", "200", "--concurrency", "4")
	if r.code != 0 || !strings.Contains(r.stdout, "AA 200") {
		t.Fatalf("load against medplum listen: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// A second, independent implementation: python-hl7's mllp_send.
func TestInteropPythonMLLPSendIntoOurListen(t *testing.T) {
	mllpSend := peer(t, "mllp_send")
	l, port := startListen(t)
	path := filepath.Join(t.TempDir(), "msg.hl7")
	// Without --loose, mllp_send reads MLLP-framed messages from its file.
	msg := "\x0b" + strings.ReplaceAll(adtWithID, "MSGID1", "PY1") + "\x1c\r"
	if err := os.WriteFile(path, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runPeer(t, mllpSend, "--port", port, "--file", path, "127.0.0.1")
	if r.code != 0 {
		t.Fatalf("mllp_send exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "MSA|AA|PY1|OK") {
		t.Fatalf("mllp_send printed %q", r.stdout)
	}
	waitFor(t, "listener", l.stdout, "PY1", 5*time.Second)
}
