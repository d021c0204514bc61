package devserver

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// recorder appends one JSON line per accepted transmit. Each line is one
// Write call under a lock, so readers of the file never see partial lines
// from concurrent messages.
type recorder struct {
	mu sync.Mutex
	w  io.Writer
}

// recordLine is the --record file format.
type recordLine struct {
	Time        string `json:"time"`
	AgentID     string `json:"agentId"`
	Channel     string `json:"channel"`
	Remote      string `json:"remote"`
	ContentType string `json:"contentType"`
	Body        string `json:"body"`
	Callback    string `json:"callback"`
}

func (s *Server) record(agentID string, m *protocol.Message) {
	if s.rec == nil {
		return
	}
	b, _ := json.Marshal(recordLine{
		Time:        time.Now().UTC().Format(time.RFC3339Nano),
		AgentID:     agentID,
		Channel:     m.Channel,
		Remote:      m.Remote,
		ContentType: m.ContentType,
		Body:        m.Body,
		Callback:    m.Callback,
	})
	b = append(b, '\n')
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	if _, err := s.rec.w.Write(b); err != nil {
		s.log.Error("cannot write record", "err", err)
	}
}
