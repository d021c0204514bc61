package agent

import (
	"context"
	"time"
)

// apply makes p the running configuration. With probe, every port p needs
// that the agent does not hold yet is test-bound first, so a port taken by
// another process fails the whole plan before anything changes. A failure
// while applying rolls back to the last plan that applied. The caller holds
// applyMu.
func (a *Agent) apply(p *plan, probe bool) error {
	if probe {
		if err := a.probe(p); err != nil {
			return err
		}
	}
	for _, w := range p.warnings {
		a.log.Warn(w)
	}
	if err := a.converge(p); err != nil {
		a.log.Error("Applying config failed; rolling back", "err", err)
		previous := a.lastGood
		if previous == nil {
			previous = &plan{}
		}
		if rerr := a.converge(previous); rerr != nil {
			a.log.Error("Rolling back to last-good config failed", "err", rerr)
		} else {
			a.log.Info("Rolled back to last-good config successfully")
		}
		return err
	}
	a.lastGood = p
	return nil
}

// probe checks the ports p needs beyond those the agent holds.
func (a *Agent) probe(p *plan) error {
	held := map[int]bool{}
	for _, ch := range a.channels {
		held[ch.spec().port] = true
	}
	var problems []string
	for _, s := range p.channels {
		if s.port != 0 && !held[s.port] {
			if err := probePort(s.name, s.port); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	if len(problems) > 0 {
		return &ConfigError{Problems: problems}
	}
	return nil
}

// converge opens the durable queue if p needs it and it is not open yet,
// then changes the running channels to match p: first it stops the
// channels p drops or moves (releasing their ports), then reconfigures the
// ones whose address changed in place, then starts the new ones.
func (a *Agent) converge(p *plan) error {
	if err := a.openQueue(p.settings.queue); err != nil {
		return err
	}
	a.active.Store(p.active)
	a.setStatsEvery(p.settings.logStatsEvery)
	a.upgradeURL.Store(&p.settings.upgradeURL)
	a.out.pools.Apply(p.settings.push)
	want := make(map[string]channelSpec, len(p.channels))
	for _, s := range p.channels {
		want[s.name] = s
	}
	for name, ch := range a.channels {
		cur := ch.spec()
		if s, ok := want[name]; !ok || s.kind != cur.kind || s.resource() != cur.resource() {
			a.stopChannel(name, ch)
		}
	}
	for _, s := range p.channels {
		if ch, ok := a.channels[s.name]; ok {
			if ch.spec().address != s.address {
				if err := ch.reconfigure(s); err != nil {
					return err
				}
			}
			continue
		}
		ch := s.kind.open(a, s)
		if err := ch.start(); err != nil {
			return err
		}
		a.channels[s.name] = ch
		a.publish()
	}
	return nil
}

func (a *Agent) stopChannel(name string, ch channel) {
	delete(a.channels, name)
	a.publish()
	ctx, cancel := context.WithTimeout(a.ctx, channelStopGrace)
	defer cancel()
	ch.stop(ctx)
}

// stopChannels stops every channel, letting exchanges finish until ctx ends.
func (a *Agent) stopChannels(ctx context.Context) {
	chans := a.channels
	a.channels = map[string]channel{}
	a.publish()
	for _, ch := range chans {
		ch.stop(ctx)
	}
}

func (a *Agent) setStatsEvery(d time.Duration) {
	if time.Duration(a.statsEvery.Swap(int64(d))) != d {
		select {
		case a.statsKick <- struct{}{}:
		default:
		}
	}
}
