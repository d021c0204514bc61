package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/auth"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

func TestSecondInstanceRefused(t *testing.T) {
	e := newEnv(t, ch{name: "test", address: mllpAddr(freePort(t), "")})
	e.start()
	select {
	case <-e.agent.Ready():
	default:
		t.Error("Ready not closed after Start")
	}
	second := e.newAgent(e.ds.BaseURL())
	err := second.Start(context.Background())
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Start = %v, want a LockedError with our pid", err)
	}
	want := "another medplum-agent is already running with data dir " + e.dataDir + " (pid "
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
	if err := second.Stop(context.Background()); err != nil {
		t.Errorf("Stop of the refused instance: %v", err)
	}
	// The first one is unaffected, and once it stops the dir is free.
	if err := e.agent.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := lockDataDir(e.dataDir)
	if err != nil {
		t.Fatalf("data dir still locked after Stop: %v", err)
	}
	l.release()
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	t.Run("credentials rejected at once", func(t *testing.T) {
		a := e.newAgent(e.ds.BaseURL())
		a.cfg.ClientSecret = "wrong"
		a.creds.ClientSecret = "wrong"
		err := a.Start(context.Background())
		if !auth.IsCredentialsError(err) {
			t.Fatalf("Start = %v, want a credentials error", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the secret: %v", err)
		}
	})
	t.Run("network errors retried until cancelled", func(t *testing.T) {
		a := e.newAgent("http://127.0.0.1:1/")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := a.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Start = %v, want the context's error", err)
		}
		e.waitMainLog(`"msg":"Failed to login"`)
	})
	t.Run("data dir free again", func(t *testing.T) {
		e.start()
	})
}

// Stop lets exchanges in progress finish: the device still gets the answer
// to a message the server is working on, while new intake is refused.
func TestStopDrains(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "test", address: mllpAddr(port, "")})
	// The in-memory path; with the queue, answers still due are recovered
	// at the next start instead (durable_test.go).
	e.setAgent("active", inMemory, ch{name: "test", address: mllpAddr(port, "")})
	e.start()
	bot := e.holdBot()
	d := dial(t, port)
	d.send(adt("1"))
	req := bot.next(t)

	stopped := make(chan error, 1)
	go func() { stopped <- e.agent.Stop(context.Background()) }()
	eventually(t, "draining", e.agent.draining)
	d.send(adt("2")) // not taken any more
	e.sendToAgent(ackResponse(t, req, hl7.AA))
	if got := ackOf(d.recv()); got != "AA 1" {
		t.Errorf("device got %q, want AA 1", got)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("Stop did not return")
	}
	select {
	case m := <-bot.reqs:
		t.Errorf("message taken while stopping: %s", m.Body)
	default:
	}
	if _, err := d.rd.ReadFrame(); err == nil {
		t.Error("connection still open after Stop")
	}
}

func TestOperations(t *testing.T) {
	e := newEnv(t)
	e.start()
	for i := range 12 {
		e.mainLog.Slog().Info("filler", "i", i)
	}

	t.Run("logs", func(t *testing.T) {
		r := e.request(&protocol.Message{Type: protocol.TypeLogsRequest, Limit: json.RawMessage("10")})
		var logs []map[string]any
		if err := json.Unmarshal(r.Logs, &logs); err != nil {
			t.Fatal(err)
		}
		if r.Type != protocol.TypeLogsResponse || r.StatusCode != 200 || len(logs) != 10 || r.HasMore == nil || !*r.HasMore || r.NextBefore == "" {
			t.Errorf("logs response %s %d, %d entries, hasMore %v, nextBefore %q", r.Type, r.StatusCode, len(logs), r.HasMore, r.NextBefore)
		}
		for _, limit := range []string{`"invalid_limit"`, "-1", "200000"} {
			r := e.request(&protocol.Message{Type: protocol.TypeLogsRequest, Limit: json.RawMessage(limit)})
			want := "Invalid limit: " + strings.Trim(limit, `"`) + " - must be a valid positive integer less than or equal to 1000"
			if r.Type != protocol.TypeError || r.Body != want {
				t.Errorf("limit %s: %s %q", limit, r.Type, r.Body)
			}
		}
	})

	t.Run("stats", func(t *testing.T) {
		r := e.request(&protocol.Message{Type: protocol.TypeStatsRequest})
		var s map[string]any
		if err := json.Unmarshal(r.Stats, &s); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range s {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := []string{"byteStreamLinksOpen", "channelStats", "clientStats", "durableQueue", "hl7ClientCount", "hl7ConnectionsOpen",
			"hl7QueueDepth", "live", "outstandingHeartbeats", "ping", "webSocketQueueDepth"}
		if r.Type != protocol.TypeStatsResponse || r.StatusCode != 200 {
			t.Errorf("stats answered %s %d", r.Type, r.StatusCode)
		}
		if diff := cmp.Diff(want, keys); diff != "" {
			t.Errorf("stats keys (-want +got):\n%s", diff)
		}
		eventually(t, "a heartbeat round trip", func() bool { return e.stats().Ping >= 0 })
		if s := e.stats(); !s.Live {
			t.Error("stats.live = false")
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		r := e.request(&protocol.Message{Type: protocol.TypeUpgradeRequest, Version: "9.9.9"})
		if r.Type != protocol.TypeError || !strings.HasPrefix(r.Body, "Auto-upgrading is not available") {
			t.Errorf("upgrade answered %s %q", r.Type, r.Body)
		}
	})

	t.Run("server transmit request", func(t *testing.T) {
		r := e.request(&protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:1",
			ContentType: protocol.ContentTypeHL7, Body: adt("1")})
		if r.Type != protocol.TypeTransmitResponse || r.StatusCode != 400 || r.ContentType != protocol.ContentTypeText || r.Remote != "mllp://127.0.0.1:1" {
			t.Errorf("answered %+v", r)
		}
	})
}

func TestLogStatsFreqSecs(t *testing.T) {
	e := newEnv(t)
	e.setAgent("active", []fhir.AgentSetting{intSetting("logStatsFreqSecs", 1)})
	e.start()
	e.waitMainLog(`"msg":"Agent stats","stats":{"hl7ConnectionsOpen":0`)
}
