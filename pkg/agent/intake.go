package agent

import (
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// intake takes one complete inbound message from a byte-stream or ASTM
// channel, under kind (spool.KindBytes or spool.KindASTM). A channel
// acknowledges the device (an ASTM final ACK; not an autoRespond echo,
// which is wire-level) only after intake returned nil: with the durable
// queue that is once the message is on disk, otherwise once it is queued
// for the server in memory.
func (a *Agent) intake(kind, channel, remote, contentType, body string) error {
	if q := a.queue(); q != nil {
		policy, _ := q.policy(nil)
		_, err := a.queueIntake(q, spool.Intake{
			Kind: kind, Channel: channel, Remote: remote, ContentType: contentType,
			Body: body, Policy: policy,
		})
		return err
	}
	return a.deliver(&protocol.Message{
		Type:        protocol.TypeTransmitRequest,
		Channel:     channel,
		Remote:      remote,
		ContentType: contentType,
		Body:        body,
		Callback:    a.newCallback(),
	})
}
