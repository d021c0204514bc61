package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
)

// maxParallelReads bounds concurrent Endpoint reads during a reload.
const maxParallelReads = 8

// loadPlan reads Agent/{id} and its Endpoints and validates them. A failed
// Endpoint read is a problem of that channel only.
func (a *Agent) loadPlan(ctx context.Context) (*plan, error) {
	agent, raw, err := a.fhir.ReadAgent(ctx, a.cfg.AgentID)
	if err != nil {
		return nil, &ConfigError{Problems: []string{fmt.Sprintf("Unable to read agent 'Agent/%s': %v", a.cfg.AgentID, err)}}
	}
	eps := make([]*fhir.Endpoint, len(agent.Channel))
	raws := make([]json.RawMessage, len(agent.Channel))
	if agent.Status != "off" {
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxParallelReads)
		for i, def := range agent.Channel {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ep, raw, err := a.fhir.ReadEndpoint(ctx, def.Endpoint.Reference)
				if err != nil {
					a.log.Warn("Unable to read endpoint", "channel", def.Name, "endpoint", def.Endpoint.Reference, "err", err)
					return
				}
				eps[i], raws[i] = ep, raw
			})
		}
		wg.Wait()
	}
	p, err := buildPlan(agent, eps)
	if err != nil {
		return nil, err
	}
	p.agent, p.endpoints = raw, raws
	return p, nil
}

// snapshotFileName is the last configuration that applied successfully,
// in the data dir.
const snapshotFileName = "medplum-agent-applied-config.json"

const maxSnapshotSize = 8 << 20

type snapshot struct {
	AppliedAt    string            `json:"appliedAt"`
	AgentVersion string            `json:"agentVersion"`
	Agent        json.RawMessage   `json:"agent"`
	Endpoints    []json.RawMessage `json:"endpoints"` // aligned with agent.channel; null where not read
}

func (a *Agent) snapshotPath() string { return filepath.Join(a.cfg.DataDir, snapshotFileName) }

// saveSnapshot records p as the last-good configuration. A failure is
// logged: it only matters for a later boot without the server.
func (a *Agent) saveSnapshot(p *plan) {
	b, err := json.MarshalIndent(snapshot{
		AppliedAt:    time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		AgentVersion: a.opt.Version,
		Agent:        p.agent,
		Endpoints:    p.endpoints,
	}, "", "  ")
	if err == nil {
		err = atomicfile.WriteBytes(a.snapshotPath(), 0o600, b)
	}
	if err != nil {
		a.log.Error("Cannot write the last-good config snapshot", "err", err)
	}
}

// loadSnapshot returns the snapshot's plan, or nil when there is none or it
// cannot be used (logged).
func (a *Agent) loadSnapshot() *plan {
	p, err := a.readSnapshot()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		a.log.Warn("Ignoring the last-good config snapshot", "path", a.snapshotPath(), "err", err)
		return nil
	}
	return p
}

func (a *Agent) readSnapshot() (*plan, error) {
	data, err := readFileLimited(a.snapshotPath(), maxSnapshotSize)
	if err != nil {
		return nil, err
	}
	var s snapshot
	var agent fhir.Agent
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(s.Agent, &agent); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if agent.ID != a.cfg.AgentID {
		return nil, fmt.Errorf("it belongs to agent %q", agent.ID)
	}
	if len(s.Endpoints) != len(agent.Channel) {
		return nil, errors.New("endpoints do not match the agent's channels")
	}
	eps := make([]*fhir.Endpoint, len(s.Endpoints))
	for i, raw := range s.Endpoints {
		if err := json.Unmarshal(raw, &eps[i]); err != nil {
			return nil, fmt.Errorf("endpoint %d: %w", i, err)
		}
	}
	p, err := buildPlan(&agent, eps)
	if err != nil {
		return nil, err
	}
	p.agent, p.endpoints = s.Agent, s.Endpoints
	return p, nil
}

// readFileLimited reads a state file of at most limit bytes; a larger one
// is an error, not a truncated read.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errors.New("file too large")
	}
	return data, nil
}
