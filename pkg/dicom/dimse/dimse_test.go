package dimse

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/internal/dicomtest"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestCommandGolden(t *testing.T) {
	tests := []struct {
		file string
		want *Command
	}{
		{"echo_rq.hex", &Command{CommandField: CEchoRQ, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageID: 1}},
		{"echo_rsp.hex", &Command{CommandField: CEchoRSP, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageIDBeingRespondedTo: 1, Status: StatusSuccess}},
		{"store_rq.hex", &Command{
			CommandField: CStoreRQ, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.7", MessageID: 1,
			Priority: PriorityMedium, HasDataSet: true, AffectedSOPInstanceUID: "1.2.826.0.1.3680043.9.7133.1.123",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			got, err := DecodeCommand(dicomtest.MustHex(t, path))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
			dicomtest.Golden(t, path, EncodeCommand(tt.want), *update)
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	tests := []*Command{
		{CommandField: CEchoRQ, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageID: 0},
		{CommandField: CStoreRSP, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.7", MessageIDBeingRespondedTo: 7,
			Status: StatusCannotUnderstand, OffendingElement: []uint32{0x00100010, 0x7FE00010}, ErrorComment: "bad",
			AffectedSOPInstanceUID: "1.2.3"},
		{CommandField: CStoreRQ, AffectedSOPClassUID: "1.2", MessageID: 65535, Priority: PriorityLow, HasDataSet: true,
			AffectedSOPInstanceUID: "1.2.3.4", MoveOriginatorAETitle: "MOVESCU", MoveOriginatorMessageID: 0},
		{CommandField: CMoveRQ, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.2", MessageID: 3, MoveDestination: "STORESCP", HasDataSet: true},
		{CommandField: CMoveRSP, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.2", MessageIDBeingRespondedTo: 3,
			Status: StatusPending, RemainingSuboperations: 0, CompletedSuboperations: 4},
		{CommandField: CCancelRQ, MessageIDBeingRespondedTo: 9},
		{CommandField: NActionRQ, RequestedSOPClassUID: "1.2.840.10008.1.20.1", RequestedSOPInstanceUID: "1.2.840.10008.1.20.1.1",
			MessageID: 2, ActionTypeID: 0, HasDataSet: true},
		{CommandField: NEventReportRQ, AffectedSOPClassUID: "1.2", MessageID: 1, EventTypeID: 1, ErrorID: 5,
			AttributeIdentifierList: []uint32{0x00080018}},
	}
	for _, c := range tests {
		t.Run(c.CommandField.String(), func(t *testing.T) {
			enc := EncodeCommand(c)
			if len(enc)%2 != 0 {
				t.Errorf("odd command set length %d", len(enc))
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestCommandPadding(t *testing.T) {
	enc := EncodeCommand(&Command{CommandField: CMoveRQ, MessageID: 1, AffectedSOPClassUID: "1.2.3", MoveDestination: "ABC"})
	if !bytes.Contains(enc, []byte("1.2.3\x00")) {
		t.Error("UI value not NUL-padded")
	}
	if !bytes.Contains(enc, []byte("ABC ")) {
		t.Error("AE value not space-padded")
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	valid := EncodeCommand(&Command{CommandField: CEchoRQ, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageID: 1})
	without := func(elem uint16) []byte {
		var out []byte
		for b := valid; len(b) > 0; {
			n := 8 + int(b[4]) // all test values are short
			if uint16(b[2])|uint16(b[3])<<8 != elem {
				out = append(out, b[:n]...)
			}
			b = b[n:]
		}
		return out
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"truncated header", valid[:5]},
		{"value longer than input", append(bytes.Clone(valid), 0, 0, 0x10, 0x01, 9, 0, 0, 0, 1)},
		{"huge value length", append(bytes.Clone(valid), 0, 0, 0x10, 0x01, 0xff, 0xff, 0xff, 0xff)},
		{"wrong group", append(bytes.Clone(valid), 8, 0, 0x18, 0, 0, 0, 0, 0)},
		{"US of 3 bytes", append(bytes.Clone(valid), 0, 0, 0x00, 0x07, 3, 0, 0, 0, 1, 2, 3)},
		{"AT of 6 bytes", append(bytes.Clone(valid), 0, 0, 0x01, 0x09, 6, 0, 0, 0, 1, 2, 3, 4, 5, 6)},
		{"group length of 2 bytes", append([]byte{0, 0, 0, 0, 2, 0, 0, 0, 1, 0}, valid[12:]...)},
		{"no command field", without(tagCommandField)},
		{"no data set type", without(tagDataSetType)},
		{"request without message ID", without(tagMessageID)},
		{"response without status", EncodeCommand(&Command{CommandField: CEchoRSP, MessageIDBeingRespondedTo: 1})[:12+10+10+10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeCommand(tt.in); !errors.Is(err, ErrMalformedCommand) {
				t.Errorf("DecodeCommand = %v, want ErrMalformedCommand", err)
			}
		})
	}
	// Unknown and retired elements are skipped, and any value other than
	// 0x0101 announces a dataset.
	odd := append(bytes.Clone(without(tagDataSetType)), 0, 0, 0x00, 0x08, 2, 0, 0, 0, 0x02, 0x01, 0, 0, 0x01, 0x40, 2, 0, 0, 0, 'x', 'y')
	c, err := DecodeCommand(odd)
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasDataSet {
		t.Error("data set type 0x0102 not taken as a dataset")
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		s    Status
		f    CommandField
		cat  Category
		text string
	}{
		{StatusSuccess, CEchoRSP, CategorySuccess, "Success"},
		{StatusPending, CFindRSP, CategoryPending, "Pending: pending (0xFF00)"},
		{StatusPendingWarning, CFindRSP, CategoryPending, "Pending: pending, optional keys not supported (0xFF01)"},
		{StatusCancel, CFindRSP, CategoryCancel, "Cancel: cancelled (0xFE00)"},
		{0x0001, CStoreRSP, CategoryWarning, "Warning: unknown status (0x0001)"},
		{StatusCoercionOfDataElements, CStoreRSP, CategoryWarning, "Warning: coercion of data elements (0xB000)"},
		{StatusSubOpsCompleteWithFailure, CMoveRSP, CategoryWarning, "Warning: sub-operations complete, one or more failures or warnings (0xB000)"},
		{StatusFindResponseLimitReached, CFindRQ, CategoryWarning, "Warning: response limit reached (0xB001)"},
		{StatusProcessingFailure, CEchoRSP, CategoryFailure, "Failure: processing failure (0x0110)"},
		{0xA7FF, CStoreRSP, CategoryFailure, "Failure: refused, out of resources (0xA7FF)"},
		{StatusOutOfResourcesSubOps, CGetRSP, CategoryFailure, "Failure: out of resources, unable to perform sub-operations (0xA702)"},
		{0xA901, CStoreRSP, CategoryFailure, "Failure: dataset does not match SOP class (0xA901)"},
		{StatusDataSetMismatch, CFindRSP, CategoryFailure, "Failure: identifier does not match SOP class (0xA900)"},
		{0xC123, CStoreRSP, CategoryFailure, "Failure: cannot understand (0xC123)"},
		{0xC000, CMoveRSP, CategoryFailure, "Failure: unable to process (0xC000)"},
		{0xAA02, CGetRSP, CategoryFailure, "Failure: frame-level retrieve error (0xAA02)"},
		{StatusMoveDestinationUnknown, CMoveRSP, CategoryFailure, "Failure: move destination unknown (0xA801)"},
		{0x1234, CEchoRSP, CategoryFailure, "Failure: unknown status (0x1234)"},
	}
	for _, tt := range tests {
		if got := tt.s.Category(); got != tt.cat {
			t.Errorf("%04X.Category() = %v, want %v", uint16(tt.s), got, tt.cat)
		}
		if got := tt.s.Describe(tt.f); got != tt.text {
			t.Errorf("%04X.Describe(%v) = %q, want %q", uint16(tt.s), tt.f, got, tt.text)
		}
	}
	if got := StatusProcessingFailure.String(); got != "Failure: processing failure (0x0110)" {
		t.Errorf("String() = %q", got)
	}
}

// pduSource feeds PDVs decoded from a PDU stream, like an association does.
type pduSource struct {
	r     *pdu.Reader
	items []pdu.PDV
}

func (s *pduSource) NextPDV() (pdu.PDV, error) {
	for len(s.items) == 0 {
		p, err := s.r.Next(0)
		if err != nil {
			return pdu.PDV{}, err
		}
		pd, ok := p.(*pdu.PDataTF)
		if !ok {
			return pdu.PDV{}, errors.New("not P-DATA")
		}
		s.items = pd.Items
	}
	v := s.items[0]
	s.items = s.items[1:]
	return v, nil
}

// pduLog records the PDUs written to it, checking one PDU per Write.
type pduLog struct {
	t      *testing.T
	stream bytes.Buffer
	sizes  []int
}

func (l *pduLog) Write(p []byte) (int, error) {
	if n := int(p[2])<<24 | int(p[3])<<16 | int(p[4])<<8 | int(p[5]); n+6 != len(p) {
		l.t.Errorf("Write of %d bytes holds a PDU of length %d", len(p), n)
	}
	l.sizes = append(l.sizes, len(p)-6)
	return l.stream.Write(p)
}

func TestFragmentation(t *testing.T) {
	data := make([]byte, 100003)
	rand.Read(data)
	tests := []struct {
		name    string
		peerMax uint32
		data    []byte
		wantMax int
	}{
		{"dcmtk default", 16384, data, 16384},
		{"small", 4096, data, 4096},
		{"unlimited peer", 0, data, 100003 + 6},
		{"exact multiple", 1006, data[:3000], 1006},
		{"empty dataset", 16384, nil, 16384},
		{"tiny peer", 3, data[:5], 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &pduLog{t: t}
			w := NewWriter(log, tt.peerMax)
			cmd := &Command{CommandField: CStoreRQ, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.7", MessageID: 1, HasDataSet: true, AffectedSOPInstanceUID: "1.2.3"}
			if err := w.WriteCommand(3, cmd); err != nil {
				t.Fatal(err)
			}
			n, err := w.WriteDataSet(3, bytes.NewReader(tt.data))
			if err != nil || n != int64(len(tt.data)) {
				t.Fatalf("WriteDataSet = %d, %v", n, err)
			}
			for _, s := range log.sizes {
				if s > tt.wantMax {
					t.Errorf("PDU length %d over %d", s, tt.wantMax)
				}
			}
			r := NewReader(&pduSource{r: pdu.NewReader(&log.stream)}, Limits{})
			m, err := r.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(cmd, m.Command); diff != "" || m.ContextID != 3 {
				t.Errorf("context %d, command (-want +got):\n%s", m.ContextID, diff)
			}
			var got bytes.Buffer
			if _, err := io.Copy(&got, m.DataSet); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), tt.data) {
				t.Errorf("dataset of %d bytes differs from the %d sent", got.Len(), len(tt.data))
			}
		})
	}
}

func TestCommandFragmentation(t *testing.T) {
	log := &pduLog{t: t}
	cmd := &Command{CommandField: CStoreRSP, AffectedSOPClassUID: "1.2.3", MessageIDBeingRespondedTo: 4, Status: 0xC001,
		ErrorComment: strings.Repeat("x", 61)}
	if err := NewWriter(log, 20).WriteCommand(1, cmd); err != nil {
		t.Fatal(err)
	}
	if len(log.sizes) < 5 {
		t.Errorf("command sent in %d PDUs, want it fragmented", len(log.sizes))
	}
	m, err := NewReader(&pduSource{r: pdu.NewReader(&log.stream)}, Limits{}).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cmd, m.Command); diff != "" || m.DataSet != nil {
		t.Errorf("command (-want +got):\n%s", diff)
	}
}

// sliceSource yields fixed PDVs, then io.EOF.
type sliceSource []pdu.PDV

func (s *sliceSource) NextPDV() (pdu.PDV, error) {
	if len(*s) == 0 {
		return pdu.PDV{}, io.EOF
	}
	v := (*s)[0]
	*s = (*s)[1:]
	return v, nil
}

func TestReaderErrors(t *testing.T) {
	echo := EncodeCommand(&Command{CommandField: CEchoRQ, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageID: 1})
	store := EncodeCommand(&Command{CommandField: CStoreRQ, AffectedSOPClassUID: "1.2", MessageID: 1, HasDataSet: true, AffectedSOPInstanceUID: "1.2.3"})
	tests := []struct {
		name    string
		pdvs    []pdu.PDV
		lim     Limits
		readAll bool // read the dataset of the first message
		want    error
	}{
		{"dataset first", []pdu.PDV{{ContextID: 1, Last: true, Data: []byte{1}}}, Limits{}, false, ErrSequence},
		{"context change inside command", []pdu.PDV{{ContextID: 1, Command: true, Data: echo[:10]}, {ContextID: 3, Command: true, Last: true, Data: echo[10:]}}, Limits{}, false, ErrSequence},
		{"command too large", []pdu.PDV{{ContextID: 1, Command: true, Data: make([]byte, 40)}, {ContextID: 1, Command: true, Data: make([]byte, 40)}}, Limits{MaxCommandSize: 64}, false, ErrTooLarge},
		{"garbage command", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2, 3}}}, Limits{}, false, ErrMalformedCommand},
		{"end inside command", []pdu.PDV{{ContextID: 1, Command: true, Data: echo[:10]}}, Limits{}, false, io.EOF},
		{"command inside dataset", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: store}, {ContextID: 1, Data: []byte{1}}, {ContextID: 1, Command: true, Last: true, Data: echo}}, Limits{}, true, ErrSequence},
		{"dataset context change", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: store}, {ContextID: 3, Last: true, Data: []byte{1}}}, Limits{}, true, ErrSequence},
		{"dataset too large", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: store}, {ContextID: 1, Data: make([]byte, 60)}, {ContextID: 1, Last: true, Data: make([]byte, 60)}}, Limits{MaxDataSetSize: 100}, true, ErrTooLarge},
		{"end inside dataset", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: store}, {ContextID: 1, Data: []byte{1}}}, Limits{}, true, io.ErrUnexpectedEOF},
		{"end inside unread dataset", []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: store}, {ContextID: 1, Data: []byte{1}}}, Limits{}, false, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := sliceSource(tt.pdvs)
			r := NewReader(&src, tt.lim)
			m, err := r.ReadMessage()
			if err == nil && tt.readAll {
				_, err = io.Copy(io.Discard, m.DataSet)
			}
			if err == nil {
				_, err = r.ReadMessage()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			// The error is sticky.
			if _, err2 := r.ReadMessage(); !errors.Is(err2, tt.want) {
				t.Errorf("second ReadMessage = %v, want %v", err2, tt.want)
			}
		})
	}
}

func TestUnreadDataSetIsSkipped(t *testing.T) {
	store := EncodeCommand(&Command{CommandField: CStoreRQ, AffectedSOPClassUID: "1.2", MessageID: 1, HasDataSet: true, AffectedSOPInstanceUID: "1.2.3"})
	echo := EncodeCommand(&Command{CommandField: CEchoRQ, AffectedSOPClassUID: "1.2.840.10008.1.1", MessageID: 2})
	src := sliceSource{
		{ContextID: 1, Command: true, Last: true, Data: store},
		{ContextID: 1, Data: []byte("abc")},
		{ContextID: 1, Last: true, Data: []byte("def")},
		{ContextID: 3, Command: true, Last: true, Data: echo},
	}
	r := NewReader(&src, Limits{})
	m, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(m.DataSet, buf); err != nil || string(buf) != "ab" {
		t.Fatalf("read %q, %v", buf, err)
	}
	m, err = r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if m.Command.CommandField != CEchoRQ || m.Command.MessageID != 2 || m.ContextID != 3 {
		t.Errorf("second message %+v on context %d", m.Command, m.ContextID)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		f.Add(dicomtest.MustHex(f, file))
	}
	f.Add(EncodeCommand(&Command{CommandField: CMoveRSP, MessageIDBeingRespondedTo: 1, Status: StatusPending, OffendingElement: []uint32{1}}))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := DecodeCommand(in)
		if err != nil {
			return
		}
		c2, err := DecodeCommand(EncodeCommand(c))
		if err != nil {
			t.Fatalf("decoding our own encoding of %+v: %v", c, err)
		}
		if diff := cmp.Diff(c, c2); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
