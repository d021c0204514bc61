// Package dimse implements the DICOM message exchange layer (PS3.7): the
// command set codec (group 0000, always implicit VR little endian), status
// codes, and the fragmentation of messages into P-DATA-TF PDVs and their
// reassembly, with a streaming reader for datasets.
package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// CommandField is the value of (0000,0100).
type CommandField uint16

// Command field values (PS3.7 E.1).
const (
	CStoreRQ        CommandField = 0x0001
	CStoreRSP       CommandField = 0x8001
	CGetRQ          CommandField = 0x0010
	CGetRSP         CommandField = 0x8010
	CFindRQ         CommandField = 0x0020
	CFindRSP        CommandField = 0x8020
	CMoveRQ         CommandField = 0x0021
	CMoveRSP        CommandField = 0x8021
	CEchoRQ         CommandField = 0x0030
	CEchoRSP        CommandField = 0x8030
	NEventReportRQ  CommandField = 0x0100
	NEventReportRSP CommandField = 0x8100
	NGetRQ          CommandField = 0x0110
	NGetRSP         CommandField = 0x8110
	NSetRQ          CommandField = 0x0120
	NSetRSP         CommandField = 0x8120
	NActionRQ       CommandField = 0x0130
	NActionRSP      CommandField = 0x8130
	NCreateRQ       CommandField = 0x0140
	NCreateRSP      CommandField = 0x8140
	NDeleteRQ       CommandField = 0x0150
	NDeleteRSP      CommandField = 0x8150
	CCancelRQ       CommandField = 0x0FFF
)

var commandNames = map[CommandField]string{
	CStoreRQ: "C-STORE-RQ", CStoreRSP: "C-STORE-RSP", CGetRQ: "C-GET-RQ", CGetRSP: "C-GET-RSP",
	CFindRQ: "C-FIND-RQ", CFindRSP: "C-FIND-RSP", CMoveRQ: "C-MOVE-RQ", CMoveRSP: "C-MOVE-RSP",
	CEchoRQ: "C-ECHO-RQ", CEchoRSP: "C-ECHO-RSP", CCancelRQ: "C-CANCEL-RQ",
	NEventReportRQ: "N-EVENT-REPORT-RQ", NEventReportRSP: "N-EVENT-REPORT-RSP",
	NGetRQ: "N-GET-RQ", NGetRSP: "N-GET-RSP", NSetRQ: "N-SET-RQ", NSetRSP: "N-SET-RSP",
	NActionRQ: "N-ACTION-RQ", NActionRSP: "N-ACTION-RSP", NCreateRQ: "N-CREATE-RQ",
	NCreateRSP: "N-CREATE-RSP", NDeleteRQ: "N-DELETE-RQ", NDeleteRSP: "N-DELETE-RSP",
}

func (c CommandField) String() string {
	if s, ok := commandNames[c]; ok {
		return s
	}
	return fmt.Sprintf("command 0x%04X", uint16(c))
}

// IsResponse reports whether c is a response (bit 15 set).
func (c CommandField) IsResponse() bool { return c&0x8000 != 0 }

// Response returns the response command field for a request.
func (c CommandField) Response() CommandField { return c | 0x8000 }

// Priority is the value of (0000,0700).
type Priority uint16

// Priorities.
const (
	PriorityMedium Priority = 0
	PriorityHigh   Priority = 1
	PriorityLow    Priority = 2
)

// Command is a decoded command set. Elements that are absent decode to zero
// values. On encoding, strings and lists are written when non-empty and
// numbers when non-zero or when the command field requires them (for
// example Message ID on requests, Status on responses), so decoding and
// re-encoding is lossless for conformant messages.
type Command struct {
	CommandField              CommandField // (0000,0100)
	AffectedSOPClassUID       string       // (0000,0002)
	RequestedSOPClassUID      string       // (0000,0003)
	MessageID                 uint16       // (0000,0110)
	MessageIDBeingRespondedTo uint16       // (0000,0120)
	MoveDestination           string       // (0000,0600)
	Priority                  Priority     // (0000,0700)
	HasDataSet                bool         // (0000,0800) != 0x0101
	Status                    Status       // (0000,0900)
	OffendingElement          []uint32     // (0000,0901), tags as group<<16|element
	ErrorComment              string       // (0000,0902)
	ErrorID                   uint16       // (0000,0903)
	AffectedSOPInstanceUID    string       // (0000,1000)
	RequestedSOPInstanceUID   string       // (0000,1001)
	EventTypeID               uint16       // (0000,1002)
	AttributeIdentifierList   []uint32     // (0000,1005)
	ActionTypeID              uint16       // (0000,1008)
	RemainingSuboperations    uint16       // (0000,1020)
	CompletedSuboperations    uint16       // (0000,1021)
	FailedSuboperations       uint16       // (0000,1022)
	WarningSuboperations      uint16       // (0000,1023)
	MoveOriginatorAETitle     string       // (0000,1030)
	MoveOriginatorMessageID   uint16       // (0000,1031)
}

// Command Data Set Type values: 0x0101 means "no dataset"; any other value
// means one follows. We send 0x0001 like dcmtk and pynetdicom.
const (
	dataSetAbsent  = 0x0101
	dataSetPresent = 0x0001
)

// Element numbers in group 0000.
const (
	tagGroupLength             = 0x0000
	tagAffectedSOPClass        = 0x0002
	tagRequestedSOPClass       = 0x0003
	tagCommandField            = 0x0100
	tagMessageID               = 0x0110
	tagMessageIDRespondedTo    = 0x0120
	tagMoveDestination         = 0x0600
	tagPriority                = 0x0700
	tagDataSetType             = 0x0800
	tagStatus                  = 0x0900
	tagOffendingElement        = 0x0901
	tagErrorComment            = 0x0902
	tagErrorID                 = 0x0903
	tagAffectedSOPInstance     = 0x1000
	tagRequestedSOPInstance    = 0x1001
	tagEventTypeID             = 0x1002
	tagAttributeIdentifierList = 0x1005
	tagActionTypeID            = 0x1008
	tagRemaining               = 0x1020
	tagCompleted               = 0x1021
	tagFailed                  = 0x1022
	tagWarning                 = 0x1023
	tagMoveOriginatorAE        = 0x1030
	tagMoveOriginatorMessageID = 0x1031
)

// ErrMalformedCommand wraps every DecodeCommand error.
var ErrMalformedCommand = errors.New("dimse: malformed command set")

func (c *Command) requires(tag uint16) bool {
	f := c.CommandField
	switch tag {
	case tagMessageID:
		return !f.IsResponse() && f != CCancelRQ
	case tagMessageIDRespondedTo:
		return f.IsResponse() || f == CCancelRQ
	case tagStatus:
		return f.IsResponse()
	case tagPriority:
		switch f {
		case CStoreRQ, CFindRQ, CMoveRQ, CGetRQ:
			return true
		}
	case tagCompleted, tagFailed, tagWarning:
		return f == CMoveRSP || f == CGetRSP
	case tagRemaining:
		return (f == CMoveRSP || f == CGetRSP) && c.Status.Category() == CategoryPending
	case tagEventTypeID:
		return f == NEventReportRQ
	case tagActionTypeID:
		return f == NActionRQ
	case tagMoveOriginatorMessageID:
		return c.MoveOriginatorAETitle != ""
	}
	return false
}

// EncodeCommand returns the command set in implicit VR little endian, group
// length first and elements in ascending tag order (PS3.7 6.3.1). UI values
// are padded with NUL, text values with spaces.
func EncodeCommand(c *Command) []byte {
	b := make([]byte, 12, 256)
	b = appendString(b, tagAffectedSOPClass, c.AffectedSOPClassUID, 0)
	b = appendString(b, tagRequestedSOPClass, c.RequestedSOPClassUID, 0)
	b = appendUS(b, tagCommandField, uint16(c.CommandField))
	b = c.appendNumber(b, tagMessageID, c.MessageID)
	b = c.appendNumber(b, tagMessageIDRespondedTo, c.MessageIDBeingRespondedTo)
	b = appendString(b, tagMoveDestination, c.MoveDestination, ' ')
	b = c.appendNumber(b, tagPriority, uint16(c.Priority))
	dst := uint16(dataSetAbsent)
	if c.HasDataSet {
		dst = dataSetPresent
	}
	b = appendUS(b, tagDataSetType, dst)
	b = c.appendNumber(b, tagStatus, uint16(c.Status))
	b = appendTags(b, tagOffendingElement, c.OffendingElement)
	b = appendString(b, tagErrorComment, c.ErrorComment, ' ')
	b = c.appendNumber(b, tagErrorID, c.ErrorID)
	b = appendString(b, tagAffectedSOPInstance, c.AffectedSOPInstanceUID, 0)
	b = appendString(b, tagRequestedSOPInstance, c.RequestedSOPInstanceUID, 0)
	b = c.appendNumber(b, tagEventTypeID, c.EventTypeID)
	b = appendTags(b, tagAttributeIdentifierList, c.AttributeIdentifierList)
	b = c.appendNumber(b, tagActionTypeID, c.ActionTypeID)
	b = c.appendNumber(b, tagRemaining, c.RemainingSuboperations)
	b = c.appendNumber(b, tagCompleted, c.CompletedSuboperations)
	b = c.appendNumber(b, tagFailed, c.FailedSuboperations)
	b = c.appendNumber(b, tagWarning, c.WarningSuboperations)
	b = appendString(b, tagMoveOriginatorAE, c.MoveOriginatorAETitle, ' ')
	b = c.appendNumber(b, tagMoveOriginatorMessageID, c.MoveOriginatorMessageID)

	putHeader(b, tagGroupLength, 4)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-12))
	return b
}

func putHeader(b []byte, elem uint16, vl uint32) {
	binary.LittleEndian.PutUint16(b, 0x0000)
	binary.LittleEndian.PutUint16(b[2:], elem)
	binary.LittleEndian.PutUint32(b[4:], vl)
}

func appendHeader(b []byte, elem uint16, vl int) []byte {
	b = append(b, make([]byte, 8)...)
	putHeader(b[len(b)-8:], elem, uint32(vl))
	return b
}

func appendUS(b []byte, elem, v uint16) []byte {
	return binary.LittleEndian.AppendUint16(appendHeader(b, elem, 2), v)
}

func (c *Command) appendNumber(b []byte, elem, v uint16) []byte {
	if v == 0 && !c.requires(elem) {
		return b
	}
	return appendUS(b, elem, v)
}

func appendString(b []byte, elem uint16, s string, pad byte) []byte {
	if s == "" {
		return b
	}
	n := len(s) + len(s)%2
	b = append(appendHeader(b, elem, n), s...)
	if len(s)%2 == 1 {
		b = append(b, pad)
	}
	return b
}

func appendTags(b []byte, elem uint16, tags []uint32) []byte {
	if len(tags) == 0 {
		return b
	}
	b = appendHeader(b, elem, 4*len(tags))
	for _, t := range tags {
		b = binary.LittleEndian.AppendUint16(b, uint16(t>>16))
		b = binary.LittleEndian.AppendUint16(b, uint16(t))
	}
	return b
}

// DecodeCommand decodes a complete command set. Elements it does not know
// (retired ones, for instance) are skipped; the Command Field and Command
// Data Set Type must be present, and so must the message ID fields and
// status the command field calls for.
func DecodeCommand(b []byte) (*Command, error) {
	c := &Command{}
	seen := map[uint16]bool{}
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, malformedCommand("truncated element header")
		}
		group, elem, vl := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint32(b[4:])
		if group != 0 {
			return nil, malformedCommand("element (%04X,%04X) outside group 0000", group, elem)
		}
		if uint64(vl) > uint64(len(b)-8) {
			return nil, malformedCommand("element (0000,%04X) length %d exceeds the %d bytes left", elem, vl, len(b)-8)
		}
		v := b[8 : 8+vl]
		b = b[8+vl:]
		seen[elem] = true
		if err := c.set(elem, v); err != nil {
			return nil, err
		}
	}
	for _, tag := range []uint16{tagCommandField, tagDataSetType} {
		if !seen[tag] {
			return nil, malformedCommand("missing (0000,%04X)", tag)
		}
	}
	for _, tag := range []uint16{tagMessageID, tagMessageIDRespondedTo, tagStatus} {
		if c.requires(tag) && !seen[tag] {
			return nil, malformedCommand("%s without (0000,%04X)", c.CommandField, tag)
		}
	}
	return c, nil
}

func malformedCommand(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedCommand}, args...)...)
}

func (c *Command) set(elem uint16, v []byte) error {
	us := func(dst *uint16) error {
		if len(v) != 2 {
			return malformedCommand("(0000,%04X) US of %d bytes", elem, len(v))
		}
		*dst = binary.LittleEndian.Uint16(v)
		return nil
	}
	at := func(dst *[]uint32) error {
		if len(v)%4 != 0 {
			return malformedCommand("(0000,%04X) AT of %d bytes", elem, len(v))
		}
		*dst = nil
		for i := 0; i < len(v); i += 4 {
			*dst = append(*dst, uint32(binary.LittleEndian.Uint16(v[i:]))<<16|uint32(binary.LittleEndian.Uint16(v[i+2:])))
		}
		return nil
	}
	uid := strings.TrimRight(string(v), "\x00 ")
	text := strings.Trim(string(v), " \x00")
	switch elem {
	case tagGroupLength:
		if len(v) != 4 {
			return malformedCommand("group length of %d bytes", len(v))
		}
		// Its value is redundant with the PDV boundaries; not checked.
	case tagAffectedSOPClass:
		c.AffectedSOPClassUID = uid
	case tagRequestedSOPClass:
		c.RequestedSOPClassUID = uid
	case tagCommandField:
		return us((*uint16)(&c.CommandField))
	case tagMessageID:
		return us(&c.MessageID)
	case tagMessageIDRespondedTo:
		return us(&c.MessageIDBeingRespondedTo)
	case tagMoveDestination:
		c.MoveDestination = text
	case tagPriority:
		return us((*uint16)(&c.Priority))
	case tagDataSetType:
		var t uint16
		if err := us(&t); err != nil {
			return err
		}
		c.HasDataSet = t != dataSetAbsent
	case tagStatus:
		return us((*uint16)(&c.Status))
	case tagOffendingElement:
		return at(&c.OffendingElement)
	case tagErrorComment:
		c.ErrorComment = text
	case tagErrorID:
		return us(&c.ErrorID)
	case tagAffectedSOPInstance:
		c.AffectedSOPInstanceUID = uid
	case tagRequestedSOPInstance:
		c.RequestedSOPInstanceUID = uid
	case tagEventTypeID:
		return us(&c.EventTypeID)
	case tagAttributeIdentifierList:
		return at(&c.AttributeIdentifierList)
	case tagActionTypeID:
		return us(&c.ActionTypeID)
	case tagRemaining:
		return us(&c.RemainingSuboperations)
	case tagCompleted:
		return us(&c.CompletedSuboperations)
	case tagFailed:
		return us(&c.FailedSuboperations)
	case tagWarning:
		return us(&c.WarningSuboperations)
	case tagMoveOriginatorAE:
		c.MoveOriginatorAETitle = text
	case tagMoveOriginatorMessageID:
		return us(&c.MoveOriginatorMessageID)
	}
	return nil
}
