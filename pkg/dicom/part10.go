package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// FileMeta is the File Meta Information (group 0002) of a Part-10 file.
type FileMeta struct {
	SOPClass                  string // (0002,0002) Media Storage SOP Class UID
	SOPInstance               string // (0002,0003) Media Storage SOP Instance UID
	TransferSyntax            string // (0002,0010)
	ImplementationClassUID    string // (0002,0012)
	ImplementationVersionName string // (0002,0013), optional
	SourceAE                  string // (0002,0016), optional
}

// ErrNotPart10 is returned by ReadPart10Header for input without the
// 128-byte preamble and "DICM" prefix.
var ErrNotPart10 = errors.New("dicom: not a Part-10 file (no DICM prefix)")

const (
	preambleLen = 128
	// maxMetaLen bounds group 0002; real headers are a few hundred bytes.
	maxMetaLen = 64 << 10
)

// WritePart10Header writes the 128-byte preamble, "DICM" and a group 0002
// header in explicit VR little endian (with its group length) in one Write,
// so that the dataset bytes received over the network can follow unchanged
// (PS3.10 7.1). versionName and sourceAE are omitted when empty. UIDs are
// validated because they come from the peer and end up in the file.
func WritePart10Header(w io.Writer, sopClass, sopInstance, transferSyntax, implClassUID, versionName, sourceAE string) error {
	for _, u := range [...]struct{ name, v string }{
		{"SOP class UID", sopClass}, {"SOP instance UID", sopInstance},
		{"transfer syntax UID", transferSyntax}, {"implementation class UID", implClassUID},
	} {
		if !ValidUID(u.v) {
			return fmt.Errorf("dicom: invalid %s %q", u.name, u.v)
		}
	}
	if len(versionName) > 16 || strings.ContainsFunc(versionName, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '\\' }) {
		return fmt.Errorf("dicom: invalid implementation version name %q", versionName)
	}
	if sourceAE != "" && !ValidAETitle(sourceAE) {
		return fmt.Errorf("dicom: invalid source AE title %q", sourceAE)
	}

	b := make([]byte, preambleLen, 512)
	b = append(b, "DICM"...)
	lenPos := len(b) + 8 // value of (0002,0000), filled in below
	b = appendMetaElement(b, 0x0000, "UL", []byte{0, 0, 0, 0})
	start := len(b)
	b = appendMetaElement(b, 0x0001, "OB", []byte{0x00, 0x01})
	b = appendMetaElement(b, 0x0002, "UI", padded(sopClass, 0))
	b = appendMetaElement(b, 0x0003, "UI", padded(sopInstance, 0))
	b = appendMetaElement(b, 0x0010, "UI", padded(transferSyntax, 0))
	b = appendMetaElement(b, 0x0012, "UI", padded(implClassUID, 0))
	if versionName != "" {
		b = appendMetaElement(b, 0x0013, "SH", padded(versionName, ' '))
	}
	if sourceAE != "" {
		b = appendMetaElement(b, 0x0016, "AE", padded(strings.TrimSpace(sourceAE), ' '))
	}
	binary.LittleEndian.PutUint32(b[lenPos:], uint32(len(b)-start))
	_, err := w.Write(b)
	return err
}

// padded returns s padded to even length with pad (NUL for UI, space for
// text VRs, PS3.5 6.2).
func padded(s string, pad byte) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, pad)
	}
	return b
}

// longVR reports whether an explicit-VR element uses the 4-byte length form.
func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

func appendMetaElement(b []byte, elem uint16, vr string, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0002)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	if longVR(vr) {
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	} else {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	}
	return append(b, v...)
}

// ReadPart10Header reads the preamble, "DICM" and group 0002 from r. It
// returns the meta information and a reader positioned at the first dataset
// byte (it buffers r). Group 0002 is bounded by its group length when
// present, otherwise by the first tag outside group 0002.
func ReadPart10Header(r io.Reader) (FileMeta, io.Reader, error) {
	var m FileMeta
	br := bufio.NewReader(r)
	head, err := br.Peek(preambleLen + 4)
	if err != nil && !errors.Is(err, io.EOF) {
		return m, nil, err
	}
	if len(head) < preambleLen+4 || string(head[preambleLen:]) != "DICM" {
		return m, nil, ErrNotPart10
	}
	br.Discard(preambleLen + 4)

	var meta []byte
	if h, _ := br.Peek(12); len(h) == 12 && binary.LittleEndian.Uint32(h) == 2 && string(h[4:6]) == "UL" {
		glen := binary.LittleEndian.Uint32(h[8:])
		if glen > maxMetaLen {
			return m, nil, fmt.Errorf("dicom: file meta group length %d too large", glen)
		}
		br.Discard(12)
		meta = make([]byte, glen)
		if _, err := io.ReadFull(br, meta); err != nil {
			return m, nil, fmt.Errorf("dicom: reading file meta: %w", noEOF(err))
		}
	} else if meta, err = readMetaByGroup(br); err != nil {
		return m, nil, err
	}
	if err := parseMeta(meta, &m); err != nil {
		return m, nil, err
	}
	return m, br, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readMetaByGroup collects elements while their group is 0002, for files
// written without (0002,0000).
func readMetaByGroup(br *bufio.Reader) ([]byte, error) {
	var meta []byte
	for {
		h, _ := br.Peek(12)
		if len(h) < 8 || binary.LittleEndian.Uint16(h) != 2 {
			return meta, nil
		}
		hlen, vlen := 8, int(binary.LittleEndian.Uint16(h[6:]))
		if longVR(string(h[4:6])) {
			if len(h) < 12 {
				return nil, fmt.Errorf("dicom: reading file meta: %w", io.ErrUnexpectedEOF)
			}
			hlen, vlen = 12, int(binary.LittleEndian.Uint32(h[8:]))
		}
		if vlen < 0 || len(meta)+hlen+vlen > maxMetaLen {
			return nil, errors.New("dicom: file meta too large")
		}
		el := make([]byte, hlen+vlen)
		if _, err := io.ReadFull(br, el); err != nil {
			return nil, fmt.Errorf("dicom: reading file meta: %w", noEOF(err))
		}
		meta = append(meta, el...)
	}
}

// parseMeta decodes explicit VR LE group-0002 elements.
func parseMeta(b []byte, m *FileMeta) error {
	for len(b) > 0 {
		if len(b) < 8 {
			return errors.New("dicom: truncated file meta element")
		}
		group, elem, vr := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), string(b[4:6])
		var vlen int
		if longVR(vr) {
			if len(b) < 12 {
				return errors.New("dicom: truncated file meta element")
			}
			vlen, b = int(binary.LittleEndian.Uint32(b[8:])), b[12:]
		} else {
			vlen, b = int(binary.LittleEndian.Uint16(b[6:])), b[8:]
		}
		if group != 2 || vlen < 0 || vlen > len(b) {
			return fmt.Errorf("dicom: bad file meta element (%04X,%04X)", group, elem)
		}
		v := strings.TrimRight(string(b[:vlen]), "\x00 ")
		b = b[vlen:]
		switch elem {
		case 0x0002:
			m.SOPClass = v
		case 0x0003:
			m.SOPInstance = v
		case 0x0010:
			m.TransferSyntax = v
		case 0x0012:
			m.ImplementationClassUID = v
		case 0x0013:
			m.ImplementationVersionName = v
		case 0x0016:
			m.SourceAE = strings.TrimSpace(v)
		}
	}
	if m.TransferSyntax == "" {
		return errors.New("dicom: file meta has no transfer syntax (0002,0010)")
	}
	return nil
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 256<<10) }}

// Buffered returns fill writing through a pooled 256 KiB buffer, flushed
// when fill succeeds: a dataset arrives in PDU-sized fragments, and fewer,
// larger writes to a file are measurably cheaper. Pooled, as one instance
// is written after another.
func Buffered(fill func(w io.Writer) error) func(w io.Writer) error {
	return func(w io.Writer) error {
		bw := writers.Get().(*bufio.Writer)
		bw.Reset(w)
		err := fill(bw)
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		writers.Put(bw)
		return err
	}
}
