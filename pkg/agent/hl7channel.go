package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/agent/rtt"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spool"
)

var hl7Kind = &channelKind{scheme: "mllp", label: "HL7", parse: parseHL7Params, open: openHL7}

// deviceWriteTimeout bounds one write to a device. A device that stops
// reading holds up response routing this long at most; its connection is
// then closed and it resends what was not acknowledged.
const deviceWriteTimeout = 5 * time.Second

// maxLoggedBadFrame bounds how much of an undecodable frame goes to the
// channel log.
const maxLoggedBadFrame = 4 << 10

// errInvalidHL7 is the reference's text for a response body that is not HL7.
var errInvalidHL7 = errors.New("Invalid HL7 message")

type enhancedMode uint8

const (
	enhancedOff      enhancedMode = iota
	enhancedStandard              // CA on receipt; app ACKs filtered by appLevelAck
	enhancedAA                    // AA on receipt; app ACKs never forwarded
)

// hl7Params are the URL parameters of an mllp:// address (§3.2).
type hl7Params struct {
	encoding       string
	enhanced       enhancedMode
	appLevelAck    string // AL, ER, NE or SU
	assignSeqNo    bool
	messagesPerMin int           // 0: no throttle
	idleTimeout    time.Duration // 0: none; our extension, in seconds on the URL
	queue          channelQueueParams
}

func parseHL7Params(q url.Values) (any, []issue) {
	p := &hl7Params{encoding: mllp.DefaultEncoding, appLevelAck: "AL"}
	var issues []issue
	if v := q.Get("encoding"); v != "" {
		// A wrong charset would silently corrupt message text, so unlike the
		// other parameters it has no fallback.
		if _, err := charset.Lookup(v); err != nil {
			issues = append(issues, problem("Unsupported encoding '%s'", v))
		}
		p.encoding = v
	}
	switch v := q.Get("enhanced"); strings.ToLower(v) {
	case "":
	case "true":
		p.enhanced = enhancedStandard
	case "aa":
		p.enhanced = enhancedAA
	default:
		issues = append(issues, warning("Invalid enhanced value '%s'; expected 'true' or 'aa'. Using standard mode (enhanced mode disabled).", v))
	}
	if v := q.Get("appLevelAck"); v != "" {
		switch u := strings.ToUpper(v); u {
		case "AL", "ER", "NE", "SU":
			p.appLevelAck = u
		default:
			issues = append(issues, warning("Invalid appLevelAck value '%s'; expected one of AL, ER, NE, SU. Using AL.", v))
		}
	}
	p.assignSeqNo = strings.EqualFold(q.Get("assignSeqNo"), "true")
	if v := q.Get("messagesPerMin"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			p.messagesPerMin = n
		} else {
			issues = append(issues, warning("Invalid messagesPerMin: '%s'; must be a valid integer. Creating channel without a set messagesPerMin...", v))
		}
	}
	if v := q.Get("idleTimeout"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			p.idleTimeout = time.Duration(n) * time.Second
		} else {
			issues = append(issues, warning("Invalid idleTimeout: '%s'; must be a whole number of seconds. Creating channel without an idle timeout...", v))
		}
	}
	qp, qIssues := parseChannelQueueParams(q)
	p.queue = qp
	return p, append(issues, qIssues...)
}

// forwards applies the ACK policy of §3.2 to a response whose MSA-1 is code.
func (p *hl7Params) forwards(code hl7.AckCode) bool {
	if code != hl7.AA && code != hl7.AE && code != hl7.AR {
		return true // not an application ACK (CA, no MSA, ...): always forwarded
	}
	switch p.enhanced {
	case enhancedOff:
		return true
	case enhancedAA:
		return false
	}
	switch p.appLevelAck {
	case "NE":
		return false
	case "ER":
		return code != hl7.AA
	case "SU":
		return code == hl7.AA
	}
	return true
}

// hl7Channel is an MLLP listener whose messages go to the server and whose
// server responses go back to the connection they came from.
type hl7Channel struct {
	a     *Agent
	name  string      // fixed: a renamed channel is a new channel
	cfg   channelSpec // touched under the agent's apply lock only
	log   *slog.Logger
	chLog *slog.Logger
	rtt   *rtt.Tracker

	params  atomic.Pointer[hl7Params]
	srv     atomic.Pointer[mllp.Server]
	seq     atomic.Int64 // next MSH-13 value
	conns   atomic.Int64
	quit    chan struct{} // closed by stop: ends throttle waits
	serving sync.WaitGroup

	mu           sync.Mutex
	lastDispatch map[*mllp.Conn]time.Time // messagesPerMin state

	// gates order a connection's writes in enhanced mode: the commit ACK
	// of a message goes out before the Bot's answer to it, however fast
	// that answer comes back. Keyed by *mllp.Conn.
	gates sync.Map
}

func openHL7(a *Agent, s channelSpec) channel {
	ch := &hl7Channel{
		a:            a,
		name:         s.name,
		cfg:          s,
		log:          a.log.With("channel", s.name),
		chLog:        a.chLog.With("channel", s.name),
		rtt:          rtt.New(rtt.Options{}),
		quit:         make(chan struct{}),
		lastDispatch: make(map[*mllp.Conn]time.Time),
	}
	ch.params.Store(s.params.(*hl7Params))
	return ch
}

func (ch *hl7Channel) spec() channelSpec { return ch.cfg }

func (ch *hl7Channel) start() error {
	p := ch.params.Load()
	srv := &mllp.Server{
		Handler:      ch.onMessage,
		OnBadFrame:   ch.onBadFrame,
		OnConnect:    ch.onConnect,
		OnDisconnect: ch.onDisconnect,
		Encoding:     p.encoding,
		IdleTimeout:  p.idleTimeout,
		WriteTimeout: deviceWriteTimeout,
	}
	if err := srv.Listen(listenAddr(ch.cfg.port)); err != nil {
		return bindError(ch.cfg.name, ch.cfg.port, err)
	}
	ch.srv.Store(srv)
	ch.serving.Add(1)
	go func() {
		defer ch.serving.Done()
		if err := srv.Serve(); err != nil {
			ch.log.Error("Channel stopped accepting connections", "err", err)
		}
	}()
	ch.log.Info("Channel started", "address", ch.cfg.address)
	return nil
}

func (ch *hl7Channel) reconfigure(s channelSpec) error {
	old, p := ch.params.Load(), s.params.(*hl7Params)
	ch.cfg = s
	if !p.assignSeqNo {
		ch.seq.Store(0)
	}
	ch.params.Store(p)
	ch.log.Info("Channel reconfigured", "address", s.address)
	if p.idleTimeout != old.idleTimeout {
		ch.srv.Load().SetIdleTimeout(p.idleTimeout)
	}
	return ch.srv.Load().SetEncoding(p.encoding)
}

func (ch *hl7Channel) stop(ctx context.Context) {
	close(ch.quit)
	if srv := ch.srv.Load(); srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			ch.log.Warn("Closed connections with exchanges still in progress", "err", err)
		}
	}
	ch.serving.Wait()
	ch.log.Info("Channel stopped")
}

func (ch *hl7Channel) onConnect(c *mllp.Conn) {
	ch.conns.Add(1)
	if ch.a.draining() {
		c.Close()
		return
	}
	ch.log.Info("HL7 connection established", "remote", c.RemoteAddr())
}

func (ch *hl7Channel) onDisconnect(c *mllp.Conn, err error) {
	ch.conns.Add(-1)
	ch.mu.Lock()
	delete(ch.lastDispatch, c)
	ch.mu.Unlock()
	ch.gates.Delete(c)
	switch {
	case errors.Is(err, mllp.ErrIdleTimeout):
		ch.log.Info("Closing idle connection", "remote", c.RemoteAddr())
	case err != nil:
		ch.log.Warn("HL7 connection error", "remote", c.RemoteAddr(), "err", err)
		fallthrough
	default:
		ch.log.Info("Closing connection", "remote", c.RemoteAddr())
	}
}

func (ch *hl7Channel) onBadFrame(c *mllp.Conn, payload []byte, err error) {
	ch.log.Error("HL7 error occurred - check channel logs", "remote", c.RemoteAddr(), "err", err)
	ch.chLog.Error("HL7 error", "remote", c.RemoteAddr(), "err", err,
		"payload", string(payload[:min(len(payload), maxLoggedBadFrame)]))
}

// onMessage is the inbound hot path: one call per message, sequential per
// connection, on that connection's goroutine.
func (ch *hl7Channel) onMessage(c *mllp.Conn, m *hl7.Message) {
	p := ch.params.Load()
	if p.messagesPerMin > 0 && !ch.throttle(c, time.Minute/time.Duration(p.messagesPerMin)) {
		return
	}
	if ch.a.draining() {
		// Shutting down: left unacknowledged, so the device sends it again
		// to the next instance.
		return
	}
	id, remote := m.ControlID(), c.RemoteAddr()
	ch.chLog.LogAttrs(context.Background(), slog.LevelInfo, "Received",
		slog.String("remote", remote), slog.String("id", id), slog.String("body", m.String()))
	if q := ch.a.queue(); q != nil {
		ch.takeIn(q, c, m, p)
		return
	}
	if p.assignSeqNo {
		seq := strconv.FormatInt(ch.seq.Add(1)-1, 10)
		if err := m.SetRaw("MSH-13", seq); err != nil {
			ch.log.Error("Cannot set sequence number", "remote", remote, "err", err)
		}
	}
	ch.rtt.Sent(id)
	if p.enhanced == enhancedStandard {
		gate, _ := ch.gates.LoadOrStore(c, &sync.Mutex{})
		gate.(*sync.Mutex).Lock()
		defer gate.(*sync.Mutex).Unlock()
	}
	err := ch.a.deliver(&protocol.Message{
		Type:        protocol.TypeTransmitRequest,
		Channel:     ch.name,
		Remote:      remote,
		ContentType: protocol.ContentTypeHL7,
		Body:        m.String(),
		Callback:    ch.a.newCallback(),
	})
	if err != nil {
		// Refused before anything was acknowledged: ask the device to resend.
		ch.rtt.Forget(id)
		ch.log.Warn("Message not accepted; asking the sender to resend", "remote", remote, "err", err)
		code := hl7.AR
		if p.enhanced == enhancedStandard {
			code = hl7.CE
		}
		ch.send(c, hl7.BuildAck(m, code, hl7.AckOptions{Text: "Message not accepted, please resend"}))
		return
	}
	switch p.enhanced {
	case enhancedStandard:
		ch.send(c, hl7.BuildAck(m, hl7.CA, hl7.AckOptions{}))
	case enhancedAA:
		ch.send(c, hl7.BuildAck(m, hl7.AA, hl7.AckOptions{}))
	}
}

// takeIn is onMessage with the durable queue (§6.3): the message is on
// disk before the device hears anything, and a storage failure or a reused
// control id is answered with a negative commit ACK.
func (ch *hl7Channel) takeIn(q *durable, c *mllp.Conn, m *hl7.Message, p *hl7Params) {
	id, remote := m.ControlID(), c.RemoteAddr()
	policy, dup := q.policy(&p.queue)
	original := m.String()
	in := spool.Intake{
		Kind: spool.KindHL7, Channel: ch.name, Remote: remote, ContentType: protocol.ContentTypeHL7,
		ControlID: id, MsgType: m.Get("MSH-9"), Original: []byte(original), Body: original,
		Duplicates: dup, Policy: policy,
		// In original mode the device's only answer is the server's.
		Unacknowledged: p.enhanced == enhancedOff,
	}
	if p.assignSeqNo {
		// The number comes from the queue's counter in the same
		// transaction, so it survives restarts and duplicates skip it.
		in.AssignSeqNo = true
		in.Finalize = func(seq int64) (string, error) {
			if err := m.SetRaw("MSH-13", strconv.FormatInt(seq, 10)); err != nil {
				return "", err
			}
			return m.String(), nil
		}
	}
	ch.rtt.Sent(id)
	if p.enhanced == enhancedStandard {
		gate, _ := ch.gates.LoadOrStore(c, &sync.Mutex{})
		gate.(*sync.Mutex).Lock()
		defer gate.(*sync.Mutex).Unlock()
	}
	res, err := ch.a.queueIntake(q, in)
	switch {
	case err != nil:
		ch.rtt.Forget(id)
		ch.log.Error("Cannot store message; asking the sender to resend", "remote", remote, "err", err)
		ch.commitAck(c, m, p, hl7.CE, spool.ReasonStorage)
	case res.Duplicate == spool.DuplicateConflict:
		ch.rtt.Forget(id)
		ch.log.Warn("Message rejected: its control id was already used", "remote", remote, "row", res.ID)
		ch.commitAck(c, m, p, hl7.CR, spool.ReasonDuplicate)
	case res.Duplicate == spool.DuplicateReplay:
		ch.log.Info("Retransmission of a stored message; answering it again", "remote", remote, "row", res.ID)
		if res.PriorResponse == nil || !ch.replay(q, c, res) {
			ch.commitAck(c, m, p, hl7.CA, "")
		}
	default:
		ch.commitAck(c, m, p, hl7.CA, "")
	}
}

// commitAck sends the commit-level answer code (CA, CE or CR) as the
// channel's mode has it: unchanged in standard enhanced mode, as AA, AE or
// AR in AA mode, and not at all in original mode.
func (ch *hl7Channel) commitAck(c *mllp.Conn, m *hl7.Message, p *hl7Params, code hl7.AckCode, text string) {
	switch p.enhanced {
	case enhancedOff:
		return
	case enhancedAA:
		code = map[hl7.AckCode]hl7.AckCode{hl7.CA: hl7.AA, hl7.CE: hl7.AE, hl7.CR: hl7.AR}[code]
	}
	ch.send(c, hl7.BuildAck(m, code, hl7.AckOptions{Text: text}))
}

// replay answers a retransmission with the server's stored answer, through
// the ack policy, and reports whether anything was written; the caller
// holds the connection's gate.
func (ch *hl7Channel) replay(q *durable, c *mllp.Conn, res spool.IntakeResult) bool {
	out, written, err := ch.respond(c, &protocol.Message{Body: res.PriorResponse.Body, Remote: c.RemoteAddr()})
	if err != nil {
		ch.log.Warn("Cannot replay the stored answer", "remote", c.RemoteAddr(), "row", res.ID, "err", err)
		return false
	}
	if out == spool.AckDelivered {
		ctx, cancel := context.WithTimeout(ch.a.ctx, queueStatsTimeout)
		defer cancel()
		if err := q.store.MarkAck(ctx, res.ID, out); err != nil {
			ch.log.Warn("Cannot record the replayed answer", "row", res.ID, "err", err)
		}
	}
	return written
}

// throttle waits until interval has passed since the previous message of c
// was dispatched. It reports false if the channel stopped meanwhile.
func (ch *hl7Channel) throttle(c *mllp.Conn, interval time.Duration) bool {
	ch.mu.Lock()
	last, seen := ch.lastDispatch[c]
	ch.mu.Unlock()
	if wait := time.Until(last.Add(interval)); seen && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ch.quit:
			return false
		case <-ch.a.drainCh:
			return false
		}
	}
	ch.mu.Lock()
	ch.lastDispatch[c] = time.Now()
	ch.mu.Unlock()
	return true
}

// send writes m to the device; on failure the connection is closed, since
// a half-written frame leaves it unusable.
func (ch *hl7Channel) send(c *mllp.Conn, m *hl7.Message) bool {
	if err := c.Send(m); err != nil {
		ch.log.Warn("Failed to send to device; closing the connection", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return false
	}
	return true
}

func (ch *hl7Channel) handleResponse(m *protocol.Message) error {
	_, err := ch.relay(m)
	return err
}

// relay routes a server response to the connection it answers and reports
// whether it got there; one the ack policy suppresses counts as delivered.
func (ch *hl7Channel) relay(m *protocol.Message) (spool.AckOutcome, error) {
	c := ch.srv.Load().Conn(m.Remote)
	if c == nil {
		ch.log.Warn("Attempted to send message to disconnected remote: " + m.Remote)
		return spool.AckUndelivered, nil
	}
	if gate, ok := ch.gates.Load(c); ok {
		// Wait for the commit ACK of a message still being taken in.
		gate.(*sync.Mutex).Lock()
		gate.(*sync.Mutex).Unlock()
	}
	out, _, err := ch.respond(c, m)
	return out, err
}

// respond writes the response m to c per the ack policy and reports the
// outcome and whether anything was written.
func (ch *hl7Channel) respond(c *mllp.Conn, m *protocol.Message) (spool.AckOutcome, bool, error) {
	ack, err := hl7.Parse(m.Body)
	if err != nil {
		return spool.AckUndelivered, false, errInvalidHL7
	}
	id := ack.Get("MSA-2")
	code := hl7.AckCode(strings.ToUpper(string(hl7.AckCodeOf(ack))))
	if !ch.params.Load().forwards(code) {
		ch.chLog.Debug("Skipping ACK", "remote", m.Remote, "id", id, "code", code)
		// The exchange is complete even though nothing goes to the device.
		ch.rtt.Acked(id)
		return spool.AckDelivered, false, nil
	}
	ch.chLog.LogAttrs(context.Background(), slog.LevelInfo, "Sending ACK",
		slog.String("remote", m.Remote), slog.String("id", id), slog.String("body", m.Body))
	// Sampled before the write, so a device that has its answer finds it
	// counted in stats.
	ch.rtt.Acked(id)
	if !ch.send(c, ack) {
		return spool.AckUndelivered, false, nil
	}
	return spool.AckDelivered, true, nil
}

// gc drops RTT entries that never got a response.
func (ch *hl7Channel) gc() {
	if dropped := ch.rtt.GC(); len(dropped) > 0 {
		ch.log.Warn("Cleaning up pending messages; never got a response", "count", len(dropped))
	}
}
