package ping

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// testDeadline bounds every blocking step so a broken test fails instead of
// hanging; it is never a performance assertion.
const testDeadline = 20 * time.Second

var statsBlock = regexp.MustCompile(`(?i)ping statistics`)

// check describes an expected response: status and content type, and the
// body either exactly or by the lines it must contain.
type check struct {
	status   int
	body     string   // exact, when set
	contains []string // substrings, when body is not set
}

func (c check) verify(t *testing.T, req, got *protocol.Message) {
	t.Helper()
	ct := protocol.ContentTypePing
	if c.status != 200 {
		ct = protocol.ContentTypeText
	}
	want := &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: req.Channel, Remote: req.Remote,
		Callback: req.Callback, ContentType: ct, StatusCode: c.status, Body: got.Body}
	if c.body != "" {
		want.Body = c.body
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	for _, s := range c.contains {
		if !strings.Contains(got.Body, s) {
			t.Errorf("body lacks %q:\n%s", s, got.Body)
		}
	}
}

func handle(t *testing.T, remote, body string, opt Options) (*protocol.Message, *protocol.Message, string) {
	t.Helper()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	req := &protocol.Message{Type: protocol.TypeTransmitRequest, Channel: "ch", Remote: remote,
		ContentType: protocol.ContentTypePing, Body: body, Callback: "cb-1"}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	return req, Handle(ctx, req, opt, logger), logs.String()
}

func TestHandleSystemPing(t *testing.T) {
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("no system ping installed")
	}
	tests := []struct {
		name, remote, body string
		want               check
		wantLog            string
	}{
		{name: "IPv4", remote: "127.0.0.1", body: "PING",
			want: check{status: 200, contains: []string{"--- 127.0.0.1 ping statistics ---", "1 packets transmitted, 1 received"}}},
		{name: "host name", remote: "localhost", body: "PING",
			want: check{status: 200, contains: []string{"--- localhost ping statistics ---", "1 received"}}},
		{name: "empty body", remote: "127.0.0.1",
			want: check{status: 200, contains: []string{"1 packets transmitted"}}},
		{name: "count", remote: "127.0.0.1", body: "PING 2",
			want: check{status: 200, contains: []string{"2 packets transmitted, 2 received"}}},
		{name: "count with trailing text", remote: "127.0.0.1", body: "PING 1x",
			want: check{status: 200, contains: []string{"1 packets transmitted"}}},
		{name: "unused body", remote: "127.0.0.1", body: "Hello, Medplum!",
			want: check{status: 200, contains: []string{"1 packets transmitted"}}, wantLog: "Message body present but unused"},
		{name: "URL is not a host", remote: "https://localhost:3001",
			want: check{status: 400, body: "Attempted to ping an invalid host.\n\n\"https://localhost:3001\" is not a valid IPv4 address or a resolvable hostname."}},
		{name: "option-like host", remote: "-c",
			want: check{status: 400, body: "Attempted to ping an invalid host.\n\n\"-c\" is not a valid IPv4 address or a resolvable hostname."}},
		{name: "missing host", remote: "",
			want: check{status: 400, body: "Attempted to ping an invalid host.\n\n\"\" is not a valid IPv4 address or a resolvable hostname."}},
		{name: "IPv6", remote: "::1", body: "PING",
			want: check{status: 400, body: "Attempted to ping an IPv6 address: ::1\n\nIPv6 is currently unsupported."}},
		{name: "IPv4-mapped IPv6", remote: "::ffff:127.0.0.1",
			want: check{status: 400, body: "Attempted to ping an IPv6 address: ::ffff:127.0.0.1\n\nIPv6 is currently unsupported."}},
		{name: "count not a number", remote: "127.0.0.1", body: "PING JOHN",
			want: check{status: 400, body: `Unable to ping 127.0.0.1 "JOHN" times. "JOHN" is not a number.`}},
		{name: "count rejected by ping", remote: "127.0.0.1", body: "PING 0",
			want: check{status: 400, contains: []string{"Command failed: ping -c 0 127.0.0.1\nping: "}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, got, logs := handle(t, tc.remote, tc.body, Options{})
			tc.want.verify(t, req, got)
			if tc.want.status == 200 && !statsBlock.MatchString(got.Body) {
				t.Errorf("body has no ping statistics:\n%s", got.Body)
			}
			if tc.wantLog != "" && !strings.Contains(logs, tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs)
			}
		})
	}
}

// script writes an executable shell script standing in for ping.
func script(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fakeping")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+text+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHandleCommandErrors(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no shell")
	}
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		want    string // {cmd} stands for the command line
	}{
		{name: "exit status with stderr", script: "echo 'ping: no route' >&2; exit 2",
			want: "Command failed: {cmd} -c 1 127.0.0.1\nping: no route"},
		{name: "exit status with stdout only", script: "echo '1 packets transmitted, 0 received'; exit 1",
			want: "Command failed: {cmd} -c 1 127.0.0.1\n1 packets transmitted, 0 received"},
		{name: "stderr on success", script: "echo 'ping statistics'; echo 'warning: odd' >&2",
			want: "Received on stderr:\n\nwarning: odd"},
		{name: "timeout", script: "exec sleep 30", timeout: 50 * time.Millisecond,
			want: "Command failed: {cmd} -c 1 127.0.0.1\nping did not finish within 50ms"},
		{name: "transcript is trimmed", script: "printf '\\n  PING ok\\n\\n'", want: "PING ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := script(t, tc.script)
			req, got, _ := handle(t, "127.0.0.1", "PING", Options{Command: cmd, Timeout: tc.timeout})
			status := 400
			if !strings.HasPrefix(tc.want, "Command failed") && !strings.HasPrefix(tc.want, "Received") {
				status = 200
			}
			check{status: status, body: strings.ReplaceAll(tc.want, "{cmd}", cmd)}.verify(t, req, got)
		})
	}
}

func TestHandleNativeFallback(t *testing.T) {
	conn, _, icmpErr := openICMP()
	if icmpErr == nil {
		conn.Close()
	}
	missing := filepath.Join(t.TempDir(), "no-such-ping")
	tests := []struct {
		name, remote, body string
		want               check
	}{
		{name: "IPv4", remote: "127.0.0.1", body: "PING", want: check{status: 200, contains: []string{
			"PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n64 bytes from 127.0.0.1: icmp_seq=1 time=",
			"\n\n--- 127.0.0.1 ping statistics ---\n1 packets transmitted, 1 received, 0% packet loss, time ",
			"\nrtt min/avg/max/mdev = "}}},
		{name: "host name", remote: "localhost", body: "PING 2", want: check{status: 200, contains: []string{
			"PING localhost (127.0.0.1) 56(84) bytes of data.\n64 bytes from localhost (127.0.0.1): icmp_seq=1 time=",
			"64 bytes from localhost (127.0.0.1): icmp_seq=2 time=",
			"--- localhost ping statistics ---\n2 packets transmitted, 2 received, 0% packet loss"}}},
		{name: "count below one", remote: "127.0.0.1", body: "PING -1",
			want: check{status: 400, body: "Unable to ping 127.0.0.1 -1 times; the count must be at least 1"}},
		{name: "unresolvable", remote: "nosuchhost.invalid", body: "PING",
			want: check{status: 400, contains: []string{"ping: nosuchhost.invalid: "}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if icmpErr != nil && tc.want.status == 200 {
				// Without ICMP sockets the fallback must say so.
				tc.want = check{status: 400, contains: []string{"the ping command is unavailable", "ICMP sockets are not permitted"}}
			}
			req, got, logs := handle(t, tc.remote, tc.body, Options{Command: missing, interval: 10 * time.Millisecond})
			tc.want.verify(t, req, got)
			if !strings.Contains(logs, "native ICMP echo") {
				t.Errorf("log does not mention the fallback:\n%s", logs)
			}
		})
	}
}

// TestExchange runs the echo over each kind of ICMP socket this host
// allows: datagram sockets need net.ipv4.ping_group_range, raw ones root.
func TestExchange(t *testing.T) {
	openRaw := func() (net.PacketConn, error) { return net.ListenPacket("ip4:icmp", "0.0.0.0") }
	for _, tc := range []struct {
		name string
		raw  bool
		open func() (net.PacketConn, error)
	}{
		{"datagram", false, openDatagram},
		{"raw", true, openRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.open()
			if err != nil {
				t.Skipf("%s ICMP socket not permitted here: %v", tc.name, err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			out, err := exchange(ctx, conn, tc.raw, "127.0.0.1", net.IPv4(127, 0, 0, 1).To4(), 3, 5*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"icmp_seq=1 ", "icmp_seq=2 ", "icmp_seq=3 ", "3 packets transmitted, 3 received, 0% packet loss"} {
				if !strings.Contains(out, s) {
					t.Errorf("transcript lacks %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestWriteStats(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		name    string
		sent    int
		rtts    []time.Duration
		elapsed time.Duration
		want    string
	}{
		{"all lost", 2, nil, ms(1001), "\n--- h ping statistics ---\n2 packets transmitted, 0 received, 100% packet loss, time 1001ms\n"},
		{"one of three", 3, []time.Duration{ms(0.5)}, ms(2002),
			"\n--- h ping statistics ---\n3 packets transmitted, 1 received, 66.6667% packet loss, time 2002ms\n" +
				"rtt min/avg/max/mdev = 0.500/0.500/0.500/0.000 ms\n"},
		{"spread", 2, []time.Duration{ms(1), ms(3)}, ms(1000),
			"\n--- h ping statistics ---\n2 packets transmitted, 2 received, 0% packet loss, time 1000ms\n" +
				"rtt min/avg/max/mdev = 1.000/2.000/3.000/1.000 ms\n"},
	}
	for _, tc := range tests {
		var b strings.Builder
		writeStats(&b, "h", tc.sent, tc.rtts, tc.elapsed)
		if diff := cmp.Diff(tc.want, b.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestFormatRTT(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{40 * time.Microsecond, "0.040"},
		{1234 * time.Microsecond, "1.23"},
		{12345 * time.Microsecond, "12.3"},
		{123456 * time.Microsecond, "123"},
	}
	for _, tc := range tests {
		if got := formatRTT(tc.d); got != tc.want {
			t.Errorf("formatRTT(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestEchoRequest(t *testing.T) {
	p := echoRequest(0x1234, 7)
	if checksum(p) != 0 {
		t.Errorf("checksum over the packet = %#x, want 0", checksum(p))
	}
	reply := append([]byte(nil), p...)
	reply[0] = icmpEchoReply
	tests := []struct {
		name string
		p    []byte
		raw  bool
		id   uint16
		seq  uint16
		want bool
	}{
		{"reply", reply, true, 0x1234, 7, true},
		{"other sequence", reply, true, 0x1234, 8, false},
		{"other identifier on raw socket", reply, true, 0x9999, 7, false},
		{"identifier is the kernel's on datagram socket", reply, false, 0x9999, 7, true},
		{"request is not a reply", p, true, 0x1234, 7, false},
		{"truncated", reply[:4], true, 0x1234, 7, false},
	}
	for _, tc := range tests {
		if got := isReply(tc.p, tc.raw, tc.id, tc.seq); got != tc.want {
			t.Errorf("%s: isReply = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in     string
		want   int
		wantOK bool
	}{
		{"3", 3, true}, {"007", 7, true}, {"+2", 2, true}, {"-1", -1, true}, {"4abc", 4, true}, {"\t5", 5, true},
		{"3.9", 3, true}, {"JOHN", 0, false}, {"", 0, false}, {"-", 0, false}, {"0x10", 0, true},
		{"99999999999999999999", int(^uint(0) >> 1), true},
	}
	for _, tc := range tests {
		got, ok := parseInt(tc.in)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestValidHostname(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"localhost", true}, {"LOCALHOST", true}, {"foo.bar.co.uk", true}, {"foo-bar_baz", true}, {"a", true},
		{"10.0.0.256", true}, // syntactically a name; ping resolves or rejects it
		{"", false}, {"foo.", false}, {".foo", false}, {"foo..bar", false}, {"-foo", false}, {"foo_", false},
		{"foo.com/bar", false}, {"https://foo.com", false}, {"foo | rm -rf /", false}, {"héllo", false},
	}
	for _, tc := range tests {
		if got := validHostname(tc.in); got != tc.want {
			t.Errorf("validHostname(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		opt   Options
		count int
		want  time.Duration
	}{
		{Options{}, 1, DefaultTimeout},
		{Options{}, 2, 4 * time.Second},
		{Options{}, 10, 12 * time.Second},
		{Options{}, 1 << 40, MaxTimeout},
		{Options{}, -5, DefaultTimeout},
		{Options{Timeout: time.Second}, 10, time.Second},
	}
	for _, tc := range tests {
		if got := tc.opt.timeout(tc.count); got != tc.want {
			t.Errorf("timeout(%+v, %d) = %v, want %v", tc.opt, tc.count, got, tc.want)
		}
	}
}

func TestCapped(t *testing.T) {
	var c capped
	chunk := bytes.Repeat([]byte("x"), maxOutput-10)
	for range 3 {
		if n, err := c.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if len(c.String()) != maxOutput {
		t.Errorf("kept %d bytes, want %d", len(c.String()), maxOutput)
	}
}
