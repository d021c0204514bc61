package assoc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

const scSOPClass = dicom.SecondaryCaptureImageStorage

// stored is what a recording OnStore handler saw.
type stored struct {
	Req  StoreRequest
	Data []byte
}

type recorder struct {
	mu     sync.Mutex
	stores []stored
	echoes atomic.Int32
	status dimse.Status
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		OnEcho: func(ctx context.Context, req EchoRequest) dimse.Status {
			r.echoes.Add(1)
			return dimse.StatusSuccess
		},
		OnStore: func(ctx context.Context, req StoreRequest) dimse.Status {
			data, err := io.ReadAll(req.Data)
			if err != nil {
				return dimse.StatusProcessingFailure
			}
			req.Data = nil
			r.mu.Lock()
			defer r.mu.Unlock()
			r.stores = append(r.stores, stored{req, data})
			return r.status
		},
	}
}

func TestEchoLoopback(t *testing.T) {
	rec := &recorder{}
	addr, logs := startServer(t, &Server{AETitle: "GOSCP", Handlers: rec.handlers()})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{CallingAE: "GOSCU", CalledAE: "GOSCP"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		st, err := a.Echo(ctx)
		if err != nil || st != dimse.StatusSuccess {
			t.Fatalf("Echo = %v, %v", st, err)
		}
	}
	want := []ContextResult{{ID: 1, AbstractSyntax: dicom.VerificationSOPClass, TransferSyntax: dicom.ExplicitVRLittleEndian}}
	if diff := cmp.Diff(want, a.Contexts()); diff != "" {
		t.Errorf("contexts (-want +got):\n%s", diff)
	}
	if p := a.Peer(); p.ImplementationClassUID != dicom.ImplementationClassUID || p.MaxPDU != DefaultMaxPDU {
		t.Errorf("peer %+v", p)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.echoes.Load(); got != 3 {
		t.Errorf("%d echoes handled, want 3", got)
	}
	if _, err := a.Echo(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Echo after Release = %v, want ErrClosed", err)
	}
	waitFor(t, "release in the log", func() bool { return logs.contains("association released", "GOSCU") })
}

func TestStoreLoopback(t *testing.T) {
	rec := &recorder{}
	addr, _ := startServer(t, &Server{MaxPDU: 4096, Handlers: rec.handlers()})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{
		CallingAE: "STORESCU",
		Contexts: []Context{
			{scSOPClass, []string{dicom.ImplicitVRLittleEndian}},
			{scSOPClass, []string{dicom.JPEGLosslessSV1}},
			{"1.2.840.10008.5.1.4.1.1.2", []string{dicom.ExplicitVRBigEndian, dicom.ImplicitVRLittleEndian}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Abort()
	sizes := []int{0, 1, 4096 - 6, 4096 - 5, 100001}
	var want []stored
	for i, n := range sizes {
		data := make([]byte, n)
		rand.Read(data)
		ts := []string{dicom.ImplicitVRLittleEndian, dicom.JPEGLosslessSV1}[i%2]
		inst := "1.2.3." + string(rune('1'+i))
		st, err := a.Store(ctx, scSOPClass, inst, ts, bytes.NewReader(data))
		if err != nil || st != dimse.StatusSuccess {
			t.Fatalf("Store %d = %v, %v", i, st, err)
		}
		want = append(want, stored{StoreRequest{
			AssociationInfo: AssociationInfo{CallingAE: "STORESCU", CalledAE: DefaultCalledAE},
			MessageID:       uint16(i + 1), SOPClass: scSOPClass, SOPInstance: inst, TransferSyntax: ts,
		}, data})
	}
	// CT with EBE or ILE proposed: our order picks ILE over EBE.
	if c := a.Contexts()[2]; c.TransferSyntax != dicom.ImplicitVRLittleEndian {
		t.Errorf("context 5 accepted with %s, want implicit VR LE", c.TransferSyntax)
	}
	if _, err := a.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader(nil)); !errors.Is(err, ErrNoContext) {
		t.Errorf("Store without a matching context = %v, want ErrNoContext", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if diff := cmp.Diff(want, rec.stores, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) }),
		cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".RemoteAddr" }, cmp.Ignore())); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
}

func TestStoreFailureStatus(t *testing.T) {
	rec := &recorder{status: dimse.StatusOutOfResources}
	addr, _ := startServer(t, &Server{Handlers: rec.handlers()})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx)
	st, err := a.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader([]byte("data")))
	if err != nil || st != dimse.StatusOutOfResources {
		t.Errorf("Store = %v, %v; want the handler's status", st, err)
	}
	if _, err := a.Echo(ctx); !errors.Is(err, ErrNoContext) {
		t.Errorf("Echo without Verification = %v, want ErrNoContext", err)
	}
}

func TestNegotiate(t *testing.T) {
	const (
		ele = dicom.ExplicitVRLittleEndian
		ile = dicom.ImplicitVRLittleEndian
		ebe = dicom.ExplicitVRBigEndian
	)
	ctx := func(id uint8, abstract string, ts ...string) pdu.PresentationContextRQ {
		return pdu.PresentationContextRQ{ID: id, AbstractSyntax: abstract, TransferSyntaxes: ts}
	}
	store := func(context.Context, StoreRequest) dimse.Status { return 0 }
	tests := []struct {
		name   string
		server *Server
		rq     *pdu.AssociateRQ
		wantRJ *pdu.AssociateRJ
		want   []pdu.PresentationContextAC
	}{
		{
			name:   "our preference order wins",
			server: &Server{Handlers: Handlers{OnStore: store}},
			rq: echoRQ("A", "B", ctx(1, dicom.VerificationSOPClass, ile, ele),
				ctx(3, scSOPClass, ebe, ile), ctx(5, scSOPClass, dicom.JPEGLosslessSV1, ebe)),
			want: []pdu.PresentationContextAC{{ID: 1, TransferSyntax: ele}, {ID: 3, TransferSyntax: ile}, {ID: 5, TransferSyntax: ebe}},
		},
		{
			name:   "compressed passes through",
			server: &Server{Handlers: Handlers{OnStore: store}},
			rq:     echoRQ("A", "B", ctx(1, scSOPClass, dicom.JPEGLosslessSV1)),
			want:   []pdu.PresentationContextAC{{ID: 1, TransferSyntax: dicom.JPEGLosslessSV1}},
		},
		{
			name:   "configured syntaxes only",
			server: &Server{Handlers: Handlers{OnStore: store}, TransferSyntaxes: []string{ile}},
			rq:     echoRQ("A", "B", ctx(1, scSOPClass, dicom.JPEGLosslessSV1, ele), ctx(3, scSOPClass, ele, ile)),
			want: []pdu.PresentationContextAC{
				{ID: 1, Result: pdu.ResultTransferSyntaxesNotSupported, TransferSyntax: ile},
				{ID: 3, TransferSyntax: ile},
			},
		},
		{
			name: "services not offered",
			rq: echoRQ("A", "B", ctx(1, scSOPClass, ele), ctx(3, dicom.StudyRootQueryRetrieveFind, ele),
				ctx(4, dicom.VerificationSOPClass, ele), ctx(255, dicom.VerificationSOPClass, ele)),
			want: []pdu.PresentationContextAC{
				{ID: 1, Result: pdu.ResultAbstractSyntaxNotSupported, TransferSyntax: ile},
				{ID: 3, Result: pdu.ResultAbstractSyntaxNotSupported, TransferSyntax: ile},
				{ID: 4, Result: pdu.ResultNoReason, TransferSyntax: ile},
				{ID: 255, TransferSyntax: ele},
			},
		},
		{
			name:   "called AE enforced",
			server: &Server{AETitle: "GOSCP"},
			rq:     echoRQ("A", "NOTME"),
			wantRJ: &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceUser, Reason: pdu.ReasonCalledAENotRecognized},
		},
		{
			name:   "called AE matches",
			server: &Server{AETitle: "GOSCP "},
			rq:     echoRQ("A", "GOSCP"),
			want:   []pdu.PresentationContextAC{{ID: 1, TransferSyntax: ile}},
		},
		{
			name:   "calling AE not allowed",
			server: &Server{AllowedCallers: []string{"MODALITY1", "MODALITY2"}},
			rq:     echoRQ("OTHER", "B"),
			wantRJ: &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceUser, Reason: pdu.ReasonCallingAENotRecognized},
		},
		{
			name:   "calling AE allowed",
			server: &Server{AllowedCallers: []string{"MODALITY1", "MODALITY2"}},
			rq:     echoRQ("MODALITY2", "B"),
			want:   []pdu.PresentationContextAC{{ID: 1, TransferSyntax: ile}},
		},
		{
			name:   "application context",
			rq:     func() *pdu.AssociateRQ { rq := echoRQ("A", "B"); rq.ApplicationContext = "1.2.3"; return rq }(),
			wantRJ: &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceUser, Reason: pdu.ReasonApplicationContextNotSupported},
		},
		{
			name:   "protocol version",
			rq:     func() *pdu.AssociateRQ { rq := echoRQ("A", "B"); rq.ProtocolVersion = 2; return rq }(),
			wantRJ: &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceProviderACSE, Reason: pdu.ReasonProtocolVersionNotSupported},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.server
			if s == nil {
				s = &Server{}
			}
			var err error
			if s.cfg, err = s.effective(); err != nil {
				t.Fatal(err)
			}
			ac, rj, err := s.negotiate(tt.rq, &conn{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRJ, rj); diff != "" {
				t.Errorf("reject (-want +got):\n%s", diff)
			}
			if rj != nil {
				return
			}
			if diff := cmp.Diff(tt.want, ac.PresentationContexts); diff != "" {
				t.Errorf("contexts (-want +got):\n%s", diff)
			}
			if ac.CallingAE != tt.rq.CallingAE || ac.CalledAE != tt.rq.CalledAE || ac.UserInfo.MaxLength != DefaultMaxPDU {
				t.Errorf("AC fixed part %+v", ac)
			}
		})
	}
	t.Run("duplicate context ID", func(t *testing.T) {
		s := &Server{}
		s.cfg, _ = s.effective()
		rq := echoRQ("A", "B", ctx(1, dicom.VerificationSOPClass, ele), ctx(1, dicom.VerificationSOPClass, ile))
		if _, _, err := s.negotiate(rq, &conn{}); !errors.Is(err, pdu.ErrMalformed) {
			t.Errorf("negotiate = %v, want ErrMalformed", err)
		}
	})
}

func TestListenErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := (&Server{}).Listen(ln.Addr().String()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on a busy port = %v, want EADDRINUSE", err)
	}
	for _, s := range []*Server{
		{AETitle: "WAY-TOO-LONG-AE-TITLE"},
		{AllowedCallers: []string{"OK", "BAD\\AE"}},
		{MaxPDU: 100},
		{TransferSyntaxes: []string{"not a uid"}},
	} {
		if err := s.Listen("127.0.0.1:0"); err == nil {
			t.Errorf("Listen accepted %+v", s)
			s.Shutdown(context.Background())
		}
	}
}

// Scenarios where the peer misbehaves at the PDU level: we answer with the
// documented bytes and close, and the server keeps serving.
func TestServerProtocolErrors(t *testing.T) {
	abort := func(reason pdu.AbortReason) []byte {
		b, _ := pdu.Append(nil, &pdu.Abort{Source: pdu.AbortServiceProvider, Reason: reason})
		return b
	}
	rec := &recorder{}
	addr, logs := startServer(t, &Server{AETitle: "GOSCP", Handlers: rec.handlers(), ARTIMTimeout: 200 * time.Millisecond})
	tests := []struct {
		name string
		// run drives the connection after an optional association.
		associate bool
		run       func(r *rawConn)
		want      []byte
		log       string
	}{
		{
			name: "S-19 HTTP request",
			run:  func(r *rawConn) { r.nc.Write([]byte("GET / HTTP/1.0\r\n\r\n")) },
			want: []byte{7, 0, 0, 0, 0, 4, 0, 0, 2, 1},
			log:  "unrecognized PDU type 0x47",
		},
		{
			name: "S-18 idle connection closes after ARTIM",
			run:  func(r *rawConn) {},
			want: []byte{},
			log:  "connection closed without association",
		},
		{
			name: "P-DATA before association",
			run:  func(r *rawConn) { r.send(&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 1, Data: []byte{1}}}}) },
			want: abort(pdu.AbortUnexpectedPDU),
		},
		{
			name: "A-ABORT before association",
			run:  func(r *rawConn) { r.send(&pdu.Abort{}) },
			want: []byte{},
		},
		{
			name:      "PDV on a context not accepted",
			associate: true,
			run: func(r *rawConn) {
				r.send(&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 3, Command: true, Last: true, Data: []byte{1}}}})
			},
			want: abort(pdu.AbortInvalidPDUParameterValue),
		},
		{
			name:      "garbage command set",
			associate: true,
			run: func(r *rawConn) {
				r.send(&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2, 3}}}})
			},
			want: abort(pdu.AbortInvalidPDUParameterValue),
		},
		{
			name:      "A-ASSOCIATE-RQ again",
			associate: true,
			run:       func(r *rawConn) { r.send(echoRQ("A", "GOSCP")) },
			want:      abort(pdu.AbortUnexpectedPDU),
		},
		{
			name:      "PDU over our maximum length",
			associate: true,
			run: func(r *rawConn) {
				r.send(&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 1, Command: true, Data: make([]byte, DefaultMaxPDU)}}})
			},
			want: abort(pdu.AbortInvalidPDUParameterValue),
		},
		{
			name:      "release inside a message",
			associate: true,
			run: func(r *rawConn) {
				r.send(&pdu.PDataTF{Items: []pdu.PDV{{ContextID: 1, Command: true, Data: []byte{0, 0}}}})
				r.send(&pdu.ReleaseRQ{})
			},
			want: abort(pdu.AbortUnexpectedPDU),
		},
		{
			name:      "S-05 abort",
			associate: true,
			run:       func(r *rawConn) { r.send(&pdu.Abort{}) },
			want:      []byte{},
			log:       "association aborted by peer",
		},
		{
			name:      "S-22 release",
			associate: true,
			run:       func(r *rawConn) { r.send(&pdu.ReleaseRQ{}) },
			want:      []byte{6, 0, 0, 0, 0, 4, 0, 0, 0, 0},
			log:       "association released",
		},
		{
			name: "S-06 wrong called AE",
			run:  func(r *rawConn) { r.send(echoRQ("ECHOSCU", "NOTME")) },
			want: []byte{3, 0, 0, 0, 0, 4, 0, 1, 1, 7},
			log:  "called AE title not recognized",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			if tt.associate {
				r.send(echoRQ("RAW", "GOSCP"))
				if _, ok := r.read().(*pdu.AssociateAC); !ok {
					t.Fatal("association not accepted")
				}
			}
			tt.run(r)
			if got := r.rest(); !bytes.Equal(got, tt.want) {
				t.Errorf("got % x, want % x", got, tt.want)
			}
			if tt.log != "" {
				waitFor(t, "log line "+tt.log, func() bool { return logs.contains(tt.log) })
			}
			// After every scenario the listener still answers (S-01).
			a, err := Dial(context.Background(), addr, Options{CalledAE: "GOSCP"})
			if err != nil {
				t.Fatal(err)
			}
			if st, err := a.Echo(context.Background()); err != nil || st != dimse.StatusSuccess {
				t.Errorf("echo after scenario = %v, %v", st, err)
			}
			a.Release(context.Background())
		})
	}
}

func TestDataSetLimit(t *testing.T) {
	rec := &recorder{}
	addr, _ := startServer(t, &Server{Handlers: rec.handlers(), MaxDataSetSize: 1000})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader(make([]byte, 5000)))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Source != pdu.AbortServiceProvider {
		t.Errorf("Store over the limit = %v, want a provider abort", err)
	}
	if len(rec.stores) != 0 {
		t.Errorf("handler stored %d instances", len(rec.stores))
	}
}

func TestMaxAssociations(t *testing.T) {
	addr, _ := startServer(t, &Server{MaxAssociations: 1})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctx, addr, Options{})
	var rj *RejectError
	if !errors.As(err, &rj) || rj.Result != pdu.RejectTransient || rj.Reason != pdu.ReasonLocalLimitExceeded {
		t.Errorf("second Dial = %v, want a transient rejection", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The slot frees once the first association has fully ended.
	waitFor(t, "a free slot", func() bool {
		b, err := Dial(ctx, addr, Options{})
		if err != nil {
			return false
		}
		b.Release(ctx)
		return true
	})
}

func TestManyAssociations(t *testing.T) {
	rec := &recorder{}
	addr, _ := startServer(t, &Server{Handlers: rec.handlers()})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			a, err := Dial(ctx, addr, Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
			if err != nil {
				t.Error(err)
				return
			}
			defer a.Release(ctx)
			for j := range 5 {
				data := bytes.Repeat([]byte{byte(i), byte(j)}, 20000)
				st, err := a.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader(data))
				if err != nil || st != dimse.StatusSuccess {
					t.Errorf("Store = %v, %v", st, err)
				}
			}
		})
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.stores) != 40 {
		t.Errorf("%d instances stored, want 40", len(rec.stores))
	}
	for _, s := range rec.stores {
		if len(s.Data) != 40000 || !bytes.Equal(s.Data, bytes.Repeat(s.Data[:2], 20000)) {
			t.Error("instance data mixed up between associations")
		}
	}
}

func TestShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s := &Server{Handlers: Handlers{OnStore: func(ctx context.Context, req StoreRequest) dimse.Status {
		io.Copy(io.Discard, req.Data)
		close(entered)
		<-release
		return dimse.StatusSuccess
	}}}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	addr := s.Addr().String()
	ctx := context.Background()

	idle, err := Dial(ctx, addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	busy, err := Dial(ctx, addr, Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  dimse.Status
		err error
	}
	storeDone := make(chan result, 1)
	go func() {
		st, err := busy.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader([]byte("abcd")))
		storeDone <- result{st, err}
	}()
	<-entered
	shutDone := make(chan error, 1)
	go func() { shutDone <- s.Shutdown(ctx) }()
	waitFor(t, "Shutdown to start", s.isClosing)

	// The idle association is aborted at once.
	_, err = idle.Echo(ctx)
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Source != pdu.AbortServiceUser {
		t.Errorf("Echo on an idle association during Shutdown = %v, want a user abort", err)
	}
	// The message in progress completes, then its association ends too.
	close(release)
	if r := <-storeDone; r.err != nil || r.st != dimse.StatusSuccess {
		t.Errorf("Store in progress during Shutdown = %v, %v", r.st, r.err)
	}
	if err := <-shutDone; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if _, err := Dial(ctx, addr, Options{}); !errors.Is(err, ErrConnect) {
		t.Errorf("Dial after Shutdown = %v, want ErrConnect", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	entered := make(chan struct{})
	s := &Server{Handlers: Handlers{OnStore: func(ctx context.Context, req StoreRequest) dimse.Status {
		close(entered)
		<-ctx.Done() // a handler stuck until its context is cancelled
		return dimse.StatusProcessingFailure
	}}}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	a, err := Dial(context.Background(), s.Addr().String(), Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	go a.Store(context.Background(), scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, bytes.NewReader([]byte("ab")))
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	quick := Timeouts{ACSE: 100 * time.Millisecond, DIMSE: 100 * time.Millisecond}
	tests := []struct {
		name  string
		addr  func(t *testing.T) string
		opts  Options
		check func(t *testing.T, err error)
	}{
		{
			name: "C-05 connection refused",
			addr: func(*testing.T) string { return refused },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrConnect) || !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("got %v, want ErrConnect wrapping ECONNREFUSED", err)
				}
			},
		},
		{
			name: "C-06 silent peer",
			addr: func(t *testing.T) string {
				return fakeAcceptor(t, func(r *rawConn) { r.read(); r.rest() })
			},
			opts: Options{Timeouts: quick},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrTimeout) {
					t.Errorf("got %v, want ErrTimeout", err)
				}
			},
		},
		{
			name: "C-02 rejected",
			addr: func(t *testing.T) string {
				return fakeAcceptor(t, func(r *rawConn) {
					r.read()
					r.send(&pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.SourceServiceUser, Reason: pdu.ReasonNoReason})
				})
			},
			check: func(t *testing.T, err error) {
				var rj *RejectError
				if !errors.As(err, &rj) || rj.String() != "rejected permanent, source: service user, reason: no reason given" {
					t.Errorf("got %v, want the rejection", err)
				}
			},
		},
		{
			name: "aborted",
			addr: func(t *testing.T) string {
				return fakeAcceptor(t, func(r *rawConn) { r.read(); r.send(&pdu.Abort{Source: pdu.AbortServiceProvider, Reason: 5}) })
			},
			check: func(t *testing.T, err error) {
				var ae *AbortError
				if !errors.As(err, &ae) || ae.Reason != 5 {
					t.Errorf("got %v, want the abort", err)
				}
			},
		},
		{
			name: "accepted with a syntax not proposed",
			addr: func(t *testing.T) string {
				return fakeAcceptor(t, func(r *rawConn) {
					r.read()
					r.send(&pdu.AssociateAC{ProtocolVersion: 1, ApplicationContext: dicom.ApplicationContextName,
						PresentationContexts: []pdu.PresentationContextAC{{ID: 1, TransferSyntax: dicom.ExplicitVRBigEndian}}})
					if got := r.rest(); !bytes.Equal(got, []byte{7, 0, 0, 0, 0, 4, 0, 0, 2, 6}) {
						t.Errorf("after a bad AC we sent % x, want a provider abort", got)
					}
				})
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrProtocol) {
					t.Errorf("got %v, want ErrProtocol", err)
				}
			},
		},
		{
			name:  "invalid AE title",
			addr:  func(*testing.T) string { return refused },
			opts:  Options{CallingAE: "THIS-IS-TOO-LONG!"},
			check: func(t *testing.T, err error) { t.Log(err) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Dial(context.Background(), tt.addr(t), tt.opts)
			if err == nil {
				a.Abort()
				t.Fatal("Dial succeeded")
			}
			tt.check(t, err)
		})
	}
}

func TestEchoTimeoutAndCancel(t *testing.T) {
	// An acceptor that accepts, then never answers the echo.
	accept := func(t *testing.T) string {
		return fakeAcceptor(t, func(r *rawConn) {
			r.read()
			r.send(&pdu.AssociateAC{ProtocolVersion: 1, ApplicationContext: dicom.ApplicationContextName,
				PresentationContexts: []pdu.PresentationContextAC{{ID: 1, TransferSyntax: dicom.ExplicitVRLittleEndian}},
				UserInfo:             pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2"}})
			r.rest()
		})
	}
	t.Run("DIMSE timeout", func(t *testing.T) {
		a, err := Dial(context.Background(), accept(t), Options{Timeouts: Timeouts{DIMSE: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Echo(context.Background()); !errors.Is(err, ErrTimeout) {
			t.Errorf("Echo = %v, want ErrTimeout", err)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		a, err := Dial(context.Background(), accept(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := a.Echo(ctx); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Echo = %v, want ErrTimeout and DeadlineExceeded", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		a, err := Dial(context.Background(), accept(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		if _, err := a.Echo(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Errorf("Echo = %v, want context.Canceled", err)
		}
		if _, err := a.Echo(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Echo after failure = %v, want ErrClosed", err)
		}
	})
}

func TestReleaseCollision(t *testing.T) {
	addr := fakeAcceptor(t, func(r *rawConn) {
		r.read()
		r.send(&pdu.AssociateAC{ProtocolVersion: 1, ApplicationContext: dicom.ApplicationContextName,
			UserInfo: pdu.UserInfo{ImplementationClassUID: "1.2"}})
		if _, ok := r.read().(*pdu.ReleaseRQ); !ok {
			t.Error("want A-RELEASE-RQ")
		}
		r.send(&pdu.ReleaseRQ{}) // collision
		if _, ok := r.read().(*pdu.ReleaseRP); !ok {
			t.Error("collision not answered with A-RELEASE-RP")
		}
		r.send(&pdu.ReleaseRP{})
		r.rest()
	})
	a, err := Dial(context.Background(), addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(context.Background()); err != nil {
		t.Errorf("Release = %v", err)
	}
}

func TestAbort(t *testing.T) {
	rec := &recorder{}
	addr, logs := startServer(t, &Server{Handlers: rec.handlers()})
	a, err := Dial(context.Background(), addr, Options{CallingAE: "ABORTER"})
	if err != nil {
		t.Fatal(err)
	}
	a.Abort()
	waitFor(t, "the abort in the log", func() bool {
		return logs.contains("association aborted by peer", "ABORTER", "source=\"service user\"")
	})
	if _, err := a.Echo(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Echo after Abort = %v, want ErrClosed", err)
	}
}

// failingReader fails after n bytes, like a file that cannot be read.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestStoreSourceError(t *testing.T) {
	rec := &recorder{}
	addr, logs := startServer(t, &Server{Handlers: rec.handlers()})
	ctx := context.Background()
	a, err := Dial(ctx, addr, Options{Contexts: []Context{{scSOPClass, []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store(ctx, scSOPClass, "1.2.3", dicom.ExplicitVRLittleEndian, &failingReader{n: 100000}); err == nil {
		t.Fatal("Store succeeded")
	}
	waitFor(t, "the abort in the log", func() bool { return logs.contains("association aborted by peer") })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.stores) != 0 {
		t.Error("a partial instance reached the handler as complete")
	}
}

func BenchmarkEchoLoopback(b *testing.B) {
	addr, _ := startServer(b, &Server{})
	ctx := context.Background()
	for b.Loop() {
		a, err := Dial(ctx, addr, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for range 1000 {
			if st, err := a.Echo(ctx); err != nil || st != dimse.StatusSuccess {
				b.Fatal(st, err)
			}
		}
		if err := a.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*1000), "µs/echo")
}
