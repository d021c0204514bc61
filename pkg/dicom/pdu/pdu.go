// Package pdu encodes and decodes the seven DICOM Upper Layer PDUs (PS3.8
// section 9.3) and their items. It knows nothing about association state:
// Read returns whatever PDU arrives and Write sends one PDU in one Write call.
// All header fields are big endian; PDV contents are opaque bytes here.
package pdu

import (
	"errors"
	"fmt"
)

// Type is the PDU-type byte.
type Type uint8

// PDU types (PS3.8 Table 9-11 and following).
const (
	TypeAssociateRQ Type = 0x01
	TypeAssociateAC Type = 0x02
	TypeAssociateRJ Type = 0x03
	TypePDataTF     Type = 0x04
	TypeReleaseRQ   Type = 0x05
	TypeReleaseRP   Type = 0x06
	TypeAbort       Type = 0x07
)

func (t Type) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePDataTF:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return fmt.Sprintf("PDU type 0x%02X", uint8(t))
}

// HeaderLen is the size of the PDU header: type, reserved, 4-byte length.
const HeaderLen = 6

// Decoding errors. Errors returned by Read wrap one of these (or are I/O
// errors), so the association layer can choose the A-ABORT reason.
var (
	ErrUnknownType = errors.New("pdu: unrecognized PDU type")
	ErrTooLarge    = errors.New("pdu: PDU length exceeds the limit")
	ErrMalformed   = errors.New("pdu: malformed PDU")
)

// PDU is one of *AssociateRQ, *AssociateAC, *AssociateRJ, *PDataTF,
// *ReleaseRQ, *ReleaseRP or *Abort.
type PDU interface {
	Type() Type
	appendBody(b []byte) ([]byte, error)
}

// AssociateRQ is an A-ASSOCIATE-RQ.
type AssociateRQ struct {
	ProtocolVersion      uint16 // bit 0 set for the only defined version
	CalledAE             string // trimmed of padding
	CallingAE            string
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInfo             UserInfo
}

// AssociateAC is an A-ASSOCIATE-AC. The AE fields are echoed from the RQ and
// not significant on receipt.
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE             string
	CallingAE            string
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInfo             UserInfo
}

// PresentationContextRQ is a proposed presentation context (item 0x20).
type PresentationContextRQ struct {
	ID               uint8 // odd, 1..255
	AbstractSyntax   string
	TransferSyntaxes []string
}

// PresentationContextAC is the answer to one proposed context (item 0x21).
// TransferSyntax is significant only when Result is ResultAcceptance.
type PresentationContextAC struct {
	ID             uint8
	Result         Result
	TransferSyntax string
}

// Result is the result/reason of a presentation context in an AC.
type Result uint8

// Presentation context results (PS3.8 Table 9-18).
const (
	ResultAcceptance                   Result = 0
	ResultUserRejection                Result = 1
	ResultNoReason                     Result = 2
	ResultAbstractSyntaxNotSupported   Result = 3
	ResultTransferSyntaxesNotSupported Result = 4
)

func (r Result) String() string {
	switch r {
	case ResultAcceptance:
		return "acceptance"
	case ResultUserRejection:
		return "user rejection"
	case ResultNoReason:
		return "no reason (provider rejection)"
	case ResultAbstractSyntaxNotSupported:
		return "abstract syntax not supported (provider rejection)"
	case ResultTransferSyntaxesNotSupported:
		return "transfer syntaxes not supported (provider rejection)"
	}
	return fmt.Sprintf("result %d", uint8(r))
}

// UserInfo is the User Information item (0x50) and its sub-items.
type UserInfo struct {
	// MaxLength is the largest P-DATA-TF PDU length this side receives;
	// 0 means no limit.
	MaxLength                 uint32
	ImplementationClassUID    string
	ImplementationVersionName string // empty: sub-item omitted
	AsyncOps                  *AsyncOpsWindow
	RoleSelections            []RoleSelection
	// Extra holds the sub-items this package does not interpret (extended
	// negotiation, user identity...), passed through in order.
	Extra []SubItem
}

// AsyncOpsWindow is sub-item 0x53. Absent means 1/1.
type AsyncOpsWindow struct {
	MaxInvoked   uint16
	MaxPerformed uint16
}

// RoleSelection is sub-item 0x54.
type RoleSelection struct {
	SOPClass string
	SCU, SCP bool
}

// SubItem is an uninterpreted user information sub-item.
type SubItem struct {
	Type uint8
	Data []byte
}

// AssociateRJ is an A-ASSOCIATE-RJ.
type AssociateRJ struct {
	Result RejectResult
	Source RejectSource
	Reason RejectReason
}

// String describes the rejection in words, e.g. "rejected permanent, source:
// service user, reason: called AE title not recognized".
func (rj *AssociateRJ) String() string {
	return fmt.Sprintf("%s, source: %s, reason: %s", rj.Result, rj.Source, rj.Reason.Text(rj.Source))
}

// RejectResult is the Result field of an A-ASSOCIATE-RJ.
type RejectResult uint8

// Reject results.
const (
	RejectPermanent RejectResult = 1
	RejectTransient RejectResult = 2
)

func (r RejectResult) String() string {
	switch r {
	case RejectPermanent:
		return "rejected permanent"
	case RejectTransient:
		return "rejected transient"
	}
	return fmt.Sprintf("result %d", uint8(r))
}

// RejectSource is the Source field of an A-ASSOCIATE-RJ.
type RejectSource uint8

// Reject sources.
const (
	SourceServiceUser                 RejectSource = 1
	SourceServiceProviderACSE         RejectSource = 2
	SourceServiceProviderPresentation RejectSource = 3
)

func (s RejectSource) String() string {
	switch s {
	case SourceServiceUser:
		return "service user"
	case SourceServiceProviderACSE:
		return "service provider (ACSE)"
	case SourceServiceProviderPresentation:
		return "service provider (presentation)"
	}
	return fmt.Sprintf("source %d", uint8(s))
}

// RejectReason is the Reason/Diag field of an A-ASSOCIATE-RJ; its meaning
// depends on the source.
type RejectReason uint8

// Reject reasons. The numbering restarts per source (PS3.8 Table 9-21).
const (
	// Source 1 (service user).
	ReasonNoReason                       RejectReason = 1
	ReasonApplicationContextNotSupported RejectReason = 2
	ReasonCallingAENotRecognized         RejectReason = 3
	ReasonCalledAENotRecognized          RejectReason = 7
	// Source 2 (ACSE).
	ReasonProtocolVersionNotSupported RejectReason = 2
	// Source 3 (presentation).
	ReasonTemporaryCongestion RejectReason = 1
	ReasonLocalLimitExceeded  RejectReason = 2
)

// Text describes the reason as given by source s.
func (r RejectReason) Text(s RejectSource) string {
	switch {
	case s == SourceServiceUser && r == ReasonNoReason, s == SourceServiceProviderACSE && r == ReasonNoReason:
		return "no reason given"
	case s == SourceServiceUser && r == ReasonApplicationContextNotSupported:
		return "application context name not supported"
	case s == SourceServiceUser && r == ReasonCallingAENotRecognized:
		return "calling AE title not recognized"
	case s == SourceServiceUser && r == ReasonCalledAENotRecognized:
		return "called AE title not recognized"
	case s == SourceServiceProviderACSE && r == ReasonProtocolVersionNotSupported:
		return "protocol version not supported"
	case s == SourceServiceProviderPresentation && r == ReasonTemporaryCongestion:
		return "temporary congestion"
	case s == SourceServiceProviderPresentation && r == ReasonLocalLimitExceeded:
		return "local limit exceeded"
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// PDataTF is a P-DATA-TF carrying one or more PDVs.
type PDataTF struct {
	Items []PDV
}

// PDV is one presentation data value item. Command and Last are bits 0 and 1
// of the message control header; other bits are ignored on receipt.
type PDV struct {
	ContextID uint8
	Command   bool // command fragment (else dataset fragment)
	Last      bool // last fragment of the command or dataset
	Data      []byte
}

// PDataHeaderLen is the overhead of a P-DATA-TF holding one PDV: the PDU
// header plus the PDV length, context ID and message control header.
const PDataHeaderLen = HeaderLen + 6

// PutPDataHeader writes into b[:PDataHeaderLen] the header of a P-DATA-TF
// holding a single PDV of n fragment bytes. The fragment is expected right
// after the header, so a caller can read data into b[PDataHeaderLen:] and
// send the PDU without copying.
func PutPDataHeader(b []byte, contextID uint8, command, last bool, n int) {
	_ = b[PDataHeaderLen-1]
	b[0], b[1] = byte(TypePDataTF), 0
	putUint32(b[2:], uint32(n+6))
	putUint32(b[6:], uint32(n+2))
	b[10], b[11] = contextID, mch(command, last)
}

func mch(command, last bool) byte {
	var m byte
	if command {
		m |= 0x01
	}
	if last {
		m |= 0x02
	}
	return m
}

// ReleaseRQ is an A-RELEASE-RQ.
type ReleaseRQ struct{}

// ReleaseRP is an A-RELEASE-RP.
type ReleaseRP struct{}

// Abort is an A-ABORT.
type Abort struct {
	Source AbortSource
	Reason AbortReason // significant only for SourceServiceProvider
}

// String describes the abort in words.
func (a *Abort) String() string {
	if a.Source == AbortServiceProvider {
		return fmt.Sprintf("source: %s, reason: %s", a.Source, a.Reason)
	}
	return fmt.Sprintf("source: %s", a.Source)
}

// AbortSource is the Source field of an A-ABORT.
type AbortSource uint8

// Abort sources.
const (
	AbortServiceUser     AbortSource = 0
	AbortServiceProvider AbortSource = 2
)

func (s AbortSource) String() string {
	switch s {
	case AbortServiceUser:
		return "service user"
	case 1:
		return "reserved"
	case AbortServiceProvider:
		return "service provider"
	}
	return fmt.Sprintf("source %d", uint8(s))
}

// AbortReason is the Reason/Diag field of a provider A-ABORT.
type AbortReason uint8

// Abort reasons (PS3.8 Table 9-26).
const (
	AbortNotSpecified             AbortReason = 0
	AbortUnrecognizedPDU          AbortReason = 1
	AbortUnexpectedPDU            AbortReason = 2
	AbortUnrecognizedPDUParameter AbortReason = 4
	AbortUnexpectedPDUParameter   AbortReason = 5
	AbortInvalidPDUParameterValue AbortReason = 6
)

func (r AbortReason) String() string {
	switch r {
	case AbortNotSpecified:
		return "not specified"
	case AbortUnrecognizedPDU:
		return "unrecognized PDU"
	case AbortUnexpectedPDU:
		return "unexpected PDU"
	case AbortUnrecognizedPDUParameter:
		return "unrecognized PDU parameter"
	case AbortUnexpectedPDUParameter:
		return "unexpected PDU parameter"
	case AbortInvalidPDUParameterValue:
		return "invalid PDU parameter value"
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// Type implements PDU.
func (*AssociateRQ) Type() Type { return TypeAssociateRQ }

// Type implements PDU.
func (*AssociateAC) Type() Type { return TypeAssociateAC }

// Type implements PDU.
func (*AssociateRJ) Type() Type { return TypeAssociateRJ }

// Type implements PDU.
func (*PDataTF) Type() Type { return TypePDataTF }

// Type implements PDU.
func (*ReleaseRQ) Type() Type { return TypeReleaseRQ }

// Type implements PDU.
func (*ReleaseRP) Type() Type { return TypeReleaseRP }

// Type implements PDU.
func (*Abort) Type() Type { return TypeAbort }
