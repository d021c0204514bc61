package agent

import (
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
)

// byteStreamKind is tcp://HOST:PORT?PARAMS, the reference's byte-stream
// channel (§3.3). Its parameters, also those of serial:// channels:
//
//	mode               raw (default) or astm
//	bodyEncoding       hex (default in raw mode) or utf-8 (default in astm mode)
//	ignoreResponse     true: server responses are not written to the device
//
// Raw mode (every byte sequence is percent-encoded, one character ≤ U+00FF
// per byte; ',' and ':' separate list entries):
//
//	startChar, endChar  framing bytes, both required; a message runs from
//	                    startChar to endChar inclusive, bytes outside one
//	                    are ignored (see rawFramer for the reference's quirk)
//	autoRespond         PATTERN:RESPONSE, repeatable or comma-separated:
//	                    RESPONSE is written as soon as PATTERN is seen
//	stripSequence       SEQ, repeatable or comma-separated: removed from
//	                    each message, longest first
//	stripControlChars   true: bytes below 0x20 are removed from each message
//	keepControlChars    bytes exempt from stripControlChars
//	maxMessageBytes     longest message kept (default 1 MiB); a longer one
//	                    is discarded (our extension)
//
// ASTM mode (E1381 receiver; our extensions, reference defaults):
//
//	ackEot              true (default, as the reference) or false (E1381:
//	                    EOT is not answered)
//	idleTimeout         receiver timer: an open session with no byte for
//	                    this long is discarded (default 30s; Go duration or
//	                    whole seconds; 0 turns it off)
//	maxFrameBytes       longest frame accepted, else NAK (default 64 KiB)
//	maxSessionBytes     body size above which a session is delivered early
//	                    (default 8 MiB)
//	strictFrameNumbers  true: NAK frames numbered out of sequence
//
// A message that is empty after stripping is not sent. A server response
// is decoded per bodyEncoding and written to the device as is; an empty
// one writes nothing.
var byteStreamKind = &channelKind{scheme: "tcp", label: "Byte Stream", parse: parseByteStreamParams, open: openByteStream}

// Size limits of the byte-stream parameters.
const (
	defaultMaxMessage = 1 << 20
	// maxSizeParam bounds every size parameter: one device connection may
	// hold this much (and its hex form) in memory.
	maxSizeParam = 64 << 20
	// minFrameParam leaves room for a frame number and a record type.
	minFrameParam = 16
)

// Parameters that belong to one mode only; the other mode ignores them
// with a warning.
var (
	rawOnlyParams  = []string{"startChar", "endChar", "autoRespond", "stripSequence", "stripControlChars", "keepControlChars", "maxMessageBytes"}
	astmOnlyParams = []string{"ackEot", "idleTimeout", "maxFrameBytes", "maxSessionBytes", "strictFrameNumbers"}
)

// byteStreamParams are the URL parameters of a tcp:// or serial:// address.
type byteStreamParams struct {
	astm           bool
	hexBody        bool // bodyEncoding=hex, for messages and responses
	ignoreResponse bool

	// Raw mode.
	startChar, endChar byte
	autoRespond        []autoResponse // longest pattern first
	window             int            // longest autoRespond pattern
	strip              [][]byte       // longest first
	stripControl       bool
	keep               [0x20]bool // control bytes kept by stripControl
	maxMessage         int

	// ASTM mode; OnWarning is set per connection.
	receiver astm.ReceiverOptions
}

type autoResponse struct {
	pattern, response []byte
}

func parseByteStreamParams(q url.Values) (any, []issue) { return parseStreamParams(q) }

func parseStreamParams(q url.Values) (*byteStreamParams, []issue) {
	p := &byteStreamParams{maxMessage: defaultMaxMessage}
	var issues []issue
	switch v := q.Get("mode"); strings.ToLower(v) {
	case "", "raw":
	case "astm":
		p.astm = true
	default:
		issues = append(issues, warning("Invalid mode '%s'; expected 'raw' or 'astm'. Using raw.", v))
	}
	p.hexBody = !p.astm
	switch v := q.Get("bodyEncoding"); strings.ToLower(v) {
	case "":
	case "hex":
		p.hexBody = true
	case "utf-8", "utf8":
		p.hexBody = false
	default:
		def := "hex"
		if p.astm {
			def = "utf-8"
		}
		issues = append(issues, warning("Invalid bodyEncoding '%s'; expected 'hex' or 'utf-8'. Using %s.", v, def))
	}
	p.ignoreResponse = strings.EqualFold(q.Get("ignoreResponse"), "true")
	if p.astm {
		return p, append(issues, p.parseASTM(q)...)
	}
	return p, append(issues, p.parseRaw(q)...)
}

func (p *byteStreamParams) parseRaw(q url.Values) []issue {
	var issues []issue
	for _, name := range astmOnlyParams {
		if q.Has(name) {
			issues = append(issues, warning("%s applies to mode=astm only; ignoring it.", name))
		}
	}
	var okStart, okEnd bool
	p.startChar, okStart = firstByte(q.Get("startChar"))
	p.endChar, okEnd = firstByte(q.Get("endChar"))
	if !okStart || !okEnd {
		issues = append(issues, problem("Failed to parse startChar and/or endChar query param(s)"))
	}

	seen := map[string]bool{}
	for _, entry := range listEntries(q["autoRespond"]) {
		pat, resp, ok := strings.Cut(entry, ":")
		pb, okPat := byteSeq(pat)
		rb, okResp := byteSeq(resp)
		switch {
		case !ok || !okPat || !okResp || strings.Contains(resp, ":"):
			issues = append(issues, warning("Invalid autoRespond entry %q; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.", entry))
		case seen[pat]:
			issues = append(issues, warning("Duplicate autoRespond pattern %q; keeping the first response.", pat))
		default:
			seen[pat] = true
			p.autoRespond = append(p.autoRespond, autoResponse{pattern: pb, response: rb})
			p.window = max(p.window, len(pb))
		}
	}
	// Longest first: where one pattern ends another, the more specific
	// one answers.
	slices.SortStableFunc(p.autoRespond, func(a, b autoResponse) int { return len(b.pattern) - len(a.pattern) })

	for _, entry := range listEntries(q["stripSequence"]) {
		if b, ok := byteSeq(entry); ok {
			p.strip = append(p.strip, b)
		} else {
			issues = append(issues, warning("Invalid stripSequence entry %q; expected one or more characters up to U+00FF. Ignoring it.", entry))
		}
	}
	slices.SortStableFunc(p.strip, func(a, b []byte) int { return len(b) - len(a) })

	p.stripControl = strings.EqualFold(q.Get("stripControlChars"), "true")
	if q.Has("keepControlChars") {
		keep, ok := byteSeq(q.Get("keepControlChars"))
		if !ok {
			issues = append(issues, warning("Invalid keepControlChars %q; expected characters up to U+00FF. Ignoring it.", q.Get("keepControlChars")))
		}
		for _, b := range keep {
			if int(b) < len(p.keep) {
				p.keep[b] = true
			}
		}
		if !p.stripControl {
			issues = append(issues, warning("keepControlChars has no effect without stripControlChars=true."))
		}
	}
	if is := sizeParam(q, "maxMessageBytes", 1, &p.maxMessage); is != nil {
		issues = append(issues, *is)
	}
	return issues
}

func (p *byteStreamParams) parseASTM(q url.Values) []issue {
	var issues []issue
	for _, name := range rawOnlyParams {
		if q.Has(name) {
			issues = append(issues, warning("%s is ignored in astm mode.", name))
		}
	}
	ackEOT, strict := true, false
	add := func(is *issue) {
		if is != nil {
			issues = append(issues, *is)
		}
	}
	add(boolParam(q, "ackEot", &ackEOT))
	add(boolParam(q, "strictFrameNumbers", &strict))
	idle := astm.DefaultIdleTimeout
	add(durationParam(q, "idleTimeout", &idle))
	frame, session := astm.DefaultMaxFrame, astm.DefaultMaxSession
	add(sizeParam(q, "maxFrameBytes", minFrameParam, &frame))
	add(sizeParam(q, "maxSessionBytes", 1, &session))
	if idle == 0 {
		idle = -1 // the receiver's "never"
	}
	p.receiver = astm.ReceiverOptions{
		SilentEOT:          !ackEOT,
		StrictFrameNumbers: strict,
		IdleTimeout:        idle,
		MaxFrame:           frame,
		MaxSession:         session,
	}
	return issues
}

// firstByte is the first character of a decoded parameter value, which
// must be at most U+00FF.
func firstByte(v string) (byte, bool) {
	r, _ := utf8.DecodeRuneInString(v)
	if v == "" || r > 0xFF {
		return 0, false
	}
	return byte(r), true
}

// byteSeq turns a decoded parameter value into bytes, one per character;
// every character must be at most U+00FF (so 0xE9 is written %C3%A9).
func byteSeq(v string) ([]byte, bool) {
	if v == "" {
		return nil, false
	}
	b := make([]byte, 0, len(v))
	for _, r := range v { // invalid UTF-8 decodes as U+FFFD and fails here
		if r > 0xFF {
			return nil, false
		}
		b = append(b, byte(r))
	}
	return b, true
}

// listEntries splits repeated, comma-separated parameter values.
func listEntries(values []string) []string {
	var out []string
	for _, v := range values {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

func boolParam(q url.Values, name string, dst *bool) *issue {
	switch v := q.Get(name); strings.ToLower(v) {
	case "":
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		is := warning("Invalid %s '%s'; expected true or false. Using %t.", name, v, *dst)
		return &is
	}
	return nil
}

// durationParam reads a Go duration ("300ms") or whole seconds ("30").
func durationParam(q url.Values, name string, dst *time.Duration) *issue {
	v := q.Get(name)
	if v == "" {
		return nil
	}
	var d time.Duration
	n, err := strconv.Atoi(v)
	if err == nil && int64(n) > math.MaxInt64/int64(time.Second) {
		err = strconv.ErrRange
	}
	if err == nil {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < 0 {
		is := warning("Invalid %s '%s'; expected a duration such as 30s or 500ms, or whole seconds. Using %s.", name, v, *dst)
		return &is
	}
	*dst = d
	return nil
}

// sizeParam reads a byte count from lo to maxSizeParam.
func sizeParam(q url.Values, name string, lo int, dst *int) *issue {
	v := q.Get(name)
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > maxSizeParam {
		is := warning("Invalid %s '%s'; expected a number of bytes from %d to %d. Using %d.", name, v, lo, maxSizeParam, *dst)
		return &is
	}
	*dst = n
	return nil
}
