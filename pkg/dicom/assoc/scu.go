package assoc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// Default AE titles of a requestor.
const (
	DefaultCallingAE = "MEDPLUM"
	DefaultCalledAE  = "ANY-SCP"
)

// maxContexts is the most presentation contexts one RQ can carry (odd IDs
// 1..255).
const maxContexts = 128

// Context is a presentation context to propose.
type Context struct {
	AbstractSyntax   string
	TransferSyntaxes []string // in our order of preference
}

// Timeouts of a requestor; zero fields take DefaultTimeout.
type Timeouts struct {
	// Connect bounds the TCP connect.
	Connect time.Duration
	// ACSE bounds the wait for A-ASSOCIATE-AC/RJ and A-RELEASE-RP, and for
	// the peer to close after we abort (ARTIM).
	ACSE time.Duration
	// DIMSE bounds each wait for response bytes and each write.
	DIMSE time.Duration
}

// Options configure Dial. Zero fields take defaults.
type Options struct {
	CallingAE string // default DefaultCallingAE
	CalledAE  string // default DefaultCalledAE
	// Contexts to propose, at most 128; default Verification with explicit
	// and implicit VR little endian.
	Contexts []Context
	// MaxPDU is the Maximum Length we announce; default DefaultMaxPDU.
	MaxPDU   uint32
	Timeouts Timeouts
	// Implementation identity; defaults from package dicom.
	ImplementationClassUID    string
	ImplementationVersionName string
}

func (o Options) withDefaults() (Options, error) {
	if o.CallingAE == "" {
		o.CallingAE = DefaultCallingAE
	}
	if o.CalledAE == "" {
		o.CalledAE = DefaultCalledAE
	}
	for _, ae := range []string{o.CallingAE, o.CalledAE} {
		if !dicom.ValidAETitle(ae) {
			return o, fmt.Errorf("dicom: invalid AE title %q", ae)
		}
	}
	if len(o.Contexts) == 0 {
		o.Contexts = []Context{{dicom.VerificationSOPClass, []string{dicom.ExplicitVRLittleEndian, dicom.ImplicitVRLittleEndian}}}
	}
	if len(o.Contexts) > maxContexts {
		return o, fmt.Errorf("dicom: %d presentation contexts proposed, at most %d fit in one association", len(o.Contexts), maxContexts)
	}
	for _, pc := range o.Contexts {
		if pc.AbstractSyntax == "" || len(pc.TransferSyntaxes) == 0 {
			return o, fmt.Errorf("dicom: presentation context %q needs an abstract syntax and transfer syntaxes", pc.AbstractSyntax)
		}
	}
	if o.MaxPDU == 0 {
		o.MaxPDU = DefaultMaxPDU
	}
	for _, d := range []*time.Duration{&o.Timeouts.Connect, &o.Timeouts.ACSE, &o.Timeouts.DIMSE} {
		if *d <= 0 {
			*d = DefaultTimeout
		}
	}
	if o.ImplementationClassUID == "" {
		o.ImplementationClassUID = dicom.ImplementationClassUID
	}
	if o.ImplementationVersionName == "" {
		o.ImplementationVersionName = dicom.ImplementationVersionName
	}
	return o, nil
}

// ContextResult is the outcome of one proposed presentation context.
type ContextResult struct {
	ID             uint8
	AbstractSyntax string
	TransferSyntax string // the accepted one; empty unless Result is acceptance
	Result         pdu.Result
}

// PeerInfo is what the acceptor announced in its A-ASSOCIATE-AC.
type PeerInfo struct {
	ImplementationClassUID    string
	ImplementationVersionName string
	MaxPDU                    uint32 // 0: no limit
}

// Association is an established association as requestor. Its methods
// may be called from several goroutines; operations run one at a time
// (asynchronous operations window 1/1). After any failure the association
// is aborted and every later call returns ErrClosed.
type Association struct {
	c        *conn
	timeouts Timeouts
	results  []ContextResult
	peer     PeerInfo
	w        *dimse.Writer
	r        *dimse.Reader

	mu     sync.Mutex // serializes operations
	msgID  uint16
	closed atomic.Bool
}

// opError is a failure with a message of ours, the kinds (sentinel errors)
// it matches, and the underlying cause.
type opError struct {
	msg   string
	kinds []error
	err   error
}

func (e *opError) Error() string   { return e.msg + ": " + e.err.Error() }
func (e *opError) Unwrap() []error { return append(slices.Clone(e.kinds), e.err) }

// Dial connects to addr and negotiates an association. A rejection is
// returned as *RejectError; connection failures match ErrConnect and
// timeouts (including ctx's deadline) match ErrTimeout.
func Dial(ctx context.Context, addr string, opts Options) (*Association, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: o.Timeouts.Connect}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		kinds := []error{ErrConnect}
		if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			kinds = append(kinds, ErrTimeout)
		}
		return nil, &opError{msg: "dicom: connect to " + addr, kinds: kinds, err: err}
	}
	a := &Association{c: newConn(nc, o.Timeouts.ACSE, o.Timeouts.DIMSE), timeouts: o.Timeouts}
	a.c.maxRecv = o.MaxPDU
	if err := a.run(ctx, "A-ASSOCIATE", func() error { return a.associate(o) }); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Association) associate(o Options) error {
	rq := &pdu.AssociateRQ{
		ProtocolVersion: 1, CalledAE: o.CalledAE, CallingAE: o.CallingAE,
		ApplicationContext: dicom.ApplicationContextName,
		UserInfo: pdu.UserInfo{
			MaxLength:                 o.MaxPDU,
			ImplementationClassUID:    o.ImplementationClassUID,
			ImplementationVersionName: o.ImplementationVersionName,
		},
	}
	for i, pc := range o.Contexts {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{
			ID: uint8(2*i + 1), AbstractSyntax: pc.AbstractSyntax, TransferSyntaxes: pc.TransferSyntaxes,
		})
	}
	if err := a.c.writePDU(rq); err != nil {
		return err
	}
	a.c.fixed = time.Now().Add(o.Timeouts.ACSE)
	p, err := a.c.readPDU(maxAssociateLen)
	a.c.fixed = time.Time{}
	if err != nil {
		return err
	}
	switch p := p.(type) {
	case *pdu.AssociateAC:
		return a.accepted(rq, p)
	case *pdu.AssociateRJ:
		return &RejectError{*p}
	case *pdu.Abort:
		return &AbortError{*p}
	default:
		return &unexpectedPDUError{p.Type()}
	}
}

// accepted records the outcome of negotiation from the AC.
func (a *Association) accepted(rq *pdu.AssociateRQ, ac *pdu.AssociateAC) error {
	a.c.contexts = map[uint8]*pcontext{}
	answers := map[uint8]pdu.PresentationContextAC{}
	for _, pc := range ac.PresentationContexts {
		answers[pc.ID] = pc
	}
	for _, prop := range rq.PresentationContexts {
		res := ContextResult{ID: prop.ID, AbstractSyntax: prop.AbstractSyntax, Result: pdu.ResultNoReason}
		if ans, ok := answers[prop.ID]; ok {
			res.Result = ans.Result
			if ans.Result == pdu.ResultAcceptance {
				if !slices.Contains(prop.TransferSyntaxes, ans.TransferSyntax) {
					return fmt.Errorf("%w: context %d accepted with transfer syntax %q, which was not proposed", ErrProtocol, prop.ID, ans.TransferSyntax)
				}
				res.TransferSyntax = ans.TransferSyntax
				a.c.contexts[prop.ID] = &pcontext{id: prop.ID, abstractSyntax: prop.AbstractSyntax, transferSyntax: ans.TransferSyntax}
			}
		}
		a.results = append(a.results, res)
	}
	a.peer = PeerInfo{
		ImplementationClassUID:    ac.UserInfo.ImplementationClassUID,
		ImplementationVersionName: ac.UserInfo.ImplementationVersionName,
		MaxPDU:                    ac.UserInfo.MaxLength,
	}
	a.w = dimse.NewWriter(a.c, ac.UserInfo.MaxLength)
	a.r = dimse.NewReader(a.c, dimse.Limits{})
	a.c.idle = a.timeouts.DIMSE
	return nil
}

// run executes one operation under ctx. On failure it ends the association
// (A-ABORT when appropriate) and returns the error in terms of the package's
// sentinels.
func (a *Association) run(ctx context.Context, what string, fn func() error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed.Load() {
		return ErrClosed
	}
	a.c.op.Store(&ctx)
	stop := context.AfterFunc(ctx, a.c.poke)
	err := fn()
	stop()
	a.c.op.Store(nil)
	if err == nil {
		return nil
	}
	if a.closed.Swap(true) {
		// Abort or Release ran meanwhile; their outcome stands.
		return ErrClosed
	}
	if ctx.Err() != nil {
		a.c.shutdown(ctx.Err())
	} else {
		a.c.shutdown(err)
	}
	return describe(ctx, what, err)
}

func describe(ctx context.Context, what string, err error) error {
	var rj *RejectError
	var ae *AbortError
	var up *unexpectedPDUError
	var kinds []error
	switch {
	case errors.As(err, &rj), errors.As(err, &ae):
		return err
	case ctx.Err() != nil || pastDeadline(ctx):
		// A read can time out at ctx's deadline just before ctx itself
		// reports it.
		if err = ctx.Err(); err == nil {
			err = context.DeadlineExceeded
		}
		if errors.Is(err, context.DeadlineExceeded) {
			kinds = []error{ErrTimeout}
		}
	case isTimeout(err):
		kinds = []error{ErrTimeout}
	case isProtocolError(err), errors.Is(err, errReleaseRQ), errors.As(err, &up):
		kinds = []error{ErrProtocol}
	}
	return &opError{msg: "dicom: " + what, kinds: kinds, err: err}
}

func pastDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// Contexts returns the outcome of every proposed presentation context.
func (a *Association) Contexts() []ContextResult { return slices.Clone(a.results) }

// Peer returns what the acceptor announced.
func (a *Association) Peer() PeerInfo { return a.peer }

func (a *Association) find(abstract, ts string) *pcontext {
	for _, r := range a.results {
		if r.Result == pdu.ResultAcceptance && r.AbstractSyntax == abstract && (ts == "" || r.TransferSyntax == ts) {
			return a.c.contexts[r.ID]
		}
	}
	return nil
}

func (a *Association) nextID() uint16 {
	a.msgID++
	if a.msgID == 0 {
		a.msgID = 1
	}
	return a.msgID
}

// response reads messages until the response to message id arrives.
func (a *Association) response(id uint16, field dimse.CommandField) (*dimse.Command, error) {
	m, err := a.r.ReadMessage()
	if err != nil {
		return nil, err
	}
	c := m.Command
	if c.CommandField != field || c.MessageIDBeingRespondedTo != id {
		return nil, fmt.Errorf("%w: got %s for message %d while waiting for %s for message %d",
			ErrProtocol, c.CommandField, c.MessageIDBeingRespondedTo, field, id)
	}
	if m.DataSet != nil {
		if _, err := io.Copy(io.Discard, m.DataSet); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Echo sends a C-ECHO-RQ and returns the response status.
func (a *Association) Echo(ctx context.Context) (dimse.Status, error) {
	pc := a.find(dicom.VerificationSOPClass, "")
	if pc == nil {
		return 0, fmt.Errorf("%w for Verification", ErrNoContext)
	}
	var st dimse.Status
	err := a.run(ctx, "C-ECHO", func() error {
		id := a.nextID()
		if err := a.w.WriteCommand(pc.id, &dimse.Command{
			CommandField: dimse.CEchoRQ, AffectedSOPClassUID: dicom.VerificationSOPClass, MessageID: id,
		}); err != nil {
			return err
		}
		rsp, err := a.response(id, dimse.CEchoRSP)
		if err != nil {
			return err
		}
		st = rsp.Status
		return nil
	})
	return st, err
}

// Store sends dataset (encoded in transferSyntax, without Part-10 header)
// as a C-STORE-RQ on a context accepted for sopClass with that transfer
// syntax, and returns the response status. The dataset is streamed in
// fragments of the peer's maximum length. A read error from dataset aborts
// the association, since the message cannot be completed.
func (a *Association) Store(ctx context.Context, sopClass, sopInstance, transferSyntax string, dataset io.Reader) (dimse.Status, error) {
	pc := a.find(sopClass, transferSyntax)
	if pc == nil {
		return 0, fmt.Errorf("%w for %s in %s", ErrNoContext, sopClass, dicom.TransferSyntaxName(transferSyntax))
	}
	var st dimse.Status
	err := a.run(ctx, "C-STORE", func() error {
		id := a.nextID()
		if err := a.w.WriteCommand(pc.id, &dimse.Command{
			CommandField: dimse.CStoreRQ, AffectedSOPClassUID: sopClass, MessageID: id,
			Priority: dimse.PriorityMedium, HasDataSet: true, AffectedSOPInstanceUID: sopInstance,
		}); err != nil {
			return err
		}
		if _, err := a.w.WriteDataSet(pc.id, dataset); err != nil {
			return err
		}
		rsp, err := a.response(id, dimse.CStoreRSP)
		if err != nil {
			return err
		}
		st = rsp.Status
		return nil
	})
	return st, err
}

// Release performs the orderly release (A-RELEASE-RQ/RP) and closes the
// connection. A release collision is answered and does not deadlock.
func (a *Association) Release(ctx context.Context) error {
	err := a.run(ctx, "A-RELEASE", func() error {
		if err := a.c.writePDU(&pdu.ReleaseRQ{}); err != nil {
			return err
		}
		a.c.idle = a.timeouts.ACSE
		for {
			p, err := a.c.readPDU(a.c.maxRecv)
			if err != nil {
				return err
			}
			switch p := p.(type) {
			case *pdu.ReleaseRP:
				return nil
			case *pdu.ReleaseRQ:
				// Collision (PS3.8 Sta9/Sta11): as requestor, answer and
				// keep waiting for our RP.
				if err := a.c.writePDU(&pdu.ReleaseRP{}); err != nil {
					return err
				}
			case *pdu.PDataTF:
				// Late data for an operation that already ended; nothing
				// is outstanding, so it has no taker.
			case *pdu.Abort:
				return &AbortError{*p}
			default:
				return &unexpectedPDUError{p.Type()}
			}
		}
	})
	if err == nil && !a.closed.Swap(true) {
		a.c.close()
	}
	return err
}

// Abort sends an A-ABORT and closes the connection at once. An operation
// running in another goroutine fails.
func (a *Association) Abort() {
	if a.closed.Swap(true) {
		return
	}
	a.c.writePDU(&pdu.Abort{Source: pdu.AbortServiceUser})
	a.c.close()
}
