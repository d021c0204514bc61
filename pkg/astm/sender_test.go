package astm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// traceBuf collects what a Sender traces.
type traceBuf struct {
	mu   sync.Mutex
	sent []byte
	got  []byte
	log  []string
}

func (tb *traceBuf) trace(dir byte, unit []byte) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if dir == '>' {
		tb.sent = append(tb.sent, unit...)
	} else {
		tb.got = append(tb.got, unit...)
	}
	tb.log = append(tb.log, string(dir)+" "+FormatMnemonic(unit))
}

// TestSenderToReceiver sends every records file in every packing to our own
// receiver: the delivered body is the records, and where a framed golden
// exists the bytes on the wire match it.
func TestSenderToReceiver(t *testing.T) {
	for _, path := range globTestdata(t, "records/*.astm") {
		name := strings.TrimSuffix(filepath.Base(path), ".astm")
		recs := recordLines(t, "records/"+name+".astm")
		for _, packing := range []Packing{PackRecord, PackFramePerRecord, PackStream} {
			t.Run(name+"/"+packing.String(), func(t *testing.T) {
				client, server := tcpPair(t)
				s := serve(t, context.Background(), ReceiverOptions{}, server)
				var tb traceBuf
				sender := NewSender(SenderOptions{Packing: packing, Trace: tb.trace, EOTWait: 2 * time.Second})
				res, err := sender.Send(context.Background(), client, recs)
				if err != nil {
					t.Fatal(err)
				}
				frames := len(BuildFrames(recs, packing, 0, FrameStyle{}))
				if res.Frames != frames || res.NAKs != 0 || res.ENQs != 1 {
					t.Errorf("Result %+v, want %d frames", res, frames)
				}
				// Replies: ACK for ENQ and each frame, and the reference's ACK to EOT.
				if want := bytes.Repeat([]byte{ACK}, frames+2); !bytes.Equal(tb.got, want) {
					t.Errorf("replies %s", FormatMnemonic(tb.got))
				}
				client.Close()
				if err := s.wait(t); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]string{bodyOf(recs)}, s.bodies()); diff != "" {
					t.Errorf("bodies (-want +got):\n%s", diff)
				}
				golden := filepath.Join(testdata, "framed", name+"."+packing.String()+".e1381.bin")
				if want, err := os.ReadFile(golden); err == nil && !bytes.Equal(tb.sent, want) {
					t.Errorf("bytes sent differ from %s", golden)
				}
			})
		}
	}
}

// lis plays a scripted LIS: for each unit the sender writes, it answers
// with the next reply (0: stay silent).
type lis struct {
	t       *testing.T
	conn    Conn
	replies []byte
	units   []string
}

func (l *lis) run(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 1024)
	var pending []byte
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := l.conn.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			units := SplitUnits(pending)
			if len(units) == 0 || !unitComplete(units[0]) {
				break
			}
			l.units = append(l.units, FormatMnemonic(units[0]))
			pending = pending[len(units[0]):]
			if len(l.replies) > 0 {
				r := l.replies[0]
				l.replies = l.replies[1:]
				if r != 0 {
					_, _ = l.conn.Write([]byte{r})
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func unitComplete(u []byte) bool {
	if u[0] != STX {
		return true
	}
	return len(u) >= 2 && u[len(u)-1] == LF
}

func TestSenderBehaviour(t *testing.T) {
	recs := [][]byte{[]byte("H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000"), []byte("L|1|N")}
	const (
		h  = "<STX>1H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>EF<CR><LF>"
		hx = "<STX>1H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000<CR><ETX>F0<CR><LF>"
		l  = "<STX>2L|1|N<CR><ETX>05<CR><LF>"
	)
	short := SenderOptions{EstablishTimeout: 300 * time.Millisecond, FrameTimeout: 300 * time.Millisecond, BusyDelay: -1, ContentionDelay: -1}
	with := func(f func(*SenderOptions)) SenderOptions {
		o := short
		f(&o)
		return o
	}
	tests := []struct {
		name    string
		opts    SenderOptions
		replies string // LIS reply per unit; <NUL> = silence
		units   []string
		wantErr error
		res     Result
	}{
		{
			name:    "interrupt honoured",
			opts:    with(func(o *SenderOptions) { o.HonorInterrupt = true }),
			replies: "<ACK><EOT>",
			units:   []string{"<ENQ>", h, "<EOT>"},
			wantErr: ErrInterrupted,
			res:     Result{Frames: 1, ENQs: 1, Interrupted: true},
		},
		{
			name:    "interrupt on the last frame is just acceptance",
			opts:    with(func(o *SenderOptions) { o.HonorInterrupt = true }),
			replies: "<ACK><ACK><EOT>",
			units:   []string{"<ENQ>", h, l, "<EOT>"},
			res:     Result{Frames: 2, ENQs: 1, Interrupted: true},
		},
		{
			name:    "corrupted first attempt",
			opts:    with(func(o *SenderOptions) { o.Corrupt = func(n int) bool { return n == 1 } }),
			replies: "<ACK><NAK><ACK><ACK>",
			units:   []string{"<ENQ>", hx, h, l, "<EOT>"},
			res:     Result{Frames: 2, NAKs: 1, Retransmissions: 1, ENQs: 1},
		},
		{
			name:    "any other reply counts as NAK",
			opts:    with(func(o *SenderOptions) { o.MaxAttempts = 2 }),
			replies: "<ACK>xy",
			units:   []string{"<ENQ>", h, h, "<EOT>"},
			wantErr: ErrNAKLimit,
			res:     Result{NAKs: 2, Retransmissions: 1, ENQs: 1},
		},
		{
			name:    "busy until the ENQ limit",
			opts:    with(func(o *SenderOptions) { o.MaxENQAttempts = 3 }),
			replies: "<NAK><NAK><NAK>",
			units:   []string{"<ENQ>", "<ENQ>", "<ENQ>"},
			wantErr: ErrBusy,
			res:     Result{ENQs: 3, Busy: 3},
		},
		{
			name:    "contention until the ENQ limit",
			opts:    with(func(o *SenderOptions) { o.MaxENQAttempts = 2 }),
			replies: "<ENQ><ENQ>",
			units:   []string{"<ENQ>", "<ENQ>"},
			wantErr: ErrContention,
			res:     Result{ENQs: 2, Contentions: 2},
		},
		{
			name:    "computer yields on contention",
			opts:    with(func(o *SenderOptions) { o.YieldOnContention = true }),
			replies: "<ENQ>",
			units:   []string{"<ENQ>"},
			wantErr: ErrContention,
			res:     Result{ENQs: 1, Contentions: 1},
		},
		{
			name:    "no reply to ENQ",
			opts:    short,
			replies: "<NUL>",
			units:   []string{"<ENQ>", "<EOT>"},
			wantErr: ErrTimeout,
			res:     Result{ENQs: 1},
		},
		{
			name:    "stray bytes during establishment are ignored",
			opts:    short,
			replies: "z",
			units:   []string{"<ENQ>", "<EOT>"},
			wantErr: ErrTimeout,
			res:     Result{ENQs: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, server := tcpPair(t)
			replies := mnemonic(t, tt.replies)
			peer := &lis{t: t, conn: server, replies: replies}
			done := make(chan struct{})
			go peer.run(done)
			res, err := NewSender(tt.opts).Send(context.Background(), client, recs)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Send error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.res, res); diff != "" {
				t.Errorf("Result (-want +got):\n%s", diff)
			}
			client.Close()
			<-done
			if diff := cmp.Diff(tt.units, peer.units); diff != "" {
				t.Errorf("units sent (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSenderCancel(t *testing.T) {
	client, _ := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	_, err := NewSender(SenderOptions{}).Send(ctx, client, [][]byte{[]byte("L|1|N")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send = %v, want context.Canceled", err)
	}
}

func TestSenderConnectionLost(t *testing.T) {
	client, server := tcpPair(t)
	server.Close()
	_, err := NewSender(SenderOptions{}).Send(context.Background(), client, [][]byte{[]byte("L|1|N")})
	if err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("Send = %v, want a connection error", err)
	}
}

// TestSenderFrameDelay checks that FrameDelay comes before each new frame
// but not before the first one or a retransmission.
func TestSenderFrameDelay(t *testing.T) {
	const delay = 200 * time.Millisecond
	client, server := tcpPair(t)
	peer := &lis{t: t, conn: server, replies: mnemonic(t, "<ACK><NAK><ACK><ACK>")}
	done := make(chan struct{})
	go peer.run(done)
	var sends []time.Time
	trace := func(dir byte, unit []byte) {
		if dir == '>' {
			sends = append(sends, time.Now())
		}
	}
	res, err := NewSender(SenderOptions{FrameDelay: delay, Trace: trace}).Send(context.Background(), client, [][]byte{[]byte("H|\\^&"), []byte("L|1|N")})
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	<-done
	want := []string{"<ENQ>", "<STX>1H|\\^&<CR><ETX>E5<CR><LF>", "<STX>1H|\\^&<CR><ETX>E5<CR><LF>", "<STX>2L|1|N<CR><ETX>05<CR><LF>", "<EOT>"}
	if diff := cmp.Diff(want, peer.units); diff != "" {
		t.Fatalf("units sent (-want +got):\n%s", diff)
	}
	if res.Frames != 2 || res.Retransmissions != 1 {
		t.Errorf("Result %+v", res)
	}
	for i, minGap := range []time.Duration{0, 0, delay, 0} {
		gap := sends[i+1].Sub(sends[i])
		if (minGap == 0 && gap >= delay) || gap < minGap {
			t.Errorf("send %d came %s after the one before; want at least %s, less than %s if no delay", i+2, gap, minGap, delay)
		}
	}
}
