package pdu

import (
	"fmt"
	"io"
	"math"
)

// Item and sub-item types of A-ASSOCIATE-RQ/AC (PS3.8 9.3.2, Annex D).
const (
	itemApplicationContext = 0x10
	itemPresentationRQ     = 0x20
	itemPresentationAC     = 0x21
	itemAbstractSyntax     = 0x30
	itemTransferSyntax     = 0x40
	itemUserInfo           = 0x50
	subMaxLength           = 0x51
	subImplClassUID        = 0x52
	subAsyncOps            = 0x53
	subRoleSelection       = 0x54
	subImplVersionName     = 0x55
)

// Write encodes p and sends it with a single w.Write, so a PDU is never
// split across writes (one segment on a TCP_NODELAY socket, and no
// interleaving with another writer that also writes whole PDUs).
func Write(w io.Writer, p PDU) error {
	b, err := Append(nil, p)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Append appends the encoding of p (header included) to b.
func Append(b []byte, p PDU) ([]byte, error) {
	start := len(b)
	b = append(b, byte(p.Type()), 0, 0, 0, 0, 0)
	b, err := p.appendBody(b)
	if err != nil {
		return b[:start], err
	}
	n := len(b) - start - HeaderLen
	if uint64(n) > math.MaxUint32 {
		return b[:start], fmt.Errorf("pdu: %s body of %d bytes is too long", p.Type(), n)
	}
	putUint32(b[start+2:], uint32(n))
	return b, nil
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func appendUint16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendItem appends an item (type, reserved, 2-byte length, value).
func appendItem(b []byte, typ byte, v []byte) ([]byte, error) {
	if len(v) > math.MaxUint16 {
		return b, fmt.Errorf("pdu: item 0x%02X of %d bytes is too long", typ, len(v))
	}
	b = append(b, typ, 0)
	b = appendUint16(b, uint16(len(v)))
	return append(b, v...), nil
}

// nested appends an item whose value is built by fill, back-filling the
// length once it is known.
func nested(b []byte, typ byte, fill func(b []byte) ([]byte, error)) ([]byte, error) {
	start := len(b)
	b = append(b, typ, 0, 0, 0)
	b, err := fill(b)
	if err != nil {
		return b, err
	}
	n := len(b) - start - 4
	if n > math.MaxUint16 {
		return b, fmt.Errorf("pdu: item 0x%02X of %d bytes is too long", typ, n)
	}
	b[start+2], b[start+3] = byte(n>>8), byte(n)
	return b, nil
}

func appendAE(b []byte, ae string) ([]byte, error) {
	if len(ae) > 16 {
		return b, fmt.Errorf("pdu: AE title %q is longer than 16 bytes", ae)
	}
	b = append(b, ae...)
	for range 16 - len(ae) {
		b = append(b, ' ')
	}
	return b, nil
}

// appendFixed appends the fixed part shared by A-ASSOCIATE-RQ and -AC.
func appendFixed(b []byte, version uint16, called, calling, appCtx string) ([]byte, error) {
	b = appendUint16(b, version)
	b = append(b, 0, 0)
	b, err := appendAE(b, called)
	if err != nil {
		return b, err
	}
	if b, err = appendAE(b, calling); err != nil {
		return b, err
	}
	b = append(b, make([]byte, 32)...)
	return appendItem(b, itemApplicationContext, []byte(appCtx))
}

func (p *AssociateRQ) appendBody(b []byte) ([]byte, error) {
	b, err := appendFixed(b, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.ApplicationContext)
	if err != nil {
		return b, err
	}
	for _, pc := range p.PresentationContexts {
		b, err = nested(b, itemPresentationRQ, func(b []byte) ([]byte, error) {
			b = append(b, pc.ID, 0, 0, 0)
			b, err := appendItem(b, itemAbstractSyntax, []byte(pc.AbstractSyntax))
			for _, ts := range pc.TransferSyntaxes {
				if err != nil {
					break
				}
				b, err = appendItem(b, itemTransferSyntax, []byte(ts))
			}
			return b, err
		})
		if err != nil {
			return b, err
		}
	}
	return p.UserInfo.append(b)
}

func (p *AssociateAC) appendBody(b []byte) ([]byte, error) {
	b, err := appendFixed(b, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.ApplicationContext)
	if err != nil {
		return b, err
	}
	for _, pc := range p.PresentationContexts {
		b, err = nested(b, itemPresentationAC, func(b []byte) ([]byte, error) {
			b = append(b, pc.ID, 0, byte(pc.Result), 0)
			return appendItem(b, itemTransferSyntax, []byte(pc.TransferSyntax))
		})
		if err != nil {
			return b, err
		}
	}
	return p.UserInfo.append(b)
}

func (u *UserInfo) append(b []byte) ([]byte, error) {
	return nested(b, itemUserInfo, func(b []byte) ([]byte, error) {
		b, _ = appendItem(b, subMaxLength, appendUint32(nil, u.MaxLength))
		b, err := appendItem(b, subImplClassUID, []byte(u.ImplementationClassUID))
		if err != nil {
			return b, err
		}
		if a := u.AsyncOps; a != nil {
			b, _ = appendItem(b, subAsyncOps, appendUint16(appendUint16(nil, a.MaxInvoked), a.MaxPerformed))
		}
		for _, rs := range u.RoleSelections {
			if len(rs.SOPClass) > math.MaxUint16-4 {
				return b, fmt.Errorf("pdu: role selection UID of %d bytes is too long", len(rs.SOPClass))
			}
			v := appendUint16(nil, uint16(len(rs.SOPClass)))
			v = append(v, rs.SOPClass...)
			v = append(v, bit(rs.SCU), bit(rs.SCP))
			b, _ = appendItem(b, subRoleSelection, v)
		}
		if u.ImplementationVersionName != "" {
			if b, err = appendItem(b, subImplVersionName, []byte(u.ImplementationVersionName)); err != nil {
				return b, err
			}
		}
		for _, s := range u.Extra {
			if b, err = appendItem(b, s.Type, s.Data); err != nil {
				return b, err
			}
		}
		return b, nil
	})
}

func bit(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func (p *AssociateRJ) appendBody(b []byte) ([]byte, error) {
	return append(b, 0, byte(p.Result), byte(p.Source), byte(p.Reason)), nil
}

func (p *PDataTF) appendBody(b []byte) ([]byte, error) {
	for _, v := range p.Items {
		if uint64(len(v.Data))+2 > math.MaxUint32 {
			return b, fmt.Errorf("pdu: PDV of %d bytes is too long", len(v.Data))
		}
		b = appendUint32(b, uint32(len(v.Data)+2))
		b = append(b, v.ContextID, mch(v.Command, v.Last))
		b = append(b, v.Data...)
	}
	return b, nil
}

func (*ReleaseRQ) appendBody(b []byte) ([]byte, error) { return append(b, 0, 0, 0, 0), nil }

func (*ReleaseRP) appendBody(b []byte) ([]byte, error) { return append(b, 0, 0, 0, 0), nil }

func (p *Abort) appendBody(b []byte) ([]byte, error) {
	return append(b, 0, 0, byte(p.Source), byte(p.Reason)), nil
}
