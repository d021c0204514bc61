package mllp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
)

func ackText(id string, code hl7.AckCode) string {
	return "MSH|^~\\&|RECV|FAC|SEND|FAC|20240102030405||ACK^A01^ACK|A" + id + "|P|2.5.1\rMSA|" + string(code) + "|" + id
}

// fakePeer accepts one connection on loopback and runs script on it. Errors
// from the script fail the test.
func fakePeer(t *testing.T, script func(p *peer) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(testDeadline))
		if err := script(&peer{Conn: nc, r: NewReader(nc, 0)}); err != nil {
			t.Errorf("peer: %v", err)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// readIDs reads n frames and returns their control ids.
func (p *peer) readIDs(n int) ([]string, error) {
	ids := make([]string, 0, n)
	for range n {
		b, err := p.r.ReadFrame()
		if err != nil {
			return ids, err
		}
		m, err := hl7.Parse(string(b))
		if err != nil {
			return ids, err
		}
		ids = append(ids, m.ControlID())
	}
	return ids, nil
}

func dialClient(t *testing.T, addr string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	c, err := Dial(ctx, addr, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-c.Done()
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

func TestClientReturnAck(t *testing.T) {
	tests := []struct {
		name        string
		mode        ReturnAck
		replies     []hl7.AckCode
		want        hl7.AckCode
		wantSkipped int
	}{
		{"first AA", ReturnAckFirst, []hl7.AckCode{hl7.AA}, hl7.AA, 0},
		{"first CA", ReturnAckFirst, []hl7.AckCode{hl7.CA, hl7.AA}, hl7.CA, 0},
		{"first AE", ReturnAckFirst, []hl7.AckCode{hl7.AE}, hl7.AE, 0},
		{"application skips CA", ReturnAckApplication, []hl7.AckCode{hl7.CA, hl7.AA}, hl7.AA, 1},
		{"application AR after CA", ReturnAckApplication, []hl7.AckCode{hl7.CA, hl7.AR}, hl7.AR, 1},
		{"application resolves on CE", ReturnAckApplication, []hl7.AckCode{hl7.CE}, hl7.CE, 0},
		{"application resolves on CR", ReturnAckApplication, []hl7.AckCode{hl7.CR}, hl7.CR, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakePeer(t, func(p *peer) error {
				ids, err := p.readIDs(1)
				if err != nil {
					return err
				}
				var out strings.Builder
				for _, code := range tt.replies {
					out.WriteString(frame(ackText(ids[0], code)))
				}
				_, err = io.WriteString(p, out.String())
				return err
			})
			c := dialClient(t, addr)
			var mu sync.Mutex
			skipped := 0
			c.OnCommitAck(func(m *hl7.Message) {
				mu.Lock()
				skipped++
				mu.Unlock()
			})
			ack, err := c.SendAndWait(testCtx(t), mustParse(t, msgText("M1")), tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			if got := hl7.AckCodeOf(ack); got != tt.want {
				t.Errorf("resolved on %s, want %s", got, tt.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if skipped != tt.wantSkipped {
				t.Errorf("OnCommitAck called %d times, want %d", skipped, tt.wantSkipped)
			}
		})
	}
}

func TestClientPipelinedOutOfOrder(t *testing.T) {
	const n = 100
	addr := fakePeer(t, func(p *peer) error {
		ids, err := p.readIDs(n)
		if err != nil {
			return err
		}
		var out strings.Builder
		for i := len(ids) - 1; i >= 0; i-- {
			out.WriteString(frame(ackText(ids[i], hl7.AA)))
		}
		_, err = io.WriteString(p, out.String())
		return err
	})
	c := dialClient(t, addr)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("P%03d", i)
		m := mustParse(t, msgText(id))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack, err := c.SendAndWait(ctx, m, ReturnAckFirst)
			if err != nil {
				errs <- err
				return
			}
			if got := ack.Get("MSA-2"); got != id {
				errs <- fmt.Errorf("call %s resolved with the ACK for %s", id, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClientPeerClosesMidWait(t *testing.T) {
	const n = 3
	addr := fakePeer(t, func(p *peer) error {
		_, err := p.readIDs(n)
		return err // returning closes the connection without ACKs
	})
	c := dialClient(t, addr)
	ctx := testCtx(t)
	errs := make(chan error, n)
	for i := range n {
		m := mustParse(t, msgText(fmt.Sprint("X", i)))
		go func() {
			_, err := c.SendAndWait(ctx, m, ReturnAckFirst)
			errs <- err
		}()
	}
	for range n {
		err := <-errs
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pending call failed with %v, want ErrClosed", err)
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("error %v does not carry the cause", err)
		}
	}
	<-c.Done()
	if _, err := c.SendAndWait(ctx, mustParse(t, msgText("late")), ReturnAckFirst); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAndWait after close = %v, want ErrClosed", err)
	}
}

func TestClientClose(t *testing.T) {
	received := make(chan struct{})
	addr := fakePeer(t, func(p *peer) error {
		_, err := p.readIDs(1)
		close(received)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, p) // until the client closes
		return err
	})
	c := dialClient(t, addr)
	errc := make(chan error, 1)
	m := mustParse(t, msgText("1"))
	ctx := testCtx(t)
	go func() {
		_, err := c.SendAndWait(ctx, m, ReturnAckFirst)
		errc <- err
	}()
	<-received
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending call after Close: %v", err)
	}
	<-c.Done()
}

func TestClientContextDeadline(t *testing.T) {
	sendLate := make(chan string)
	addr := fakePeer(t, func(p *peer) error {
		ids, err := p.readIDs(1)
		if err != nil {
			return err
		}
		sendLate <- ids[0]
		<-sendLate
		_, err = io.WriteString(p, frame(ackText(ids[0], hl7.AA)))
		return err
	})
	c := dialClient(t, addr)
	unmatched := make(chan string, 1)
	c.OnUnmatched(func(m *hl7.Message) { unmatched <- m.Get("MSA-2") })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.SendAndWait(ctx, mustParse(t, msgText("T1")), ReturnAckFirst)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	<-sendLate
	sendLate <- ""
	if got := <-unmatched; got != "T1" {
		t.Errorf("late ACK reported as unmatched for %q, want T1", got)
	}
}

// A peer that stops reading must not hold SendAndWait past its deadline.
func TestClientContextDeadlineDuringWrite(t *testing.T) {
	stop := make(chan struct{})
	addr := fakePeer(t, func(p *peer) error {
		p.Conn.(*net.TCPConn).SetReadBuffer(4096)
		<-stop // never read
		return nil
	})
	c := dialClient(t, addr)
	defer close(stop)
	c.conn.nc.(*net.TCPConn).SetWriteBuffer(4096)
	big := mustParse(t, msgText("W1")+"\rNTE|1||"+strings.Repeat("x", 4<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.SendAndWait(ctx, big, ReturnAckFirst)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrClosed", err)
	}
	<-c.Done()
}

func TestClientRejectsBadCalls(t *testing.T) {
	firstSent := make(chan struct{})
	answer := make(chan struct{})
	addr := fakePeer(t, func(p *peer) error {
		ids, err := p.readIDs(1)
		if err != nil {
			return err
		}
		close(firstSent)
		<-answer
		if _, err := io.WriteString(p, frame(ackText(ids[0], hl7.AA))); err != nil {
			return err
		}
		if _, err := p.r.ReadFrame(); err == nil {
			return errors.New("a refused message reached the wire")
		}
		return nil
	})
	c := dialClient(t, addr)
	ctx := testCtx(t)
	first := make(chan error, 1)
	m := mustParse(t, msgText("D1"))
	go func() {
		_, err := c.SendAndWait(ctx, m, ReturnAckFirst)
		first <- err
	}()
	<-firstSent

	tests := []struct {
		name string
		msg  string
		want error
	}{
		{"duplicate pending control id", msgText("D1"), ErrDuplicateControlID},
		{"missing MSH-10", "MSH|^~\\&|A|B|C|D|20240102||ADT^A01||P|2.5.1\rPID|1", ErrMissingControlID},
	}
	for _, tt := range tests {
		if _, err := c.SendAndWait(ctx, mustParse(t, tt.msg), ReturnAckFirst); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	close(answer)
	if err := <-first; err != nil {
		t.Errorf("the original call failed: %v", err)
	}
}

func TestClientHooks(t *testing.T) {
	addr := fakePeer(t, func(p *peer) error {
		ids, err := p.readIDs(1)
		if err != nil {
			return err
		}
		_, err = io.WriteString(p, frame(ackText("nobody", hl7.AA))+
			frame(msgText("not-an-ack"))+
			frame("garbage")+
			frame(ackText("bad\xff", hl7.AA))+
			frame(ackText(ids[0], hl7.AA)))
		return err
	})
	c := dialClient(t, addr)
	var mu sync.Mutex
	var unmatched, bad []string
	c.OnUnmatched(func(m *hl7.Message) {
		mu.Lock()
		unmatched = append(unmatched, m.ControlID())
		mu.Unlock()
	})
	c.OnBadFrame(func(payload []byte, err error) {
		mu.Lock()
		bad = append(bad, string(payload))
		mu.Unlock()
	})
	if _, err := c.SendAndWait(testCtx(t), mustParse(t, msgText("H1")), ReturnAckFirst); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"Anobody", "not-an-ack"}, unmatched); diff != "" {
		t.Errorf("unmatched (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"garbage", ackText("bad\xff", hl7.AA)}, bad); diff != "" {
		t.Errorf("bad frames (-want +got):\n%s", diff)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	ctx := testCtx(t)

	_, err = Dial(ctx, closedAddr, ClientOptions{})
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Dial to a closed port = %v, want *net.OpError with ECONNREFUSED", err)
	}
	if _, err := Dial(ctx, closedAddr, ClientOptions{Encoding: "klingon"}); err == nil {
		t.Error("Dial accepted an unknown encoding")
	}
}

func TestParseReturnAck(t *testing.T) {
	tests := []struct {
		in      string
		want    ReturnAck
		wantErr string
	}{
		{"first", ReturnAckFirst, ""},
		{"FIRST", ReturnAckFirst, ""},
		{"Application", ReturnAckApplication, ""},
		{"", 0, "Invalid value for returnAck; expected: 'first' or 'application', received: "},
		{"last", 0, "Invalid value for returnAck; expected: 'first' or 'application', received: last"},
	}
	for _, tt := range tests {
		got, err := ParseReturnAck(tt.in)
		var errText string
		if err != nil {
			errText = err.Error()
		}
		if got != tt.want || errText != tt.wantErr {
			t.Errorf("ParseReturnAck(%q) = %v, %q; want %v, %q", tt.in, got, errText, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != strings.ToLower(tt.in) {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	if diff := cmp.Diff("ReturnAck(7)", ReturnAck(7).String()); diff != "" {
		t.Error(diff)
	}
}
