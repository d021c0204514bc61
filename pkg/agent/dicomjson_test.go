package agent

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
)

// ele encodes an explicit VR element in byte order bo.
func ele(bo binary.AppendByteOrder, tag uint32, vr string, v []byte) []byte {
	b := bo.AppendUint16(nil, uint16(tag>>16))
	b = bo.AppendUint16(b, uint16(tag))
	b = append(b, vr...)
	if vrs[vr].long {
		b = append(b, 0, 0)
		return append(bo.AppendUint32(b, uint32(len(v))), v...)
	}
	return append(bo.AppendUint16(b, uint16(len(v))), v...)
}

// le is ele in explicit VR little endian.
func le(tag uint32, vr string, v []byte) []byte { return ele(binary.LittleEndian, tag, vr, v) }

// txt is an explicit VR little endian text element, padded to even length.
func txt(tag uint32, vr, s string) []byte {
	if len(s)%2 == 1 {
		s += " "
	}
	return le(tag, vr, []byte(s))
}

// ile encodes an implicit VR little endian element.
func ile(tag uint32, v []byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	return append(binary.LittleEndian.AppendUint32(b, uint32(len(v))), v...)
}

func tagHeader(tag, length uint32) []byte {
	b := binary.LittleEndian.AppendUint16(nil, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	return binary.LittleEndian.AppendUint32(b, length)
}

// seqUndefined is a sequence and items of undefined length: explicit VR
// (vr SQ or UN) or, with vr "", implicit.
func seqUndefined(tag uint32, vr string, items ...[]byte) []byte {
	var b []byte
	if vr == "" {
		b = tagHeader(tag, undefinedLength)
	} else {
		b = le(tag, vr, nil)
		b = append(b[:len(b)-4], 0xFF, 0xFF, 0xFF, 0xFF)
	}
	for _, it := range items {
		b = append(b, tagHeader(tagItem, undefinedLength)...)
		b = append(b, it...)
		b = append(b, tagHeader(tagItemDelim, 0)...)
	}
	return append(b, tagHeader(tagSequenceDelim, 0)...)
}

// seqDefined is an explicit VR SQ and items of defined length.
func seqDefined(tag uint32, items ...[]byte) []byte {
	var body []byte
	for _, it := range items {
		body = append(body, tagHeader(tagItem, uint32(len(it)))...)
		body = append(body, it...)
	}
	return le(tag, "SQ", body)
}

func u16s(bo binary.AppendByteOrder, vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = bo.AppendUint16(b, v)
	}
	return b
}

// part10File is a Part-10 file of the given transfer syntax and dataset.
func part10File(t testing.TB, ts string, dataset ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := dicom.WritePart10Header(&b, dicom.SecondaryCaptureImageStorage, "1.2.3.4", ts,
		dicom.ImplementationClassUID, "", "STORESCU"); err != nil {
		t.Fatal(err)
	}
	for _, d := range dataset {
		b.Write(d)
	}
	return b.Bytes()
}

// datasetJSON parses JSON and drops the file meta group.
func datasetJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	for k := range m {
		if strings.HasPrefix(k, "0002") {
			delete(m, k)
		}
	}
	return m
}

func parseJSON(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad expectation %s: %v", s, err)
	}
	return m
}

func deflate(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, _ := flate.NewWriter(&out, flate.DefaultCompression)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestDICOMJSON(t *testing.T) {
	lei := binary.LittleEndian
	fl := lei.AppendUint32(nil, math.Float32bits(0.5))
	fd := lei.AppendUint64(nil, math.Float64bits(math.NaN()))
	encapsulated := append(le(0x7FE00010, "OB", nil)[:8], 0xFF, 0xFF, 0xFF, 0xFF)
	encapsulated = append(encapsulated, tagHeader(tagItem, 0)...)
	encapsulated = append(encapsulated, tagHeader(tagItem, 4)...)
	encapsulated = append(encapsulated, 0xFF, 0xD8, 0xFF, 0xD9)
	encapsulated = append(encapsulated, tagHeader(tagSequenceDelim, 0)...)

	tests := []struct {
		name    string
		ts      string
		dataset [][]byte
		want    string
	}{{
		name: "values by VR",
		ts:   dicom.ExplicitVRLittleEndian,
		dataset: [][]byte{
			txt(0x00080018, "UI", "1.2.3\x00"),
			txt(0x00080060, "CS", " OT "),
			txt(0x00100020, "LO", ""),
			txt(0x00200013, "IS", "+42"),
			txt(0x00200020, "CS", `A\\B`),
			txt(0x00200032, "DS", `1.50\-2 \3e2`),
			txt(0x00281052, "DS", "abc"),
			le(0x00181310, "US", u16s(lei, 1, 2)),
			le(0x00189001, "SS", u16s(lei, 0xFFFE)),
			le(0x00189002, "SL", lei.AppendUint32(nil, uint32(0xFFFEEE90))),
			le(0x00189003, "UL", lei.AppendUint32(nil, 70000)),
			le(0x00189004, "FL", fl),
			le(0x00189005, "FD", fd),
			le(0x00189006, "UV", lei.AppendUint64(nil, 1<<63)),
			le(0x00209165, "AT", u16s(lei, 0x0010, 0x0020)),
			txt(0x00204000, "LT", `line1\line2  `),
			le(0x00291010, "OB", []byte{1, 2}),
			le(0x00291020, "OB", make([]byte, maxInlineBinary+2)),
			le(0x7FE00010, "OW", make([]byte, 8)),
		},
		want: `{
			"00080018":{"vr":"UI","Value":["1.2.3"]},
			"00080060":{"vr":"CS","Value":["OT"]},
			"00100020":{"vr":"LO"},
			"00200013":{"vr":"IS","Value":[42]},
			"00200020":{"vr":"CS","Value":["A",null,"B"]},
			"00200032":{"vr":"DS","Value":[1.5,-2,300]},
			"00281052":{"vr":"DS","Value":["abc"]},
			"00181310":{"vr":"US","Value":[1,2]},
			"00189001":{"vr":"SS","Value":[-2]},
			"00189002":{"vr":"SL","Value":[-70000]},
			"00189003":{"vr":"UL","Value":[70000]},
			"00189004":{"vr":"FL","Value":[0.5]},
			"00189005":{"vr":"FD","Value":[null]},
			"00189006":{"vr":"UV","Value":[9223372036854775808]},
			"00209165":{"vr":"AT","Value":["00100020"]},
			"00204000":{"vr":"LT","Value":["line1\\line2"]},
			"00291010":{"vr":"OB","InlineBinary":"AQI="}
		}`,
	}, {
		name: "sequences",
		ts:   dicom.ExplicitVRLittleEndian,
		dataset: [][]byte{
			seqUndefined(0x0040A730, "SQ",
				append(txt(0x0040A010, "CS", "CONTAINS"), seqDefined(0x0040A168, txt(0x00080100, "SH", "121071"))...),
				nil),
			seqDefined(0x00081115),
			// A UN of undefined length is a sequence in implicit VR.
			seqUndefined(0x00091001, "UN", ile(0x00100020, []byte("PID1"))),
			txt(0x00100010, "PN", "Doe^John"),
		},
		want: `{
			"0040A730":{"vr":"SQ","Value":[
				{"0040A010":{"vr":"CS","Value":["CONTAINS"]},
				 "0040A168":{"vr":"SQ","Value":[{"00080100":{"vr":"SH","Value":["121071"]}}]}},
				{}]},
			"00081115":{"vr":"SQ"},
			"00091001":{"vr":"SQ","Value":[{"00100020":{"vr":"LO","Value":["PID1"]}}]},
			"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^John"}]}
		}`,
	}, {
		name: "character sets per item",
		ts:   dicom.ExplicitVRLittleEndian,
		dataset: [][]byte{
			txt(0x00080005, "CS", "ISO_IR 100"),
			txt(0x00100010, "PN", "M\xfcller^J\xfcrgen"),
			seqUndefined(0x00101002, "SQ", append(txt(0x00080005, "CS", "ISO_IR 192"), txt(0x00100020, "LO", "Gr\xc3\xbc\xc3\x9fe")...)),
			txt(0x00104000, "LT", "\xe9t\xe9"),
		},
		want: `{
			"00080005":{"vr":"CS","Value":["ISO_IR 100"]},
			"00100010":{"vr":"PN","Value":[{"Alphabetic":"Müller^Jürgen"}]},
			"00101002":{"vr":"SQ","Value":[{
				"00080005":{"vr":"CS","Value":["ISO_IR 192"]},
				"00100020":{"vr":"LO","Value":["Grüße"]}}]},
			"00104000":{"vr":"LT","Value":["été"]}
		}`,
	}, {
		// PS3.5 H.3.1 and I.2.
		name: "ISO 2022 code extensions",
		ts:   dicom.ExplicitVRLittleEndian,
		dataset: [][]byte{
			txt(0x00080005, "CS", `\ISO 2022 IR 87`),
			txt(0x00100010, "PN", "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"),
			seqUndefined(0x00101002, "SQ", append(txt(0x00080005, "CS", `\ISO 2022 IR 149`),
				txt(0x00100010, "PN", "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf")...)),
			txt(0x00104000, "LT", "ISO_IR 6 only: \xff"),
		},
		want: `{
			"00080005":{"vr":"CS","Value":[null,"ISO 2022 IR 87"]},
			"00100010":{"vr":"PN","Value":[{"Alphabetic":"Yamada^Tarou","Ideographic":"山田^太郎","Phonetic":"やまだ^たろう"}]},
			"00101002":{"vr":"SQ","Value":[{
				"00080005":{"vr":"CS","Value":[null,"ISO 2022 IR 149"]},
				"00100010":{"vr":"PN","Value":[{"Alphabetic":"Hong^Gildong","Ideographic":"洪^吉洞","Phonetic":"홍^길동"}]}}]},
			"00104000":{"vr":"LT","Value":["ISO_IR 6 only: \ufffd"]}
		}`,
	}, {
		name:    "encapsulated pixel data is skipped",
		ts:      dicom.JPEGLosslessSV1,
		dataset: [][]byte{txt(0x00280004, "CS", "RGB"), encapsulated, txt(0x7FE10010, "LO", "AFTER")},
		want:    `{"00280004":{"vr":"CS","Value":["RGB"]},"7FE10010":{"vr":"LO","Value":["AFTER"]}}`,
	}, {
		name: "implicit VR from the dictionary",
		ts:   dicom.ImplicitVRLittleEndian,
		dataset: [][]byte{
			ile(0x00090010, []byte("ACME")),
			ile(0x00091001, []byte{7, 8}),
			ile(0x00100010, []byte("Doe^Jane")),
			ile(0x00280010, u16s(lei, 512)),
			ile(0x60003000, make([]byte, 2*maxInlineBinary)),
			seqUndefined(0x0040A730, "", ile(0x0040A010, []byte("CONTAINS"))),
			ile(0x7FE00010, make([]byte, 4)),
		},
		want: `{
			"00090010":{"vr":"LO","Value":["ACME"]},
			"00091001":{"vr":"UN","InlineBinary":"Bwg="},
			"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},
			"00280010":{"vr":"US","Value":[512]},
			"0040A730":{"vr":"SQ","Value":[{"0040A010":{"vr":"CS","Value":["CONTAINS"]}}]}
		}`,
	}, {
		name: "big endian",
		ts:   dicom.ExplicitVRBigEndian,
		dataset: [][]byte{
			ele(binary.BigEndian, 0x00280010, "US", u16s(binary.BigEndian, 0x0102)),
			ele(binary.BigEndian, 0x00281201, "OW", u16s(binary.BigEndian, 0x0102, 0x0304)),
			ele(binary.BigEndian, 0x00100010, "PN", []byte("Big^Endian")),
		},
		want: `{
			"00280010":{"vr":"US","Value":[258]},
			"00281201":{"vr":"OW","InlineBinary":"AgEEAw=="},
			"00100010":{"vr":"PN","Value":[{"Alphabetic":"Big^Endian"}]}
		}`,
	}, {
		name:    "deflated",
		ts:      dicom.DeflatedExplicitVRLittleEndian,
		dataset: [][]byte{deflate(t, append(txt(0x00100010, "PN", "Deflated^Doe"), le(0x7FE00010, "OW", make([]byte, 1<<16))...))},
		want:    `{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Deflated^Doe"}]}}`,
	}, {
		name:    "empty value at the end",
		ts:      dicom.ExplicitVRLittleEndian,
		dataset: [][]byte{txt(0x00100010, "PN", "Last^Element"), txt(0x00100020, "LO", "")},
		want:    `{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Last^Element"}]},"00100020":{"vr":"LO"}}`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dicomJSON(bytes.NewReader(part10File(t, tc.ts, tc.dataset...)))
			if err != nil {
				t.Fatalf("dicomJSON: %v (partial %s)", err, got)
			}
			if diff := cmp.Diff(parseJSON(t, tc.want), datasetJSON(t, got)); diff != "" {
				t.Errorf("dataset JSON (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDICOMJSONMeta(t *testing.T) {
	got, err := dicomJSON(bytes.NewReader(part10File(t, dicom.ExplicitVRLittleEndian, txt(0x00080060, "CS", "OT"))))
	if err != nil {
		t.Fatal(err)
	}
	want := `{
		"00020000":{"vr":"UL","Value":[160]},
		"00020001":{"vr":"OB","InlineBinary":"AAE="},
		"00020002":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.7"]},
		"00020003":{"vr":"UI","Value":["1.2.3.4"]},
		"00020010":{"vr":"UI","Value":["1.2.840.10008.1.2.1"]},
		"00020012":{"vr":"UI","Value":["` + dicom.ImplementationClassUID + `"]},
		"00020016":{"vr":"AE","Value":["STORESCU"]},
		"00080060":{"vr":"CS","Value":["OT"]}
	}`
	if diff := cmp.Diff(parseJSON(t, want), parseJSON(t, string(got))); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	// Key order: meta first, then the dataset, each in tag order.
	if i, j := bytes.Index(got, []byte(`"00020016"`)), bytes.Index(got, []byte(`"00080060"`)); i < 0 || j < i {
		t.Errorf("order: %s", got)
	}
}

func TestDICOMJSONMalformed(t *testing.T) {
	deep := txt(0x00100020, "LO", "X")
	for range maxSequenceDepth + 1 {
		deep = seqUndefined(0x0040A730, "SQ", deep)
	}
	hostile := le(0x00291010, "OB", nil)
	hostile = append(hostile[:len(hostile)-4], 0xF0, 0xFF, 0xFF, 0xFF)
	good := txt(0x00100010, "PN", "Kept^Before")
	tests := []struct {
		name    string
		file    []byte
		wantErr error // nil: any error
		want    string
	}{
		{"not part 10", []byte("GET / HTTP/1.0\r\n\r\n"), dicom.ErrNotPart10, `{}`},
		{"truncated value", part10File(t, dicom.ExplicitVRLittleEndian, good, txt(0x00100020, "LO", "PID001")[:12]), errPastEnd,
			`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Kept^Before"}]}}`},
		{"length past the end", part10File(t, dicom.ExplicitVRLittleEndian, good, hostile, good), errPastEnd,
			`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Kept^Before"}]}}`},
		{"nested too deep", part10File(t, dicom.ExplicitVRLittleEndian, good, deep), nil,
			`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Kept^Before"}]}}`},
		{"unknown VR", part10File(t, dicom.ExplicitVRLittleEndian, good, le(0x00100020, "LO", []byte("AB"))[:4], []byte("ZZ\x02\x00AB")), nil,
			`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Kept^Before"}]}}`},
		{"item at the top level", part10File(t, dicom.ExplicitVRLittleEndian, good, tagHeader(tagItem, 0)), nil,
			`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Kept^Before"}]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dicomJSON(bytes.NewReader(tc.file))
			if err == nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(parseJSON(t, tc.want), datasetJSON(t, got)); diff != "" {
				t.Errorf("partial JSON (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDICOMJSONSizeLimit(t *testing.T) {
	var ds [][]byte
	for i := range maxJSONSize / maxInlineBinary {
		ds = append(ds, txt(0x00090000|uint32(0x1000+i), "LT", strings.Repeat("x", maxInlineBinary)))
	}
	got, err := dicomJSON(bytes.NewReader(part10File(t, dicom.ExplicitVRLittleEndian, ds...)))
	if !errors.Is(err, errDICOMTooLarge) || len(got) > maxJSONSize {
		t.Fatalf("err = %v with %d bytes of JSON", err, len(got))
	}
	if m := datasetJSON(t, got); len(m) == 0 || len(m) >= len(ds) {
		t.Errorf("%d of %d elements kept", len(m), len(ds))
	}
}

// TestDICOMJSONMatchesDcm2json compares our JSON with dcmtk's dcm2json on
// the same instance in every uncompressed transfer syntax. dcm2json writes
// no file meta, converts text to UTF-8 (and says so in (0008,0005)) and
// keeps pixel data; those differences are removed before comparing.
func TestDICOMJSONMatchesDcm2json(t *testing.T) {
	for _, tool := range []string{"dump2dcm", "dcmconv", "dcm2json"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	dump := "(0008,0005) CS [ISO_IR 100]\n" +
		"(0008,0016) UI =SecondaryCaptureImageStorage\n(0008,0018) UI [1.2.3.4.5]\n" +
		"(0008,0020) DA [20260101]\n(0008,0060) CS [OT]\n" +
		"(0010,0010) PN [M\xfcller^J\xfcrgen=Yamada]\n(0010,0020) LO [PID001]\n(0010,1010) AS [042Y]\n" +
		"(0018,1310) US 1\\2\\3\\4\n(0018,9004) CS [RESEARCH]\n(0020,0013) IS [42]\n(0020,0020) CS [A\\\\B]\n" +
		"(0020,0032) DS [1.5\\-2\\3e2]\n(0028,0030) DS [0.5\\0.5]\n(0028,1052) DS [0]\n" +
		"(0040,a730) SQ (Sequence with undefined length #=1)\n" +
		"  (fffe,e000) na (Item with undefined length #=2)\n" +
		"    (0040,a010) CS [CONTAINS]\n    (0040,a160) UT [caf\xe9\\bar]\n" +
		"  (fffe,e00d) na (ItemDelimitationItem)\n" +
		"(fffe,e0dd) na (SequenceDelimitationItem)\n" +
		"(0028,0010) US 2\n(0028,0011) US 2\n(0028,0100) US 16\n(0028,0101) US 16\n(0028,0102) US 15\n" +
		"(7fe0,0010) OW 0001\\0002\\0003\\0004\n"
	dumpPath, src := filepath.Join(dir, "t.dump"), filepath.Join(dir, "src.dcm")
	if err := os.WriteFile(dumpPath, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dump2dcm", "-q", "+te", dumpPath, src).CombinedOutput(); err != nil {
		t.Fatalf("dump2dcm: %v %s", err, out)
	}
	for _, flag := range []string{"+te", "+ti", "+tb", "+td"} {
		t.Run(flag, func(t *testing.T) {
			path := filepath.Join(dir, "conv"+flag[1:]+".dcm")
			if out, err := exec.Command("dcmconv", flag, src, path).CombinedOutput(); err != nil {
				t.Fatalf("dcmconv: %v %s", err, out)
			}
			theirs, err := exec.Command("dcm2json", path).Output()
			if err != nil {
				t.Fatalf("dcm2json: %v", err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ours, err := dicomJSON(f)
			if err != nil {
				t.Fatalf("dicomJSON: %v", err)
			}
			want, got := datasetJSON(t, theirs), datasetJSON(t, ours)
			delete(want, "7FE00010")
			delete(want, "00080005")
			delete(got, "00080005")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ours vs dcm2json (-dcm2json +ours):\n%s", diff)
			}
		})
	}
}
