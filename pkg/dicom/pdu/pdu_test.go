package pdu

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/internal/dicomtest"
)

var update = flag.Bool("update", false, "rewrite golden files")

var dcmtkUserInfo = UserInfo{
	MaxLength:                 16384,
	ImplementationClassUID:    "1.2.276.0.7230010.3.0.3.6.7",
	ImplementationVersionName: "OFFIS_DCMTK_367",
}

func TestGolden(t *testing.T) {
	tests := []struct {
		file string
		want PDU
		// fixup turns the capture into our own encoding where the two
		// legitimately differ.
		fixup func(b []byte)
	}{
		{
			file: "associate_rq_echoscu.hex",
			want: &AssociateRQ{
				ProtocolVersion: 1, CalledAE: "STORESCP", CallingAE: "ECHOSCU",
				ApplicationContext: "1.2.840.10008.3.1.1.1",
				PresentationContexts: []PresentationContextRQ{{
					ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"},
				}},
				UserInfo: dcmtkUserInfo,
			},
			// We send the reserved byte dcmtk sets to FF as 00 (PS3.8 9.3.2.2).
			fixup: func(b []byte) { b[HeaderLen+fixedLen+25+6] = 0 },
		},
		{
			file: "associate_ac_storescp.hex",
			want: &AssociateAC{
				ProtocolVersion: 1, CalledAE: "STORESCP", CallingAE: "ECHOSCU",
				ApplicationContext: "1.2.840.10008.3.1.1.1",
				PresentationContexts: []PresentationContextAC{{
					ID: 1, Result: ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2",
				}},
				UserInfo: dcmtkUserInfo,
			},
		},
		{
			file: "associate_rj_called_ae.hex",
			want: &AssociateRJ{Result: RejectPermanent, Source: SourceServiceUser, Reason: ReasonCalledAENotRecognized},
		},
		{
			file: "associate_rj_refuse.hex",
			want: &AssociateRJ{Result: RejectPermanent, Source: SourceServiceUser, Reason: ReasonNoReason},
		},
		{
			file: "pdata_echo_rq.hex",
			want: &PDataTF{Items: []PDV{{ContextID: 1, Command: true, Last: true, Data: mustHexTail(t, "pdata_echo_rq.hex", 12)}}},
		},
		{
			file: "pdata_echo_rsp.hex",
			want: &PDataTF{Items: []PDV{{ContextID: 1, Command: true, Last: true, Data: mustHexTail(t, "pdata_echo_rsp.hex", 12)}}},
		},
		{file: "release_rq.hex", want: &ReleaseRQ{}},
		{file: "release_rp.hex", want: &ReleaseRP{}},
		{file: "abort_user.hex", want: &Abort{Source: AbortServiceUser}},
		{file: "abort_unrecognized.hex", want: &Abort{Source: AbortServiceProvider, Reason: AbortUnrecognizedPDU}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".hex"), func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			capture := dicomtest.MustHex(t, path)
			got, err := Read(bytes.NewReader(capture), 0)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decoded PDU (-want +got):\n%s", diff)
			}
			enc, err := Append(nil, tt.want)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if tt.fixup != nil {
				want := bytes.Clone(capture)
				tt.fixup(want)
				if !bytes.Equal(enc, want) {
					t.Errorf("encoding differs from the capture\n got: %x\nwant: %x", enc, want)
				}
				return
			}
			dicomtest.Golden(t, path, enc, *update)
		})
	}
}

func mustHexTail(t *testing.T, file string, off int) []byte {
	return dicomtest.MustHex(t, filepath.Join("testdata", file))[off:]
}

// writeCounter counts Write calls.
type writeCounter struct {
	bytes.Buffer
	calls int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.calls++
	return w.Buffer.Write(p)
}

func TestWriteIsOneWrite(t *testing.T) {
	rq := &AssociateRQ{
		ProtocolVersion: 1, CalledAE: "ANY-SCP", CallingAE: "MEDPLUM",
		ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: []PresentationContextRQ{
			{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}},
			{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.7", TransferSyntaxes: []string{"1.2.840.10008.1.2.4.70"}},
		},
		UserInfo: UserInfo{
			MaxLength: 65536, ImplementationClassUID: "2.25.1", ImplementationVersionName: "X",
			AsyncOps:       &AsyncOpsWindow{MaxInvoked: 1, MaxPerformed: 1},
			RoleSelections: []RoleSelection{{SOPClass: "1.2.840.10008.5.1.4.1.1.7", SCU: false, SCP: true}},
			Extra:          []SubItem{{Type: 0x58, Data: []byte{1, 0, 0, 4, 'u', 's', 'e', 'r', 0, 0}}},
		},
	}
	for _, p := range []PDU{rq, &PDataTF{Items: []PDV{{ContextID: 1, Data: bytes.Repeat([]byte{7}, 100000)}}}, &ReleaseRQ{}} {
		var w writeCounter
		if err := Write(&w, p); err != nil {
			t.Fatal(err)
		}
		if w.calls != 1 {
			t.Errorf("%s: %d Write calls, want 1", p.Type(), w.calls)
		}
		got, err := Read(&w.Buffer, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p, got); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", p.Type(), diff)
		}
	}
}

func TestReadErrors(t *testing.T) {
	rq := dicomtest.MustHex(t, "testdata/associate_rq_echoscu.hex")
	withLen := func(b []byte, n uint32) []byte {
		b = bytes.Clone(b)
		putUint32(b[2:], n)
		return b
	}
	tests := []struct {
		name   string
		in     []byte
		maxLen uint32
		want   error
	}{
		{"empty", nil, 0, io.EOF},
		{"http request", []byte("GET / HTTP/1.0\r\n\r\n"), 0, ErrUnknownType},
		{"type zero", []byte{0, 0, 0, 0, 0, 4, 0, 0, 0, 0}, 0, ErrUnknownType},
		{"type eight", []byte{8, 0, 0, 0, 0, 4, 0, 0, 0, 0}, 0, ErrUnknownType},
		{"truncated header", []byte{1, 0, 0}, 0, io.ErrUnexpectedEOF},
		{"truncated body", rq[:100], 0, io.ErrUnexpectedEOF},
		{"over caller limit", rq, 100, ErrTooLarge},
		{"over hard limit", []byte{4, 0, 0xff, 0xff, 0xff, 0xff}, 0, ErrTooLarge},
		{"release of 5 bytes", []byte{5, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0}, 0, ErrMalformed},
		{"abort of 2 bytes", []byte{7, 0, 0, 0, 0, 2, 0, 0}, 0, ErrMalformed},
		{"rq shorter than fixed part", withLen(rq[:60], 54), 0, ErrMalformed},
		{"item longer than PDU", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]), 0x10, 0, 0, 9, '1'), fixedLen+5), 0, ErrMalformed},
		{"truncated item header", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]), 0x10, 0), fixedLen+2), 0, ErrMalformed},
		{"context without transfer syntax", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]),
			0x20, 0, 0, 8, 1, 0, 0, 0, 0x30, 0, 0, 0), fixedLen+12), 0, ErrMalformed},
		{"context with two abstract syntaxes", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]),
			0x20, 0, 0, 16, 1, 0, 0, 0, 0x30, 0, 0, 0, 0x30, 0, 0, 0, 0x40, 0, 0, 0), fixedLen+20), 0, ErrMalformed},
		{"max length sub-item of 2 bytes", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]),
			0x50, 0, 0, 6, 0x51, 0, 0, 2, 0, 0), fixedLen+10), 0, ErrMalformed},
		{"role selection with bad UID length", withLen(append(bytes.Clone(rq[:HeaderLen+fixedLen]),
			0x50, 0, 0, 9, 0x54, 0, 0, 5, 0, 9, '1', 1, 1), fixedLen+13), 0, ErrMalformed},
		{"pdata without items", []byte{4, 0, 0, 0, 0, 0}, 0, ErrMalformed},
		{"pdv of length 1", []byte{4, 0, 0, 0, 0, 5, 0, 0, 0, 1, 1}, 0, ErrMalformed},
		{"pdv longer than pdu", []byte{4, 0, 0, 0, 0, 7, 0, 0, 0, 9, 1, 3, 0}, 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tt.in), tt.maxLen)
			if !errors.Is(err, tt.want) {
				t.Errorf("Read = %v, want %v", err, tt.want)
			}
		})
	}
}

// slowReader returns one byte per Read, to check that a type byte is judged
// before the rest of a PDU arrives.
type slowReader struct {
	b     []byte
	reads int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	r.reads++
	p[0], r.b = r.b[0], r.b[1:]
	return 1, nil
}

func TestUnknownTypeReadsOneByte(t *testing.T) {
	r := &slowReader{b: []byte("GET / HTTP/1.0\r\n\r\n")}
	if _, err := Read(r, 0); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Read = %v, want ErrUnknownType", err)
	}
	if r.reads != 1 {
		t.Errorf("read %d bytes before rejecting, want 1", r.reads)
	}
}

func TestReaderReusesPDataBuffer(t *testing.T) {
	var stream bytes.Buffer
	for i := range 3 {
		if err := Write(&stream, &PDataTF{Items: []PDV{
			{ContextID: 1, Data: []byte{byte(i), 1}},
			{ContextID: 3, Command: true, Last: true, Data: []byte{byte(i), 2, 3}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(&stream, &ReleaseRQ{}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&stream)
	var got [][]PDV
	for {
		p, err := r.Next(1024)
		if err != nil {
			t.Fatal(err)
		}
		pd, ok := p.(*PDataTF)
		if !ok {
			break
		}
		// Copy: the data aliases the reader's buffer.
		var items []PDV
		for _, v := range pd.Items {
			v.Data = bytes.Clone(v.Data)
			items = append(items, v)
		}
		got = append(got, items)
	}
	if len(got) != 3 || got[2][1].Data[0] != 2 || !got[2][1].Command || got[1][0].ContextID != 1 {
		t.Errorf("unexpected PDVs %+v", got)
	}
	if _, err := r.Next(0); err != io.EOF {
		t.Errorf("Next at end = %v, want io.EOF", err)
	}
}

func TestMessageControlHeaderReservedBits(t *testing.T) {
	in := []byte{4, 0, 0, 0, 0, 7, 0, 0, 0, 3, 5, 0xFC, 'x'}
	p, err := Read(bytes.NewReader(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &PDataTF{Items: []PDV{{ContextID: 5, Data: []byte("x")}}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPutPDataHeader(t *testing.T) {
	b := make([]byte, PDataHeaderLen+3)
	copy(b[PDataHeaderLen:], "abc")
	PutPDataHeader(b, 9, false, true, 3)
	var want bytes.Buffer
	if err := Write(&want, &PDataTF{Items: []PDV{{ContextID: 9, Last: true, Data: []byte("abc")}}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want.Bytes()) {
		t.Errorf("got %x, want %x", b, want.Bytes())
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		p    PDU
	}{
		{"AE too long", &AssociateRQ{CalledAE: "ABCDEFGHIJKLMNOPQ"}},
		{"UID too long for an item", &AssociateRQ{ApplicationContext: strings.Repeat("1", 70000)}},
		{"context too long", &AssociateAC{PresentationContexts: []PresentationContextAC{{TransferSyntax: strings.Repeat("1", 65535)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w writeCounter
			if err := Write(&w, tt.p); err == nil {
				t.Error("Write succeeded")
			}
			if w.calls != 0 {
				t.Error("a failed encoding was written")
			}
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{(&AssociateRJ{Result: RejectPermanent, Source: SourceServiceUser, Reason: ReasonCalledAENotRecognized}).String(),
			"rejected permanent, source: service user, reason: called AE title not recognized"},
		{(&AssociateRJ{Result: RejectPermanent, Source: SourceServiceUser, Reason: ReasonNoReason}).String(),
			"rejected permanent, source: service user, reason: no reason given"},
		{(&AssociateRJ{Result: RejectTransient, Source: SourceServiceProviderPresentation, Reason: ReasonLocalLimitExceeded}).String(),
			"rejected transient, source: service provider (presentation), reason: local limit exceeded"},
		{(&AssociateRJ{Result: RejectPermanent, Source: SourceServiceProviderACSE, Reason: ReasonProtocolVersionNotSupported}).String(),
			"rejected permanent, source: service provider (ACSE), reason: protocol version not supported"},
		{(&AssociateRJ{Result: 9, Source: 9, Reason: 9}).String(), "result 9, source: source 9, reason: reason 9"},
		{(&Abort{Source: AbortServiceProvider, Reason: AbortUnexpectedPDU}).String(), "source: service provider, reason: unexpected PDU"},
		{(&Abort{Source: AbortServiceUser}).String(), "source: service user"},
		{ResultTransferSyntaxesNotSupported.String(), "transfer syntaxes not supported (provider rejection)"},
		{TypePDataTF.String(), "P-DATA-TF"},
		{Type(0x47).String(), "PDU type 0x47"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func FuzzReadPDU(f *testing.F) {
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		f.Add(dicomtest.MustHex(f, file))
	}
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte{4, 0, 0, 0, 0, 8, 0, 0, 0, 4, 1, 0xff, 'a', 'b'})
	if b, err := os.ReadFile("testdata/associate_rq_echoscu.hex"); err == nil {
		f.Add(b) // the annotated text itself: garbage with a plausible start
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := Read(bytes.NewReader(in), 1<<20)
		if err != nil {
			return
		}
		// Anything we decode must re-encode, and decode to the same value.
		enc, err := Append(nil, p)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", p, err)
		}
		p2, err := Read(bytes.NewReader(enc), 0)
		if err != nil {
			t.Fatalf("decoding our own encoding: %v", err)
		}
		if diff := cmp.Diff(p, p2); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// benchPDUs are a large A-ASSOCIATE-RQ (echoscu -ppc 128 -pts 38) and a
// P-DATA-TF filled to dcmtk's default maximum length.
func benchPDUs() []PDU {
	ts := make([]string, 38)
	for i := range ts {
		ts[i] = "1.2.840.10008.1.2.4." + strconv.Itoa(50+i)
	}
	rq := &AssociateRQ{ProtocolVersion: 1, CalledAE: "GOSCP", CallingAE: "ECHOSCU", ApplicationContext: "1.2.840.10008.3.1.1.1",
		UserInfo: dcmtkUserInfo}
	for i := range 128 {
		rq.PresentationContexts = append(rq.PresentationContexts, PresentationContextRQ{ID: uint8(2*i + 1), AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: ts})
	}
	return []PDU{rq, &PDataTF{Items: []PDV{{ContextID: 1, Last: true, Data: make([]byte, 16372)}}}}
}

func BenchmarkPDUEncode(b *testing.B) {
	for _, p := range benchPDUs() {
		b.Run(p.Type().String(), func(b *testing.B) {
			buf, _ := Append(nil, p)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				buf, _ = Append(buf[:0], p)
			}
		})
	}
}

func BenchmarkPDUDecode(b *testing.B) {
	for _, p := range benchPDUs() {
		b.Run(p.Type().String(), func(b *testing.B) {
			enc, _ := Append(nil, p)
			b.SetBytes(int64(len(enc)))
			src := bytes.NewReader(enc)
			r := NewReader(src)
			for b.Loop() {
				src.Reset(enc)
				if _, err := r.Next(0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
