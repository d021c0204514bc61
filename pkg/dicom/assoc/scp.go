package assoc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
	"github.com/medplum-agent/medplum-agent/pkg/listener"
)

// AssociationInfo identifies the association a request arrived on.
type AssociationInfo struct {
	CallingAE  string
	CalledAE   string
	RemoteAddr string
}

// EchoRequest is a received C-ECHO-RQ.
type EchoRequest struct {
	AssociationInfo
}

// StoreRequest is a received C-STORE-RQ. Data streams the dataset exactly as
// received, in TransferSyntax, without a Part-10 header; it is only valid
// during the handler call. A Read error from Data means the association
// failed mid-transfer: no response will be sent.
type StoreRequest struct {
	AssociationInfo
	MessageID               uint16
	SOPClass                string
	SOPInstance             string
	TransferSyntax          string
	Priority                dimse.Priority
	MoveOriginatorAE        string // set when sent as a C-MOVE sub-operation
	MoveOriginatorMessageID uint16
	Data                    io.Reader
}

// Handlers are the services a Server offers. Verification is always
// offered; a nil OnEcho answers Success. Storage SOP classes are offered only
// when OnStore is set; otherwise their contexts are rejected with result 3
// (abstract syntax not supported), as is every other service.
type Handlers struct {
	OnEcho  func(ctx context.Context, req EchoRequest) dimse.Status
	OnStore func(ctx context.Context, req StoreRequest) dimse.Status
}

// Server is a DICOM acceptor (SCP). Each association runs on its own
// goroutine and its messages are handled one at a time, in order. Configure
// the exported fields before Listen.
type Server struct {
	// AETitle, when set, is the only called AE accepted; others are
	// rejected with reason 7 (called AE title not recognized).
	AETitle string
	// AllowedCallers, when non-empty, lists the calling AEs accepted;
	// others are rejected with reason 3.
	AllowedCallers []string
	// MaxPDU is the Maximum Length we announce and enforce; default
	// DefaultMaxPDU.
	MaxPDU uint32
	// TransferSyntaxes lists the accepted transfer syntaxes in our order of
	// preference; default dicom.DefaultTransferSyntaxes().
	TransferSyntaxes []string
	Handlers         Handlers
	// MaxAssociations caps concurrent associations; further requests are
	// rejected as transient (local limit exceeded). 0 means no cap.
	MaxAssociations int
	// MaxDataSetSize caps one received dataset; the association is aborted
	// beyond it. Default dimse.DefaultMaxDataSetSize.
	MaxDataSetSize int64
	// ARTIMTimeout bounds the wait for A-ASSOCIATE-RQ after connect and for
	// the peer to close after release or abort; default
	// DefaultARTIMTimeout.
	ARTIMTimeout time.Duration
	// IdleTimeout aborts an association when no byte arrives for this long
	// between or inside messages; default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// WriteTimeout bounds each PDU write; default DefaultTimeout.
	WriteTimeout time.Duration
	// Implementation identity; defaults from package dicom.
	ImplementationClassUID    string
	ImplementationVersionName string
	// Logger receives association events; nil discards them.
	Logger *slog.Logger

	cfg     settings
	log     *slog.Logger
	mu      sync.Mutex
	ln      net.Listener
	conns   map[*conn]context.CancelFunc
	active  int // established associations
	closing bool
	serving bool
	wg      sync.WaitGroup
}

var errServerClosed = errors.New("dicom: server closed")

// Listen validates the configuration and binds addr ("host:port", or
// ":port" for all interfaces). A port in use fails here, at once.
func (s *Server) Listen(addr string) error {
	cfg, err := s.effective()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errServerClosed
	case s.ln != nil:
		return errors.New("dicom: server already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.cfg, s.ln = cfg, ln
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.conns = map[*conn]context.CancelFunc{}
	return nil
}

// settings are a Server's effective configuration, fixed by Listen.
type settings struct {
	aeTitle          string
	allowedCallers   []string
	maxPDU           uint32
	transferSyntaxes []string
	handlers         Handlers
	maxAssociations  int
	maxDataSetSize   int64
	artim, idle      time.Duration
	writeTimeout     time.Duration
	implClassUID     string
	implVersionName  string
}

func (s *Server) effective() (settings, error) {
	c := settings{
		aeTitle: strings.TrimSpace(s.AETitle), maxPDU: s.MaxPDU, transferSyntaxes: s.TransferSyntaxes,
		handlers: s.Handlers, maxAssociations: s.MaxAssociations, maxDataSetSize: s.MaxDataSetSize,
		artim: s.ARTIMTimeout, idle: s.IdleTimeout, writeTimeout: s.WriteTimeout,
		implClassUID: s.ImplementationClassUID, implVersionName: s.ImplementationVersionName,
	}
	if c.aeTitle != "" && !dicom.ValidAETitle(c.aeTitle) {
		return c, fmt.Errorf("dicom: invalid AE title %q", c.aeTitle)
	}
	for _, ae := range s.AllowedCallers {
		if !dicom.ValidAETitle(ae) {
			return c, fmt.Errorf("dicom: invalid allowed caller AE title %q", ae)
		}
		c.allowedCallers = append(c.allowedCallers, strings.TrimSpace(ae))
	}
	switch {
	case c.maxPDU == 0:
		c.maxPDU = DefaultMaxPDU
	case c.maxPDU < 1024 || c.maxPDU > pdu.HardLimit:
		return c, fmt.Errorf("dicom: max PDU %d outside 1024..%d", c.maxPDU, pdu.HardLimit)
	}
	if len(c.transferSyntaxes) == 0 {
		c.transferSyntaxes = dicom.DefaultTransferSyntaxes()
	}
	for _, ts := range c.transferSyntaxes {
		if !dicom.ValidUID(ts) {
			return c, fmt.Errorf("dicom: invalid transfer syntax UID %q", ts)
		}
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.artim, DefaultARTIMTimeout}, {&c.idle, DefaultIdleTimeout}, {&c.writeTimeout, DefaultTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.implClassUID == "" {
		c.implClassUID = dicom.ImplementationClassUID
	}
	if c.implVersionName == "" {
		c.implVersionName = dicom.ImplementationVersionName
	}
	return c, nil
}

// Addr returns the listening address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve accepts connections until Shutdown, then returns nil. It must be
// called once, after Listen.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	switch {
	case ln == nil:
		s.mu.Unlock()
		return errors.New("dicom: Serve called before Listen")
	case s.serving:
		s.mu.Unlock()
		return errors.New("dicom: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	return listener.Serve(ln, s.isClosing, s.start, func(err error, delay time.Duration) {
		s.log.Warn("accept failed", "err", err, "retry_in", delay)
	})
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) start(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return
	}
	c := newConn(nc, s.cfg.artim, s.cfg.writeTimeout)
	c.maxRecv = s.cfg.maxPDU
	ctx, cancel := context.WithCancel(context.Background())
	s.conns[c] = cancel
	// Added under mu with closing false, so never after Shutdown's Wait.
	s.wg.Add(1)
	go s.serveConn(ctx, c)
}

// Shutdown stops accepting, lets every association finish the message in
// progress, then aborts it (only the requestor may release). It returns
// when all associations have ended, or when ctx is done, in which case the
// remaining connections are closed and their handlers' contexts cancelled.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.stopping.Store(true)
		// Wake idle readers; connReader lets busy ones carry on.
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c, cancel := range s.conns {
			cancel()
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (s *Server) serveConn(ctx context.Context, c *conn) {
	log := s.log.With("remote", c.nc.RemoteAddr().String())
	established := false
	defer func() {
		s.mu.Lock()
		s.conns[c]()
		delete(s.conns, c)
		if established {
			s.active--
		}
		s.mu.Unlock()
		s.wg.Done()
	}()

	// Sta2: transport open, ARTIM running until A-ASSOCIATE-RQ.
	c.fixed = time.Now().Add(s.cfg.artim)
	p, err := c.readPDU(maxAssociateLen)
	c.fixed = time.Time{}
	if err == nil {
		if _, ok := p.(*pdu.AssociateRQ); !ok {
			err = &unexpectedPDUError{p.Type()}
			if a, ok := p.(*pdu.Abort); ok {
				err = &AbortError{*a}
			}
		}
	}
	if err != nil {
		if src, _, _ := abortReason(err); src == pdu.AbortServiceProvider {
			log.Warn("invalid request, aborting", "err", err)
		} else {
			log.Info("connection closed without association", "err", err)
		}
		if isTimeout(err) || errors.Is(err, errStopping) {
			c.close() // ARTIM expiry: close without a PDU
		} else {
			c.shutdown(err)
		}
		return
	}
	rq := p.(*pdu.AssociateRQ)
	log = log.With("calling_ae", rq.CallingAE, "called_ae", rq.CalledAE)

	ac, rj, err := s.negotiate(rq, c)
	if err != nil {
		log.Warn("invalid A-ASSOCIATE-RQ, aborting", "err", err)
		c.shutdown(err)
		return
	}
	if rj == nil {
		s.mu.Lock()
		if s.cfg.maxAssociations > 0 && s.active >= s.cfg.maxAssociations {
			rj = &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.SourceServiceProviderPresentation, Reason: pdu.ReasonLocalLimitExceeded}
		} else {
			s.active++
			established = true
		}
		s.mu.Unlock()
	}
	if rj != nil {
		log.Warn("association rejected", "reason", rj.String())
		if c.writePDU(rj) != nil {
			c.close()
			return
		}
		c.closeAfterPeer() // Sta13
		return
	}
	if err := c.writePDU(ac); err != nil {
		log.Warn("sending A-ASSOCIATE-AC failed", "err", err)
		c.close()
		return
	}
	accepted := 0
	for _, pc := range ac.PresentationContexts {
		if pc.Result == pdu.ResultAcceptance {
			accepted++
			continue
		}
		log.Info("presentation context rejected", "id", pc.ID,
			"abstract_syntax", proposedAbstract(rq, pc.ID), "result", int(pc.Result), "reason", pc.Result.String())
	}
	log.Info("association accepted", "contexts_accepted", accepted, "contexts_proposed", len(rq.PresentationContexts),
		"peer_max_pdu", rq.UserInfo.MaxLength, "peer_implementation", rq.UserInfo.ImplementationClassUID)

	// Sta6.
	c.idle = s.cfg.idle
	info := AssociationInfo{CallingAE: rq.CallingAE, CalledAE: rq.CalledAE, RemoteAddr: c.nc.RemoteAddr().String()}
	err = s.serveMessages(ctx, c, info, dimse.NewWriter(c, rq.UserInfo.MaxLength))
	s.end(c, err, log)
}

func proposedAbstract(rq *pdu.AssociateRQ, id uint8) string {
	for _, pc := range rq.PresentationContexts {
		if pc.ID == id {
			return pc.AbstractSyntax
		}
	}
	return ""
}

// negotiate answers an A-ASSOCIATE-RQ with an AC or an RJ, recording the
// accepted contexts in c. A malformed request is an error (to be aborted).
func (s *Server) negotiate(rq *pdu.AssociateRQ, c *conn) (*pdu.AssociateAC, *pdu.AssociateRJ, error) {
	user := func(r pdu.RejectReason) *pdu.AssociateRJ {
		return &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceUser, Reason: r}
	}
	switch {
	case rq.ProtocolVersion&1 == 0:
		return nil, &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceProviderACSE, Reason: pdu.ReasonProtocolVersionNotSupported}, nil
	case rq.ApplicationContext != dicom.ApplicationContextName:
		return nil, user(pdu.ReasonApplicationContextNotSupported), nil
	case s.cfg.aeTitle != "" && rq.CalledAE != s.cfg.aeTitle:
		return nil, user(pdu.ReasonCalledAENotRecognized), nil
	case len(s.cfg.allowedCallers) > 0 && !slices.Contains(s.cfg.allowedCallers, rq.CallingAE):
		return nil, user(pdu.ReasonCallingAENotRecognized), nil
	}
	ac := &pdu.AssociateAC{
		ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
		ApplicationContext: dicom.ApplicationContextName,
		UserInfo: pdu.UserInfo{
			MaxLength:                 s.cfg.maxPDU,
			ImplementationClassUID:    s.cfg.implClassUID,
			ImplementationVersionName: s.cfg.implVersionName,
		},
	}
	c.contexts = map[uint8]*pcontext{}
	seen := map[uint8]bool{}
	for _, pc := range rq.PresentationContexts {
		if seen[pc.ID] {
			return nil, nil, fmt.Errorf("%w: presentation context ID %d proposed twice", pdu.ErrMalformed, pc.ID)
		}
		seen[pc.ID] = true
		res, ts := s.judge(pc)
		if res == pdu.ResultAcceptance {
			c.contexts[pc.ID] = &pcontext{id: pc.ID, abstractSyntax: pc.AbstractSyntax, transferSyntax: ts}
		} else {
			// Like dcmtk, keep a transfer syntax sub-item in rejected
			// items: some parsers expect one.
			ts = dicom.ImplicitVRLittleEndian
		}
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.ID, Result: res, TransferSyntax: ts})
	}
	return ac, nil, nil
}

// judge decides one proposed context: the first of our transfer syntaxes
// that the peer proposed wins, whatever the peer's order.
func (s *Server) judge(pc pdu.PresentationContextRQ) (pdu.Result, string) {
	switch {
	case pc.ID%2 == 0:
		return pdu.ResultNoReason, ""
	case !s.serves(pc.AbstractSyntax):
		return pdu.ResultAbstractSyntaxNotSupported, ""
	}
	for _, ts := range s.cfg.transferSyntaxes {
		if slices.Contains(pc.TransferSyntaxes, ts) {
			return pdu.ResultAcceptance, ts
		}
	}
	return pdu.ResultTransferSyntaxesNotSupported, ""
}

func (s *Server) serves(abstract string) bool {
	return abstract == dicom.VerificationSOPClass || s.cfg.handlers.OnStore != nil && dicom.IsStorageSOPClass(abstract)
}

// serveMessages runs Sta6 until the association ends, returning why.
func (s *Server) serveMessages(ctx context.Context, c *conn, info AssociationInfo, w *dimse.Writer) error {
	rd := dimse.NewReader(c, dimse.Limits{MaxDataSetSize: s.cfg.maxDataSetSize})
	for {
		c.busy.Store(false)
		m, err := rd.ReadMessage()
		if err != nil {
			return err
		}
		rsp := s.dispatch(ctx, c, info, m)
		if m.DataSet != nil {
			// Whatever the handler left unread; an error here means the
			// dataset never completed, so there is nothing to answer.
			if _, err := io.Copy(io.Discard, m.DataSet); err != nil {
				return err
			}
		}
		if rsp == nil {
			continue
		}
		if err := w.WriteCommand(m.ContextID, rsp); err != nil {
			return err
		}
	}
}

// dispatch runs the handler for one request and returns the response
// command, or nil when none is due.
func (s *Server) dispatch(ctx context.Context, c *conn, info AssociationInfo, m *dimse.Message) *dimse.Command {
	cmd := m.Command
	if cmd.CommandField == dimse.CCancelRQ || cmd.CommandField.IsResponse() {
		// C-CANCEL has no response, and we send no requests whose
		// responses could arrive here.
		return nil
	}
	pc := c.contexts[m.ContextID]
	rsp := &dimse.Command{
		CommandField: cmd.CommandField.Response(), AffectedSOPClassUID: cmd.AffectedSOPClassUID,
		MessageIDBeingRespondedTo: cmd.MessageID,
	}
	switch {
	case cmd.CommandField == dimse.CEchoRQ && pc.abstractSyntax == dicom.VerificationSOPClass:
		rsp.Status = dimse.StatusSuccess
		if s.cfg.handlers.OnEcho != nil {
			rsp.Status = s.cfg.handlers.OnEcho(ctx, EchoRequest{info})
		}
	case cmd.CommandField == dimse.CStoreRQ && pc.abstractSyntax != dicom.VerificationSOPClass:
		rsp.AffectedSOPInstanceUID = cmd.AffectedSOPInstanceUID
		switch {
		case cmd.AffectedSOPClassUID != pc.abstractSyntax:
			rsp.Status = dimse.StatusSOPClassNotSupported
		case !cmd.HasDataSet:
			rsp.Status = dimse.StatusCannotUnderstand
		default:
			rsp.Status = s.cfg.handlers.OnStore(ctx, StoreRequest{
				AssociationInfo: info, MessageID: cmd.MessageID,
				SOPClass: cmd.AffectedSOPClassUID, SOPInstance: cmd.AffectedSOPInstanceUID,
				TransferSyntax: pc.transferSyntax, Priority: cmd.Priority,
				MoveOriginatorAE: cmd.MoveOriginatorAETitle, MoveOriginatorMessageID: cmd.MoveOriginatorMessageID,
				Data: m.DataSet,
			})
		}
	default:
		rsp.Status = dimse.StatusUnrecognizedOperation
	}
	return rsp
}

// end finishes an association after serveMessages returned err.
func (s *Server) end(c *conn, err error, log *slog.Logger) {
	var ae *AbortError
	switch {
	case errors.Is(err, errReleaseRQ) && !c.busy.Load():
		if werr := c.writePDU(&pdu.ReleaseRP{}); werr != nil {
			log.Warn("sending A-RELEASE-RP failed", "err", werr)
			c.close()
			return
		}
		log.Info("association released")
		c.closeAfterPeer() // Sta13: the requestor closes
		return
	case errors.As(err, &ae):
		log.Warn("association aborted by peer", "source", ae.Source.String(), "reason", ae.Reason.String())
	case errors.Is(err, errStopping):
		log.Info("server shutting down, aborting association")
	case isTimeout(err):
		log.Warn("association idle, aborting", "timeout", s.cfg.idle)
	case transportGone(err):
		log.Warn("connection closed without release", "err", err)
	default:
		log.Warn("protocol error, aborting association", "err", err)
	}
	c.shutdown(err)
}
