package spool

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// State is the lifecycle state of a row.
type State string

// Row states. queued → claimed (handed to the link) → inflight (written to
// the socket) → processed | rejected | failed; nacked rows are audit records
// of intakes the agent refused.
const (
	StateQueued    State = "queued"
	StateClaimed   State = "claimed"
	StateInflight  State = "inflight"
	StateProcessed State = "processed"
	StateRejected  State = "rejected"
	StateFailed    State = "failed"
	StateNacked    State = "nacked"
)

// States lists every state in lifecycle order.
var States = []State{StateQueued, StateClaimed, StateInflight, StateProcessed, StateRejected, StateFailed, StateNacked}

// Terminal reports whether rows in s are settled and will not be dispatched
// again unless an operator retries them.
func (s State) Terminal() bool {
	return s == StateProcessed || s == StateRejected || s == StateFailed || s == StateNacked
}

// ParseState validates a state name.
func ParseState(v string) (State, error) {
	for _, s := range States {
		if string(s) == v {
			return s, nil
		}
	}
	return "", fmt.Errorf("unknown state %q: use one of %s", v, joinStates(States))
}

func joinStates(ss []State) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ", ")
}

// AckOutcome records whether the server's answer reached the device.
type AckOutcome string

// Ack outcomes of a row.
const (
	AckPending     AckOutcome = "pending"     // not settled yet, or settled and the relay not reported
	AckDelivered   AckOutcome = "delivered"   // relayed to the device (or deliberately suppressed by its ack policy)
	AckUndelivered AckOutcome = "undelivered" // the device connection was gone; a retransmission replays it
	AckNotOwed     AckOutcome = "not_owed"    // nothing to relay
)

func (a AckOutcome) valid() bool {
	return a == AckDelivered || a == AckUndelivered || a == AckNotOwed
}

// Error codes stored in error_code. The ambiguous ones mean the server may or
// may not have processed the message.
const (
	CodeResponseTimeout = "response-timeout" // ambiguous: no answer within the response timeout
	CodeDispatchFailed  = "dispatch-failed"  // ambiguous: the link dropped, or the message could not be handed over
	CodeInterrupted     = "interrupted"      // ambiguous: the process stopped while the row was in flight
	CodeServerStatus    = "server-status"    // the server answered with a failure status
	CodeNegativeAck     = "negative-ack"     // the Bot answered AE/CE/AR/CR
	CodeDuplicate       = "duplicate"        // nacked: the control id was already used
)

// Reasons written to MSA-3 by the agent, as the reference does.
const (
	ReasonDuplicate = "duplicate control id"
	ReasonStorage   = "storage error"
)

// RetryMode selects how failed dispatches are treated (§6.5).
type RetryMode string

// Retry modes.
const (
	RetryNone       RetryMode = "none"       // no retries: every failure is terminal
	RetryNormal     RetryMode = "normal"     // HTTP status decides; ambiguous failures wait for an operator
	RetryGuaranteed RetryMode = "guaranteed" // MSA-1 decides; ambiguous failures are retried (duplicates accepted)
)

// ParseRetryMode validates a retry mode name.
func ParseRetryMode(v string) (RetryMode, error) {
	switch m := RetryMode(v); m {
	case RetryNone, RetryNormal, RetryGuaranteed:
		return m, nil
	}
	return "", fmt.Errorf("unknown retry mode %q: use none, normal or guaranteed", v)
}

// Retry defaults of the reference.
const (
	DefaultBaseDelay         = time.Second
	DefaultMaxDelay          = time.Minute
	DefaultMultiplier        = 2.0
	DefaultNormalMaxAttempts = 10
)

// RetryPolicy is the resolved retry configuration of one row. It is stored
// with the row, so a configuration change does not alter rows already
// accepted.
type RetryPolicy struct {
	Mode       RetryMode
	BaseDelay  time.Duration
	MaxDelay   time.Duration
	Multiplier float64
	// MaxAttempts is how many failed attempts land the row terminal; 0 means
	// unlimited.
	MaxAttempts int
}

// DefaultRetryPolicy returns the reference defaults for mode.
func DefaultRetryPolicy(mode RetryMode) RetryPolicy {
	p := RetryPolicy{Mode: mode, BaseDelay: DefaultBaseDelay, MaxDelay: DefaultMaxDelay, Multiplier: DefaultMultiplier}
	if mode == RetryNormal {
		p.MaxAttempts = DefaultNormalMaxAttempts
	}
	return p
}

// normalize fills zero fields with the defaults (mode: guaranteed) and clamps
// a maximum delay below the base, which the caller is expected to have
// warned about.
func (p RetryPolicy) normalize() (RetryPolicy, error) {
	if p.Mode == "" {
		p.Mode = RetryGuaranteed
	}
	if _, err := ParseRetryMode(string(p.Mode)); err != nil {
		return p, err
	}
	if p.BaseDelay < 0 || p.MaxDelay < 0 || p.Multiplier < 0 || p.MaxAttempts < 0 {
		return p, fmt.Errorf("negative retry setting in %+v", p)
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = DefaultBaseDelay
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = DefaultMaxDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	return p, nil
}

// capped is min(max, base × multiplier^(failures−1)).
func (p RetryPolicy) capped(failures int) time.Duration {
	if failures < 1 {
		failures = 1
	}
	ms := float64(p.BaseDelay.Milliseconds()) * math.Pow(p.Multiplier, float64(failures-1))
	return time.Duration(math.Min(ms, float64(p.MaxDelay.Milliseconds()))) * time.Millisecond
}

// delay draws the wait before the next attempt uniformly from
// [capped/2, capped], in whole milliseconds. rnd(n) returns a value in [0, n).
func (p RetryPolicy) delay(failures int, rnd func(n int64) int64) time.Duration {
	c := p.capped(failures).Milliseconds()
	lo := c / 2
	return time.Duration(lo+rnd(c-lo+1)) * time.Millisecond
}

// verdict is the classification of one dispatch outcome.
type verdict struct {
	state State // processed, rejected or failed
	retry bool  // failed, but the mode allows another attempt
	relay bool  // the server's answer is owed to the device
	code  string
	text  string
}

// maxErrorText bounds last_error; server error bodies can be large.
const maxErrorText = 1000

// classifyResponse applies the §6.5 rules to a server answer.
func classifyResponse(mode RetryMode, contentType string, status int, body string) verdict {
	if mode == RetryGuaranteed {
		if code, text, ok := ackOf(contentType, body); ok {
			switch code {
			case hl7.AA, hl7.CA:
				return verdict{state: StateProcessed, relay: true}
			case hl7.AR, hl7.CR:
				return verdict{state: StateRejected, relay: true, code: CodeNegativeAck, text: ackText(code, text)}
			default: // AE, CE: retried without relaying, so a later AA is not contradicted
				return verdict{state: StateFailed, retry: true, code: CodeNegativeAck, text: ackText(code, text)}
			}
		}
		if status >= 400 {
			return verdict{state: StateFailed, retry: true, code: CodeServerStatus, text: statusText(status, body)}
		}
		return verdict{state: StateProcessed, relay: true}
	}
	switch {
	case status == 429 || status >= 500:
		return verdict{state: StateFailed, retry: mode == RetryNormal, code: CodeServerStatus, text: statusText(status, body)}
	case status >= 400:
		return verdict{state: StateRejected, code: CodeServerStatus, text: statusText(status, body)}
	}
	return verdict{state: StateProcessed, relay: true}
}

// classifyAmbiguous handles failures where the server may have processed the
// message: only guaranteed mode retries them.
func classifyAmbiguous(mode RetryMode, code, text string) verdict {
	return verdict{state: StateFailed, retry: mode == RetryGuaranteed, code: code, text: text}
}

// ackOf extracts MSA-1 and MSA-3 from an HL7 answer.
func ackOf(contentType, body string) (hl7.AckCode, string, bool) {
	if contentType != "" && contentType != protocol.ContentTypeHL7 {
		return "", "", false
	}
	m, err := hl7.Parse(body)
	if err != nil {
		return "", "", false
	}
	code := hl7.AckCode(strings.ToUpper(string(hl7.AckCodeOf(m))))
	if !code.Valid() {
		return "", "", false
	}
	return code, m.Get("MSA-3"), true
}

func ackText(code hl7.AckCode, text string) string {
	if text == "" {
		return truncate("Server answered " + string(code))
	}
	return truncate("Server answered " + string(code) + ": " + text)
}

func statusText(status int, body string) string {
	return truncate(fmt.Sprintf("Server returned %d: %s", status, body))
}

func truncate(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	return s[:maxErrorText] + "…"
}
