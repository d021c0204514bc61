// Package spool is the agent's durable inbound queue: nothing a device was
// told "accepted" is lost, across kill -9, power loss, server outages and
// restarts. It persists first and acknowledges second, for HL7, byte-stream,
// ASTM and DICOM channels alike.
//
// # Store
//
// Open opens one SQLite database (modernc.org/sqlite) in the data directory:
// file mode 0600, WAL, synchronous=FULL (a commit is on disk before Intake
// returns, so power loss cannot undo it), busy_timeout 5 s, forward-only
// migrations recorded in _schema. Every write goes through one committer
// goroutine that puts whatever is waiting into one transaction and one
// fsync; when recent batches had several writers it waits up to
// Options.CommitWindow for the writers the previous commit released, so
// eight connections share a sync instead of alternating. One failing write
// does not fail its neighbours: the batch is rolled back and the others run
// again without it.
// WAL checkpoints run in the background on a reader connection, off the
// commit path. Reads use a separate query-only pool, so operator tools and
// stats are safe while the agent runs.
//
// Intake persists a message and returns after its commit is durable; only
// then does the agent send CA/AA (HL7), the device ACK (byte stream, ASTM)
// or the C-STORE Success (DICOM, whose file is first written with PutBlob).
// For HL7 it also applies §6.3: a repeated MSH-10 is replayed (identical
// bytes, duplicateBehavior=idempotent) or rejected with a nacked audit row,
// and AssignSeqNo allocates the channel's next MSH-13 in the same
// transaction, so numbering survives restarts and duplicates never consume
// a number. An Intake error means nothing was stored: answer CE (AE in AA
// mode) with ReasonStorage. A full disk fails intakes without corrupting
// the database.
//
// DICOM plugs in through blobs: the channel streams the instance into
// PutBlob (synced file next to the database), then calls Intake with Blob
// and the transmit body without its Binary reference, and only then answers
// C-STORE Success. DispatchOptions.Prepare uploads the file when the row is
// first dispatched and returns the final body, which is stored so retries
// do not upload again; the file goes when the row is purged or swept.
//
// # Dispatcher
//
// A Dispatcher runs one worker per channel with work: rows are claimed in id
// order, up to MaxInFlight awaiting their answer, never two from the same
// device connection (a row whose connection has one in flight holds back
// the rows behind it, as does a row waiting for its retry), so each
// connection's messages reach the server one after the other while the
// connections of a busy channel share the round trip. Each step of a
// worker is one transaction: the sends it saw, the answers it got and the
// next claims. Dispatch runs only while the link is live and only in the
// process holding the _lease row, so two agents can share the file during
// an upgrade (intake works in both). Each attempt is sent as
// agent:transmit:request with callback Agent/{agentId}-{uuid}#{attempt}.
// The agent wires the link:
//
//	var d *spool.Dispatcher
//	link, err := wslink.New(wslink.Config{…,
//		OnLive: func(live bool) { d.LiveChanged(live) },   // resume when live; fail attempts sent on a dropped socket
//		OnSent: func(m *protocol.Message) { d.OnSent(m) }, // claimed → inflight
//		Handler: func(m *protocol.Message) {
//			if m.Type == protocol.TypeTransmitResponse && d.HandleResponse(m) {
//				return
//			}
//			…
//		},
//	})
//	d = spool.NewDispatcher(store, link, spool.DispatchOptions{OnSettled: relay})
//	d.Start(ctx)
//	…after each Intake: d.Wake(channel)
//
// Answers are classified per the row's RetryPolicy (§6.5): normal mode by
// HTTP status (2xx processed, 429/5xx retried, other 4xx rejected),
// guaranteed mode by MSA-1 (AA/CA processed, AR/CR relayed and rejected,
// AE/CE retried without relaying), none without retries. Retries wait
// min(max, base×multiplier^(n−1)), drawn uniformly from its upper half.
// Every settle is guarded by the attempt number: an answer to a superseded
// attempt is dropped, while a late answer to the current attempt still
// settles a failed row or one waiting for its retry. OnSettled relays the
// answer to the device and reports the AckOutcome.
//
// Claimed rows stay in the link's queue while it reconnects and are written
// first once it is live again, so a drop does not requeue them (the link
// cannot give them back, and requeueing would send them twice). A drop
// after the write fails the attempt at once as dispatch-failed: its answer
// would have come on the closed socket.
//
// On becoming leader a process recovers the previous leader's rows: claimed
// rows are queued again; in-flight rows are queued again in guaranteed mode
// (the server may see them twice) and fail as interrupted otherwise; answers
// never relayed are marked undelivered, and a retransmission replays them.
//
// Stop the link before the dispatcher at shutdown, so rows written while the
// link flushes are recorded as sent.
//
// # Retention and operations
//
// Retention (§6.6) runs at open and every SweepInterval: delivered processed
// rows older than ProcessedMaxAge go; while the used size exceeds MaxBytes
// the oldest of them go regardless of age, then errored rows older than
// ErroredMaxAge; free pages are returned and the WAL truncated. Stats gives
// the durableQueue block of agent:stats:response. Summary, List, Get, Retry
// and Purge serve the `medplum-agent queue` commands, opened with
// Options.Existing.
package spool
