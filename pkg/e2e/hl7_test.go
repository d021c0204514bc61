package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const adtWithID = "MSH|^~\\&|LAB|HOSP|RCV|DEST|20240102030405||ADT^A01|MSGID1|P|2.5\rPID|1||12345^^^HOSP^MR||DOE^JANE"

func TestSendExampleToListen(t *testing.T) {
	l, port := startListen(t)
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, "--generate-example")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
	got := lines(r.stdout)
	if len(got) != 2 || !strings.HasPrefix(got[0], "MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|") || !strings.Contains(got[0], "|ACK^A01|") ||
		!strings.HasPrefix(got[1], "MSA|AA|") || !strings.HasSuffix(got[1], "|OK") {
		t.Fatalf("unexpected ACK:\n%s", r.stdout)
	}
	out := waitFor(t, "listener", l.stdout, "PV1|1|I|", 5*time.Second)
	for _, seg := range []string{"MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|", "EVN|A01|", "PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|"} {
		if !strings.Contains(out, seg) {
			t.Errorf("listener output lacks %q:\n%s", seg, out)
		}
	}
	if code := l.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("listen exit after SIGTERM = %d, want 0", code)
	}
}

func TestSendExitCodes(t *testing.T) {
	tests := []struct {
		name     string
		listen   []string // nil: no listener
		args     []string // after HOST PORT
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"AA", []string{}, []string{adtWithID}, 0, "MSA|AA|MSGID1|OK", ""},
		{"AE", []string{"--ack", "AE"}, []string{adtWithID}, 3, "MSA|AE|MSGID1|Application Error", "negative acknowledgement AE"},
		{"AR", []string{"--ack", "AR"}, []string{adtWithID}, 3, "MSA|AR|MSGID1|Application Reject", "negative acknowledgement AR"},
		{"CA first", []string{"--ack", "CA"}, []string{adtWithID, "--return-ack", "first"}, 0, "MSA|CA|MSGID1|Commit Accept", ""},
		{"CE first", []string{"--ack", "CE"}, []string{adtWithID, "--return-ack", "first"}, 3, "MSA|CE|MSGID1", "negative acknowledgement CE"},
		{"enhanced application skips CA", []string{"--enhanced"}, []string{adtWithID}, 0, "MSA|AA|MSGID1|OK", ""},
		{"enhanced first returns CA", []string{"--enhanced"}, []string{adtWithID, "--return-ack", "first"}, 0, "MSA|CA|MSGID1|Commit Accept", ""},
		{"no ACK times out", []string{"--ack", "none"}, []string{adtWithID, "--timeout", "300ms"}, 124, "", "no ACK for MSH-10 MSGID1"},
		{"connection refused", nil, []string{adtWithID}, 5, "", "could not connect"},
		{"missing body", []string{}, nil, 2, "", "missing HL7 message"},
		{"not HL7", []string{}, []string{"hello"}, 2, "", "MSH"},
		{"missing MSH-10", []string{}, []string{"MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5"}, 2, "", "MSH.10 is missing but required"},
		{"bad return-ack", []string{}, []string{adtWithID, "--return-ack", "bogus"}, 2, "", "invalid --return-ack"},
		{"file is a directory", []string{}, []string{"--file", os.TempDir()}, 1, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			if tt.listen != nil {
				_, port = startListen(t, tt.listen...)
			}
			r := runCmd(t, "", append([]string{"hl7", "send", "127.0.0.1", port}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantOut) {
				t.Errorf("stdout %q lacks %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.wantErr)
			}
		})
	}
}

// A peer that closes the connection without answering must not make
// `hl7 send` hang or exit 0 (the reference exits 0 silently).
func TestSendPeerClosesWithoutAck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		c.Close()
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, adtWithID)
	if r.code != 5 || !strings.Contains(r.stderr, "connection closed before an ACK arrived") {
		t.Fatalf("exit %d stderr %q, want 5 and a closed-connection error", r.code, r.stderr)
	}
}

func TestSendInterrupted(t *testing.T) {
	_, port := startListen(t, "--ack", "none")
	p := startProc(t, "", "hl7", "send", "127.0.0.1", port, adtWithID, "--timeout", "1m")
	time.Sleep(500 * time.Millisecond) // let it connect and send
	if code := p.stop(t, syscall.SIGINT); code != 130 {
		t.Fatalf("exit %d after SIGINT, want 130; stderr %s", code, p.stderr.String())
	}
}

func TestListenPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	r := runCmd(t, "", "hl7", "listen", port, "--host", "127.0.0.1")
	if r.code != 5 || !strings.Contains(r.stderr, "already in use") {
		t.Fatalf("exit %d stderr %q, want 5 and 'already in use'", r.code, r.stderr)
	}
}

// é must travel as the single ISO-8859-1 byte 0xE9 and come back decoded.
func TestCharsetRoundTripLatin1(t *testing.T) {
	msg := "MSH|^~\\&|LAB|HOSP|RCV|DEST|20240102030405||ADT^A01|LATIN1|P|2.5|||||||8859/1\rPID|1||1||Andr\u00e9^Ren\u00e9e"

	// The raw bytes on the wire.
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := raw.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var buf bytes.Buffer
		tmp := make([]byte, 4096)
		for !bytes.Contains(buf.Bytes(), []byte{0x1c, 0x0d}) {
			n, err := c.Read(tmp)
			buf.Write(tmp[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	_, rawPort, _ := net.SplitHostPort(raw.Addr().String())
	runCmd(t, "", "hl7", "send", "127.0.0.1", rawPort, msg, "--encoding", "iso-8859-1", "--timeout", "300ms")
	wire := <-got
	if !bytes.Contains(wire, []byte("Andr\xe9^Ren\xe9e")) || bytes.Contains(wire, []byte("\xc3\xa9")) {
		t.Fatalf("wire bytes are not ISO-8859-1: %q", wire)
	}

	// And through our listener, decoded back.
	l, port := startListen(t, "--encoding", "iso-8859-1", "--json")
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, msg, "--encoding", "latin1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	out := waitFor(t, "listener", l.stdout, "LATIN1", 5*time.Second)
	var rec struct{ Message, ControlID string }
	if err := json.Unmarshal([]byte(lines(out)[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ControlID != "LATIN1" || !strings.Contains(rec.Message, "Andr\u00e9^Ren\u00e9e") {
		t.Fatalf("listener decoded %+v", rec)
	}
}

func TestSendFileWithSeveralMessages(t *testing.T) {
	l, port := startListen(t)
	var sb strings.Builder
	for _, id := range []string{"F1", "F2", "F3"} {
		sb.WriteString(strings.ReplaceAll(strings.ReplaceAll(adtWithID, "MSGID1", id), "\r", "\r\n") + "\r\n")
	}
	path := filepath.Join(t.TempDir(), "batch.hl7")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, "--file", path, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var ids []string
	for _, line := range lines(r.stdout) {
		var a struct{ ControlID, AckCode string }
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		if a.AckCode != "AA" {
			t.Errorf("ack %+v", a)
		}
		ids = append(ids, a.ControlID)
	}
	if strings.Join(ids, ",") != "F1,F2,F3" {
		t.Fatalf("ACKed ids %v", ids)
	}
	// Same through standard input.
	r = runCmd(t, sb.String(), "hl7", "send", "127.0.0.1", port, "--file", "-")
	if r.code != 0 || strings.Count(r.stdout, "MSA|AA|") != 3 {
		t.Fatalf("stdin: exit %d stdout %s", r.code, r.stdout)
	}
	waitFor(t, "listener", l.stdout, "F3", 5*time.Second)
}

// One bad frame in the middle of a read must not cost its neighbours (the
// reference loses all three).
func TestListenBadFrameKeepsNeighbours(t *testing.T) {
	l, port := startListen(t)
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := func(s string) string { return "\x0b" + s + "\x1c\x0d" }
	batch := frame(strings.ReplaceAll(adtWithID, "MSGID1", "C7")) + frame("PID|1") + frame(strings.ReplaceAll(adtWithID, "MSGID1", "C8"))
	if _, err := io.WriteString(c, batch); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var acks bytes.Buffer
	tmp := make([]byte, 4096)
	for bytes.Count(acks.Bytes(), []byte{0x1c, 0x0d}) < 2 {
		n, err := c.Read(tmp)
		acks.Write(tmp[:n])
		if err != nil {
			t.Fatalf("reading ACKs: %v (got %q)", err, acks.String())
		}
	}
	for _, want := range []string{"MSA|AA|C7|OK", "MSA|AA|C8|OK"} {
		if !strings.Contains(acks.String(), want) {
			t.Errorf("ACKs %q lack %q", acks.String(), want)
		}
	}
	waitFor(t, "listener stderr", l.stderr, "ignored a 5-byte frame", 5*time.Second)
}

func TestLoadModeReport(t *testing.T) {
	_, port := startListen(t, "--enhanced")
	r := runCmd(t, "", "hl7", "send", "127.0.0.1", port, "--generate-example", "--count", "500", "--concurrency", "4", "--return-ack", "first", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Messages, Connections, Negative, Timeouts, Errors int
		Acks                                              map[string]int
		MessagesPerSec                                    float64
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report %q: %v", r.stdout, err)
	}
	if rep.Messages != 500 || rep.Connections != 4 || rep.Acks["CA"] != 500 || rep.Negative+rep.Timeouts+rep.Errors != 0 || rep.MessagesPerSec <= 0 {
		t.Fatalf("report %+v", rep)
	}
	// Negative ACKs under load exit 3 and are counted.
	_, aePort := startListen(t, "--ack", "AE")
	r = runCmd(t, "", "hl7", "send", "127.0.0.1", aePort, "--generate-example", "--count", "50", "--concurrency", "2")
	if r.code != 3 || !strings.Contains(r.stdout, "AE 50") || !strings.Contains(r.stdout, "negative 50") {
		t.Fatalf("exit %d stdout %s", r.code, r.stdout)
	}
}
