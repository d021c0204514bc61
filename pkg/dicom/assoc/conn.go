// Package assoc runs DICOM associations over TCP for both roles: Dial makes
// an association as requestor (SCU) and Server accepts them (SCP). It owns
// the upper-layer state machine (PS3.8 9.2): ARTIM, negotiation, release,
// abort, and the mapping of protocol errors to A-ABORT. Message encoding is
// in dimse and PDU encoding in pdu.
package assoc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// Defaults for zero-valued settings.
const (
	DefaultMaxPDU       = 64 << 10
	DefaultARTIMTimeout = 30 * time.Second
	DefaultTimeout      = 30 * time.Second // connect, DIMSE and write timeouts
	DefaultIdleTimeout  = 60 * time.Second
	// maxAssociateLen bounds A-ASSOCIATE-RQ/AC PDUs, which are not covered
	// by the negotiated maximum: 128 contexts with 38 transfer syntaxes
	// each take about 130 KiB.
	maxAssociateLen = 1 << 20
	readBufferSize  = 64 << 10
)

// Errors. Errors returned by this package wrap one of these, or are
// *RejectError or *AbortError.
var (
	ErrTimeout   = errors.New("dicom: timed out")
	ErrConnect   = errors.New("dicom: cannot connect")
	ErrNoContext = errors.New("dicom: no accepted presentation context")
	ErrClosed    = errors.New("dicom: association closed")
	ErrProtocol  = errors.New("dicom: protocol error")
)

// RejectError is returned by Dial when the peer rejects the association.
type RejectError struct {
	pdu.AssociateRJ
}

func (e *RejectError) Error() string {
	return "dicom: association rejected: " + e.AssociateRJ.String()
}

// AbortError reports an A-ABORT received from the peer.
type AbortError struct {
	pdu.Abort
}

func (e *AbortError) Error() string {
	return "dicom: association aborted by the peer (" + e.Abort.String() + ")"
}

// errReleaseRQ is what the PDV source returns when an A-RELEASE-RQ arrives.
var errReleaseRQ = errors.New("dicom: A-RELEASE-RQ received")

// errStopping interrupts an idle read when the server shuts down.
var errStopping = errors.New("dicom: server shutting down")

// unexpectedPDUError is a valid PDU that the current state does not allow.
type unexpectedPDUError struct{ t pdu.Type }

func (e *unexpectedPDUError) Error() string {
	return fmt.Sprintf("dicom: unexpected %s", e.t)
}

// pcontext is a negotiated presentation context.
type pcontext struct {
	id             uint8
	abstractSyntax string
	transferSyntax string
}

// conn is a transport connection carrying one association, for either role.
type conn struct {
	nc      net.Conn
	pr      *pdu.Reader
	maxRecv uint32 // our Maximum Length; bounds received P-DATA-TF
	artim   time.Duration

	// Read deadline policy (see connReader): an absolute deadline when
	// fixed is set, otherwise idle per read; either way no later than the
	// deadline of op, the SCU operation in progress.
	idle  time.Duration
	fixed time.Time
	op    atomic.Pointer[context.Context]

	// SCP shutdown: when stopping, an idle read gives up, but a read
	// inside a message (busy) carries on so the message can complete.
	stopping atomic.Bool
	busy     atomic.Bool

	wmu          sync.Mutex
	wbuf         []byte
	writeTimeout time.Duration

	contexts map[uint8]*pcontext // by ID, accepted ones only
	items    []pdu.PDV           // PDVs left in the current P-DATA-TF

	closeOnce sync.Once
}

func newConn(nc net.Conn, artim, writeTimeout time.Duration) *conn {
	c := &conn{nc: nc, artim: artim, writeTimeout: writeTimeout}
	c.pr = pdu.NewReader(bufio.NewReaderSize(connReader{c}, readBufferSize))
	return c
}

// connReader applies the read deadline policy to every socket read, so a
// peer that trickles bytes is bounded per read, not per PDU.
type connReader struct{ c *conn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	for {
		dl := c.readDeadline()
		c.nc.SetReadDeadline(dl)
		if err := c.interrupted(); err != nil {
			return 0, err
		}
		n, err := c.nc.Read(p)
		if err != nil && isTimeout(err) && (dl.IsZero() || time.Now().Before(dl)) {
			// Our deadline has not passed: Shutdown or a cancelled
			// operation moved it to wake us up.
			if ierr := c.interrupted(); ierr != nil {
				return n, ierr
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *conn) readDeadline() time.Time {
	d := c.fixed
	if d.IsZero() && c.idle > 0 {
		d = time.Now().Add(c.idle)
	}
	return c.clampToOp(d)
}

func (c *conn) clampToOp(d time.Time) time.Time {
	if op := c.op.Load(); op != nil {
		if od, ok := (*op).Deadline(); ok && (d.IsZero() || od.Before(d)) {
			return od
		}
	}
	return d
}

func (c *conn) interrupted() error {
	if op := c.op.Load(); op != nil && (*op).Err() != nil {
		return (*op).Err()
	}
	if c.stopping.Load() && !c.busy.Load() {
		return errStopping
	}
	return nil
}

// poke makes blocked reads and writes return at once.
func (c *conn) poke() { c.nc.SetDeadline(time.Unix(1, 0)) }

// Write sends one complete PDU. dimse.Writer calls it once per PDU.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(p)
}

func (c *conn) writeLocked(p []byte) (int, error) {
	var d time.Time
	if c.writeTimeout > 0 {
		d = time.Now().Add(c.writeTimeout)
	}
	c.nc.SetWriteDeadline(c.clampToOp(d))
	return c.nc.Write(p)
}

func (c *conn) writePDU(p pdu.PDU) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := pdu.Append(c.wbuf[:0], p)
	if err != nil {
		return err
	}
	c.wbuf = b
	_, err = c.writeLocked(b)
	return err
}

// readPDU reads one PDU with limit as the largest acceptable length.
func (c *conn) readPDU(limit uint32) (pdu.PDU, error) {
	return c.pr.Next(limit)
}

// NextPDV implements dimse.PDVSource: it yields the PDVs of received
// P-DATA-TF PDUs and turns any other PDU into an error.
func (c *conn) NextPDV() (pdu.PDV, error) {
	for len(c.items) == 0 {
		p, err := c.readPDU(c.maxRecv)
		if err != nil {
			return pdu.PDV{}, err
		}
		switch p := p.(type) {
		case *pdu.PDataTF:
			c.items = p.Items
		case *pdu.ReleaseRQ:
			return pdu.PDV{}, errReleaseRQ
		case *pdu.Abort:
			return pdu.PDV{}, &AbortError{*p}
		default:
			return pdu.PDV{}, &unexpectedPDUError{p.Type()}
		}
	}
	v := c.items[0]
	c.items = c.items[1:]
	if c.contexts[v.ContextID] == nil {
		return pdu.PDV{}, fmt.Errorf("%w: PDV on presentation context %d, which was not accepted", pdu.ErrMalformed, v.ContextID)
	}
	c.busy.Store(true)
	return v, nil
}

// abortReason picks the A-ABORT source and reason for a failure, and
// whether an A-ABORT should be sent at all: not when the peer aborted or
// the transport is gone.
func abortReason(err error) (src pdu.AbortSource, reason pdu.AbortReason, send bool) {
	var ae *AbortError
	var rj *RejectError
	var up *unexpectedPDUError
	switch {
	case errors.As(err, &ae), errors.As(err, &rj), transportGone(err):
		return 0, 0, false
	case errors.Is(err, pdu.ErrUnknownType):
		return pdu.AbortServiceProvider, pdu.AbortUnrecognizedPDU, true
	case errors.As(err, &up), errors.Is(err, errReleaseRQ):
		return pdu.AbortServiceProvider, pdu.AbortUnexpectedPDU, true
	case isProtocolError(err):
		return pdu.AbortServiceProvider, pdu.AbortInvalidPDUParameterValue, true
	}
	// Timeouts, cancellation, shutdown, local failures: our decision.
	return pdu.AbortServiceUser, 0, true
}

// transportGone reports errors after which nothing can be sent.
func transportGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		isConnReset(err)
}

func isConnReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout() && (oe.Op == "read" || oe.Op == "write")
}

// shutdown ends the connection after the failure err: with no PDU when the
// peer aborted or the transport is gone; otherwise with an A-ABORT. After a
// provider abort (the peer broke the protocol and may still be sending) it
// waits for the peer to close, at most ARTIM (Sta13), because closing with
// unread input resets the connection and can destroy the A-ABORT in flight.
// After a user abort (timeout, cancel, local failure) the peer is silent or
// unwanted, so it closes at once.
func (c *conn) shutdown(err error) {
	src, reason, send := abortReason(err)
	if !send || c.writePDU(&pdu.Abort{Source: src, Reason: reason}) != nil || src != pdu.AbortServiceProvider {
		c.close()
		return
	}
	c.closeAfterPeer()
}

// closeAfterPeer half-closes, discards input until the peer closes or ARTIM
// expires, then closes.
func (c *conn) closeAfterPeer() {
	c.closeOnce.Do(func() {
		if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		c.nc.SetReadDeadline(time.Now().Add(c.artim))
		io.Copy(io.Discard, c.nc)
		c.nc.Close()
	})
}

func (c *conn) close() {
	c.closeOnce.Do(func() { c.nc.Close() })
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// isProtocolError reports a peer's violation of the upper layer or DIMSE
// encoding rules.
func isProtocolError(err error) bool {
	for _, e := range []error{pdu.ErrMalformed, pdu.ErrTooLarge, dimse.ErrSequence, dimse.ErrTooLarge, dimse.ErrMalformedCommand, ErrProtocol} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
