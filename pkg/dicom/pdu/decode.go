package pdu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// HardLimit caps the length of any PDU Read accepts, whatever the caller
// asks for: no peer gets us to buffer more than this for one PDU.
const HardLimit = 16 << 20

// Read reads one PDU from r. maxLen is the largest PDU length field accepted
// (0 means HardLimit). The returned PDU owns its memory.
func Read(r io.Reader, maxLen uint32) (PDU, error) {
	return NewReader(r).Next(maxLen)
}

// Reader reads PDUs from a stream, reusing one buffer for P-DATA-TF bodies so
// a long transfer does not allocate per PDU.
type Reader struct {
	r   io.Reader
	hdr [HeaderLen]byte
	buf []byte
}

// NewReader returns a Reader on r. Wrap r in a bufio.Reader first when it is
// a socket: Next reads the 6-byte header separately from the body.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads the next PDU. The type byte is checked before the rest of the
// header arrives and the length before the body is buffered, so garbage is
// rejected at once. PDV data of a returned *PDataTF aliases an internal
// buffer that the next call overwrites; every other PDU owns its memory.
//
// At a clean end of stream (no byte of a new PDU) it returns io.EOF; a
// stream that ends inside a PDU gives io.ErrUnexpectedEOF.
func (r *Reader) Next(maxLen uint32) (PDU, error) {
	if maxLen == 0 || maxLen > HardLimit {
		maxLen = HardLimit
	}
	if _, err := io.ReadFull(r.r, r.hdr[:1]); err != nil {
		return nil, err
	}
	t := Type(r.hdr[0])
	if t < TypeAssociateRQ || t > TypeAbort {
		return nil, fmt.Errorf("%w 0x%02X", ErrUnknownType, r.hdr[0])
	}
	if _, err := io.ReadFull(r.r, r.hdr[1:]); err != nil {
		return nil, noEOF(err)
	}
	n := be32(r.hdr[2:])
	if n > maxLen {
		return nil, fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrTooLarge, t, n, maxLen)
	}
	var body []byte
	if t == TypePDataTF {
		if cap(r.buf) < int(n) {
			r.buf = make([]byte, n)
		}
		body = r.buf[:n]
		if _, err := io.ReadFull(r.r, body); err != nil {
			return nil, noEOF(err)
		}
	} else {
		// Grow with the data actually received rather than trusting the
		// declared length: a peer that announces a large RQ and sends
		// nothing costs us nothing.
		var bb bytes.Buffer
		if _, err := io.CopyN(&bb, r.r, int64(n)); err != nil {
			return nil, noEOF(err)
		}
		body = bb.Bytes()
	}
	return decodeBody(t, body)
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func decodeBody(t Type, b []byte) (PDU, error) {
	switch t {
	case TypeAssociateRQ:
		return decodeAssociateRQ(b)
	case TypeAssociateAC:
		return decodeAssociateAC(b)
	case TypePDataTF:
		return decodePDataTF(b)
	}
	if len(b) != 4 {
		return nil, malformed("%s length %d, want 4", t, len(b))
	}
	switch t {
	case TypeAssociateRJ:
		return &AssociateRJ{Result: RejectResult(b[1]), Source: RejectSource(b[2]), Reason: RejectReason(b[3])}, nil
	case TypeReleaseRQ:
		return &ReleaseRQ{}, nil
	case TypeReleaseRP:
		return &ReleaseRP{}, nil
	}
	return &Abort{Source: AbortSource(b[2]), Reason: AbortReason(b[3])}, nil
}

// item is one decoded item header and value.
type item struct {
	typ byte
	val []byte
}

// items splits b into items with 2-byte lengths.
func items(b []byte, where string) ([]item, error) {
	var out []item
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, malformed("%s: truncated item header", where)
		}
		n := int(be16(b[2:]))
		if 4+n > len(b) {
			return nil, malformed("%s: item 0x%02X length %d exceeds the %d bytes left", where, b[0], n, len(b)-4)
		}
		out = append(out, item{typ: b[0], val: b[4 : 4+n]})
		b = b[4+n:]
	}
	return out, nil
}

// uid trims the padding some implementations add to UIDs inside items.
func uid(b []byte) string { return strings.TrimRight(string(b), "\x00 ") }

// ae trims an AE title field; spaces are not significant at either end, and
// some implementations pad with NUL.
func ae(b []byte) string { return strings.Trim(string(b), " \x00") }

// fixedLen is the fixed part of A-ASSOCIATE-RQ/AC before the items.
const fixedLen = 68

type fixedPart struct {
	version         uint16
	called, calling string
	appCtx          string
	items           []item // items other than the application context
}

func decodeFixed(b []byte, t Type) (*fixedPart, error) {
	if len(b) < fixedLen {
		return nil, malformed("%s of %d bytes is shorter than its fixed part", t, len(b))
	}
	f := &fixedPart{version: be16(b), called: ae(b[4:20]), calling: ae(b[20:36])}
	its, err := items(b[fixedLen:], t.String())
	if err != nil {
		return nil, err
	}
	for _, it := range its {
		if it.typ == itemApplicationContext {
			f.appCtx = uid(it.val)
			continue
		}
		f.items = append(f.items, it)
	}
	return f, nil
}

func decodeAssociateRQ(b []byte) (PDU, error) {
	f, err := decodeFixed(b, TypeAssociateRQ)
	if err != nil {
		return nil, err
	}
	p := &AssociateRQ{ProtocolVersion: f.version, CalledAE: f.called, CallingAE: f.calling, ApplicationContext: f.appCtx}
	for _, it := range f.items {
		switch it.typ {
		case itemPresentationRQ:
			pc, err := decodePresentationRQ(it.val)
			if err != nil {
				return nil, err
			}
			p.PresentationContexts = append(p.PresentationContexts, pc)
		case itemUserInfo:
			if p.UserInfo, err = decodeUserInfo(it.val); err != nil {
				return nil, err
			}
		}
		// Other item types are not defined for an RQ; ignore them.
	}
	return p, nil
}

func decodeAssociateAC(b []byte) (PDU, error) {
	f, err := decodeFixed(b, TypeAssociateAC)
	if err != nil {
		return nil, err
	}
	p := &AssociateAC{ProtocolVersion: f.version, CalledAE: f.called, CallingAE: f.calling, ApplicationContext: f.appCtx}
	for _, it := range f.items {
		switch it.typ {
		case itemPresentationAC:
			pc, err := decodePresentationAC(it.val)
			if err != nil {
				return nil, err
			}
			p.PresentationContexts = append(p.PresentationContexts, pc)
		case itemUserInfo:
			if p.UserInfo, err = decodeUserInfo(it.val); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func decodePresentationRQ(b []byte) (PresentationContextRQ, error) {
	var pc PresentationContextRQ
	if len(b) < 4 {
		return pc, malformed("presentation context item of %d bytes", len(b))
	}
	pc.ID = b[0]
	subs, err := items(b[4:], "presentation context")
	if err != nil {
		return pc, err
	}
	abstract := 0
	for _, s := range subs {
		switch s.typ {
		case itemAbstractSyntax:
			abstract++
			pc.AbstractSyntax = uid(s.val)
		case itemTransferSyntax:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, uid(s.val))
		}
	}
	if abstract != 1 || len(pc.TransferSyntaxes) == 0 {
		return pc, malformed("presentation context %d has %d abstract and %d transfer syntaxes", pc.ID, abstract, len(pc.TransferSyntaxes))
	}
	return pc, nil
}

func decodePresentationAC(b []byte) (PresentationContextAC, error) {
	var pc PresentationContextAC
	if len(b) < 4 {
		return pc, malformed("presentation context item of %d bytes", len(b))
	}
	pc.ID, pc.Result = b[0], Result(b[2])
	subs, err := items(b[4:], "presentation context")
	if err != nil {
		return pc, err
	}
	n := 0
	for _, s := range subs {
		if s.typ == itemTransferSyntax {
			n++
			pc.TransferSyntax = uid(s.val)
		}
	}
	// Some implementations omit the sub-item of a rejected context.
	if n > 1 || n == 0 && pc.Result == ResultAcceptance {
		return pc, malformed("presentation context %d has %d transfer syntaxes", pc.ID, n)
	}
	return pc, nil
}

func decodeUserInfo(b []byte) (UserInfo, error) {
	var u UserInfo
	subs, err := items(b, "user information")
	if err != nil {
		return u, err
	}
	for _, s := range subs {
		switch s.typ {
		case subMaxLength:
			if len(s.val) != 4 {
				return u, malformed("maximum length sub-item of %d bytes", len(s.val))
			}
			u.MaxLength = be32(s.val)
		case subImplClassUID:
			u.ImplementationClassUID = uid(s.val)
		case subAsyncOps:
			if len(s.val) != 4 {
				return u, malformed("asynchronous operations window sub-item of %d bytes", len(s.val))
			}
			u.AsyncOps = &AsyncOpsWindow{MaxInvoked: be16(s.val), MaxPerformed: be16(s.val[2:])}
		case subRoleSelection:
			if len(s.val) < 2 || int(be16(s.val))+4 != len(s.val) {
				return u, malformed("role selection sub-item of %d bytes", len(s.val))
			}
			n := int(be16(s.val))
			u.RoleSelections = append(u.RoleSelections, RoleSelection{
				SOPClass: uid(s.val[2 : 2+n]), SCU: s.val[2+n] != 0, SCP: s.val[3+n] != 0,
			})
		case subImplVersionName:
			u.ImplementationVersionName = strings.TrimRight(string(s.val), " \x00")
		default:
			u.Extra = append(u.Extra, SubItem{Type: s.typ, Data: bytes.Clone(s.val)})
		}
	}
	return u, nil
}

func decodePDataTF(b []byte) (PDU, error) {
	p := &PDataTF{}
	for len(b) > 0 {
		if len(b) < 6 {
			return nil, malformed("P-DATA-TF: truncated PDV header")
		}
		n := be32(b)
		if n < 2 || uint64(n) > uint64(len(b)-4) {
			return nil, malformed("P-DATA-TF: PDV length %d with %d bytes left", n, len(b)-4)
		}
		p.Items = append(p.Items, PDV{
			ContextID: b[4],
			Command:   b[5]&0x01 != 0,
			Last:      b[5]&0x02 != 0,
			Data:      b[6 : 4+n],
		})
		b = b[4+n:]
	}
	if len(p.Items) == 0 {
		return nil, malformed("P-DATA-TF without PDV items")
	}
	return p, nil
}
