package agent

import (
	"context"
	"log/slog"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

// serveASTM runs the E1381 receiver (mode=astm) on one device link with
// the receiver options the link started with. Each ENQ…EOT session is handed over
// before the reply that completes it (normally the ACK of EOT), so a store
// behind intake holds the session before the instrument is told it
// arrived; a refusal turns that reply into NAK (see astm.ReceiverState.Feed).
// Server responses are written back unframed, as by the reference.
func (c *streamChannel) serveASTM(ctx context.Context, d *deviceConn, p *byteStreamParams) error {
	opts := p.receiver
	opts.OnWarning = func(msg string) { c.log.Warn("ASTM: "+msg, "remote", d.remote) }
	return astm.NewReceiver(opts).Serve(ctx, d, func(s astm.Session) error { return c.submitSession(d, s) })
}

func (c *streamChannel) submitSession(d *deviceConn, s astm.Session) error {
	body := c.params.Load().encodeBody([]byte(s.Body))
	c.chLog.LogAttrs(context.Background(), slog.LevelInfo, "Received",
		slog.String("remote", d.remote), slog.Int("records", len(s.Records)), slog.String("body", body))
	// Counts only: the main log carries no message content.
	attrs := []any{"remote", d.remote, "records", len(s.Records), "frames", s.Frames, "duplicates", s.Duplicates, "naks", s.NAKs}
	if s.NAKs > 0 || s.Duplicates > 0 || len(s.Warnings) > 0 {
		c.log.Warn("ASTM session received with link errors", append(attrs, "warnings", s.Warnings)...)
	} else {
		c.log.Debug("ASTM session received", attrs...)
	}
	return c.a.intake(spool.KindASTM, c.name, d.remote, astm.ContentType, body)
}
