package assoc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/atomicfile"
	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/internal/dicomtest"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// Acceptance scenarios of dicom.md 7.1 (dcmtk SCUs against our Server) and
// 7.2 (our requestor against dcmtk SCPs), as far as they concern the
// protocol layer. Timing criteria are left to the benchmarks.

// fileStore is an OnStore handler that does what the listener channel is
// meant to do: stream the dataset behind a generated Part-10 header into a
// file that is synced and renamed before Success is answered.
func fileStore(dir string) func(context.Context, StoreRequest) dimse.Status {
	return func(ctx context.Context, req StoreRequest) dimse.Status {
		if !dicom.ValidUID(req.SOPInstance) {
			return dimse.StatusCannotUnderstand
		}
		err := atomicfile.Write(filepath.Join(dir, req.SOPInstance+".dcm"), 0o600, dicom.Buffered(func(w io.Writer) error {
			if err := dicom.WritePart10Header(w, req.SOPClass, req.SOPInstance, req.TransferSyntax,
				dicom.ImplementationClassUID, dicom.ImplementationVersionName, req.CallingAE); err != nil {
				return err
			}
			_, err := io.Copy(w, req.Data)
			return err
		}))
		if err != nil {
			return dimse.StatusOutOfResources
		}
		return dimse.StatusSuccess
	}
}

type scp struct {
	addr, host, port string
	recv             string
	logs             *logBuffer
}

func startSCP(t testing.TB, s *Server) *scp {
	t.Helper()
	recv := t.TempDir()
	if s.AETitle == "" {
		s.AETitle = "GOSCP"
	}
	s.Handlers.OnStore = fileStore(recv)
	addr, logs := startServer(t, s)
	host, port, _ := net.SplitHostPort(addr)
	return &scp{addr: addr, host: host, port: port, recv: recv, logs: logs}
}

// args returns the options and peer arguments of a dcmtk SCU call; files
// go after them.
func (s *scp) args(extra ...string) []string {
	return append(append([]string{"-aec", "GOSCP"}, extra...), s.host, s.port)
}

func (s *scp) stored(t testing.TB, sopInstance string) string {
	t.Helper()
	return filepath.Join(s.recv, sopInstance+".dcm")
}

// dataSet returns a Part-10 file's meta and dataset bytes.
func dataSet(t testing.TB, path string) (dicom.FileMeta, []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, rest, err := dicom.ReadPart10Header(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(rest)
	if err != nil {
		t.Fatal(err)
	}
	return meta, b
}

// dumpDataSet is dcmdump's view of a file without the meta header lines.
func dumpDataSet(t testing.TB, path string) string {
	t.Helper()
	r := dicomtest.Run(t, "dcmdump", "-q", path)
	if r.Code != 0 {
		t.Fatalf("dcmdump %s: %s", path, r.Output)
	}
	var keep []string
	for line := range strings.SplitSeq(r.Output, "\n") {
		if !strings.HasPrefix(line, "(0002,") && !strings.HasPrefix(line, "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// checkStored verifies a stored file: Part-10 per dcmftest, meta as
// expected, dataset identical to the source per dcmdump, and byte
// identical when the transfer syntax did not change.
func checkStored(t *testing.T, src, stored, wantTS, wantSource string) {
	t.Helper()
	if r := dicomtest.Run(t, "dcmftest", stored); r.Code != 0 || !strings.HasPrefix(r.Output, "yes:") {
		t.Errorf("dcmftest: %s", r.Output)
	}
	srcMeta, srcData := dataSet(t, src)
	meta, data := dataSet(t, stored)
	if meta.TransferSyntax != wantTS || meta.SourceAE != wantSource || meta.SOPInstance != srcMeta.SOPInstance ||
		meta.SOPClass != srcMeta.SOPClass || meta.ImplementationClassUID != dicom.ImplementationClassUID {
		t.Errorf("stored meta %+v, want TS %s and source AE %s", meta, wantTS, wantSource)
	}
	if a, b := dumpDataSet(t, src), dumpDataSet(t, stored); a != b {
		t.Errorf("dcmdump of the stored dataset differs from the source:\n%s\n---\n%s", a, b)
	}
	if srcMeta.TransferSyntax == wantTS && !bytes.Equal(srcData, data) {
		t.Errorf("dataset bytes differ from the source (%d vs %d bytes)", len(data), len(srcData))
	}
}

func TestSCPWithDcmtk(t *testing.T) {
	dicomtest.RequireTools(t, "echoscu", "storescu", "findscu", "dcmdump", "dcmftest", "dump2dcm", "dcmcjpeg")
	src := t.TempDir()
	files := dicomtest.MakeInstances(t, src, 8, 64)
	ctx := context.Background()

	t.Run("S-01 echo", func(t *testing.T) {
		s := startSCP(t, &Server{})
		r := dicomtest.Run(t, "echoscu", s.args("-v", "-aet", "ECHOSCU")...)
		if r.Code != 0 || !strings.Contains(r.Output, "Received Echo Response (Success)") {
			t.Errorf("echoscu rc %d: %s", r.Code, r.Output)
		}
	})
	t.Run("S-02 echo burst", func(t *testing.T) {
		var mu sync.Mutex
		n := 0
		s := startSCP(t, &Server{Handlers: Handlers{OnEcho: func(context.Context, EchoRequest) dimse.Status {
			mu.Lock()
			n++
			mu.Unlock()
			return dimse.StatusSuccess
		}}})
		start := time.Now()
		if r := dicomtest.Run(t, "echoscu", s.args("--repeat", "1000")...); r.Code != 0 {
			t.Errorf("echoscu rc %d: %s", r.Code, r.Output)
		}
		t.Logf("1000 echoes in one association: %v (TCP_NODELAY=1)", time.Since(start))
		mu.Lock()
		defer mu.Unlock()
		if n != 1000 {
			t.Errorf("%d echoes handled, want 1000", n)
		}
	})
	t.Run("S-03 128 contexts x 38 transfer syntaxes", func(t *testing.T) {
		s := startSCP(t, &Server{})
		p := startProxy(t, s.addr)
		if r := dicomtest.Run(t, "echoscu", p.args("-ppc", "128", "-pts", "38")...); r.Code != 0 {
			t.Fatalf("echoscu rc %d: %s", r.Code, r.Output)
		}
		ac := p.associateAC(t)
		if len(ac.PresentationContexts) != 128 {
			t.Errorf("AC has %d contexts, want 128", len(ac.PresentationContexts))
		}
		for _, pc := range ac.PresentationContexts {
			if pc.Result != pdu.ResultAcceptance || pc.TransferSyntax != dicom.ExplicitVRLittleEndian {
				t.Errorf("context %d: %v %s, want ELE accepted by our preference", pc.ID, pc.Result, pc.TransferSyntax)
			}
		}
	})
	t.Run("S-04 small PDU", func(t *testing.T) {
		s := startSCP(t, &Server{})
		p := startProxy(t, s.addr)
		if r := dicomtest.Run(t, "echoscu", p.args("-pdu", "4096")...); r.Code != 0 {
			t.Errorf("echoscu rc %d: %s", r.Code, r.Output)
		}
		if r := dicomtest.Run(t, "storescu", append(p.args("-pdu", "4096"), files[0])...); r.Code != 0 {
			t.Errorf("storescu rc %d: %s", r.Code, r.Output)
		}
		for _, n := range p.pdataLengths(t) {
			if n > 4096 {
				t.Errorf("we sent a P-DATA-TF of length %d to a peer with max 4096", n)
			}
		}
		checkStored(t, files[0], s.stored(t, dicomtest.InstanceUID(0)), dicom.ExplicitVRLittleEndian, "STORESCU")
	})
	t.Run("S-05 abort", func(t *testing.T) {
		s := startSCP(t, &Server{})
		if r := dicomtest.Run(t, "echoscu", s.args("--abort", "-aet", "ABORTSCU")...); r.Code != 0 {
			t.Errorf("echoscu rc %d: %s", r.Code, r.Output)
		}
		waitFor(t, "the abort in the log", func() bool { return s.logs.contains("association aborted by peer", "ABORTSCU") })
		if r := dicomtest.Run(t, "echoscu", s.args()...); r.Code != 0 {
			t.Errorf("S-01 after the abort: rc %d: %s", r.Code, r.Output)
		}
	})
	t.Run("S-06 wrong called AE", func(t *testing.T) {
		s := startSCP(t, &Server{})
		r := dicomtest.Run(t, "echoscu", s.host, s.port, "-aec", "NOTME")
		if r.Code == 0 || !strings.Contains(r.Output, "Rejected Permanent, Source: Service User") ||
			!strings.Contains(r.Output, "Called AE Title Not Recognized") {
			t.Errorf("echoscu rc %d: %s", r.Code, r.Output)
		}
	})
	t.Run("S-07 S-08 store one, byte fidelity", func(t *testing.T) {
		s := startSCP(t, &Server{})
		if r := dicomtest.Run(t, "storescu", append(s.args("-aet", "STORESCU"), files[0])...); r.Code != 0 {
			t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
		checkStored(t, files[0], s.stored(t, dicomtest.InstanceUID(0)), dicom.ExplicitVRLittleEndian, "STORESCU")
	})
	for _, tc := range []struct {
		id, flag string
		file     int
		wantTS   string
	}{
		{"S-09 implicit only", "-xi", 1, dicom.ImplicitVRLittleEndian},
		{"S-10 big endian preferred", "-xb", 2, dicom.ExplicitVRLittleEndian},
		{"S-11 deflate", "-xd", 3, dicom.DeflatedExplicitVRLittleEndian},
	} {
		t.Run(tc.id, func(t *testing.T) {
			s := startSCP(t, &Server{})
			// -R proposes only the storage class of the file, as the
			// scenario says for deflate.
			if r := dicomtest.Run(t, "storescu", append(s.args("-R", tc.flag, "-aet", "STORESCU"), files[tc.file])...); r.Code != 0 {
				t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
			}
			checkStored(t, files[tc.file], s.stored(t, dicomtest.InstanceUID(tc.file)), tc.wantTS, "STORESCU")
		})
	}
	t.Run("S-11 deflate not configured", func(t *testing.T) {
		s := startSCP(t, &Server{TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian}})
		r := dicomtest.Run(t, "storescu", append(s.args("-R", "-xd"), files[3])...)
		// storescu still offers ELE next to deflate unless told not to;
		// what matters is that deflate is not what we picked.
		if r.Code == 0 {
			meta, _ := dataSet(t, s.stored(t, dicomtest.InstanceUID(3)))
			if meta.TransferSyntax == dicom.DeflatedExplicitVRLittleEndian {
				t.Error("stored deflated although not configured")
			}
		}
	})
	t.Run("S-12 compressed passthrough", func(t *testing.T) {
		s := startSCP(t, &Server{})
		jpeg := filepath.Join(t.TempDir(), "jpegll.dcm")
		if r := dicomtest.Run(t, "dcmcjpeg", files[4], jpeg); r.Code != 0 {
			t.Fatalf("dcmcjpeg: %s", r.Output)
		}
		meta, _ := dataSet(t, jpeg)
		if meta.TransferSyntax != dicom.JPEGLosslessSV1 {
			t.Fatalf("dcmcjpeg made %s", meta.TransferSyntax)
		}
		if r := dicomtest.Run(t, "storescu", append(s.args("-xs", "-aet", "STORESCU"), jpeg)...); r.Code != 0 {
			t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
		checkStored(t, jpeg, s.stored(t, meta.SOPInstance), dicom.JPEGLosslessSV1, "STORESCU")
	})
	t.Run("S-12 compressed not configured", func(t *testing.T) {
		s := startSCP(t, &Server{TransferSyntaxes: dicom.UncompressedTransferSyntaxes()})
		jpeg := filepath.Join(t.TempDir(), "jpegll.dcm")
		dicomtest.Run(t, "dcmcjpeg", files[4], jpeg)
		if r := dicomtest.Run(t, "storescu", append(s.args("-R", "-xs"), jpeg)...); r.Code == 0 {
			t.Errorf("storescu succeeded: %s", r.Output)
		}
		waitFor(t, "result 4 in the log", func() bool {
			return s.logs.contains("presentation context rejected", "result=4", "transfer syntaxes not supported")
		})
	})
	t.Run("S-15 parallel associations", func(t *testing.T) {
		s := startSCP(t, &Server{})
		many := dicomtest.MakeInstances(t, t.TempDir(), 40, 32)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if r := dicomtest.Run(t, "storescu", append(s.args(), many[i*10:(i+1)*10]...)...); r.Code != 0 {
					t.Errorf("storescu %d rc %d: %s", i, r.Code, r.Output)
				}
			})
		}
		wg.Wait()
		for i, f := range many {
			_, want := dataSet(t, f)
			if _, got := dataSet(t, s.stored(t, dicomtest.InstanceUID(i))); !bytes.Equal(got, want) {
				t.Errorf("instance %d differs", i)
			}
		}
	})
	t.Run("S-16 large PDU", func(t *testing.T) {
		s := startSCP(t, &Server{MaxPDU: 131072})
		big := dicomtest.MakeInstances(t, t.TempDir(), 2, 256)
		if r := dicomtest.Run(t, "storescu", append(s.args("-pdu", "131072"), big...)...); r.Code != 0 {
			t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
		checkStored(t, big[1], s.stored(t, dicomtest.InstanceUID(1)), dicom.ExplicitVRLittleEndian, "STORESCU")
	})
	t.Run("S-17 service not offered", func(t *testing.T) {
		s := startSCP(t, &Server{})
		r := dicomtest.Run(t, "findscu", s.args("-S", "-k", "QueryRetrieveLevel=STUDY")...)
		if r.Code == 0 || !strings.Contains(r.Output, "No Acceptable Presentation Contexts") {
			t.Errorf("findscu rc %d: %s", r.Code, r.Output)
		}
		waitFor(t, "result 3 in the log", func() bool {
			return s.logs.contains("presentation context rejected", "abstract_syntax="+dicom.StudyRootQueryRetrieveFind, "result=3")
		})
	})
	t.Run("S-20 client killed mid-transfer", func(t *testing.T) {
		s := startSCP(t, &Server{})
		many := dicomtest.MakeInstances(t, t.TempDir(), 100, 256)
		p := dicomtest.Start(t, "storescu", append(s.args(), many...)...)
		waitFor(t, "a few stored files", func() bool {
			entries, _ := os.ReadDir(s.recv)
			return len(entries) >= 3
		})
		p.Stop() // SIGKILL
		waitFor(t, "the association to end", func() bool { return s.logs.contains("connection closed without release") })
		entries, _ := os.ReadDir(s.recv)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("temporary file %s left behind", e.Name())
				continue
			}
			i := -1
			for j := range many {
				if e.Name() == dicomtest.InstanceUID(j)+".dcm" {
					i = j
				}
			}
			if i < 0 {
				t.Errorf("unexpected file %s", e.Name())
				continue
			}
			_, want := dataSet(t, many[i])
			if _, got := dataSet(t, filepath.Join(s.recv, e.Name())); !bytes.Equal(got, want) {
				t.Errorf("%s is incomplete", e.Name())
			}
		}
		t.Logf("%d of %d files stored before the kill, all complete", len(entries), len(many))
	})
	t.Run("S-21 abort after send", func(t *testing.T) {
		s := startSCP(t, &Server{})
		if r := dicomtest.Run(t, "storescu", append(s.args("--abort", "-aet", "STORESCU"), files[5])...); r.Code != 0 {
			t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
		checkStored(t, files[5], s.stored(t, dicomtest.InstanceUID(5)), dicom.ExplicitVRLittleEndian, "STORESCU")
		waitFor(t, "the abort in the log", func() bool { return s.logs.contains("association aborted by peer") })
	})
	t.Run("S-22 release handshake", func(t *testing.T) {
		s := startSCP(t, &Server{})
		r := dicomtest.Run(t, "storescu", append(s.args("-d"), files[6])...)
		if r.Code != 0 || !strings.Contains(r.Output, "Releasing Association") || regexp.MustCompile(`(?m)^[EF]: `).MatchString(r.Output) {
			t.Errorf("storescu rc %d: %s", r.Code, r.Output)
		}
		waitFor(t, "the release in the log", func() bool { return s.logs.contains("association released") })
	})
	t.Run("C-10 our requestor against our listener", func(t *testing.T) {
		s := startSCP(t, &Server{})
		a, err := Dial(ctx, s.addr, Options{CalledAE: "GOSCP"})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := a.Echo(ctx); err != nil || st != dimse.StatusSuccess {
			t.Errorf("Echo = %v, %v", st, err)
		}
		a.Release(ctx)
	})
}

// Bulk transfers: S-13 (200 files, TCP_NODELAY=1) and S-14 (dcmtk defaults,
// Nagle on). Small images here; the 525 KB timing runs are benchmarks.
func TestSCPBulkWithDcmtk(t *testing.T) {
	dicomtest.RequireTools(t, "storescu", "dump2dcm")
	if testing.Short() {
		t.Skip("bulk transfer skipped in -short mode")
	}
	many := dicomtest.MakeInstances(t, t.TempDir(), 200, 64)
	for _, tc := range []struct {
		id      string
		nodelay bool
		n       int
	}{
		{"S-13 bulk", true, 200},
		{"S-14 bulk with dcmtk defaults", false, 20},
	} {
		t.Run(tc.id, func(t *testing.T) {
			s := startSCP(t, &Server{})
			start := time.Now()
			r := dicomtest.RunEnv(t, dicomtest.Env(tc.nodelay), "storescu", append(s.args(), many[:tc.n]...)...)
			if r.Code != 0 {
				t.Fatalf("storescu rc %d: %s", r.Code, r.Output)
			}
			t.Logf("%d files in %v (TCP_NODELAY=%v on storescu)", tc.n, time.Since(start), tc.nodelay)
			entries, _ := os.ReadDir(s.recv)
			if len(entries) != tc.n {
				t.Errorf("%d files stored, want %d", len(entries), tc.n)
			}
		})
	}
}

// TestSCUWithDcmtk runs our requestor against dcmtk SCPs (dicom.md 7.2).
func TestSCUWithDcmtk(t *testing.T) {
	dicomtest.RequireTools(t, "storescp", "dcmqrscp", "wlmscpfs", "dump2dcm")
	ctx := context.Background()
	echo := func(t *testing.T, addr, called string) (dimse.Status, error) {
		t.Helper()
		a, err := Dial(ctx, addr, Options{CallingAE: "GOSCU", CalledAE: called})
		if err != nil {
			return 0, err
		}
		st, err := a.Echo(ctx)
		if err == nil {
			err = a.Release(ctx)
		}
		return st, err
	}

	t.Run("C-01 C-08 echo storescp", func(t *testing.T) {
		addr, p := dicomtest.StartSCP(t, "storescp", "-d", "-aet", "STORESCP")
		if st, err := echo(t, addr, "STORESCP"); err != nil || st != dimse.StatusSuccess {
			t.Fatalf("echo = %v, %v", st, err)
		}
		waitFor(t, "storescp to log the release", func() bool { return strings.Contains(p.Output(), "Association Release") })
		out := p.Output()
		for _, want := range []string{
			"Received Echo Request",
			"Their Implementation Class UID:    " + dicom.ImplementationClassUID,
			"Their Implementation Version Name: " + dicom.ImplementationVersionName,
			"Their Max PDU Receive Size:  65536",
			"Abstract Syntax: =VerificationSOPClass",
			"Proposed Transfer Syntax(es):",
			"=LittleEndianExplicit",
			"=LittleEndianImplicit",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("storescp -d output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Log(out)
		}
	})
	t.Run("C-02 refused", func(t *testing.T) {
		addr, _ := dicomtest.StartSCP(t, "storescp", "--refuse")
		_, err := echo(t, addr, "STORESCP")
		var rj *RejectError
		if !errors.As(err, &rj) || rj.Result != pdu.RejectPermanent || rj.Source != pdu.SourceServiceUser || rj.Reason != pdu.ReasonNoReason {
			t.Errorf("echo = %v, want rejection 1/1/1", err)
		}
	})
	t.Run("C-03 dcmqrscp called AE", func(t *testing.T) {
		dir := t.TempDir()
		port := dicomtest.FreePort(t)
		cfg := filepath.Join(dir, "qr.cfg")
		os.Mkdir(filepath.Join(dir, "db"), 0o755)
		os.WriteFile(cfg, fmt.Appendf(nil, "NetworkTCPPort = %d\nMaxPDUSize = 16384\nMaxAssociations = 16\n"+
			"HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"+
			"AETable BEGIN\nQRSCP %s RW (9, 1024mb) ANY\nAETable END\n", port, filepath.Join(dir, "db")), 0o644)
		p := dicomtest.Start(t, "dcmqrscp", "-c", cfg)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		dicomtest.WaitListening(t, addr, p)
		_, err := echo(t, addr, "WRONGAE")
		var rj *RejectError
		if !errors.As(err, &rj) || rj.Reason != pdu.ReasonCalledAENotRecognized ||
			!strings.Contains(err.Error(), "called AE title not recognized") {
			t.Errorf("echo WRONGAE = %v, want reason 7", err)
		}
		if st, err := echo(t, addr, "QRSCP"); err != nil || st != dimse.StatusSuccess {
			t.Errorf("echo QRSCP = %v, %v", st, err)
		}
	})
	t.Run("C-04 wlmscpfs", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "OFFIS"), 0o755)
		addr, _ := dicomtest.StartSCP(t, "wlmscpfs", "-dfp", dir)
		if st, err := echo(t, addr, "OFFIS"); err != nil || st != dimse.StatusSuccess {
			t.Errorf("echo = %v, %v", st, err)
		}
	})
	t.Run("C-07 C-09 small PDU, 100 echoes and stores", func(t *testing.T) {
		out := t.TempDir()
		addr, _ := dicomtest.StartSCP(t, "storescp", "-pdu", "4096", "-od", out)
		files := dicomtest.MakeInstances(t, t.TempDir(), 3, 64)
		a, err := Dial(ctx, addr, Options{CallingAE: "GOSCU", CalledAE: "STORESCP", Contexts: []Context{
			{dicom.VerificationSOPClass, []string{dicom.ImplicitVRLittleEndian}},
			{dicom.SecondaryCaptureImageStorage, []string{dicom.ExplicitVRLittleEndian}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if a.Peer().MaxPDU != 4096 {
			t.Errorf("peer max PDU %d", a.Peer().MaxPDU)
		}
		for range 100 {
			if st, err := a.Echo(ctx); err != nil || st != dimse.StatusSuccess {
				t.Fatalf("Echo = %v, %v", st, err)
			}
		}
		for _, f := range files {
			st, err := storeFile(ctx, a, f)
			if err != nil || st != dimse.StatusSuccess {
				t.Fatalf("Store %s = %v, %v", f, st, err)
			}
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			_, want := dataSet(t, f)
			if _, got := dataSet(t, filepath.Join(out, "SC."+dicomtest.InstanceUID(i))); !bytes.Equal(got, want) {
				t.Errorf("storescp stored instance %d differently", i)
			}
		}
	})
}

// storeFile sends a Part-10 file's dataset unchanged.
func storeFile(ctx context.Context, a *Association, path string) (dimse.Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	meta, rest, err := dicom.ReadPart10Header(f)
	if err != nil {
		return 0, err
	}
	return a.Store(ctx, meta.SOPClass, meta.SOPInstance, meta.TransferSyntax, rest)
}

// proxy relays TCP between dcmtk and our Server and keeps what the server
// sent, to inspect our PDUs on the wire.
type proxy struct {
	addr string
	mu   sync.Mutex
	down bytes.Buffer // server to client, all connections in order
	wg   sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String()}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			var down bytes.Buffer
			p.wg.Go(func() {
				io.Copy(s, c)
				s.(*net.TCPConn).CloseWrite()
			})
			io.Copy(io.MultiWriter(c, &down), s)
			c.Close()
			s.Close()
			p.mu.Lock()
			p.down.Write(down.Bytes())
			p.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) args(extra ...string) []string {
	host, port, _ := net.SplitHostPort(p.addr)
	return append(append([]string{"-aec", "GOSCP"}, extra...), host, port)
}

func (p *proxy) pdus(t *testing.T) []pdu.PDU {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pdu.PDU
	r := bytes.NewReader(p.down.Bytes())
	for {
		x, err := pdu.Read(r, 0)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("our own PDU stream does not decode: %v", err)
		}
		out = append(out, x)
	}
}

// associateAC returns the first A-ASSOCIATE-AC the server sent. The proxy
// records a connection's bytes only once the server has closed it, which can
// be a moment after the peer program exited, so it waits (bounded).
func (p *proxy) associateAC(t *testing.T) *pdu.AssociateAC {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, x := range p.pdus(t) {
			if ac, ok := x.(*pdu.AssociateAC); ok {
				return ac
			}
		}
	}
	t.Fatal("no A-ASSOCIATE-AC seen")
	return nil
}

func (p *proxy) pdataLengths(t *testing.T) []int {
	var out []int
	for _, x := range p.pdus(t) {
		if pd, ok := x.(*pdu.PDataTF); ok {
			n := 0
			for _, v := range pd.Items {
				n += 6 + len(v.Data)
			}
			out = append(out, n)
		}
	}
	return out
}
