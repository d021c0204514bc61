package astm

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChecksumVectors(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(string(readTestdata(t, "checksum-vectors.tsv"))), "\n")
	n := 0
	for _, line := range lines {
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "covered\t") {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) < 2 {
			t.Fatalf("bad vector line %q", line)
		}
		covered := mnemonic(t, cols[0])
		if got := Checksum(covered); string(got[:]) != cols[1] {
			t.Errorf("Checksum(%s) = %s, want %s", cols[0], got[:], cols[1])
		}
		n++
	}
	if n != 12 {
		t.Errorf("checked %d vectors, want 12", n)
	}
}

func TestChecksumMatches(t *testing.T) {
	tests := []struct {
		c1, c2, sum byte
		want        bool
	}{
		{'E', '4', 0xE4, true},
		{'e', '4', 0xE4, true},
		{'e', 'F', 0xEF, true},
		{'Z', 'Z', 0xE4, false},
		{'E', '5', 0xE4, false},
		{'0', '0', 0x00, true},
		{'G', '0', 0x00, false},
	}
	for _, tt := range tests {
		if got := checksumMatches(tt.c1, tt.c2, tt.sum); got != tt.want {
			t.Errorf("checksumMatches(%c%c, %02X) = %v", tt.c1, tt.c2, tt.sum, got)
		}
	}
}

func TestEncodeDecodeFrame(t *testing.T) {
	tests := []struct {
		name    string
		unit    string
		want    Frame
		ok      bool // checksum as sent is right
		wantErr bool
	}{
		{name: "etx", unit: "<STX>5L|1|N<CR><ETX>08<CR><LF>", want: Frame{Number: '5', Text: []byte("L|1|N\r"), Final: true, Checksum: [2]byte{'0', '8'}}, ok: true},
		{name: "etb", unit: "<STX>1H|\\^&|||BioRad^1.0|||||||P|1|20251217223735<CR><ETB>32<CR><LF>", want: Frame{Number: '1', Text: []byte("H|\\^&|||BioRad^1.0|||||||P|1|20251217223735\r"), Checksum: [2]byte{'3', '2'}}, ok: true},
		{name: "lower case, no trailer", unit: "<STX>2P|1||PID123||Doe^Jane||19800101|F<CR><ETX>e4", want: Frame{Number: '2', Text: []byte("P|1||PID123||Doe^Jane||19800101|F\r"), Final: true, Checksum: [2]byte{'e', '4'}}, ok: true},
		{name: "lf only", unit: "<STX>5L|1|N<CR><ETX>00<LF>", want: Frame{Number: '5', Text: []byte("L|1|N\r"), Final: true, Checksum: [2]byte{'0', '0'}}},
		{name: "non-hex", unit: "<STX>5L|1|N<CR><ETX>ZZ<CR><LF>", want: Frame{Number: '5', Text: []byte("L|1|N\r"), Final: true, Checksum: [2]byte{'Z', 'Z'}}},
		{name: "no checksum", unit: "<STX>5L|1|N<CR><ETX>0", wantErr: true},
		{name: "truncated", unit: "<STX>2P|1||PID1", wantErr: true},
		{name: "no number", unit: "<STX><ETX>00<CR><LF>", wantErr: true},
		{name: "junk after", unit: "<STX>5L<ETX>00<CR><LF>x", wantErr: true},
		{name: "not a frame", unit: "<ENQ>", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := DecodeFrame(mnemonic(t, tt.unit))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeFrame error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, f); diff != "" {
				t.Errorf("DecodeFrame (-want +got):\n%s", diff)
			}
			if f.ChecksumOK() != tt.ok {
				t.Errorf("ChecksumOK = %v, want %v", f.ChecksumOK(), tt.ok)
			}
			enc := f.Encode()
			again, err := DecodeFrame(enc)
			if err != nil || !again.ChecksumOK() || !bytes.Equal(again.Text, f.Text) {
				t.Errorf("Encode gave %s", FormatMnemonic(enc))
			}
		})
	}
	if got := FormatMnemonic(EncodeFrame(9, []byte("C|8|I|note 8|G\r"), true)); got != "<STX>1C|8|I|note 8|G<CR><ETX>4A<CR><LF>" {
		t.Errorf("EncodeFrame(9, …) = %s", got)
	}
}

// TestBuildFramesGolden frames each records file and compares with the
// independently made framed/*.e1381.bin files.
func TestBuildFramesGolden(t *testing.T) {
	for _, bin := range globTestdata(t, "framed/*.e1381.bin") {
		base := filepath.Base(bin)
		name, packName, _ := strings.Cut(strings.TrimSuffix(base, ".e1381.bin"), ".")
		t.Run(base, func(t *testing.T) {
			packing, err := ParsePacking(packName)
			if err != nil {
				t.Fatal(err)
			}
			frames := BuildFrames(recordLines(t, "records/"+name+".astm"), packing, 0, FrameStyle{})
			got := append([]byte{ENQ}, bytes.Join(frames, nil)...)
			got = append(got, EOT)
			want := readTestdata(t, "framed/"+base)
			if !bytes.Equal(got, want) {
				t.Errorf("framing differs from %s:\n%s", base, cmp.Diff(FormatMnemonic(want), FormatMnemonic(got)))
			}
		})
	}
}

func TestBuildFrames(t *testing.T) {
	recs := [][]byte{[]byte("H|\\^&"), []byte("R|1|" + strings.Repeat("X", 20)), []byte("L|1|N")}
	tests := []struct {
		name      string
		packing   Packing
		frameSize int
		want      []string
	}{
		{"record split", PackRecord, 10, []string{
			"<STX>1H|\\^&<CR><ETX>", "<STX>2R|1|XXXXXX<ETB>", "<STX>3XXXXXXXXXX<ETB>", "<STX>4XXXX<CR><ETX>", "<STX>5L|1|N<CR><ETX>"}},
		{"frame per record", PackFramePerRecord, 0, []string{
			"<STX>1H|\\^&<CR><ETB>", "<STX>2R|1|XXXXXXXXXXXXXXXXXXXX<CR><ETB>", "<STX>3L|1|N<CR><ETX>"}},
		{"stream", PackStream, 16, []string{
			"<STX>1H|\\^&<CR>R|1|XXXXXX<ETB>", "<STX>2XXXXXXXXXXXXXX<CR>L<ETB>", "<STX>3|1|N<CR><ETX>"}},
		{"never split", PackStream, -1, []string{
			"<STX>1H|\\^&<CR>R|1|XXXXXXXXXXXXXXXXXXXX<CR>L|1|N<CR><ETX>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, f := range BuildFrames(recs, tt.packing, tt.frameSize, FrameStyle{}) {
				// The checksum and trailer are covered by the goldens; drop them.
				got = append(got, FormatMnemonic(f[:len(f)-4]))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("BuildFrames (-want +got):\n%s", diff)
			}
		})
	}
	if got := BuildFrames(nil, PackStream, 0, FrameStyle{}); got != nil {
		t.Errorf("BuildFrames(nil) = %q", got)
	}
}

// TestBuildFramesStyle pins the dialects byte for byte. The checksums are
// derived by hand from the frames of astm.md §9 (5L is 08, 2P is E4, 1H is
// EF; the frame-number digit adds to the sum), not from the encoder.
func TestBuildFramesStyle(t *testing.T) {
	const (
		h = "H|\\^&|||ReplaySim^1.0|||||||P|LIS2-A2|20240101120000"
		p = "P|1||PID123||Doe^Jane||19800101|F"
		l = "L|1|N"
	)
	tests := []struct {
		name    string
		recs    []string
		packing Packing
		size    int
		style   FrameStyle
		want    []string
	}{
		{"standard", []string{h, p, l}, PackRecord, 0, FrameStyle{}, []string{
			"<STX>1" + h + "<CR><ETX>EF<CR><LF>", "<STX>2" + p + "<CR><ETX>E4<CR><LF>", "<STX>3" + l + "<CR><ETX>06<CR><LF>"}},
		{"explicit first number 1 is the standard", []string{l}, PackRecord, 0, FrameStyle{FirstNumber: '1'}, []string{
			"<STX>1" + l + "<CR><ETX>04<CR><LF>"}},
		{"start at 0", []string{h, p}, PackRecord, 0, FrameStyle{FirstNumber: '0'}, []string{
			"<STX>0" + h + "<CR><ETX>EE<CR><LF>", "<STX>1" + p + "<CR><ETX>E3<CR><LF>"}},
		{"start at 6 wraps modulo 8", []string{l, l, l, l}, PackRecord, 0, FrameStyle{FirstNumber: '6'}, []string{
			"<STX>6" + l + "<CR><ETX>09<CR><LF>", "<STX>7" + l + "<CR><ETX>0A<CR><LF>",
			"<STX>0" + l + "<CR><ETX>03<CR><LF>", "<STX>1" + l + "<CR><ETX>04<CR><LF>"}},
		{"lower-case checksum", []string{l, l}, PackRecord, 0, FrameStyle{FirstNumber: '7', LowerChecksum: true}, []string{
			"<STX>7" + l + "<CR><ETX>0a<CR><LF>", "<STX>0" + l + "<CR><ETX>03<CR><LF>"}},
		{"LF trailer", []string{h, p}, PackRecord, 0, FrameStyle{LowerChecksum: true, Trailer: TrailerLF}, []string{
			"<STX>1" + h + "<CR><ETX>ef<LF>", "<STX>2" + p + "<CR><ETX>e4<LF>"}},
		{"no trailer", []string{h, p}, PackRecord, 0, FrameStyle{Trailer: TrailerNone}, []string{
			"<STX>1" + h + "<CR><ETX>EF", "<STX>2" + p + "<CR><ETX>E4"}},
		// L06's frame-per-record frames: the style applies to ETB frames too.
		{"ETB frames, lower case, no trailer", []string{"H|\\^&|||BioRad^1.0|||||||P|1|20251217223735", "P|1||||Doe^John||19700101|M"},
			PackFramePerRecord, 0, FrameStyle{LowerChecksum: true, Trailer: TrailerNone}, []string{
				"<STX>1H|\\^&|||BioRad^1.0|||||||P|1|20251217223735<CR><ETB>32", "<STX>2P|1||||Doe^John||19700101|M<CR><ETX>88"}},
		// A record cut into frames keeps counting; 35+4C+7C+31+17 = 45 and
		// 36+7C+4E+0D+03 = 10.
		{"split record from 5", []string{l}, PackRecord, 3, FrameStyle{FirstNumber: '5', Trailer: TrailerLF}, []string{
			"<STX>5L|1<ETB>45<LF>", "<STX>6|N<CR><ETX>10<LF>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var recs [][]byte
			for _, r := range tt.recs {
				recs = append(recs, []byte(r))
			}
			var want [][]byte
			for _, w := range tt.want {
				want = append(want, mnemonic(t, w))
			}
			got := BuildFrames(recs, tt.packing, tt.size, tt.style)
			if !cmp.Equal(want, got) {
				t.Errorf("BuildFrames:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestYumizenFraming checks the counts the research notes give for the
// longest records file.
func TestYumizenFraming(t *testing.T) {
	recs := recordLines(t, "records/horiba-yumizen-h550-result.astm")
	frames := BuildFrames(recs, PackRecord, 0, FrameStyle{})
	etb := 0
	for i, f := range frames {
		if len(f) > 247 {
			t.Errorf("frame %d is %d bytes", i+1, len(f))
		}
		if f[len(f)-5] == ETB {
			etb++
		}
		if f[1] != '0'+byte((i+1)%8) {
			t.Errorf("frame %d numbered %c", i+1, f[1])
		}
	}
	if len(frames) != 78 || etb != 51 {
		t.Errorf("got %d frames, %d ETB; want 78, 51", len(frames), etb)
	}
	unsplit := BuildFrames(recs, PackRecord, -1, FrameStyle{})
	longest := 0
	for _, f := range unsplit {
		longest = max(longest, len(f)-7)
	}
	if longest != 11069 { // the 11,068-character M record plus its CR
		t.Errorf("longest unsplit frame text = %d, want 11069", longest)
	}
}

func TestParseEnums(t *testing.T) {
	check := func(name string, parse func(string) (fmt.Stringer, error), values ...fmt.Stringer) {
		t.Helper()
		for _, v := range values {
			if got, err := parse(v.String()); err != nil || got != v {
				t.Errorf("%s(%q) = %v, %v", name, v.String(), got, err)
			}
		}
	}
	check("ParsePacking", func(s string) (fmt.Stringer, error) { return ParsePacking(s) }, PackRecord, PackFramePerRecord, PackStream)
	check("ParseTrailer", func(s string) (fmt.Stringer, error) { return ParseTrailer(s) }, TrailerCRLF, TrailerLF, TrailerNone)
	check("ParseSplit", func(s string) (fmt.Stringer, error) { return ParseSplit(s) }, SplitBlank, SplitHeader, SplitFile)
	if _, err := ParseTrailer("CRLF"); err == nil || err.Error() != `astm: unknown trailer "CRLF" (want crlf, lf or none)` {
		t.Errorf("ParseTrailer(CRLF) error = %v", err)
	}
	if _, err := ParsePacking("frames"); err == nil || err.Error() != `astm: unknown packing "frames" (want record, frame-per-record or stream)` {
		t.Errorf("ParsePacking(frames) error = %v", err)
	}
	if got := Packing(7).String() + Trailer(-1).String() + Split(3).String(); got != "Packing(7)Trailer(-1)Split(3)" {
		t.Errorf("unnamed values print as %q", got)
	}
}

// TestSplitUnitsGolden splits each framed capture into units and renders
// them one per line, which must reproduce the mnemonic views; parsing the
// views must give the captures back.
func TestSplitUnitsGolden(t *testing.T) {
	for _, bin := range globTestdata(t, "framed/*.e1381.bin") {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			raw := readTestdata(t, "framed/"+filepath.Base(bin))
			txt := string(readTestdata(t, "framed/"+strings.TrimSuffix(filepath.Base(bin), ".bin")+".txt"))
			var sb strings.Builder
			for _, u := range SplitUnits(raw) {
				sb.WriteString(FormatMnemonic(u) + "\n")
			}
			if diff := cmp.Diff(txt, sb.String()); diff != "" {
				t.Errorf("units (-want +got):\n%s", diff)
			}
			if back := mnemonic(t, txt); !bytes.Equal(back, raw) {
				t.Error("ParseMnemonic(view) differs from the capture")
			}
		})
	}
}

func TestSplitUnits(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"<ENQ><STX>1A<CR><ETX>82<CR><LF><EOT>", []string{"<ENQ>", "<STX>1A<CR><ETX>82<CR><LF>", "<EOT>"}},
		{"<STX>1A<ETX>82<STX>2B<ETB>00<LF><EOT>", []string{"<STX>1A<ETX>82", "<STX>2B<ETB>00<LF>", "<EOT>"}},
		{"<STX>2P|1||PID1<EOT>", []string{"<STX>2P|1||PID1", "<EOT>"}},
		{"<STX>1TRUNC<STX>1H<ETX>", []string{"<STX>1TRUNC", "<STX>1H<ETX>"}},
		{"garbage<CR><LF><NUL><STX>1A<ETX>8", []string{"garbage<CR><LF><NUL>", "<STX>1A<ETX>8"}},
		{"", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, u := range SplitUnits(mnemonic(t, tt.in)) {
			got = append(got, FormatMnemonic(u))
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("SplitUnits(%s) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzSplitUnits(f *testing.F) {
	f.Add(readTestdata(f, "framed/immucor-galileo-result.stream.e1381.bin"))
	f.Add(mnemonic(f, "<STX>1A<ETX>82<STX>2B<ETB>00<LF><EOT>garbage<STX>"))
	f.Add([]byte{STX, ETX, STX, ETB, 'x'})
	for _, seed := range dialectSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		units := SplitUnits(b)
		if !bytes.Equal(bytes.Join(units, nil), b) {
			t.Fatal("units do not concatenate back to the input")
		}
		for _, u := range units {
			if len(u) == 0 {
				t.Fatal("empty unit")
			}
			if fr, err := DecodeFrame(u); err == nil {
				if back, err := DecodeFrame(fr.Encode()); err != nil || !back.ChecksumOK() {
					t.Fatalf("re-encoded frame does not decode: %v", err)
				}
			}
		}
	})
}
