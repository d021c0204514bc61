package spool

import (
	"context"
	"strings"
	"testing"
)

// TestQueryPlans keeps the hot queries on their indexes, so they stay fast
// on a large backlog. (Retention and recovery name theirs with INDEXED BY,
// which fails the statement if the index cannot serve it; the retention
// tests run those.)
func TestQueryPlans(t *testing.T) {
	s := openStore(t, newClock())
	tests := []struct {
		query string
		index string
	}{
		{"SELECT id, next_attempt_at FROM messages WHERE state = 'queued' AND channel_name = 'c' ORDER BY id LIMIT 1", "messages_fifo"},
		{`SELECT id FROM messages WHERE channel_name = 'c' AND msg_control_id = 'x' AND state <> 'nacked' ORDER BY id DESC LIMIT 1`, "messages_dedup"},
		{"SELECT id FROM messages WHERE callback_id = 'x'", "sqlite_autoindex_messages_1"},
		{"SELECT channel_name, state, count(*) FROM messages GROUP BY state, channel_name ORDER BY channel_name", "COVERING INDEX messages_fifo"},
		{"SELECT DISTINCT channel_name FROM messages WHERE state = 'queued'", "messages_fifo"},
		{"SELECT count(*) FROM messages WHERE blob = 'x'", "messages_blob"},
	}
	for _, tt := range tests {
		rows, err := s.rdb.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+tt.query)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, tt.index) {
			t.Errorf("plan of %q = %q, want it to use %s", tt.query, p, tt.index)
		}
	}
}
