package spool

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"
)

// Stats is the durableQueue block of agent:stats:response (§5.4).
type Stats struct {
	Enabled                   bool                    `json:"enabled"`
	IsLeader                  bool                    `json:"isLeader"`
	DBSizeBytes               int64                   `json:"dbSizeBytes"`
	CountsByState             StateCounts             `json:"countsByState"`
	ChannelDepth              map[string]ChannelDepth `json:"channelDepth"`
	LastSweepAt               int64                   `json:"lastSweepAt"` // epoch ms, -1 if none yet
	LastSweepDeletedProcessed int64                   `json:"lastSweepDeletedProcessed"`
	LastSweepDeletedErrored   int64                   `json:"lastSweepDeletedErrored"`
}

// StateCounts counts rows per state.
type StateCounts struct {
	Queued    int64 `json:"queued"`
	Claimed   int64 `json:"claimed"`
	Inflight  int64 `json:"inflight"`
	Processed int64 `json:"processed"`
	Rejected  int64 `json:"rejected"`
	Failed    int64 `json:"failed"`
	Nacked    int64 `json:"nacked"`
}

func (c *StateCounts) add(s State, n int64) {
	switch s {
	case StateQueued:
		c.Queued += n
	case StateClaimed:
		c.Claimed += n
	case StateInflight:
		c.Inflight += n
	case StateProcessed:
		c.Processed += n
	case StateRejected:
		c.Rejected += n
	case StateFailed:
		c.Failed += n
	case StateNacked:
		c.Nacked += n
	}
}

func (c *StateCounts) merge(o StateCounts) {
	c.Queued += o.Queued
	c.Claimed += o.Claimed
	c.Inflight += o.Inflight
	c.Processed += o.Processed
	c.Rejected += o.Rejected
	c.Failed += o.Failed
	c.Nacked += o.Nacked
}

// ChannelDepth is the backlog of one channel.
type ChannelDepth struct {
	Queued            int64 `json:"queued"`
	Claimed           int64 `json:"claimed"`
	Inflight          int64 `json:"inflight"`
	OldestQueuedAgeMs int64 `json:"oldestQueuedAgeMs"` // -1 if nothing is queued
}

// ChannelSummary counts one channel's rows by state.
type ChannelSummary struct {
	Channel      string
	Counts       StateCounts
	OldestQueued time.Time // zero if nothing is queued
}

// Summary counts rows per channel and state, sorted by channel name.
func (s *Store) Summary(ctx context.Context) ([]ChannelSummary, error) {
	// Grouped in index order, so this reads the index only.
	rows, err := s.rdb.QueryContext(ctx, "SELECT channel_name, state, count(*) FROM messages GROUP BY state, channel_name ORDER BY channel_name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ChannelSummary
	idx := map[string]int{}
	for rows.Next() {
		var ch string
		var st State
		var n int64
		if err := rows.Scan(&ch, &st, &n); err != nil {
			return nil, err
		}
		i, ok := idx[ch]
		if !ok {
			i = len(out)
			idx[ch] = i
			out = append(out, ChannelSummary{Channel: ch})
		}
		out[i].Counts.add(st, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Counts.Queued == 0 {
			continue
		}
		var ms int64
		if err := s.rdb.QueryRowContext(ctx, "SELECT received_at FROM messages WHERE state = 'queued' AND channel_name = ? ORDER BY id LIMIT 1",
			out[i].Channel).Scan(&ms); err != nil {
			return nil, err
		}
		out[i].OldestQueued = time.UnixMilli(ms)
	}
	return out, nil
}

// Stats builds the §5.4 durableQueue block. ChannelDepth lists the channels
// that have queued, claimed or in-flight rows.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Enabled: true, IsLeader: s.leader.Load(), ChannelDepth: map[string]ChannelDepth{}, LastSweepAt: -1}
	sum, err := s.Summary(ctx)
	if err != nil {
		return st, err
	}
	now := s.now()
	for _, c := range sum {
		st.CountsByState.merge(c.Counts)
		if c.Counts.Queued+c.Counts.Claimed+c.Counts.Inflight == 0 {
			continue
		}
		d := ChannelDepth{Queued: c.Counts.Queued, Claimed: c.Counts.Claimed, Inflight: c.Counts.Inflight, OldestQueuedAgeMs: -1}
		if !c.OldestQueued.IsZero() {
			d.OldestQueuedAgeMs = max(0, now.Sub(c.OldestQueued).Milliseconds())
		}
		st.ChannelDepth[c.Channel] = d
	}
	if st.DBSizeBytes, err = s.fileBytes(); err != nil {
		return st, err
	}
	if r := s.sweep.Load(); r != nil {
		st.LastSweepAt = r.At.UnixMilli()
		st.LastSweepDeletedProcessed, st.LastSweepDeletedErrored = r.DeletedProcessed, r.DeletedErrored
	}
	return st, nil
}

// fileBytes is what the queue occupies on disk: the database and its WAL.
func (s *Store) fileBytes() (int64, error) {
	var total int64
	for _, p := range []string{s.path, s.path + "-wal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += fi.Size()
	}
	return total, nil
}
