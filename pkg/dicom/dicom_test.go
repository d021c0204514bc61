package dicom

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	suyash "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/internal/dicomtest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testInstance = "1.2.826.0.1.3680043.9.7133.1.123"

// smallDataSet is a minimal explicit VR LE dataset: SOP class, SOP
// instance and patient name.
func smallDataSet() []byte {
	var b []byte
	el := func(group, elem uint16, vr, v string) {
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, elem)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	el(0x0008, 0x0016, "UI", SecondaryCaptureImageStorage+"\x00")
	el(0x0008, 0x0018, "UI", testInstance)
	el(0x0010, 0x0010, "PN", "Test^Patient")
	return b
}

func TestWritePart10HeaderGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePart10Header(&buf, SecondaryCaptureImageStorage, testInstance, ExplicitVRLittleEndian,
		ImplementationClassUID, ImplementationVersionName, "STORESCU"); err != nil {
		t.Fatal(err)
	}
	dicomtest.Golden(t, "testdata/part10_header.hex", buf.Bytes(), *update)
}

func TestPart10RoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		version string
		source  string
	}{
		{"full", ImplementationVersionName, "STORESCU"},
		{"odd lengths", "ODD", "AE1"},
		{"optional elements omitted", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.dcm")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := WritePart10Header(f, SecondaryCaptureImageStorage, testInstance, ExplicitVRLittleEndian,
				ImplementationClassUID, tt.version, tt.source); err != nil {
				t.Fatal(err)
			}
			f.Write(smallDataSet())
			f.Close()

			// Our reader.
			raw, _ := os.ReadFile(path)
			meta, rest, err := ReadPart10Header(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			want := FileMeta{SecondaryCaptureImageStorage, testInstance, ExplicitVRLittleEndian, ImplementationClassUID, tt.version, tt.source}
			if diff := cmp.Diff(want, meta); diff != "" {
				t.Errorf("meta (-want +got):\n%s", diff)
			}
			if ds, _ := io.ReadAll(rest); !bytes.Equal(ds, smallDataSet()) {
				t.Errorf("dataset after the header differs")
			}

			// An independent parser.
			ds, err := suyash.ParseFile(path, nil)
			if err != nil {
				t.Fatalf("suyashkumar/dicom: %v", err)
			}
			for tg, want := range map[tag.Tag]string{
				tag.MediaStorageSOPClassUID:    SecondaryCaptureImageStorage,
				tag.MediaStorageSOPInstanceUID: testInstance,
				tag.TransferSyntaxUID:          ExplicitVRLittleEndian,
				tag.PatientName:                "Test^Patient",
			} {
				e, err := ds.FindElementByTag(tg)
				if err != nil {
					t.Errorf("%v: %v", tg, err)
					continue
				}
				if got := suyash.MustGetStrings(e.Value); len(got) != 1 || strings.TrimRight(got[0], "\x00 ") != want {
					t.Errorf("%v = %q, want %q", tg, got, want)
				}
			}

			// dcmtk.
			if _, err := exec.LookPath("dcmftest"); err != nil {
				t.Log("dcmtk not found on PATH; skipping the dcmftest/dcmdump check")
			} else {
				if r := dicomtest.Run(t, "dcmftest", path); r.Code != 0 || !strings.HasPrefix(r.Output, "yes:") {
					t.Errorf("dcmftest: %s", r.Output)
				}
				r := dicomtest.Run(t, "dcmdump", "-q", path)
				hasSource := strings.Contains(r.Output, "(0002,0016) AE ["+tt.source+"]")
				if r.Code != 0 || !strings.Contains(r.Output, "[Test^Patient]") || hasSource != (tt.source != "") {
					t.Errorf("dcmdump: %s", r.Output)
				}
			}
		})
	}
}

func TestWritePart10HeaderRejects(t *testing.T) {
	ok := func() []string {
		return []string{SecondaryCaptureImageStorage, testInstance, ExplicitVRLittleEndian, ImplementationClassUID, "V", "AE"}
	}
	tests := []struct {
		name string
		i    int
		v    string
	}{
		{"empty SOP class", 0, ""},
		{"path in SOP instance", 1, "../../etc/passwd"},
		{"UID over 64", 1, "1." + strings.Repeat("2", 64)},
		{"leading zero", 1, "1.02.3"},
		{"letters in transfer syntax", 2, "1.2.840.10008.1.2.x"},
		{"long version name", 4, strings.Repeat("V", 17)},
		{"control character in AE", 5, "AE\n"},
		{"backslash in AE", 5, `A\B`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ok()
			a[tt.i] = tt.v
			var buf bytes.Buffer
			if err := WritePart10Header(&buf, a[0], a[1], a[2], a[3], a[4], a[5]); err == nil || buf.Len() != 0 {
				t.Errorf("accepted %q (wrote %d bytes)", tt.v, buf.Len())
			}
		})
	}
}

func TestReadPart10Header(t *testing.T) {
	var hdr bytes.Buffer
	WritePart10Header(&hdr, SecondaryCaptureImageStorage, testInstance, ImplicitVRLittleEndian, "1.2.3", "", "")
	withGL := hdr.Bytes()
	// The same elements without (0002,0000), as some writers produce.
	noGL := append(bytes.Clone(withGL[:132]), withGL[132+12:]...)
	// A deflated dataset can start with bytes that look like group 0002;
	// the group length keeps them out of the meta.
	tricky := []byte{0x02, 0x00, 0x10, 0x00, 'U', 'I', 2, 0, 'x', 'x'}
	tests := []struct {
		name     string
		in       []byte
		want     FileMeta
		wantRest []byte
		wantErr  error
	}{
		{"group length", append(bytes.Clone(withGL), tricky...), FileMeta{SOPClass: SecondaryCaptureImageStorage, SOPInstance: testInstance, TransferSyntax: ImplicitVRLittleEndian, ImplementationClassUID: "1.2.3"}, tricky, nil},
		{"no group length", append(bytes.Clone(noGL), 8, 0, 0x16, 0, 2, 0, 0, 0, '1', 0), FileMeta{SOPClass: SecondaryCaptureImageStorage, SOPInstance: testInstance, TransferSyntax: ImplicitVRLittleEndian, ImplementationClassUID: "1.2.3"}, []byte{8, 0, 0x16, 0, 2, 0, 0, 0, '1', 0}, nil},
		{"no group length, empty dataset", noGL, FileMeta{SOPClass: SecondaryCaptureImageStorage, SOPInstance: testInstance, TransferSyntax: ImplicitVRLittleEndian, ImplementationClassUID: "1.2.3"}, []byte{}, nil},
		{"raw dataset", smallDataSet(), FileMeta{}, nil, ErrNotPart10},
		{"short", []byte("DICM"), FileMeta{}, nil, ErrNotPart10},
		{"truncated meta", withGL[:150], FileMeta{}, nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta, rest, err := ReadPart10Header(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, meta); diff != "" {
				t.Errorf("meta (-want +got):\n%s", diff)
			}
			if got, _ := io.ReadAll(rest); !bytes.Equal(got, tt.wantRest) {
				t.Errorf("rest = %x, want %x", got, tt.wantRest)
			}
		})
	}
	t.Run("huge group length", func(t *testing.T) {
		b := bytes.Clone(withGL)
		binary.LittleEndian.PutUint32(b[140:], 1<<30)
		if _, _, err := ReadPart10Header(bytes.NewReader(b)); err == nil {
			t.Error("accepted a 1 GiB meta group")
		}
	})
	t.Run("no transfer syntax", func(t *testing.T) {
		b := append(make([]byte, 128), "DICM"...)
		b = appendMetaElement(b, 0x0002, "UI", padded("1.2", 0))
		if _, _, err := ReadPart10Header(bytes.NewReader(b)); err == nil {
			t.Error("accepted a meta without (0002,0010)")
		}
	})
}

func TestBuffered(t *testing.T) {
	boom := errors.New("peer went away")
	tests := []struct {
		name    string
		fill    func(w io.Writer) error
		want    string // reaching the writer
		wantErr error
	}{
		{"flushed at the end", func(w io.Writer) error {
			w.Write([]byte("hel"))
			_, err := w.Write([]byte("lo"))
			return err
		}, "hello", nil},
		{"larger than the buffer", func(w io.Writer) error {
			_, err := w.Write(bytes.Repeat([]byte("x"), 300<<10))
			return err
		}, strings.Repeat("x", 300<<10), nil},
		{"not flushed after an error", func(w io.Writer) error {
			w.Write([]byte("partial"))
			return boom
		}, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bytes.Buffer
			if err := Buffered(tt.fill)(&got); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got.String() != tt.want {
				t.Errorf("wrote %d bytes, want %d", got.Len(), len(tt.want))
			}
		})
	}
}

func TestValidators(t *testing.T) {
	uids := map[string]bool{
		"1.2.840.10008.1.1": true, "0": true, "1.0.2": true, "2.25.269853391721028249058333621053870855181": true,
		"": false, "1..2": false, ".1": false, "1.": false, "01.2": false, "1.2a": false, "1.2.840.10008.1.1\x00": false,
		strings.Repeat("1.", 32) + "1": false,
	}
	for u, want := range uids {
		if got := ValidUID(u); got != want {
			t.Errorf("ValidUID(%q) = %v", u, got)
		}
	}
	aes := map[string]bool{"GOSCP": true, "ANY-SCP": true, " A ": true, "ABCDEFGHIJKLMNOP": true,
		"": false, "   ": false, "ABCDEFGHIJKLMNOPQ": false, `A\B`: false, "A\tB": false, "É": false}
	for ae, want := range aes {
		if got := ValidAETitle(ae); got != want {
			t.Errorf("ValidAETitle(%q) = %v", ae, got)
		}
	}
	storage := map[string]bool{
		SecondaryCaptureImageStorage: true, "1.2.840.10008.5.1.4.1.1.2": true, "1.2.840.10008.5.1.4.1.1.88.22": true,
		"1.2.840.10008.5.1.4.38.1": true, "1.2.840.10008.5.1.4.34.7": true,
		VerificationSOPClass: false, StudyRootQueryRetrieveFind: false, ModalityWorklistFind: false,
		"1.2.840.10008.5.1.4.1.1.": false, "1.2.840.10008.5.1.4.38.12": false, "1.2.840.10008.5.1.4.34.6.1": false,
	}
	for u, want := range storage {
		if got := IsStorageSOPClass(u); got != want {
			t.Errorf("IsStorageSOPClass(%q) = %v", u, got)
		}
	}
}

func TestTransferSyntaxLists(t *testing.T) {
	def := DefaultTransferSyntaxes()
	if diff := cmp.Diff([]string{ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}, def[:4]); diff != "" {
		t.Errorf("preference order (-want +got):\n%s", diff)
	}
	if got := len(UncompressedTransferSyntaxes()) + len(CompressedTransferSyntaxes()); got != len(def) {
		t.Errorf("uncompressed + compressed = %d, default = %d", got, len(def))
	}
	def[0] = "mutated"
	if DefaultTransferSyntaxes()[0] != ExplicitVRLittleEndian {
		t.Error("DefaultTransferSyntaxes returns shared state")
	}
	if got := TransferSyntaxName(JPEGLosslessSV1); got != "JPEG Lossless, First-Order Prediction (Process 14 SV1)" {
		t.Errorf("TransferSyntaxName = %q", got)
	}
	if got := TransferSyntaxName("1.2.3"); got != "1.2.3" {
		t.Errorf("TransferSyntaxName(unknown) = %q", got)
	}
}
