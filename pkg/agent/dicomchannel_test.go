package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spoolfile"
)

func dicomAddr(port int, query string) string {
	s := fmt.Sprintf("dicom://127.0.0.1:%d", port)
	if query != "" {
		s += "?" + query
	}
	return s
}

// instance is a small Secondary Capture dataset, as a modality sends it.
type instance struct {
	uid  string
	data []byte // explicit VR little endian, no Part-10 header
}

func newInstance(uid, patient string) instance {
	pixels := bytes.Repeat([]byte{0x12, 0x34}, 256)
	var b []byte
	for _, e := range [][]byte{
		txt(0x00080016, "UI", dicom.SecondaryCaptureImageStorage), txt(0x00080018, "UI", uid),
		txt(0x00080060, "CS", "OT"), txt(0x00100010, "PN", patient),
		le(0x00280010, "US", u16s(binary.LittleEndian, 16)), le(0x00280011, "US", u16s(binary.LittleEndian, 16)),
		le(0x7FE00010, "OW", pixels),
	} {
		b = append(b, e...)
	}
	return instance{uid: uid, data: b}
}

// storeAll sends the instances over one association and returns their
// statuses.
func storeAll(t testing.TB, port int, calling, called string, insts ...instance) []dimse.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	a, err := assoc.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port), assoc.Options{CallingAE: calling, CalledAE: called,
		Contexts: []assoc.Context{{AbstractSyntax: dicom.SecondaryCaptureImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatalf("associate: %v", err)
	}
	var out []dimse.Status
	for _, in := range insts {
		st, err := a.Store(ctx, dicom.SecondaryCaptureImageStorage, in.uid, dicom.ExplicitVRLittleEndian, bytes.NewReader(in.data))
		if err != nil {
			t.Fatalf("C-STORE %s: %v", in.uid, err)
		}
		out = append(out, st)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("release: %v", err)
	}
	return out
}

// dicomTransmitBody is a transmit body as the server sees it.
type dicomTransmitBody struct {
	Association dicomAssociation           `json:"association"`
	Dataset     map[string]json.RawMessage `json:"dataset"`
	Binary      fhir.Reference             `json:"binary"`
}

func decodeTransmit(t testing.TB, m *protocol.Message) dicomTransmitBody {
	t.Helper()
	var b dicomTransmitBody
	if err := json.Unmarshal([]byte(m.Body), &b); err != nil {
		t.Fatalf("transmit body %q: %v", m.Body, err)
	}
	return b
}

// uidOf returns the SOP instance UID of a transmit's dataset.
func (b dicomTransmitBody) uidOf(t testing.TB) string {
	t.Helper()
	var e jsonElement
	if err := json.Unmarshal(b.Dataset["00080018"], &e); err != nil || len(e.Value) != 1 {
		t.Fatalf("dataset has no SOP instance UID: %s", b.Dataset["00080018"])
	}
	return e.Value[0].(string)
}

// binary downloads a Binary's content from the dev server.
func (e *env) binary(ref string) []byte {
	e.t.Helper()
	tok, err := e.agent.creds.Token(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.ds.BaseURL()+"fhir/R4/"+ref, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", protocol.ContentTypeDICOM)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != protocol.ContentTypeDICOM {
		e.t.Fatalf("GET %s: %d %s %v", ref, resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	return b
}

// spooled lists the files of a channel's spool folder but its spares, and
// of its failed folder.
func (e *env) spooled(channel string) (files, failed []string) {
	e.t.Helper()
	dir := filepath.Join(e.dataDir, dicomSpoolDir, spoolDirName(channel))
	list := func(dir string) []string {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			e.t.Fatal(err)
		}
		var out []string
		for _, en := range entries {
			if !en.IsDir() && !spoolfile.IsSpare(en.Name()) {
				out = append(out, en.Name())
			}
		}
		return out
	}
	return list(dir), list(filepath.Join(dir, dicomFailedDir))
}

func (e *env) waitSpoolEmpty(channel string) {
	e.t.Helper()
	eventually(e.t, "spool of "+channel+" empty", func() bool {
		files, _ := e.spooled(channel)
		return len(files) == 0
	})
}

func TestDICOMStoreUploadsAndTransmits(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "pacs", address: dicomAddr(port, "aet=GOSCP")})
	tr := e.recordTransmits()
	e.start()

	insts := []instance{newInstance("1.2.3.4.1", "Doe^John"), newInstance("1.2.3.4.2", "Roe^Jane")}
	if diff := cmp.Diff([]dimse.Status{dimse.StatusSuccess, dimse.StatusSuccess}, storeAll(t, port, "MODALITY", "GOSCP", insts...)); diff != "" {
		t.Fatalf("statuses (-want +got):\n%s", diff)
	}
	byUID := map[string]*protocol.Message{}
	for _, m := range tr.wait(t, len(insts)) {
		byUID[decodeTransmit(t, m).uidOf(t)] = m
	}
	for _, in := range insts {
		m := byUID[in.uid]
		if m == nil {
			t.Fatalf("no transmit for %s", in.uid)
		}
		if m.Channel != "pacs" || m.Remote != "MODALITY" || m.ContentType != protocol.ContentTypeJSON ||
			!strings.HasPrefix(m.Callback, "Agent/"+testAgentID+"-") {
			t.Errorf("transmit envelope %+v", m)
		}
		body := decodeTransmit(t, m)
		if want := (dicomAssociation{CallingAETitle: "MODALITY", CalledAETitle: "GOSCP"}); body.Association != want {
			t.Errorf("association %+v, want %+v", body.Association, want)
		}
		if _, ok := body.Dataset["7FE00010"]; ok {
			t.Error("transmit carries pixel data")
		}
		for _, k := range []string{"00020010", "00020016", "00100010"} {
			if _, ok := body.Dataset[k]; !ok {
				t.Errorf("dataset lacks %s: %s", k, m.Body)
			}
		}
		// The Binary is the Part-10 file: our meta, then the dataset
		// exactly as sent.
		meta, rest, err := dicom.ReadPart10Header(bytes.NewReader(e.binary(body.Binary.Reference)))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rest)
		wantMeta := dicom.FileMeta{SOPClass: dicom.SecondaryCaptureImageStorage, SOPInstance: in.uid,
			TransferSyntax: dicom.ExplicitVRLittleEndian, ImplementationClassUID: dicom.ImplementationClassUID,
			ImplementationVersionName: dicom.ImplementationVersionName, SourceAE: "MODALITY"}
		if diff := cmp.Diff(wantMeta, meta); diff != "" || !bytes.Equal(data, in.data) {
			t.Errorf("Binary meta (-want +got):\n%s\ndataset identical: %v", diff, bytes.Equal(data, in.data))
		}
	}
	// The ack bot's answers settle the spool.
	e.waitSpoolEmpty("pacs")
}

func TestDICOMAssociationPolicy(t *testing.T) {
	ports := map[string]int{"open": freePort(t), "aet": freePort(t), "callers": freePort(t), "native": freePort(t), "pdu": freePort(t)}
	e := newEnv(t,
		ch{name: "open", address: dicomAddr(ports["open"], "")},
		ch{name: "aet", address: dicomAddr(ports["aet"], "aet=GOSCP")},
		ch{name: "callers", address: dicomAddr(ports["callers"], "allowedCallers=CT1,MR1")},
		ch{name: "native", address: dicomAddr(ports["native"], "transferSyntaxes=uncompressed")},
		ch{name: "pdu", address: dicomAddr(ports["pdu"], "maxPdu=4096")},
	)
	e.start()
	verification := assoc.Context{AbstractSyntax: dicom.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian}}
	jpeg := assoc.Context{AbstractSyntax: dicom.SecondaryCaptureImageStorage, TransferSyntaxes: []string{dicom.JPEGLosslessSV1}}
	find := assoc.Context{AbstractSyntax: dicom.StudyRootQueryRetrieveFind, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian}}
	tests := []struct {
		name            string
		channel         string
		calling, called string
		contexts        []assoc.Context
		wantReject      pdu.RejectReason // 0: accepted
		wantResults     []pdu.Result     // per proposed context
		wantPeerMaxPDU  uint32
	}{
		{"any called AE without aet", "open", "ECHOSCU", "WHATEVER", []assoc.Context{verification}, 0, []pdu.Result{pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"S-06 wrong called AE", "aet", "ECHOSCU", "NOTME", []assoc.Context{verification}, pdu.ReasonCalledAENotRecognized, nil, 0},
		{"our called AE", "aet", "ECHOSCU", "GOSCP", []assoc.Context{verification}, 0, []pdu.Result{pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"calling AE not allowed", "callers", "XR1", "ANY-SCP", []assoc.Context{verification}, pdu.ReasonCallingAENotRecognized, nil, 0},
		{"calling AE allowed", "callers", "MR1", "ANY-SCP", []assoc.Context{verification}, 0, []pdu.Result{pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"S-17 service not offered", "open", "FINDSCU", "ANY-SCP", []assoc.Context{find, verification}, 0,
			[]pdu.Result{pdu.ResultAbstractSyntaxNotSupported, pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"compressed passthrough by default", "open", "STORESCU", "ANY-SCP", []assoc.Context{jpeg, verification}, 0,
			[]pdu.Result{pdu.ResultAcceptance, pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"compressed not configured", "native", "STORESCU", "ANY-SCP", []assoc.Context{jpeg, verification}, 0,
			[]pdu.Result{pdu.ResultTransferSyntaxesNotSupported, pdu.ResultAcceptance}, assoc.DefaultMaxPDU},
		{"maxPdu", "pdu", "ECHOSCU", "ANY-SCP", []assoc.Context{verification}, 0, []pdu.Result{pdu.ResultAcceptance}, 4096},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			a, err := assoc.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", ports[tc.channel]),
				assoc.Options{CallingAE: tc.calling, CalledAE: tc.called, Contexts: tc.contexts})
			var rj *assoc.RejectError
			switch {
			case tc.wantReject != 0:
				if !errors.As(err, &rj) || rj.Result != pdu.RejectPermanent || rj.Source != pdu.SourceServiceUser || rj.Reason != tc.wantReject {
					t.Fatalf("Dial = %v, want rejection reason %d", err, tc.wantReject)
				}
				return
			case err != nil:
				t.Fatalf("Dial: %v", err)
			}
			defer a.Release(ctx)
			var results []pdu.Result
			for _, r := range a.Contexts() {
				results = append(results, r.Result)
			}
			if diff := cmp.Diff(tc.wantResults, results); diff != "" || a.Peer().MaxPDU != tc.wantPeerMaxPDU {
				t.Errorf("context results (-want +got):\n%s\npeer max PDU %d, want %d", diff, a.Peer().MaxPDU, tc.wantPeerMaxPDU)
			}
			if st, err := a.Echo(ctx); err != nil || st != dimse.StatusSuccess {
				t.Errorf("S-01 echo = %v, %v", st, err)
			}
		})
	}
}

// The modality gets Success while the server has not answered; the file
// stays spooled until it does, and the answer itself gets agent:error.
func TestDICOMServerAnswerSettlesSpool(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "pacs", address: dicomAddr(port, "")})
	hold := e.holdBot()
	e.start()

	if st := storeAll(t, port, "CT1", "ANY-SCP", newInstance("1.2.3.5.1", "Held^Patient")); st[0] != dimse.StatusSuccess {
		t.Fatalf("status %v", st)
	}
	req := hold.next(t)
	if files, _ := e.spooled("pacs"); len(files) != 1 {
		t.Fatalf("spool holds %v while the answer is pending", files)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := e.ds.Request(ctx, testAgentID, &protocol.Message{
		Type: protocol.TypeTransmitResponse, Channel: req.Channel, Remote: req.Remote, Callback: req.Callback,
		ContentType: protocol.ContentTypeJSON, StatusCode: 200, Body: "{}",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != protocol.TypeError || r.Body != "WebSocket error on incoming message: sendToRemote not implemented" {
		t.Errorf("answer to a response: %s %q", r.Type, r.Body)
	}
	e.waitSpoolEmpty("pacs")
}

// Instances a previous run acknowledged but did not forward are sent at
// start, in spool files or in the Part-10 files of earlier versions; what a
// crash interrupted (a spool file not matching its trailer, a temporary
// file of an earlier version) is removed, and spares are kept.
func TestDICOMSpoolResentAtStart(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "pacs", address: dicomAddr(port, "")})
	tr := e.recordTransmits()
	dir := filepath.Join(e.dataDir, dicomSpoolDir, spoolDirName("pacs"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := spoolfile.New(dir, 1, 1<<20)
	spooled := func(seq int64, file []byte, damage func(path string) error) string {
		name := spoolName(seq, "CT1", "ANY-SCP", dicomSpoolExt)
		if err := files.Create(name, uint64(seq), func(w io.Writer) error {
			_, err := w.Write(file)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if damage != nil {
			if err := damage(filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		return name
	}
	part10 := func(uid string) []byte {
		return part10File(t, dicom.ExplicitVRLittleEndian, newInstance(uid, "Left^Over").data)
	}
	sent := map[string][]byte{"1.2.3.6.1": part10("1.2.3.6.1"), "1.2.3.6.2": part10("1.2.3.6.2")}
	if err := os.WriteFile(filepath.Join(dir, spoolName(1, "CT1", "ANY-SCP", dicomFileExt)), sent["1.2.3.6.1"], 0o600); err != nil {
		t.Fatal(err)
	}
	spooled(2, sent["1.2.3.6.2"], nil)
	spooled(3, part10("1.2.3.6.3"), func(path string) error { // cut short
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		return os.Truncate(path, st.Size()-100)
	})
	spooled(4, part10("1.2.3.6.4"), func(path string) error { // a page never written
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(make([]byte, 64), 200)
		return errors.Join(err, f.Close())
	})
	if err := files.Recycle(spooled(5, part10("1.2.3.6.5"), nil)); err != nil {
		t.Fatal(err)
	}
	spares, err := filepath.Glob(filepath.Join(dir, ".spare-*"))
	if err != nil || len(spares) != 1 {
		t.Fatalf("spares %v, %v", spares, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".x.dcm.123.part"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()

	for _, m := range tr.wait(t, len(sent)) {
		body := decodeTransmit(t, m)
		want, ok := sent[body.uidOf(t)]
		if !ok || m.Remote != "CT1" || body.Association.CalledAETitle != "ANY-SCP" {
			t.Errorf("transmit %+v %+v", m, body.Association)
		}
		if !bytes.Equal(e.binary(body.Binary.Reference), want) {
			t.Errorf("Binary of %s differs from the spooled instance", body.uidOf(t))
		}
	}
	e.waitSpoolEmpty("pacs")
	e.waitMainLog("Removed a spool file a crash left incomplete")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if !spoolfile.IsSpare(en.Name()) {
			t.Errorf("%s left in the spool", en.Name())
		}
	}
	if _, err := os.Stat(spares[0]); err != nil {
		t.Errorf("the spare found at start is gone: %v", err)
	}
	if got := tr.wait(t, 0); len(got) != len(sent) {
		t.Errorf("%d transmits, want %d", len(got), len(sent))
	}
}

// failingBinaries answers Binary uploads itself: 503 for the first one,
// 400 for those whose body contains refuse; the rest reach the server.
type failingBinaries struct {
	next   http.RoundTripper
	refuse []byte
	calls  atomic.Int64
}

func (f *failingBinaries) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/Binary") {
		return f.next.RoundTrip(r)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r.Body.Close()
	status := 0
	switch {
	case f.calls.Add(1) == 1:
		status = http.StatusServiceUnavailable
	case bytes.Contains(body, f.refuse):
		status = http.StatusBadRequest
	default:
		r.Body = io.NopCloser(bytes.NewReader(body))
		return f.next.RoundTrip(r)
	}
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
}

func TestDICOMUploadRetriedOrRefused(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "pacs", address: dicomAddr(port, "")})
	rt := &failingBinaries{next: http.DefaultTransport, refuse: []byte("Refuse^Me")}
	e.agent.fhir = fhir.NewClient(e.ds.BaseURL(), e.agent.creds.Token, &http.Client{Transport: rt})
	tr := e.recordTransmits()
	e.start()

	good, bad := newInstance("1.2.3.7.1", "Good^Patient"), newInstance("1.2.3.7.2", "Refuse^Me")
	if diff := cmp.Diff([]dimse.Status{dimse.StatusSuccess, dimse.StatusSuccess}, storeAll(t, port, "CT1", "ANY-SCP", good, bad)); diff != "" {
		t.Fatalf("statuses (-want +got):\n%s", diff)
	}
	if got := decodeTransmit(t, tr.wait(t, 1)[0]).uidOf(t); got != good.uid {
		t.Errorf("transmitted %s, want %s", got, good.uid)
	}
	eventually(t, "refused instance in the failed folder", func() bool {
		files, failed := e.spooled("pacs")
		return len(files) == 0 && len(failed) == 1
	})
	_, failed := e.spooled("pacs")
	if sf, err := parseSpoolName(failed[0]); err != nil || !sf.part || sf.as.CallingAETitle != "CT1" {
		t.Errorf("failed file %q: %+v %v", failed[0], sf, err)
	}
	// A plain Part-10 file, without the spool trailer.
	f, err := os.Open(filepath.Join(e.dataDir, dicomSpoolDir, "pacs", dicomFailedDir, failed[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if meta, data, err := dicom.ReadPart10Header(f); err != nil || meta.SOPInstance != bad.uid {
		t.Errorf("failed file: %+v %v", meta, err)
	} else if b, _ := io.ReadAll(data); !bytes.Equal(b, bad.data) {
		t.Error("failed file: the dataset differs from the one sent")
	}
	e.waitMainLog("DICOM instance refused")
}

// S-15: several associations at once.
func TestDICOMParallelAssociations(t *testing.T) {
	port := freePort(t)
	e := newEnv(t, ch{name: "pacs", address: dicomAddr(port, "")})
	tr := e.recordTransmits()
	e.start()
	const senders, each = 4, 5
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			var insts []instance
			for i := range each {
				insts = append(insts, newInstance(fmt.Sprintf("1.2.3.8.%d.%d", s, i), "Many^Patients"))
			}
			for _, st := range storeAll(t, port, fmt.Sprintf("SCU%d", s), "ANY-SCP", insts...) {
				if st != dimse.StatusSuccess {
					t.Errorf("status %v", st)
				}
			}
		})
	}
	wg.Wait()
	uids, binaries := map[string]bool{}, map[string]bool{}
	for _, m := range tr.wait(t, senders*each) {
		b := decodeTransmit(t, m)
		uids[b.uidOf(t)], binaries[b.Binary.Reference] = true, true
	}
	if len(uids) != senders*each || len(binaries) != senders*each {
		t.Errorf("%d distinct instances and %d Binaries, want %d", len(uids), len(binaries), senders*each)
	}
	e.waitSpoolEmpty("pacs")
}

func TestParseDICOMParams(t *testing.T) {
	tests := []struct {
		query      string
		want       dicomParams
		wantIssues []issue
	}{
		{"", dicomParams{}, nil},
		{"aet=GOSCP&allowedCallers=CT1,+MR1&maxPdu=131072&transferSyntaxes=1.2.840.10008.1.2,compressed",
			dicomParams{aeTitle: "GOSCP", allowedCallers: []string{"CT1", "MR1"}, maxPDU: 131072,
				transferSyntaxes: append([]string{dicom.ImplicitVRLittleEndian}, dicom.CompressedTransferSyntaxes()...)}, nil},
		{"transferSyntaxes=uncompressed", dicomParams{transferSyntaxes: dicom.UncompressedTransferSyntaxes()}, nil},
		{"aet=THIS+TITLE+IS+TOO+LONG", dicomParams{aeTitle: "THIS TITLE IS TOO LONG"},
			[]issue{problem("Invalid aet 'THIS TITLE IS TOO LONG'; expected 1 to 16 characters without backslash or control characters")}},
		{"allowedCallers=CT1,,A%5CB", dicomParams{allowedCallers: []string{"CT1"}},
			[]issue{problem("Invalid AE title '' in allowedCallers"), problem(`Invalid AE title 'A\B' in allowedCallers`)}},
		{"maxPdu=100", dicomParams{}, []issue{warning("Invalid maxPdu: '100'; must be an integer from 1024 to %d. Using %d.", pdu.HardLimit, assoc.DefaultMaxPDU)}},
		{"transferSyntaxes=jpeg", dicomParams{},
			[]issue{problem("Invalid transfer syntax 'jpeg' in transferSyntaxes; expected UIDs, 'uncompressed' or 'compressed'")}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			p, issues := parseDICOMParams(q)
			if diff := cmp.Diff(tc.want, *p.(*dicomParams), cmp.AllowUnexported(dicomParams{})); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantIssues, issues, cmp.AllowUnexported(issue{})); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

// dataReader tells a dataset that stopped arriving from one that could not
// be stored, whether it is read or written out.
func TestDataReaderErrors(t *testing.T) {
	full := errors.New("disk full")
	tests := []struct {
		name     string
		cut      bool // the stream fails after "dataset"
		sinkFail bool
		transfer bool // a transferError is expected
		storage  bool // the sink's error is expected
	}{
		{name: "complete"},
		{name: "cut off", cut: true, transfer: true},
		{name: "not stored", sinkFail: true, storage: true},
	}
	for _, tt := range tests {
		for _, via := range []string{"Read", "WriteTo"} {
			t.Run(tt.name+" via "+via, func(t *testing.T) {
				d := &dataReader{r: strings.NewReader("dataset")}
				if tt.cut {
					d.r = io.MultiReader(d.r, iotest.ErrReader(io.ErrUnexpectedEOF))
				}
				var sink io.Writer = &bytes.Buffer{}
				if tt.sinkFail {
					sink = failingWriter{full}
				}
				var err error
				if via == "Read" {
					_, err = io.Copy(sink, struct{ io.Reader }{d})
				} else {
					_, err = d.WriteTo(sink)
				}
				var te transferError
				if errors.As(err, &te) != tt.transfer || errors.Is(err, full) != tt.storage || err == nil && d.n != 7 {
					t.Errorf("err %v, %d bytes counted; want transfer error %v, storage error %v", err, d.n, tt.transfer, tt.storage)
				}
			})
		}
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestSpoolNames(t *testing.T) {
	for _, tc := range []struct{ channel, dir string }{
		{"dicom", "dicom"}, {"CT-1_a", "CT-1_a"}, {"a/b c", "a%2Fb%20c"}, {"..", "%2E%2E"}, {"é", "%C3%A9"},
	} {
		if got := spoolDirName(tc.channel); got != tc.dir {
			t.Errorf("spoolDirName(%q) = %q, want %q", tc.channel, got, tc.dir)
		}
	}
	as := dicomAssociation{CallingAETitle: "CT 1/A", CalledAETitle: "ANY-SCP"}
	for _, ext := range []string{dicomSpoolExt, dicomFileExt} {
		name := spoolName(0x1234, as.CallingAETitle, as.CalledAETitle, ext)
		if sf, err := parseSpoolName(name); err != nil || sf != (spoolFile{seq: 0x1234, as: as, part: ext == dicomFileExt}) {
			t.Errorf("parseSpoolName(%q) = %+v, %v", name, sf, err)
		}
	}
	for _, bad := range []string{"x.dcm", "0000000000001234.Q1Q.QU5Z.txt", "0000000000001234.!!.QU5Z.dcm", "000000000000123z.Q1Q.QU5Z.spool", "8000000000001234.Q1Q.QU5Z.spool"} {
		if _, err := parseSpoolName(bad); !errors.Is(err, errBadSpoolName) {
			t.Errorf("parseSpoolName(%q) = %v", bad, err)
		}
	}
}
