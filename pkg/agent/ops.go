package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/agent/rtt"
	"github.com/medplum-agent/medplum-agent/pkg/logging"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
	"github.com/medplum-agent/medplum-agent/pkg/upgrade"
)

// upgradeTimeout bounds one self-upgrade: the manifest, the download and the
// swap (the download has its own limits inside).
const upgradeTimeout = 15 * time.Minute

// replyUpgrade handles agent:upgrade:request (§5.2) on every platform:
// resolve the release, then download, verify and swap the executable and
// restart. The new process confirms to the server from upgrade.json; this
// one answers only refusals and failures (nothing was changed then).
func (a *Agent) replyUpgrade(m *protocol.Message) {
	fail := func(text string) { a.sendControl(protocol.ErrorMessage(m.Callback, text)) }
	if a.opt.UpgradeRestart == nil {
		fail("Auto-upgrading is not available: this agent cannot restart itself here (run it as a service)")
		return
	}
	if !a.upgrading.CompareAndSwap(false, true) && !m.Force {
		fail("Pending upgrade is already in progress")
		return
	}
	defer a.upgrading.Store(false)
	ctx, cancel := context.WithTimeout(a.ctx, upgradeTimeout)
	defer cancel()
	opts := upgrade.Options{
		App:            "medplum-agent",
		CurrentVersion: a.opt.Version,
		// No overall client timeout: the download is bounded by upgrade's own
		// limits and ctx, and may take longer than an API call.
		HTTPClient: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: a.opt.TLSConfig}},
		DataDir:    a.cfg.DataDir,
		Restart:    a.opt.UpgradeRestart,
		Logger:     a.log,
	}
	if u := a.upgradeURL.Load(); u != nil {
		opts.ManifestURL = *u
	}
	u, err := upgrade.Plan(ctx, opts, upgrade.Request{Version: m.Version, Force: m.Force, Callback: m.Callback})
	switch {
	case err != nil:
		fail(err.Error())
	case u.UpToDate:
		a.sendControl(&protocol.Message{Type: protocol.TypeUpgradeResponse, StatusCode: 200, Callback: m.Callback})
	default:
		a.log.Info("Upgrading", "from", a.opt.Version, "to", u.TargetVersion, "asset", u.Asset.Name)
		if err := u.Apply(ctx); err != nil {
			fail(fmt.Sprintf("Failed to upgrade to version %s. Agent still running with version %s: %v", u.TargetVersion, a.opt.Version, err))
		}
	}
}

// upgradeFileName is the manifest an upgrader leaves in the data dir for
// the new version to confirm the upgrade to the server (§5.2):
// {"previousVersion", "targetVersion", "callback"}.
const upgradeFileName = "upgrade.json"

const maxUpgradeFileSize = 64 << 10

type upgradeManifest struct {
	PreviousVersion string `json:"previousVersion"`
	TargetVersion   string `json:"targetVersion"`
	Callback        string `json:"callback"` // null when nobody waits
}

// takeUpgradeManifest reads and deletes the upgrade manifest; deleting it
// tells the installer that the new version has started. It returns nil
// when there is none, or when it cannot be read (logged).
func (a *Agent) takeUpgradeManifest() *upgradeManifest {
	path := filepath.Join(a.cfg.DataDir, upgradeFileName)
	data, err := readFileLimited(path, maxUpgradeFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		a.log.Error("Cannot delete the upgrade manifest", "path", path, "err", rerr)
	}
	var m upgradeManifest
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		a.log.Error("Ignoring an unreadable upgrade manifest", "path", path, "err", err)
		return nil
	}
	return &m
}

// upgradeResult confirms the upgrade when this version is the target (the
// target may omit the build suffix), and reports a failure otherwise.
func (a *Agent) upgradeResult(m *upgradeManifest) *protocol.Message {
	if m.TargetVersion != "" && strings.HasPrefix(a.opt.Version, m.TargetVersion) {
		a.log.Info("Upgrade complete", "previousVersion", m.PreviousVersion, "version", a.opt.Version)
		return &protocol.Message{Type: protocol.TypeUpgradeResponse, StatusCode: http.StatusOK, Callback: m.Callback}
	}
	text := fmt.Sprintf("Failed to upgrade to version %s. Agent still running with version %s", m.TargetVersion, a.opt.Version)
	a.log.Error(text)
	return protocol.ErrorMessage(m.Callback, text)
}

// submit queues a server operation that may take a while, so the link's
// dispatch goroutine stays free for message routing.
func (a *Agent) submit(m *protocol.Message, run func(*protocol.Message)) {
	select {
	case a.ops <- func() { run(m) }:
	default:
		a.sendControl(protocol.ErrorMessage(m.Callback, "Agent is busy with earlier requests; try again later"))
	}
}

func (a *Agent) runOps() {
	for {
		select {
		case <-a.ctx.Done():
			return
		case op := <-a.ops:
			op()
		}
	}
}

func (a *Agent) replyReload(m *protocol.Message) {
	ctx, cancel := context.WithTimeout(a.ctx, reloadTimeout)
	defer cancel()
	if err := a.Reload(ctx); err != nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, err.Error()))
		return
	}
	a.sendControl(&protocol.Message{Type: protocol.TypeReloadConfigResp, StatusCode: http.StatusOK, Callback: m.Callback})
}

func (a *Agent) replyLogs(m *protocol.Message) {
	limit, err := logging.ParseLimit(m.Limit)
	if err != nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, err.Error()))
		return
	}
	if a.opt.MainLog == nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, logging.ErrFetchUnsupported.Error()))
		return
	}
	entries, hasMore, next, err := a.opt.MainLog.Fetch(limit, m.Before)
	if err != nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, err.Error()))
		return
	}
	if entries == nil {
		entries = []json.RawMessage{} // "logs" is always an array
	}
	logs, err := json.Marshal(entries)
	if err != nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, err.Error()))
		return
	}
	a.sendControl(&protocol.Message{
		Type: protocol.TypeLogsResponse, StatusCode: http.StatusOK, Callback: m.Callback,
		Logs: logs, HasMore: &hasMore, NextBefore: next,
	})
}

// stats is the agent:stats:response object (§5.4).
type stats struct {
	HL7ConnectionsOpen int64 `json:"hl7ConnectionsOpen"`
	// ByteStreamLinksOpen (ours) counts the device links of tcp:// and
	// serial:// channels, which hl7ConnectionsOpen leaves out.
	ByteStreamLinksOpen int64 `json:"byteStreamLinksOpen"`
	Ping                int64 `json:"ping"`
	WebSocketQueueDepth int   `json:"webSocketQueueDepth"`
	// HL7QueueDepth is always 0: responses are written to devices as they
	// arrive, with no queue in between.
	HL7QueueDepth         int                     `json:"hl7QueueDepth"`
	HL7ClientCount        int                     `json:"hl7ClientCount"`
	Live                  bool                    `json:"live"`
	OutstandingHeartbeats int                     `json:"outstandingHeartbeats"`
	ChannelStats          map[string]channelStats `json:"channelStats"`
	ClientStats           map[string]channelStats `json:"clientStats"`
	// DurableQueue is present only while the queue is open.
	DurableQueue *spool.Stats `json:"durableQueue,omitempty"`
}

type channelStats struct {
	RTT rtt.Stats `json:"rtt"`
}

func (a *Agent) stats() *stats {
	s := &stats{
		Ping:                  a.link.Ping(),
		WebSocketQueueDepth:   a.link.QueueDepth(),
		HL7ClientCount:        a.out.pools.ClientCount(),
		Live:                  a.link.Live(),
		OutstandingHeartbeats: a.link.OutstandingHeartbeats(),
		ChannelStats:          map[string]channelStats{},
		ClientStats:           map[string]channelStats{},
	}
	for key, st := range a.out.pools.Stats() {
		s.ClientStats[key] = channelStats{RTT: st}
	}
	for name, ch := range *a.chans.Load() {
		switch c := ch.(type) {
		case *hl7Channel:
			s.HL7ConnectionsOpen += c.conns.Load()
			s.ChannelStats[name] = channelStats{RTT: c.rtt.Stats()}
		case interface{ links() int }:
			s.ByteStreamLinksOpen += int64(c.links())
		}
	}
	if q := a.q.Load(); q != nil {
		ctx, cancel := context.WithTimeout(context.Background(), queueStatsTimeout)
		defer cancel()
		qs, err := q.store.Stats(ctx)
		if err != nil {
			a.log.Warn("Cannot read durable queue stats", "err", err)
		} else {
			s.DurableQueue = &qs
		}
	}
	return s
}

func (a *Agent) replyStats(m *protocol.Message) {
	b, err := json.Marshal(a.stats())
	if err != nil {
		a.sendControl(protocol.ErrorMessage(m.Callback, err.Error()))
		return
	}
	a.sendControl(&protocol.Message{Type: protocol.TypeStatsResponse, StatusCode: http.StatusOK, Callback: m.Callback, Stats: b})
}

// periodic runs housekeeping on every heartbeat tick (RTT garbage
// collection, idle outbound clients) and logs stats every logStatsFreqSecs
// when that is set.
func (a *Agent) periodic() {
	tick := time.NewTicker(a.opt.HeartbeatPeriod)
	defer tick.Stop()
	var statsTick *time.Ticker
	var statsC <-chan time.Time
	resetStats := func() {
		if statsTick != nil {
			statsTick.Stop()
			statsTick, statsC = nil, nil
		}
		if d := time.Duration(a.statsEvery.Load()); d > 0 {
			statsTick = time.NewTicker(d)
			statsC = statsTick.C
		}
	}
	resetStats()
	defer func() {
		if statsTick != nil {
			statsTick.Stop()
		}
	}()
	for {
		select {
		case <-a.ctx.Done():
			return
		case now := <-tick.C:
			a.out.pools.Tick(now)
			for _, ch := range *a.chans.Load() {
				if h, ok := ch.(*hl7Channel); ok {
					h.gc()
				}
			}
		case <-a.statsKick:
			resetStats()
		case <-statsC:
			a.log.Info("Agent stats", "stats", a.stats())
		}
	}
}
