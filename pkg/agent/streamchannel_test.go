package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// astmTestdata is the project copy of the ASTM fixtures.
const astmTestdata = "../../testdata/astm/"

func globASTM(t testing.TB, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(astmTestdata + pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	return m
}

func loadASTMScript(t testing.TB, path string) *astm.Script {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := astm.ParseScript(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

func tcpAddr(port int, query string) string {
	return fmt.Sprintf("tcp://127.0.0.1:%d?%s", port, query)
}

// exchange is one step of a device: write w, then read exactly r.
type exchange struct{ w, r string }

func (d *device) exchange(steps ...exchange) {
	d.t.Helper()
	for i, st := range steps {
		if st.w != "" {
			if _, err := d.c.Write([]byte(st.w)); err != nil {
				d.t.Fatalf("step %d: write: %v", i, err)
			}
		}
		if st.r == "" {
			continue
		}
		d.c.SetReadDeadline(time.Now().Add(waitFor))
		got := make([]byte, len(st.r))
		if n, err := io.ReadFull(d.c, got); err != nil {
			d.t.Fatalf("step %d: read %q, got %q: %v", i, st.r, got[:n], err)
		}
		if string(got) != st.r {
			d.t.Fatalf("step %d: read %q, want %q", i, got, st.r)
		}
	}
}

// waitClosed waits until the agent closes the device's connection.
func (d *device) waitClosed() {
	d.t.Helper()
	d.c.SetReadDeadline(time.Now().Add(waitFor))
	if n, err := d.c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		d.t.Fatalf("connection still open: read %d bytes, %v", n, err)
	}
}

// bodies returns the bodies of channel's transmits among msgs.
func bodies(msgs []*protocol.Message, channel string) []string {
	var out []string
	for _, m := range msgs {
		if m.Channel == channel {
			out = append(out, m.Body)
		}
	}
	return out
}

// Scenarios 46 to 49, plus the parameters that shape a raw message. The
// ack Bot answers octet-stream messages with hex "06"; every case ends
// with a message whose answer proves that nothing else was delivered.
func TestByteStreamRaw(t *testing.T) {
	const frame = "startChar=%02&endChar=%03"
	tests := []struct {
		name   string
		query  string
		steps  []exchange
		bodies []string
	}{
		{name: "46 hex body and response", query: frame,
			steps:  []exchange{{"\x02HELLO\x03", "\x06"}},
			bodies: []string{"0248454c4c4f03"}},
		{name: "47 split across writes", query: frame,
			steps:  []exchange{{w: "\x02HE"}, {w: "LL"}, {"O\x03", "\x06"}, {"\x02X\x03", "\x06"}},
			bodies: []string{"0248454c4c4f03", "025803"}},
		{name: "48 autoRespond", query: frame + "&autoRespond=%05:%06,AB:%15",
			// Answered before any message exists, also when the pattern
			// arrives in two writes; then the echo precedes the Bot's answer.
			steps:  []exchange{{"\x05", "\x06"}, {"\x05", "\x06"}, {w: "A"}, {"B", "\x15"}, {"\x02\x05\x03", "\x06\x06"}},
			bodies: []string{"020503"}},
		{name: "49 control characters stripped", query: frame + "&stripControlChars=true&keepControlChars=%0D%0A&bodyEncoding=utf-8",
			// bodyEncoding applies to the response too: the Bot's "06" goes
			// out as two characters.
			steps:  []exchange{{"\x02LINE1\r\nLINE2\x01\x03", "06"}, {"\x02X\x03", "06"}},
			bodies: []string{"LINE1\r\nLINE2", "X"}},
		{name: "stripSequence", query: frame + "&stripSequence=%02,%03,--&bodyEncoding=utf-8",
			steps:  []exchange{{"\x02a--b\x03", "06"}, {"\x02\x03", ""}, {"\x02c\x03", "06"}},
			bodies: []string{"ab", "c"}},
		{name: "framing quirk decided", query: frame,
			steps:  []exchange{{w: "noise"}, {w: "\x03"}, {"junk\x02A\x03trailer\x02B\x03", "\x06\x06"}},
			bodies: []string{"024103", "024203"}},
		{name: "message size limit", query: frame + "&maxMessageBytes=3",
			steps:  []exchange{{w: "\x02AB\x03"}, {"\x02A\x03", "\x06"}},
			bodies: []string{"024103"}},
	}
	var chans []ch
	ports := map[string]int{}
	for i, tt := range tests {
		name := fmt.Sprint("bs", i)
		ports[name] = freePort(t)
		chans = append(chans, ch{name: name, address: tcpAddr(ports[name], tt.query)})
	}
	e := newEnv(t, chans...)
	tr := e.recordTransmits()
	e.start()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("bs", i)
			d := dial(t, ports[name])
			d.exchange(tt.steps...)
			var got []string
			eventually(t, "transmits", func() bool {
				got = bodies(tr.wait(t, 0), name)
				return len(got) >= len(tt.bodies)
			})
			if diff := cmp.Diff(tt.bodies, got); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
			for _, m := range tr.wait(t, 0) {
				if m.Channel == name && (m.ContentType != protocol.ContentTypeOctet || plainRemote(m.Remote) != d.c.LocalAddr().String() ||
					!strings.HasPrefix(m.Callback, "Agent/"+testAgentID+"-")) {
					t.Errorf("transmit %+v", m)
				}
			}
		})
	}
	e.chLog.wait(t, "Received channel=bs0 remote=")
	e.chLog.wait(t, "body=0248454c4c4f03")
	if strings.Contains(e.mainLogText(), "0248454c4c4f03") || strings.Contains(e.mainLogText(), "LINE1") {
		t.Error("message content reached the main log")
	}
	e.waitMainLog("Message longer than maxMessageBytes discarded")
}

// ignoreResponse drops the Bot's answer; a bad hex answer is reported to
// the server; an answer for a gone device is dropped with a warning.
func TestByteStreamResponses(t *testing.T) {
	port := freePort(t)
	const query = "startChar=%02&endChar=%03"
	e := newEnv(t, ch{name: "bs", address: tcpAddr(port, query+"&ignoreResponse=true")})
	// The in-memory path, where responses are handled in link order.
	e.setAgent("active", inMemory, ch{name: "bs", address: tcpAddr(port, query+"&ignoreResponse=true")})
	e.start()
	bot := e.holdBot()
	d := dial(t, port)

	d.exchange(exchange{w: "\x02A\x03"})
	if n := e.stats().ByteStreamLinksOpen; n != 1 {
		t.Errorf("byteStreamLinksOpen = %d, want 1", n)
	}
	respond := func(req *protocol.Message, body string) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: req.Channel, Remote: req.Remote,
			Callback: req.Callback, ContentType: protocol.ContentTypeOctet, StatusCode: 200, Body: body}
	}
	e.sendToAgent(respond(bot.next(t), "06"))
	// Responses are handled in order, before the reload that follows.
	e.setAgent("active", inMemory, ch{name: "bs", address: tcpAddr(port, query)})
	if r := e.reload(); r.Type != protocol.TypeReloadConfigResp {
		t.Fatalf("reload: %s %s", r.Type, r.Body)
	}
	d.exchange(exchange{w: "\x02B\x03"})
	e.sendToAgent(respond(bot.next(t), "15"))
	d.exchange(exchange{r: "\x15"}) // not the ignored 06

	d.exchange(exchange{w: "\x02C\x03"})
	bad := respond(bot.next(t), "0G")
	bad.Callback = "cb-bad-hex"
	if r := e.request(bad); r.Type+" "+r.Body != protocol.TypeError+" WebSocket error on incoming message: Invalid hex body" {
		t.Errorf("answer = %s %s", r.Type, r.Body)
	}

	gone := respond(&protocol.Message{Channel: "bs", Remote: "127.0.0.1:1"}, "06")
	e.sendToAgent(gone)
	e.waitMainLog("Attempted to send message to disconnected remote: 127.0.0.1:1")
}

// frameSteps sends each unit (a frame or a control byte) and expects reply.
func frameSteps(reply byte, units ...[]byte) []exchange {
	var out []exchange
	for _, u := range units {
		out = append(out, exchange{string(u), string(reply)})
	}
	return out
}

// Scenario 50.
func TestByteStreamASTM(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "astm", address: tcpAddr(port, "mode=astm")})
	tr := e.recordTransmits()
	e.start()
	d := dial(t, port)

	h := []byte("H|\\^&|||Sim\r")
	p := []byte("P|1||PID123\r")
	l := []byte("L|1|N\r")
	badP := astm.EncodeFrame(2, p, true)
	badP[len(badP)-4] ^= 1 // wrong checksum
	enq, eot := []byte{astm.ENQ}, []byte{astm.EOT}
	d.exchange(frameSteps(astm.ACK, enq, astm.EncodeFrame(1, h, true))...)
	d.exchange(frameSteps(astm.NAK, badP)...)
	d.exchange(frameSteps(astm.ACK,
		astm.EncodeFrame(2, p, true),
		astm.EncodeFrame(2, p, true), // repeated frame number: a retransmission
		astm.EncodeFrame(3, l, true),
		eot,
		enq, eot, // an empty session
		enq, astm.EncodeFrame(1, l, true), eot,
	)...)
	got := tr.wait(t, 2)
	want := []string{"H|\\^&|||Sim\nP|1||PID123\nL|1|N\n", "L|1|N\n"}
	if diff := cmp.Diff(want, bodies(got, "astm")); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
	for _, m := range got {
		if m.ContentType != astm.ContentType || plainRemote(m.Remote) != d.c.LocalAddr().String() {
			t.Errorf("transmit %+v", m)
		}
	}
	e.waitMainLog("ASTM session received with link errors")
	if strings.Contains(e.mainLogText(), "PID123") {
		t.Error("message content reached the main log")
	}
}

// The ASTM options reach the receiver.
func TestByteStreamASTMOptions(t *testing.T) {
	enq, eot := []byte{astm.ENQ}, []byte{astm.EOT}
	h := astm.EncodeFrame(1, []byte("H|\\^&\r"), true)
	rec := func(s string) []byte { return astm.EncodeFrame(2, []byte(s+"\r"), true) }
	tests := []struct {
		name   string
		query  string
		run    func(d *device)
		bodies []string
	}{
		{name: "ackEot=false", query: "ackEot=false",
			run: func(d *device) {
				d.exchange(frameSteps(astm.ACK, enq, h)...)
				// EOT unanswered: the next reply is the ACK of the next ENQ.
				d.exchange(exchange{string(eot), ""}, exchange{string(enq), string(astm.ACK)})
			},
			bodies: []string{"H|\\^&\n"}},
		{name: "maxSessionBytes", query: "maxSessionBytes=8",
			run: func(d *device) {
				d.exchange(frameSteps(astm.ACK, enq, h, rec("P|1"), astm.EncodeFrame(3, []byte("L|1\r"), true), eot)...)
			},
			bodies: []string{"H|\\^&\nP|1\n", "L|1\n"}},
		{name: "maxFrameBytes", query: "maxFrameBytes=16",
			run: func(d *device) {
				d.exchange(frameSteps(astm.ACK, enq)...)
				d.exchange(exchange{"\x021" + strings.Repeat("X", 20), string(astm.NAK)})
				d.exchange(frameSteps(astm.ACK, h, eot)...)
			},
			bodies: []string{"H|\\^&\n"}},
		{name: "bodyEncoding=hex", query: "bodyEncoding=hex",
			run: func(d *device) {
				d.exchange(frameSteps(astm.ACK, enq, astm.EncodeFrame(1, []byte("L|\xe9\r"), true), eot)...)
			},
			bodies: []string{"4c7cc3a90a"}},
		// Without the idle timer the second ENQ would deliver H as a
		// message of its own (an ENQ inside a session); with it, H is
		// discarded with the silent session.
		{name: "idleTimeout", query: "idleTimeout=100ms",
			run: func(d *device) {
				d.exchange(frameSteps(astm.ACK, enq, h)...)
				time.Sleep(time.Second)
				d.exchange(frameSteps(astm.ACK, enq, rec("P|1"), eot)...)
			},
			bodies: []string{"P|1\n"}},
	}
	var chans []ch
	ports := map[string]int{}
	for i, tt := range tests {
		name := fmt.Sprint("astm", i)
		ports[name] = freePort(t)
		chans = append(chans, ch{name: name, address: tcpAddr(ports[name], "mode=astm&"+tt.query)})
	}
	e := newEnv(t, chans...)
	tr := e.recordTransmits()
	e.start()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("astm", i)
			d := dial(t, ports[name])
			tt.run(d)
			var got []string
			eventually(t, "transmits", func() bool {
				got = bodies(tr.wait(t, 0), name)
				return len(got) >= len(tt.bodies)
			})
			if diff := cmp.Diff(tt.bodies, got); diff != "" {
				t.Errorf("bodies (-want +got):\n%s", diff)
			}
		})
	}
	e.waitMainLog("ASTM: session discarded (nothing received for 100ms): 1 records not delivered")
}

// The L scripts of testdata/astm played against the agent's ASTM channel,
// once replying ACK to EOT (the default, as the reference) and once
// silent. Each script runs on its own connection; what the server received
// is compared per connection once a last session, sent after all others
// ended, has arrived behind them.
func TestByteStreamASTMScripts(t *testing.T) {
	paths := globASTM(t, "scenarios/L*.script")
	ports := map[bool]int{false: freePort(t), true: freePort(t)}
	e := newEnv(t,
		ch{name: "astm", address: tcpAddr(ports[false], "mode=astm")},
		ch{name: "silent", address: tcpAddr(ports[true], "mode=astm&ackEot=false")})
	tr := e.recordTransmits()
	e.start()

	want := map[string][]string{} // remote → messages
	record := make(chan [2]any, 2*len(paths))
	t.Run("play", func(t *testing.T) {
		for _, path := range paths {
			script := loadASTMScript(t, path)
			for _, silent := range []bool{false, true} {
				name := strings.TrimSuffix(filepath.Base(path), ".script")
				if silent {
					name += "/silent-eot"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					play := *script
					play.Steps = nil
					for _, st := range script.Steps {
						// "<?" is the ACK of EOT: required by default,
						// forbidden when silent.
						if st.Kind == astm.StepReadOptional {
							if silent {
								st = astm.Step{Line: st.Line, Kind: astm.StepQuiet, Dur: 50 * time.Millisecond}
							} else {
								st.Kind = astm.StepRead
							}
						}
						play.Steps = append(play.Steps, st)
					}
					c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[silent]))
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					record <- [2]any{c.LocalAddr().String(), script.Messages}
					if err := play.Play(t.Context(), c.(*net.TCPConn), astm.PlayOptions{}); err != nil {
						t.Fatal(err)
					}
				})
			}
		}
	})
	close(record)
	for r := range record {
		want[r[0].(string)] = r[1].([]string)
	}

	// Every connection has ended, so every session was delivered or
	// discarded; the server sees messages in the order the agent took
	// them, so one more session marks the end.
	for _, c := range []*streamChannel{e.channels()["astm"].(*tcpStreamChannel).streamChannel, e.channels()["silent"].(*tcpStreamChannel).streamChannel} {
		eventually(t, "connections closed", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.conns) == 0 })
	}
	d := dial(t, ports[false])
	d.exchange(frameSteps(astm.ACK, []byte{astm.ENQ}, astm.EncodeFrame(1, []byte("L|end\r"), true), []byte{astm.EOT})...)
	var all []*protocol.Message
	eventually(t, "the last session", func() bool {
		all = tr.wait(t, 0)
		return len(all) > 0 && all[len(all)-1].Body == "L|end\n"
	})
	got := map[string][]string{}
	for _, m := range all[:len(all)-1] {
		got[plainRemote(m.Remote)] = append(got[plainRemote(m.Remote)], m.Body)
	}
	for remote, msgs := range want {
		if diff := cmp.Diff(msgs, got[remote]); diff != "" {
			t.Errorf("%s: messages (-want +got):\n%s", remote, diff)
		}
		delete(got, remote)
	}
	if len(got) > 0 {
		t.Errorf("messages from unknown connections: %v", got)
	}
}

// Same port, new parameters: the same channel, live connections keep
// going with the new parameters; a new mode closes them.
func TestByteStreamReconfigure(t *testing.T) {
	port := freePort(t)
	const frame = "startChar=%02&endChar=%03"
	e := newEnv(t, ch{name: "bs", address: tcpAddr(port, frame)})
	tr := e.recordTransmits()
	e.start()
	before := e.channels()["bs"]
	d := dial(t, port)
	d.exchange(exchange{"\x02A\x03", "\x06"})

	reload := func(query string) {
		t.Helper()
		e.setAgent("active", inMemory, ch{name: "bs", address: tcpAddr(port, query)})
		if r := e.reload(); r.Type != protocol.TypeReloadConfigResp {
			t.Fatalf("reload: %s %s", r.Type, r.Body)
		}
		if e.channels()["bs"] != before {
			t.Fatal("the channel was replaced")
		}
	}
	reload(frame + "&bodyEncoding=utf-8")
	d.exchange(exchange{"\x02B\x03", "06"})
	session := func(rec string) {
		t.Helper()
		d.exchange(frameSteps(astm.ACK, []byte{astm.ENQ}, astm.EncodeFrame(1, []byte(rec+"\r"), true), []byte{astm.EOT})...)
	}
	reload("mode=astm")
	d.waitClosed()
	d = dial(t, port)
	session("L|1")
	reload("mode=astm&bodyEncoding=hex")
	session("L|2")
	// Receiver options are fixed per connection.
	reload("mode=astm&ackEot=false")
	d.waitClosed()
	d = dial(t, port)
	d.exchange(exchange{"\x05", "\x06"})
	if diff := cmp.Diff([]string{"024103", "\x02B\x03", "L|1\n", "4c7c320a"}, bodies(tr.wait(t, 4), "bs")); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}

	// Removing the channel closes its connections and frees the port.
	e.setAgent("active", nil)
	if r := e.reload(); r.Type != protocol.TypeReloadConfigResp {
		t.Fatalf("reload: %s %s", r.Type, r.Body)
	}
	d.waitClosed()
	ln, err := net.Listen("tcp", listenAddr(port))
	if err != nil {
		t.Fatalf("port still bound: %v", err)
	}
	ln.Close()
}

// Several instruments at once, each on its own connection, with sessions
// interleaved frame by frame.
func TestByteStreamASTMConcurrent(t *testing.T) {
	const instruments = 20
	port := freePort(t)
	e := newEnv(t, ch{name: "astm", address: tcpAddr(port, "mode=astm")})
	tr := e.recordTransmits()
	e.start()
	want := map[string]string{}
	var ds []*device
	for i := range instruments {
		d := dial(t, port)
		ds = append(ds, d)
		want[d.c.LocalAddr().String()] = fmt.Sprintf("H|\\^&|||I%d\nL|1|N\n", i)
		d.exchange(frameSteps(astm.ACK, []byte{astm.ENQ})...)
	}
	for i, d := range ds {
		d.exchange(frameSteps(astm.ACK, astm.EncodeFrame(1, []byte(fmt.Sprintf("H|\\^&|||I%d\r", i)), true))...)
	}
	for _, d := range ds {
		d.exchange(frameSteps(astm.ACK, astm.EncodeFrame(2, []byte("L|1|N\r"), true), []byte{astm.EOT})...)
	}
	got := map[string]string{}
	for _, m := range tr.wait(t, instruments) {
		got[plainRemote(m.Remote)] = m.Body
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bodies by remote (-want +got):\n%s", diff)
	}
}

// BenchmarkASTMSessions replays the longest framed capture into an ASTM
// channel from 1 and 8 instruments, each unit waiting for its ACK, through
// the dev server's ack Bot; b.N is the number of sessions.
func BenchmarkASTMSessions(b *testing.B) {
	var capture []byte
	for _, path := range globASTM(b, "framed/*.e1381.bin") {
		if c, err := os.ReadFile(path); err != nil {
			b.Fatal(err)
		} else if len(c) > len(capture) {
			capture = c
		}
	}
	units := astm.SplitUnits(capture)
	for _, instruments := range []int{1, 8} {
		b.Run(fmt.Sprint("instruments=", instruments), func(b *testing.B) {
			port := freePort(b)
			e := newEnv(b, ch{name: "astm", address: tcpAddr(port, "mode=astm")})
			tr := e.recordTransmits()
			e.start()
			var ds []*device
			for range instruments {
				ds = append(ds, dial(b, port))
			}
			per := b.N/instruments + 1
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, d := range ds {
				wg.Go(func() {
					reply := make([]byte, 1)
					for range per {
						for _, u := range units {
							d.c.SetDeadline(time.Now().Add(waitFor))
							if _, err := d.c.Write(u); err != nil {
								b.Error(err)
								return
							}
							if _, err := io.ReadFull(d.c, reply); err != nil || reply[0] != astm.ACK {
								b.Errorf("reply %x, %v", reply, err)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			tr.wait(b, per*instruments)
			b.StopTimer()
			sessions := float64(per * instruments)
			b.ReportMetric(sessions/b.Elapsed().Seconds(), "sessions/s")
			b.ReportMetric(sessions*float64(len(capture))/b.Elapsed().Seconds()/1e6, "MB/s")
		})
	}
}

// plainRemote undoes the IPv4-mapped form the agent reports for IPv4
// devices on its dual-stack listeners, to compare with a dialer's address.
func plainRemote(remote string) string { return strings.TrimPrefix(remote, "::ffff:") }
