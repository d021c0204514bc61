package spool

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// clock is a manual clock shared by a Store and its Dispatcher.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const testAgent = "agent-1"

// openStore opens a store in a temporary directory; it is closed with the test.
func openStore(t testing.TB, c *clock, mod ...func(*Options)) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), DefaultFileName), c, mod...)
}

func openAt(t testing.TB, path string, c *clock, mod ...func(*Options)) *Store {
	t.Helper()
	opt := Options{Path: path, AgentID: testAgent, Now: c.Now}
	for _, m := range mod {
		m(&opt)
	}
	s, err := Open(opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func hl7Message(controlID string) string {
	return "MSH|^~\\&|DEV|FAC|MEDPLUM|FAC|20250301120000||ADT^A01|" + controlID + "|P|2.5\rPID|1||12345"
}

func ackBody(code, controlID string) string {
	return "MSH|^~\\&|MEDPLUM|FAC|DEV|FAC|20250301120001||ACK|A" + controlID + "|P|2.5\rMSA|" + code + "|" + controlID + "|"
}

func hl7Intake(channel, controlID string, mode RetryMode) Intake {
	body := hl7Message(controlID)
	return Intake{
		Kind: KindHL7, Channel: channel, Remote: "10.0.0.5:51234", ContentType: protocol.ContentTypeHL7,
		ControlID: controlID, MsgType: "ADT^A01", Original: []byte(body), Body: body,
		Policy: DefaultRetryPolicy(mode),
	}
}

func mustIntake(t testing.TB, s *Store, in Intake) IntakeResult {
	t.Helper()
	res, err := s.Intake(context.Background(), in)
	if err != nil {
		t.Fatalf("Intake(%s): %v", in.ControlID, err)
	}
	return res
}

func mustGet(t testing.TB, s *Store, id int64) Row {
	t.Helper()
	r, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return r
}

// eventually polls cond for up to 10 s; it bounds waits on goroutines, it
// does not measure time.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fakeLink records what the dispatcher enqueues.
type fakeLink struct {
	mu     sync.Mutex
	live   bool
	err    error
	queued chan *protocol.Message
}

func newFakeLink(live bool) *fakeLink {
	return &fakeLink{live: live, queued: make(chan *protocol.Message, 100)}
}

func (l *fakeLink) Live() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

func (l *fakeLink) setLive(v bool) {
	l.mu.Lock()
	l.live = v
	l.mu.Unlock()
}

func (l *fakeLink) Enqueue(m *protocol.Message) error {
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	l.queued <- m
	return nil
}

// next returns the next enqueued message.
func (l *fakeLink) next(t testing.TB) *protocol.Message {
	t.Helper()
	select {
	case m := <-l.queued:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a transmit request")
		return nil
	}
}

// none asserts nothing is waiting in the link right now.
func (l *fakeLink) none(t testing.TB) {
	t.Helper()
	select {
	case m := <-l.queued:
		t.Fatalf("unexpected transmit request %s", m.Callback)
	default:
	}
}

// settledLog collects OnSettled calls.
type settledLog struct {
	mu  sync.Mutex
	got []Settled
	ack AckOutcome
}

func (l *settledLog) record(s Settled) AckOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, s)
	if l.ack == "" {
		return AckDelivered
	}
	return l.ack
}

func (l *settledLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.got)
}

func (l *settledLog) at(i int) Settled {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[i]
}

func response(req *protocol.Message, status int, body string) *protocol.Message {
	return &protocol.Message{Type: protocol.TypeTransmitResponse, Channel: req.Channel, Remote: req.Remote,
		ContentType: protocol.ContentTypeHL7, StatusCode: status, Body: body, Callback: req.Callback}
}

func rowState(t testing.TB, s *Store, id int64) State { t.Helper(); return mustGet(t, s, id).State }

func waitState(t testing.TB, s *Store, id int64, want State) {
	t.Helper()
	eventually(t, fmt.Sprintf("row %d to be %s", id, want), func() bool {
		r, err := s.Get(context.Background(), id)
		return err == nil && r.State == want
	})
}
