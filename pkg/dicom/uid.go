// Package dicom holds what the DICOM networking packages share: well-known
// UIDs, transfer syntax facts and Part-10 file meta information. The upper
// layer lives in pdu, the message layer in dimse and associations in assoc.
package dicom

import "strings"

// Implementation identity announced in A-ASSOCIATE items and written into the
// file meta of received instances. The class UID is a fixed 2.25 UUID-derived
// UID (PS3.5 B.2); it only changes if the wire behaviour changes in a way
// peers might need to tell apart.
const (
	ImplementationClassUID    = "2.25.269853391721028249058333621053870855181"
	ImplementationVersionName = "MEDPLUM_AGENT_1"
)

// ApplicationContextName is the only DICOM application context (PS3.7 A.2.1).
const ApplicationContextName = "1.2.840.10008.3.1.1.1"

// SOP classes used by the listener and the command-line tools.
const (
	VerificationSOPClass         = "1.2.840.10008.1.1"
	SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"

	PatientRootQueryRetrieveFind = "1.2.840.10008.5.1.4.1.2.1.1"
	PatientRootQueryRetrieveMove = "1.2.840.10008.5.1.4.1.2.1.2"
	PatientRootQueryRetrieveGet  = "1.2.840.10008.5.1.4.1.2.1.3"
	StudyRootQueryRetrieveFind   = "1.2.840.10008.5.1.4.1.2.2.1"
	StudyRootQueryRetrieveMove   = "1.2.840.10008.5.1.4.1.2.2.2"
	StudyRootQueryRetrieveGet    = "1.2.840.10008.5.1.4.1.2.2.3"
	ModalityWorklistFind         = "1.2.840.10008.5.1.4.31"
)

// Transfer syntaxes.
const (
	ImplicitVRLittleEndian         = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian         = "1.2.840.10008.1.2.1"
	EncapsulatedUncompressedELE    = "1.2.840.10008.1.2.1.98"
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian            = "1.2.840.10008.1.2.2"
	JPEGBaseline8Bit               = "1.2.840.10008.1.2.4.50"
	JPEGExtended12Bit              = "1.2.840.10008.1.2.4.51"
	JPEGLossless                   = "1.2.840.10008.1.2.4.57"
	JPEGLosslessSV1                = "1.2.840.10008.1.2.4.70"
	JPEGLSLossless                 = "1.2.840.10008.1.2.4.80"
	JPEGLSNearLossless             = "1.2.840.10008.1.2.4.81"
	JPEG2000Lossless               = "1.2.840.10008.1.2.4.90"
	JPEG2000                       = "1.2.840.10008.1.2.4.91"
	JPEG2000MCLossless             = "1.2.840.10008.1.2.4.92"
	JPEG2000MC                     = "1.2.840.10008.1.2.4.93"
	MPEG2MPML                      = "1.2.840.10008.1.2.4.100"
	MPEG2MPHL                      = "1.2.840.10008.1.2.4.101"
	MPEG4HP41                      = "1.2.840.10008.1.2.4.102"
	MPEG4HP41BD                    = "1.2.840.10008.1.2.4.103"
	HEVCMP51                       = "1.2.840.10008.1.2.4.107"
	HTJ2KLossless                  = "1.2.840.10008.1.2.4.201"
	HTJ2KLosslessRPCL              = "1.2.840.10008.1.2.4.202"
	HTJ2K                          = "1.2.840.10008.1.2.4.203"
	RLELossless                    = "1.2.840.10008.1.2.5"
)

type tsInfo struct {
	uid, name  string
	compressed bool
}

// transferSyntaxes is in the listener's default preference order: explicit
// before implicit (keeps VRs), deflate before big endian (big endian is
// retired), then encapsulated syntaxes, which are stored exactly as received.
var transferSyntaxes = []tsInfo{
	{ExplicitVRLittleEndian, "Explicit VR Little Endian", false},
	{ImplicitVRLittleEndian, "Implicit VR Little Endian", false},
	{DeflatedExplicitVRLittleEndian, "Deflated Explicit VR Little Endian", false},
	{ExplicitVRBigEndian, "Explicit VR Big Endian", false},
	{JPEGBaseline8Bit, "JPEG Baseline (Process 1)", true},
	{JPEGExtended12Bit, "JPEG Extended (Process 2 & 4)", true},
	{JPEGLossless, "JPEG Lossless, Non-Hierarchical (Process 14)", true},
	{JPEGLosslessSV1, "JPEG Lossless, First-Order Prediction (Process 14 SV1)", true},
	{JPEGLSLossless, "JPEG-LS Lossless", true},
	{JPEGLSNearLossless, "JPEG-LS Near-Lossless", true},
	{JPEG2000Lossless, "JPEG 2000 (Lossless Only)", true},
	{JPEG2000, "JPEG 2000", true},
	{JPEG2000MCLossless, "JPEG 2000 Part 2 Multi-component (Lossless Only)", true},
	{JPEG2000MC, "JPEG 2000 Part 2 Multi-component", true},
	{HTJ2KLossless, "High-Throughput JPEG 2000 (Lossless Only)", true},
	{HTJ2KLosslessRPCL, "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)", true},
	{HTJ2K, "High-Throughput JPEG 2000", true},
	{RLELossless, "RLE Lossless", true},
	{EncapsulatedUncompressedELE, "Encapsulated Uncompressed Explicit VR Little Endian", true},
	{MPEG2MPML, "MPEG2 Main Profile / Main Level", true},
	{MPEG2MPHL, "MPEG2 Main Profile / High Level", true},
	{MPEG4HP41, "MPEG-4 AVC/H.264 High Profile / Level 4.1", true},
	{MPEG4HP41BD, "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", true},
	{HEVCMP51, "HEVC/H.265 Main Profile / Level 5.1", true},
}

// DefaultTransferSyntaxes returns the transfer syntaxes a listener accepts by
// default, most preferred first: the uncompressed ones, deflate, then the
// encapsulated (compressed) ones, which pass through unchanged.
func DefaultTransferSyntaxes() []string {
	out := make([]string, len(transferSyntaxes))
	for i, ts := range transferSyntaxes {
		out[i] = ts.uid
	}
	return out
}

// UncompressedTransferSyntaxes returns the native-encoding syntaxes in
// preference order (deflate counts as uncompressed: pixel data stays native).
func UncompressedTransferSyntaxes() []string {
	var out []string
	for _, ts := range transferSyntaxes {
		if !ts.compressed {
			out = append(out, ts.uid)
		}
	}
	return out
}

// CompressedTransferSyntaxes returns the known encapsulated syntaxes.
func CompressedTransferSyntaxes() []string {
	var out []string
	for _, ts := range transferSyntaxes {
		if ts.compressed {
			out = append(out, ts.uid)
		}
	}
	return out
}

// TransferSyntaxName returns the standard name of a known transfer syntax, or
// the UID itself.
func TransferSyntaxName(uid string) string {
	for _, ts := range transferSyntaxes {
		if ts.uid == uid {
			return ts.name
		}
	}
	return uid
}

// storageRoot is the UID root under which PS3.4 Annex B defines almost all
// storage SOP classes; storageOthers are the few defined elsewhere.
const storageRoot = "1.2.840.10008.5.1.4.1.1."

var storageOthers = map[string]bool{
	"1.2.840.10008.5.1.4.34.7":  true, // RT beams delivery instruction
	"1.2.840.10008.5.1.4.34.10": true, // RT brachy application setup delivery instruction
	"1.2.840.10008.5.1.4.38.1":  true, // hanging protocol
	"1.2.840.10008.5.1.4.39.1":  true, // color palette
	"1.2.840.10008.5.1.4.43.1":  true, // generic implant template
	"1.2.840.10008.5.1.4.44.1":  true, // implant assembly template
	"1.2.840.10008.5.1.4.45.1":  true, // implant template group
}

// IsStorageSOPClass reports whether uid is a standard storage SOP class, i.e.
// one a C-STORE SCP should accept.
func IsStorageSOPClass(uid string) bool {
	return strings.HasPrefix(uid, storageRoot) && len(uid) > len(storageRoot) || storageOthers[uid]
}

// ValidUID reports whether s is a syntactically valid UID (PS3.5 9.1): at
// most 64 characters, dot-separated numeric components without leading
// zeros. Used before a UID ends up in a file name or header.
func ValidUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for comp := range strings.SplitSeq(s, ".") {
		if comp == "" || len(comp) > 1 && comp[0] == '0' {
			return false
		}
		for i := 0; i < len(comp); i++ {
			if comp[i] < '0' || comp[i] > '9' {
				return false
			}
		}
	}
	return true
}

// ValidAETitle reports whether s is usable as an AE title: 1 to 16
// characters of the default repertoire, no backslash or control characters,
// not only spaces.
func ValidAETitle(s string) bool {
	if len(s) > 16 || strings.TrimSpace(s) == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}
