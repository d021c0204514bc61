package astm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// Frames of the reference records (astm.md §9), with literal checksums.
const (
	fH   = "<STX>1H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>EF<CR><LF>"
	fP   = "<STX>2P|1||PID123||Doe^Jane||19800101|F<CR><ETX>E4<CR><LF>"
	fL3  = "<STX>3L|1|N<CR><ETX>06<CR><LF>"
	recH = "H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000\n"
	recP = "P|1||PID123||Doe^Jane||19800101|F\n"
	recL = "L|1|N\n"
)

type stateRun struct {
	replies  string // mnemonic
	sessions []Session
	warnings []string
}

// feedAll runs input through a fresh ReceiverState one byte at a time.
// failDeliveries makes that many first deliveries fail.
func feedAll(t testing.TB, opts ReceiverOptions, input []byte, failDeliveries int) stateRun {
	t.Helper()
	var run stateRun
	opts.OnWarning = func(w string) { run.warnings = append(run.warnings, w) }
	st := NewReceiverState(opts, func(s Session) error {
		if failDeliveries > 0 {
			failDeliveries--
			return errors.New("store down")
		}
		run.sessions = append(run.sessions, s)
		return nil
	})
	var replies []byte
	for _, b := range input {
		switch r := st.Feed(b); r {
		case 0:
		case ACK, NAK:
			replies = append(replies, r)
		default:
			t.Fatalf("reply %#x", r)
		}
	}
	run.replies = FormatMnemonic(replies)
	return run
}

func TestReceiverState(t *testing.T) {
	fill := strings.Repeat("X", 64)
	tests := []struct {
		name     string
		opts     ReceiverOptions
		input    string
		fail     int // deliveries that fail
		replies  string
		sessions []Session
		warnings []string
	}{
		{
			name:     "happy path acks EOT",
			input:    "<ENQ>" + fH + fP + fL3 + "<EOT>",
			replies:  "<ACK><ACK><ACK><ACK><ACK>",
			sessions: []Session{{Body: recH + recP + recL, Records: lines(recH + recP + recL), Frames: 3}},
		},
		{
			name:     "silent EOT delivers on the L frame",
			opts:     ReceiverOptions{SilentEOT: true},
			input:    "<ENQ>" + fH + fP + fL3 + "<EOT>",
			replies:  "<ACK><ACK><ACK><ACK>",
			sessions: []Session{{Body: recH + recP + recL, Records: lines(recH + recP + recL), Frames: 3}},
		},
		{
			name:     "silent EOT: duplicate of a delivered L frame is only acknowledged",
			opts:     ReceiverOptions{SilentEOT: true},
			input:    "<ENQ>" + fH + fL3 + fL3 + "<EOT>",
			replies:  "<ACK><ACK><ACK><ACK>",
			sessions: []Session{{Body: recH + recL, Records: lines(recH + recL), Frames: 2}},
		},
		{
			name:    "silent EOT: the L frame is rejected while delivery fails",
			opts:    ReceiverOptions{SilentEOT: true},
			input:   "<ENQ>" + fH + fL3 + fL3 + "<EOT>",
			fail:    1,
			replies: "<ACK><ACK><NAK><ACK>",
			sessions: []Session{{
				Body: recH + recL, Records: lines(recH + recL), Frames: 2, NAKs: 1,
			}},
			warnings: []string{"delivery failed, frame rejected for retransmission: store down"},
		},
		{
			name:     "failed delivery at EOT: NAK in place of ACK",
			input:    "<ENQ>" + fH + "<EOT>",
			fail:     1,
			replies:  "<ACK><ACK><NAK>",
			warnings: []string{"delivery failed, session of 1 records lost: store down"},
		},
		{
			name:    "failed delivery at ENQ: busy, retried on the next ENQ",
			input:   "<ENQ>" + fH + "<ENQ><ENQ>" + "<STX>1P|1||PID123||Doe^Jane||19800101|F<CR><ETX>E3<CR><LF><EOT>",
			fail:    1,
			replies: "<ACK><ACK><NAK><ACK><ACK><ACK>",
			sessions: []Session{
				{Body: recH, Records: lines(recH), Frames: 1},
				{Body: recP, Records: lines(recP), Frames: 1},
			},
			warnings: []string{"delivery failed, replying busy to ENQ: store down"},
		},
		{
			name:     "EOT outside a session",
			input:    "<EOT><ENQ><EOT>",
			replies:  "<ACK><ACK><ACK>",
			sessions: nil,
		},
		{
			name:    "EOT outside a session, silent",
			opts:    ReceiverOptions{SilentEOT: true},
			input:   "<EOT><ENQ><EOT>",
			replies: "<ACK>",
		},
		{
			name:     "noise outside a session is counted once",
			input:    "noise<CR><LF><ENQ><EOT>",
			replies:  "<ACK><ACK>",
			warnings: []string{"7 bytes outside a session ignored"},
		},
		{
			name:    "oversized frame is NAKed, the next one accepted",
			opts:    ReceiverOptions{MaxFrame: 32},
			input:   "<ENQ><STX>1" + fill + "<STX>1L|1|N<CR><ETX>04<CR><LF><EOT>",
			replies: "<ACK><NAK><ACK><ACK>",
			sessions: []Session{{
				Body: recL, Records: lines(recL), Frames: 1, NAKs: 1,
				Warnings: []string{"32 stray bytes between frames ignored", "1 frames longer than 32 bytes rejected"},
			}},
		},
		{
			name:    "early delivery above MaxSession",
			opts:    ReceiverOptions{MaxSession: 16},
			input:   "<ENQ><STX>1R|1|XXXXXXXXXXXXXXX<CR><ETX>E4<CR><LF><STX>2L|1|N<CR><ETX>05<CR><LF><EOT>",
			replies: "<ACK><ACK><ACK><ACK>",
			sessions: []Session{
				{Body: "R|1|XXXXXXXXXXXXXXX\n", Records: []string{"R|1|XXXXXXXXXXXXXXX"}, Frames: 1},
				{Body: recL, Records: lines(recL), Frames: 1},
			},
		},
		{
			name:    "strict frame numbers",
			opts:    ReceiverOptions{StrictFrameNumbers: true},
			input:   "<ENQ>" + fP + fH + fH + fP + "<EOT>",
			replies: "<ACK><NAK><ACK><ACK><ACK><ACK>",
			sessions: []Session{{
				Body: recH + recP, Records: lines(recH + recP), Frames: 2, Duplicates: 1, NAKs: 1,
			}},
		},
		{
			name:    "lenient frame numbers only warn outside 0-7",
			input:   "<ENQ><STX>9L|1|N<CR><ETX>0C<CR><LF>" + fP + "<EOT>",
			replies: "<ACK><ACK><ACK><ACK>",
			sessions: []Session{{
				Body: recL + recP, Records: lines(recL + recP), Frames: 2,
				Warnings: []string{"1 frames numbered outside 0-7"},
			}},
		},
		// Dialects the replay tool emulates (astm.md §2.9): all accepted.
		{
			name: "dialect: lower-case checksums, LF trailers, first frame 0",
			input: "<ENQ><STX>0H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>ee<LF>" +
				"<STX>1P|1||PID123||Doe^Jane||19800101|F<CR><ETX>e3<LF><STX>2L|1|N<CR><ETX>05<LF><EOT>",
			replies:  "<ACK><ACK><ACK><ACK><ACK>",
			sessions: []Session{{Body: recH + recP + recL, Records: lines(recH + recP + recL), Frames: 3}},
		},
		{
			name: "dialect: no trailer, numbers wrap 7, 0, 1",
			input: "<ENQ><STX>7H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>F5" +
				"<STX>0P|1||PID123||Doe^Jane||19800101|F<CR><ETX>E2<STX>1L|1|N<CR><ETX>04<EOT>",
			replies:  "<ACK><ACK><ACK><ACK><ACK>",
			sessions: []Session{{Body: recH + recP + recL, Records: lines(recH + recP + recL), Frames: 3}},
		},
		{
			name:    "dialect: a first frame other than 1 is NAKed only when strict",
			opts:    ReceiverOptions{StrictFrameNumbers: true},
			input:   "<ENQ><STX>0L|1|N<CR><ETX>03<LF><STX>1L|1|N<CR><ETX>04<LF><EOT>",
			replies: "<ACK><NAK><ACK><ACK>",
			sessions: []Session{{
				Body: recL, Records: lines(recL), Frames: 1, NAKs: 1,
			}},
		},
		{
			name:    "adopted frame without ENQ",
			input:   fH + "<EOT>",
			replies: "<ACK><ACK>",
			sessions: []Session{{
				Body: recH, Records: lines(recH), Frames: 1,
				Warnings: []string{"frame received without ENQ: session opened for it"},
			}},
		},
		{
			name:    "bytes below 0x20 dropped, 8-bit bytes mapped to code points",
			input:   "<ENQ><STX>1C|1|caf<xE9><x01><x7F><CR><ETX>40<CR><LF><EOT>",
			replies: "<ACK><ACK><ACK>",
			sessions: []Session{{
				Body: "C|1|caf\u00e9\u007f\n", Records: []string{"C|1|caf\u00e9\u007f"}, Frames: 1,
			}},
		},
		{
			name:    "a record split over ETB frames with no CR joins seamlessly",
			input:   "<ENQ><STX>1R|1|ab<ETB>86<CR><LF><STX>2cd<CR><ETX>09<CR><LF><EOT>",
			replies: "<ACK><ACK><ACK><ACK>",
			sessions: []Session{{
				Body: "R|1|abcd\n", Records: []string{"R|1|abcd"}, Frames: 2,
			}},
		},
		{
			name:     "empty session with stray bytes reports them",
			input:    "<ENQ>xy<EOT>",
			replies:  "<ACK><ACK>",
			warnings: []string{"2 stray bytes between frames ignored"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := feedAll(t, tt.opts, mnemonic(t, tt.input), tt.fail)
			if run.replies != tt.replies {
				t.Errorf("replies = %s, want %s", run.replies, tt.replies)
			}
			if diff := cmp.Diff(tt.sessions, run.sessions); diff != "" {
				t.Errorf("sessions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, run.warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func lines(body string) []string {
	return strings.Split(strings.TrimSuffix(body, "\n"), "\n")
}

func TestReceiverStateDiscard(t *testing.T) {
	var warnings []string
	var delivered int
	st := NewReceiverState(ReceiverOptions{OnWarning: func(w string) { warnings = append(warnings, w) }},
		func(Session) error { delivered++; return nil })
	for _, b := range mnemonic(t, "<ENQ>"+fH+fP) {
		st.Feed(b)
	}
	if !st.InSession() {
		t.Fatal("not in session after ENQ")
	}
	st.Discard("idle")
	if st.InSession() || delivered != 0 {
		t.Fatalf("InSession=%v delivered=%d after Discard", st.InSession(), delivered)
	}
	if diff := cmp.Diff([]string{"session discarded (idle): 2 records not delivered"}, warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	// The next transmission starts fresh: frame 2 is not taken for a duplicate.
	for _, b := range mnemonic(t, "<ENQ>"+fP+"<EOT>") {
		st.Feed(b)
	}
	if delivered != 1 {
		t.Errorf("delivered %d sessions after a fresh transmission, want 1", delivered)
	}
}

type framedCase struct {
	name   string
	raw    []byte
	body   string
	frames int
}

func framedCases(t testing.TB) []framedCase {
	t.Helper()
	var cases []framedCase
	for _, bin := range globTestdata(t, "framed/*.e1381.bin") {
		base := filepath.Base(bin)
		name, _, _ := strings.Cut(base, ".")
		raw := readTestdata(t, "framed/"+base)
		cases = append(cases, framedCase{
			name:   base,
			raw:    raw,
			body:   string(readTestdata(t, "framed/"+name+".body.txt")),
			frames: len(SplitUnits(raw)) - 2,
		})
	}
	return cases
}

// TestReceiverFramedGolden feeds every framed capture byte by byte.
func TestReceiverFramedGolden(t *testing.T) {
	for _, fc := range framedCases(t) {
		for _, silent := range []bool{false, true} {
			run := feedAll(t, ReceiverOptions{SilentEOT: silent}, fc.raw, 0)
			wantACKs := 1 + fc.frames
			if !silent {
				wantACKs++
			}
			if run.replies != strings.Repeat("<ACK>", wantACKs) {
				t.Errorf("%s silent=%v: replies %s, want %d ACKs", fc.name, silent, run.replies, wantACKs)
			}
			if len(run.sessions) != 1 || run.sessions[0].Body != fc.body || run.sessions[0].Frames != fc.frames {
				t.Errorf("%s silent=%v: got %d sessions, want one with the golden body and %d frames", fc.name, silent, len(run.sessions), fc.frames)
			}
		}
	}
}

// serveCollect runs Serve on the server end and collects deliveries.
type served struct {
	mu       sync.Mutex
	sessions []Session
	warnings chan string
	done     chan error
}

func serve(t testing.TB, ctx context.Context, opts ReceiverOptions, conn io.ReadWriter) *served {
	t.Helper()
	s := &served{warnings: make(chan string, 100), done: make(chan error, 1)}
	opts.OnWarning = func(w string) { s.warnings <- w }
	r := NewReceiver(opts)
	go func() {
		s.done <- r.Serve(ctx, conn, func(sess Session) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.sessions = append(s.sessions, sess)
			return nil
		})
	}()
	return s
}

func (s *served) bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []string
	for _, sess := range s.sessions {
		b = append(b, sess.Body)
	}
	return b
}

func (s *served) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// readN reads exactly n bytes from c within a generous bound.
func readN(t testing.TB, c Conn, n int) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d replies: %v (got %s)", n, err, FormatMnemonic(b))
	}
	return b
}

// TestServeChunked writes every framed capture over loopback TCP in random
// chunkings, without waiting for replies.
func TestServeChunked(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, fc := range framedCases(t) {
		for _, maxChunk := range []int{1, 7, 300} {
			client, server := tcpPair(t)
			s := serve(t, context.Background(), ReceiverOptions{}, server)
			replies := make(chan []byte, 1)
			go func() {
				b := make([]byte, fc.frames+2)
				_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, _ := io.ReadFull(client, b)
				replies <- b[:n]
			}()
			for rest := fc.raw; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(maxChunk))
				if _, err := client.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if got := <-replies; !bytes.Equal(got, bytes.Repeat([]byte{ACK}, fc.frames+2)) {
				t.Errorf("%s chunk<=%d: replies %s", fc.name, maxChunk, FormatMnemonic(got))
			}
			client.Close()
			if err := s.wait(t); err != nil {
				t.Errorf("Serve: %v", err)
			}
			if diff := cmp.Diff([]string{fc.body}, s.bodies()); diff != "" {
				t.Errorf("%s chunk<=%d: bodies (-want +got):\n%s", fc.name, maxChunk, diff)
			}
		}
	}
}

// TestServeIdleTimeout lets a session stall past a short idle timer.
func TestServeIdleTimeout(t *testing.T) {
	client, server := tcpPair(t)
	s := serve(t, context.Background(), ReceiverOptions{IdleTimeout: 100 * time.Millisecond}, server)
	if _, err := client.Write(mnemonic(t, "<ENQ>"+fH)); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, 2); !bytes.Equal(got, []byte{ACK, ACK}) {
		t.Fatalf("replies %s", FormatMnemonic(got))
	}
	select {
	case w := <-s.warnings:
		if want := "session discarded (nothing received for 100ms): 1 records not delivered"; w != want {
			t.Fatalf("warning %q, want %q", w, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("idle timer did not discard the session")
	}
	// A fresh session: frame 1 again is new, not a duplicate.
	if _, err := client.Write(mnemonic(t, "<ENQ><STX>1P|1||PID123||Doe^Jane||19800101|F<CR><ETX>E3<CR><LF><EOT>")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, 3); !bytes.Equal(got, []byte{ACK, ACK, ACK}) {
		t.Fatalf("replies %s", FormatMnemonic(got))
	}
	client.Close()
	if err := s.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{recP}, s.bodies()); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
}

func TestServeCancel(t *testing.T) {
	client, server := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := serve(t, ctx, ReceiverOptions{}, server)
	if _, err := client.Write(mnemonic(t, "<ENQ>"+fH)); err != nil {
		t.Fatal(err)
	}
	readN(t, client, 2)
	cancel()
	if err := s.wait(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Serve = %v, want context.Canceled", err)
	}
	if len(s.bodies()) != 0 {
		t.Errorf("delivered %q after cancellation", s.bodies())
	}
}

// TestServeTwoConnections interleaves two transmissions on one Receiver.
func TestServeTwoConnections(t *testing.T) {
	r := NewReceiver(ReceiverOptions{})
	var mu sync.Mutex
	var bodies []string
	deliver := func(s Session) error {
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, s.Body)
		return nil
	}
	var conns [2]Conn
	done := make(chan error, 2)
	for i := range conns {
		client, server := tcpPair(t)
		conns[i] = client
		go func() { done <- r.Serve(context.Background(), server, deliver) }()
	}
	steps := []struct {
		conn int
		unit string
	}{
		{0, "<ENQ>"}, {1, "<ENQ>"}, {0, fH}, {1, "<STX>1C|1|I|other|G<CR><ETX>57<CR><LF>"},
		{0, fP}, {1, "<STX>2L|1|N<CR><ETX>05<CR><LF>"}, {1, "<EOT>"}, {0, fL3}, {0, "<EOT>"},
	}
	for _, st := range steps {
		if _, err := conns[st.conn].Write(mnemonic(t, st.unit)); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, conns[st.conn], 1); got[0] != ACK {
			t.Fatalf("reply to %s on conn %d: %s", st.unit, st.conn, FormatMnemonic(got))
		}
	}
	for _, c := range conns {
		c.(io.Closer).Close()
	}
	for range conns {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	want := []string{"C|1|I|other|G\n" + recL, recH + recP + recL}
	if diff := cmp.Diff(want, bodies); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
}

// pipeRW is a byte stream without deadlines, like a serial port.
type pipeRW struct {
	io.Reader
	io.Writer
}

func TestServeWithoutDeadlines(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := serve(t, context.Background(), ReceiverOptions{IdleTimeout: 50 * time.Millisecond}, pipeRW{inR, outW})
	go func() {
		_, _ = inW.Write(mnemonic(t, "<ENQ>"+fH))
	}()
	got := make([]byte, 2)
	if _, err := io.ReadFull(outR, got); err != nil || !bytes.Equal(got, []byte{ACK, ACK}) {
		t.Fatalf("replies %s, %v", FormatMnemonic(got), err)
	}
	select {
	case w := <-s.warnings:
		if !strings.HasPrefix(w, "session discarded (nothing received for 50ms)") {
			t.Fatalf("warning %q", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("idle timer did not fire without deadlines")
	}
	inW.Close()
	if err := s.wait(t); err != nil {
		t.Errorf("Serve = %v, want nil at end of stream", err)
	}
	if len(s.bodies()) != 0 {
		t.Errorf("delivered %q", s.bodies())
	}
}

type failingWriter struct{ io.Reader }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("line down") }

func TestServeWriteError(t *testing.T) {
	r := NewReceiver(ReceiverOptions{})
	err := r.Serve(context.Background(), failingWriter{bytes.NewReader([]byte{ENQ})}, nil)
	if err == nil || err.Error() != "line down" {
		t.Errorf("Serve = %v, want the write error", err)
	}
}

func FuzzReceiver(f *testing.F) {
	for _, fc := range framedCases(f) {
		if len(fc.raw) < 4096 {
			f.Add(fc.raw)
		}
	}
	f.Add(mnemonic(f, "<ENQ>"+fH+"<ENQ><STX>1TRUNC"+fP+"<EOT><STX>2P|1||PID1<EOT>garbage<STX>1"+strings.Repeat("X", 100)))
	f.Add(mnemonic(f, "<ENQ><STX>1R|1|XXXXXXXXXXXXXXX<CR><ETX>E4<CR><LF><STX>2L|1|N<CR><ETX>05<CR><LF><EOT>"))
	for _, seed := range dialectSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		opts := ReceiverOptions{MaxFrame: 48, MaxSession: 64}
		if len(in) > 0 {
			opts.SilentEOT = in[0]&1 != 0
			opts.StrictFrameNumbers = in[0]&2 != 0
		}
		fail := 0
		st := NewReceiverState(opts, func(s Session) error {
			if s.Body == "" || !utf8.ValidString(s.Body) {
				t.Fatalf("delivered body %q", s.Body)
			}
			for _, r := range s.Records {
				if strings.Contains(r, "\n") {
					t.Fatalf("record %q holds a line break", r)
				}
			}
			if fail++; fail%3 == 0 {
				return errors.New("store down")
			}
			return nil
		})
		for i, b := range in {
			if r := st.Feed(b); r != 0 && r != ACK && r != NAK {
				t.Fatalf("reply %#x", r)
			}
			if len(st.text) >= opts.MaxFrame || len(st.body) > opts.MaxSession+2*opts.MaxFrame {
				t.Fatalf("buffers grew to %d/%d bytes", len(st.text), len(st.body))
			}
			if i%97 == 0 {
				st.Discard("fuzz")
			}
		}
	})
}

// TestReceiverAcceptsFrameStyles feeds what BuildFrames writes in each
// dialect to the default receiver: every frame is acknowledged and the body
// is the records.
func TestReceiverAcceptsFrameStyles(t *testing.T) {
	body := "H|\\^&\nR|1|" + strings.Repeat("X", 40) + "\nL|1|N\n"
	for i, seed := range dialectSeeds() {
		run := feedAll(t, ReceiverOptions{}, seed, 0)
		// ENQ, four 16-character frames of 57 characters, EOT.
		if want := strings.Repeat("<ACK>", 6); run.replies != want {
			t.Errorf("style %d: replies %s, want %s", i, run.replies, want)
		}
		if len(run.sessions) != 1 || run.sessions[0].Body != body || run.sessions[0].Frames != 4 {
			t.Errorf("style %d: sessions %+v", i, run.sessions)
		}
	}
}

// dialectSeeds are transmissions in each frame style, as fuzz seeds.
func dialectSeeds() [][]byte {
	recs := [][]byte{[]byte("H|\\^&"), []byte("R|1|" + strings.Repeat("X", 40)), []byte("L|1|N")}
	var seeds [][]byte
	for _, style := range []FrameStyle{
		{FirstNumber: '0', LowerChecksum: true, Trailer: TrailerLF},
		{FirstNumber: '6', Trailer: TrailerNone},
		{FirstNumber: '7', LowerChecksum: true, Trailer: TrailerNone},
	} {
		frames := BuildFrames(recs, PackStream, 16, style)
		seeds = append(seeds, append(append([]byte{ENQ}, bytes.Join(frames, nil)...), EOT))
	}
	return seeds
}
