package dimse

import "fmt"

// Status is a DIMSE status code, (0000,0900).
type Status uint16

// Status codes (PS3.7 Annex C, and the service-specific tables of PS3.4).
const (
	StatusSuccess Status = 0x0000

	StatusPending                  Status = 0xFF00
	StatusPendingWarning           Status = 0xFF01 // C-FIND: optional keys not supported
	StatusCancel                   Status = 0xFE00
	StatusAttributeListError       Status = 0x0107 // warning: attribute list error
	StatusAttributeValueOutOfRange Status = 0x0116 // warning: attribute value out of range

	StatusProcessingFailure     Status = 0x0110
	StatusDuplicateSOPInstance  Status = 0x0111
	StatusNoSuchSOPInstance     Status = 0x0112
	StatusInvalidObjectInstance Status = 0x0117
	StatusNoSuchSOPClass        Status = 0x0118
	StatusSOPClassNotSupported  Status = 0x0122
	StatusNotAuthorized         Status = 0x0124
	StatusDuplicateInvocation   Status = 0x0210
	StatusUnrecognizedOperation Status = 0x0211
	StatusMistypedArgument      Status = 0x0212
	StatusResourceLimitation    Status = 0x0213

	StatusOutOfResources            Status = 0xA700 // C-STORE A7xx, C-FIND
	StatusOutOfResourcesNumMatches  Status = 0xA701 // C-MOVE/C-GET
	StatusOutOfResourcesSubOps      Status = 0xA702 // C-MOVE/C-GET
	StatusMoveDestinationUnknown    Status = 0xA801
	StatusDataSetMismatch           Status = 0xA900 // C-STORE A9xx; identifier for C-FIND/MOVE/GET
	StatusCannotUnderstand          Status = 0xC000 // Cxxx
	StatusCoercionOfDataElements    Status = 0xB000 // C-STORE; sub-operations with failures for C-MOVE/C-GET
	StatusElementsDiscarded         Status = 0xB006
	StatusDataSetMismatchWarning    Status = 0xB007
	StatusFindResponseLimitReached  Status = 0xB001
	StatusSubOpsCompleteWithFailure Status = 0xB000
)

// Category groups status codes as PS3.7 C.1 does.
type Category uint8

// Status categories. Codes outside the defined ranges are failures, as
// PS3.7 C.1.4 asks of unrecognized codes.
const (
	CategorySuccess Category = iota
	CategoryPending
	CategoryCancel
	CategoryWarning
	CategoryFailure
)

func (c Category) String() string {
	switch c {
	case CategorySuccess:
		return "Success"
	case CategoryPending:
		return "Pending"
	case CategoryCancel:
		return "Cancel"
	case CategoryWarning:
		return "Warning"
	}
	return "Failure"
}

// Category returns the category of s.
func (s Status) Category() Category {
	switch {
	case s == StatusSuccess:
		return CategorySuccess
	case s == StatusPending || s == StatusPendingWarning:
		return CategoryPending
	case s == StatusCancel:
		return CategoryCancel
	case s == 0x0001 || s&0xF000 == 0xB000 || s == StatusAttributeListError || s == StatusAttributeValueOutOfRange:
		return CategoryWarning
	}
	return CategoryFailure
}

// generalText holds the words for codes with one meaning in every service.
var generalText = map[Status]string{
	StatusSuccess:                  "success",
	StatusPending:                  "pending",
	StatusPendingWarning:           "pending, optional keys not supported",
	StatusCancel:                   "cancelled",
	StatusAttributeListError:       "attribute list error",
	StatusAttributeValueOutOfRange: "attribute value out of range",
	StatusProcessingFailure:        "processing failure",
	StatusDuplicateSOPInstance:     "duplicate SOP instance",
	StatusNoSuchSOPInstance:        "no such SOP instance",
	StatusInvalidObjectInstance:    "invalid object instance",
	StatusNoSuchSOPClass:           "no such SOP class",
	StatusSOPClassNotSupported:     "SOP class not supported",
	StatusNotAuthorized:            "not authorized",
	StatusDuplicateInvocation:      "duplicate invocation",
	StatusUnrecognizedOperation:    "unrecognized operation",
	StatusMistypedArgument:         "mistyped argument",
	StatusResourceLimitation:       "resource limitation",
	StatusMoveDestinationUnknown:   "move destination unknown",
}

// String describes s in words with its code, e.g. "Failure: processing
// failure (0x0110)". Codes whose meaning depends on the service use the
// C-STORE reading; Describe picks the right one.
func (s Status) String() string { return s.Describe(CStoreRQ) }

// Describe is String for a status returned by service f (either the request
// or the response command field).
func (s Status) Describe(f CommandField) string {
	if s == StatusSuccess {
		return "Success"
	}
	return fmt.Sprintf("%s: %s (0x%04X)", s.Category(), s.text(f&^0x8000), uint16(s))
}

func (s Status) text(f CommandField) string {
	if t, ok := generalText[s]; ok {
		return t
	}
	retrieve := f == CMoveRQ || f == CGetRQ
	switch {
	case retrieve && s == StatusOutOfResourcesNumMatches:
		return "out of resources, unable to calculate number of matches"
	case retrieve && s == StatusOutOfResourcesSubOps:
		return "out of resources, unable to perform sub-operations"
	case retrieve && s == StatusSubOpsCompleteWithFailure:
		return "sub-operations complete, one or more failures or warnings"
	case retrieve && s&0xFF00 == 0xAA00:
		return "frame-level retrieve error"
	case f == CFindRQ && s == StatusFindResponseLimitReached:
		return "response limit reached"
	case s&0xFF00 == 0xA700:
		return "refused, out of resources"
	case s&0xFF00 == 0xA900:
		if f == CStoreRQ {
			return "dataset does not match SOP class"
		}
		return "identifier does not match SOP class"
	case s&0xF000 == 0xC000:
		if f == CStoreRQ {
			return "cannot understand"
		}
		return "unable to process"
	case s == StatusCoercionOfDataElements:
		return "coercion of data elements"
	case s == StatusElementsDiscarded:
		return "elements discarded"
	case s == StatusDataSetMismatchWarning:
		return "dataset does not match SOP class"
	}
	return "unknown status"
}
