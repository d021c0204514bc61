package agent

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/devserver"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// durableEnv starts an agent with the durable queue (the default) and one
// HL7 channel "q" with the given URL query.
func durableEnv(t *testing.T, query string, responseTimeout time.Duration) (*env, int) {
	t.Helper()
	port := freePort(t)
	e := newEnv(t, ch{name: "q", address: mllpAddr(port, query)})
	e.agent.opt.QueueResponseTimeout = responseTimeout
	e.start()
	return e, port
}

// restart stops the agent and starts a new one on the same data dir.
func (e *env) restart() {
	e.t.Helper()
	if err := e.agent.Stop(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	timeout := e.agent.opt.QueueResponseTimeout
	e.agent = e.newAgent(e.ds.BaseURL())
	e.agent.opt.QueueResponseTimeout = timeout
	e.start()
}

// rows lists the queue's rows in id order.
func (e *env) rows() []spool.Row {
	e.t.Helper()
	q := e.agent.q.Load()
	if q == nil {
		e.t.Fatal("queue not open")
	}
	rows, err := q.store.List(context.Background(), spool.Filter{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	// List is newest first.
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows
}

// rowSummary is what the tests assert on a row.
type rowSummary struct {
	ControlID string
	State     spool.State
	Code      string
	Attempt   int
}

func (e *env) summaries() []rowSummary {
	var out []rowSummary
	for _, r := range e.rows() {
		out = append(out, rowSummary{r.ControlID, r.State, r.ErrorCode, r.Attempt})
	}
	return out
}

func (e *env) waitRows(want []rowSummary) {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := e.summaries()
		if cmp.Equal(want, got) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("queue rows (-want +got):\n%s", cmp.Diff(want, got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answer builds the server's answer to req: status, and an ACK body of
// code with MSA-3 "bot" (or a JSON error when code is empty).
func answer(t *testing.T, req *protocol.Message, status int, code hl7.AckCode) *protocol.Message {
	t.Helper()
	if code == "" {
		r := ackResponse(t, req, hl7.AA)
		r.StatusCode, r.ContentType, r.Body = status, protocol.ContentTypeJSON, `{"error":"failed"}`
		return r
	}
	r := botAck(t, req, code)
	r.StatusCode = status
	return r
}

var wireCallback = regexp.MustCompile(`^Agent/` + testAgentID + `-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}#(\d+)$`)

// Scenarios 53 and 55: callbacks carry the attempt; the server's answers
// are classified per retry mode; what is owed is relayed to the device.
func TestDurableSettlement(t *testing.T) {
	type reply struct {
		status int
		code   hl7.AckCode // "" for a JSON error body
	}
	fast := "&autoRetryBaseDelayMs=1&autoRetryMaxDelayMs=1"
	tests := []struct {
		name    string
		query   string
		replies []reply // one per attempt
		state   spool.State
		code    string
		device  []string // what the device reads after the CA
	}{
		{"normal 503 then 200", "retryMode=normal" + fast, []reply{{503, ""}, {200, hl7.AA}}, spool.StateProcessed, "", []string{"AA M1"}},
		{"normal 400", "retryMode=normal" + fast, []reply{{400, ""}}, spool.StateRejected, spool.CodeServerStatus, nil},
		{"guaranteed AE then AA", fast, []reply{{200, hl7.AE}, {200, hl7.AA}}, spool.StateProcessed, "", []string{"AA M1"}},
		{"guaranteed AR", fast, []reply{{200, hl7.AR}}, spool.StateRejected, spool.CodeNegativeAck, []string{"AR M1"}},
		{"none 503", "retryMode=none", []reply{{503, ""}}, spool.StateFailed, spool.CodeServerStatus, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, port := durableEnv(t, "enhanced=true&"+tt.query, 0)
			bot := e.holdBot()
			d := dial(t, port)
			d.send(adt("M1"))
			if got := ackOf(d.recv()); got != "CA M1" {
				t.Fatalf("commit ACK %q, want CA M1", got)
			}
			var prefix string
			for i, r := range tt.replies {
				req := bot.next(t)
				m := wireCallback.FindStringSubmatch(req.Callback)
				if m == nil || m[1] != fmt.Sprint(i+1) {
					t.Fatalf("attempt %d callback %q", i+1, req.Callback)
				}
				if p := strings.TrimSuffix(req.Callback, "#"+m[1]); prefix == "" {
					prefix = p
				} else if p != prefix {
					t.Errorf("attempt %d callback %q, want prefix %q", i+1, req.Callback, prefix)
				}
				e.sendToAgent(answer(t, req, r.status, r.code))
			}
			e.waitRows([]rowSummary{{"M1", tt.state, tt.code, len(tt.replies)}})
			// A marker message proves nothing else was relayed before it.
			d.send(adt("END"))
			e.sendToAgent(answer(t, bot.next(t), 200, hl7.AA))
			got := []string{}
			for {
				a := ackOf(d.recv())
				if a == "AA END" {
					break
				}
				if a != "CA END" {
					got = append(got, a)
				}
			}
			if diff := cmp.Diff(append([]string{}, tt.device...), got); diff != "" {
				t.Errorf("device received (-want +got):\n%s", diff)
			}
			select {
			case m := <-bot.reqs:
				t.Errorf("extra transmit %s", m.Callback)
			default:
			}
		})
	}
}

// Scenario 54: retransmissions are answered again without a second
// transmit; a reused control id is refused with a reason.
func TestDurableDuplicates(t *testing.T) {
	other := strings.Replace(adt("M1"), "DOE^JOHN", "ROE^JANE", 1)
	tests := []struct {
		name    string
		query   string
		settled bool   // the first message was answered before the repeat
		repeat  string // the second message
		want    string // the device's answer to it, "CODE id reason"
		rows    []spool.State
	}{
		{"identical, settled", "enhanced=true", true, adt("M1"), "AA M1 bot", []spool.State{spool.StateProcessed}},
		{"identical, in flight", "enhanced=true", false, adt("M1"), "CA M1 Commit Accept", []spool.State{spool.StateInflight}},
		{"different content", "enhanced=true", true, other, "CR M1 " + spool.ReasonDuplicate,
			[]spool.State{spool.StateProcessed, spool.StateNacked}},
		{"different content, AA mode", "enhanced=aa", true, other, "AR M1 " + spool.ReasonDuplicate,
			[]spool.State{spool.StateProcessed, spool.StateNacked}},
		{"reject identical", "enhanced=true&duplicateBehavior=reject", true, adt("M1"), "CR M1 " + spool.ReasonDuplicate,
			[]spool.State{spool.StateProcessed, spool.StateNacked}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, port := durableEnv(t, tt.query, 0)
			bot := e.holdBot()
			d := dial(t, port)
			d.send(adt("M1"))
			d.recv() // the commit ACK
			req := bot.next(t)
			if tt.settled {
				e.sendToAgent(answer(t, req, 200, hl7.AA))
				if strings.Contains(tt.query, "enhanced=true") {
					d.recv() // the Bot's AA
				}
				eventually(t, "settled", func() bool { return e.rows()[0].State == spool.StateProcessed })
			} else {
				eventually(t, "in flight", func() bool { return e.rows()[0].State == spool.StateInflight })
			}
			d.send(tt.repeat)
			m := d.recv()
			if got := ackOf(m) + " " + m.Get("MSA-3"); got != tt.want {
				t.Errorf("device got %q, want %q", got, tt.want)
			}
			var states []spool.State
			for _, r := range e.rows() {
				states = append(states, r.State)
			}
			if diff := cmp.Diff(tt.rows, states); diff != "" {
				t.Errorf("row states (-want +got):\n%s", diff)
			}
			select {
			case m := <-bot.reqs:
				t.Errorf("retransmission reached the server: %s", m.Callback)
			default:
			}
		})
	}
}

// Scenario 57: a late answer to the current attempt settles the row; one
// to a superseded attempt is dropped.
func TestDurableLateResponse(t *testing.T) {
	t.Run("current attempt", func(t *testing.T) {
		e, port := durableEnv(t, "enhanced=true&autoRetryBaseDelayMs=600000&autoRetryMaxDelayMs=600000", 100*time.Millisecond)
		bot := e.holdBot()
		d := dial(t, port)
		d.send(adt("M1"))
		d.recv()
		req := bot.next(t)
		e.waitRows([]rowSummary{{"M1", spool.StateQueued, spool.CodeResponseTimeout, 1}})
		e.sendToAgent(answer(t, req, 200, hl7.AA))
		e.waitRows([]rowSummary{{"M1", spool.StateProcessed, "", 1}})
		if got := ackOf(d.recv()); got != "AA M1" {
			t.Errorf("device got %q", got)
		}
	})
	t.Run("superseded attempt", func(t *testing.T) {
		e, port := durableEnv(t, "enhanced=true&autoRetryBaseDelayMs=1&autoRetryMaxDelayMs=1", 100*time.Millisecond)
		bot := e.holdBot()
		d := dial(t, port)
		d.send(adt("M1"))
		d.recv()
		first := bot.next(t)
		second := bot.next(t) // after the first timed out
		e.sendToAgent(answer(t, first, 200, hl7.AR))
		e.sendToAgent(answer(t, second, 200, hl7.AA))
		if got := ackOf(d.recv()); got != "AA M1" {
			t.Errorf("device got %q, want AA M1 (the AR of attempt 1 dropped)", got)
		}
		if r := e.rows()[0]; r.State != spool.StateProcessed || r.Attempt < 2 {
			t.Errorf("row %s attempt %d", r.State, r.Attempt)
		}
	})
}

// Scenarios 52 and 53: a message in flight when the agent stops is sent
// again as attempt 2 in guaranteed mode, and fails as interrupted in normal
// mode; a CA'd message is never lost.
func TestDurableRestart(t *testing.T) {
	tests := []struct {
		query string
		want  rowSummary
		again bool
	}{
		{"enhanced=true", rowSummary{"M1", spool.StateProcessed, "", 2}, true},
		{"enhanced=true&retryMode=normal", rowSummary{"M1", spool.StateFailed, spool.CodeInterrupted, 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e, port := durableEnv(t, tt.query, 0)
			bot := e.holdBot()
			d := dial(t, port)
			d.send(adt("M1"))
			if got := ackOf(d.recv()); got != "CA M1" {
				t.Fatalf("got %q", got)
			}
			bot.next(t) // in flight, never answered
			e.restart()
			if tt.again {
				req := bot.next(t)
				if m := wireCallback.FindStringSubmatch(req.Callback); m == nil || m[1] != "2" {
					t.Errorf("resent with callback %q, want attempt 2", req.Callback)
				}
				e.sendToAgent(answer(t, req, 200, hl7.AA))
			}
			e.waitRows([]rowSummary{tt.want})
		})
	}
}

// Scenario 58: MSH-13 numbering continues across restarts and duplicates
// do not consume numbers.
func TestDurableSeqNo(t *testing.T) {
	e, port := durableEnv(t, "enhanced=true&assignSeqNo=true", 0)
	tr := e.recordTransmits()
	d := dial(t, port)
	for _, id := range []string{"M0", "M1", "M1"} {
		d.send(adt(id))
		d.recv()
	}
	tr.wait(t, 2)
	e.restart()
	d = dial(t, port)
	d.send(adt("M2"))
	d.recv()
	var got []string
	for _, m := range tr.wait(t, 3) {
		msg, err := hl7.Parse(m.Body)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msg.ControlID()+"="+msg.Get("MSH-13"))
	}
	if diff := cmp.Diff([]string{"M0=0", "M1=1", "M2=2"}, got); diff != "" {
		t.Errorf("sequence numbers (-want +got):\n%s", diff)
	}
}

// Scenario 56: with the server down, messages are still committed and
// acknowledged, and reach the server in order once it is back; stats show
// the queue.
func TestDurableServerDown(t *testing.T) {
	e, port := durableEnv(t, "enhanced=true", 0)
	addr := strings.TrimSuffix(strings.TrimPrefix(e.ds.BaseURL(), "http://"), "/")
	e.ds.Close()
	d := dial(t, port)
	var want []string
	for i := range 5 {
		id := fmt.Sprint("M", i)
		d.send(adt(id))
		if got := ackOf(d.recv()); got != "CA "+id {
			t.Fatalf("got %q, want CA %s", got, id)
		}
		want = append(want, id)
	}
	cfg := devserver.DefaultConfig()
	cfg.Agents[0].Channels = nil
	ds, err := devserver.New(devserver.Options{Listen: addr, Config: cfg, HeartbeatInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	e.ds = ds
	e.setAgent("active", nil, ch{name: "q", address: mllpAddr(port, "enhanced=true")})
	tr := e.recordTransmits()
	var got []string
	for _, m := range tr.wait(t, 5) {
		msg, _ := hl7.Parse(m.Body)
		got = append(got, msg.ControlID())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order at the server (-want +got):\n%s", diff)
	}
	e.waitConnected()
	eventually(t, "all processed", func() bool {
		s := e.stats().DurableQueue
		return s != nil && s.Enabled && s.CountsByState.Processed == 5 && len(s.ChannelDepth) == 0
	})
}

func TestParseQueueSettings(t *testing.T) {
	tests := []struct {
		name     string
		list     []fhir.AgentSetting
		want     queueSettings
		warnings int
	}{
		{name: "defaults", want: queueSettings{enabled: true, retry: unsetRetry()}},
		{
			name: "all set",
			list: []fhir.AgentSetting{
				boolSetting("durableQueue", false), stringSetting("queueDbPath", "/q.sqlite"),
				intSetting("queueRetentionDays", 2), intSetting("queueRetentionMaxMb", 3),
				intSetting("queueErroredRetentionDays", 4), intSetting("queueSweepIntervalSecs", 5),
				stringSetting("channelRetryMode", "normal"), intSetting("channelAutoRetryBaseDelayMs", 10),
				intSetting("channelAutoRetryMaxDelayMs", 20), intSetting("channelAutoRetryMaxAttempts", 0),
				decimalSetting("channelAutoRetryBackoffMultiplier", 1.5), stringSetting("duplicateBehavior", "reject"),
				intSetting("queueMaxInFlight", 1),
			},
			want: queueSettings{dbPath: "/q.sqlite", maxInFlight: 1,
				retention: spool.RetentionSettings{ProcessedMaxAge: 48 * time.Hour, MaxBytes: 3 << 20,
					ErroredMaxAge: 96 * time.Hour, SweepInterval: 5 * time.Second},
				retry:      retryConfig{mode: spool.RetryNormal, baseMs: 10, maxMs: 20, maxAttempts: 0, multiplier: 1.5},
				duplicates: spool.DuplicatesReject},
		},
		{
			name: "invalid",
			list: []fhir.AgentSetting{stringSetting("durableQueue", "yes"), stringSetting("channelRetryMode", "always"),
				intSetting("channelAutoRetryBaseDelayMs", 100), intSetting("channelAutoRetryMaxDelayMs", 10),
				stringSetting("duplicateBehavior", "x"), intSetting("queueMaxInFlight", 5000)},
			want:     queueSettings{enabled: true, retry: retryConfig{baseMs: 100, maxMs: 10, maxAttempts: -1}},
			warnings: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, issues := parseSettings(tt.list)
			if diff := cmp.Diff(tt.want, s.queue, cmp.AllowUnexported(queueSettings{}, retryConfig{})); diff != "" {
				t.Errorf("queue settings (-want +got):\n%s", diff)
			}
			if len(issues) != tt.warnings {
				t.Errorf("issues %v, want %d", issues, tt.warnings)
			}
		})
	}
}

// Retry policies layer URL parameters over agent settings over defaults.
func TestRetryPolicyLayers(t *testing.T) {
	agentWide := retryConfig{mode: spool.RetryNormal, baseMs: 50, maxMs: -1, maxAttempts: -1}
	tests := []struct {
		query string
		want  spool.RetryPolicy
	}{
		{"", spool.RetryPolicy{Mode: spool.RetryNormal, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Minute, Multiplier: 2, MaxAttempts: 10}},
		{"retryMode=guaranteed&autoRetryMaxAttempts=3&autoRetryBackoffMultiplier=3",
			spool.RetryPolicy{Mode: spool.RetryGuaranteed, BaseDelay: 50 * time.Millisecond, MaxDelay: time.Minute, Multiplier: 3, MaxAttempts: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			cp, issues := parseChannelQueueParams(q)
			if len(issues) > 0 {
				t.Errorf("issues %v", issues)
			}
			if diff := cmp.Diff(tt.want, cp.retry.over(agentWide).policy()); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
		})
	}
}
