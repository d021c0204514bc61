package agent

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// streamSummary renders parsed parameters for comparison.
func streamSummary(p *byteStreamParams) string {
	if p.astm {
		o := p.receiver
		return fmt.Sprintf("astm hex=%t ignore=%t silentEOT=%t strict=%t idle=%s frame=%d session=%d",
			p.hexBody, p.ignoreResponse, o.SilentEOT, o.StrictFrameNumbers, o.IdleTimeout, o.MaxFrame, o.MaxSession)
	}
	s := fmt.Sprintf("raw hex=%t ignore=%t start=%02x end=%02x", p.hexBody, p.ignoreResponse, p.startChar, p.endChar)
	for _, a := range p.autoRespond {
		s += fmt.Sprintf(" respond=%x:%x", a.pattern, a.response)
	}
	for _, b := range p.strip {
		s += fmt.Sprintf(" strip=%x", b)
	}
	if p.stripControl {
		s += " stripControl"
	}
	for b, k := range p.keep {
		if k {
			s += fmt.Sprintf(" keep=%02x", b)
		}
	}
	if p.maxMessage != defaultMaxMessage {
		s += fmt.Sprintf(" max=%d", p.maxMessage)
	}
	return s
}

func issueTexts(issues []issue) []string {
	var out []string
	for _, is := range issues {
		out = append(out, []string{"notice", "warning", "error"}[is.severity]+": "+is.text)
	}
	return out
}

func TestParseByteStreamParams(t *testing.T) {
	const frame = "startChar=%02&endChar=%03"
	const raw = "raw hex=true ignore=false start=02 end=03"
	const astmDefaults = "astm hex=false ignore=false silentEOT=false strict=false idle=30s frame=65536 session=8388608"
	tests := []struct {
		query  string
		want   string
		issues []string
	}{
		{query: frame, want: raw},
		{query: "", want: "raw hex=true ignore=false start=00 end=00",
			issues: []string{"error: Failed to parse startChar and/or endChar query param(s)"}},
		{query: "startChar=%02", want: "raw hex=true ignore=false start=02 end=00",
			issues: []string{"error: Failed to parse startChar and/or endChar query param(s)"}},
		{query: "startChar=%E2%82%AC&endChar=%03", want: "raw hex=true ignore=false start=00 end=03",
			issues: []string{"error: Failed to parse startChar and/or endChar query param(s)"}},
		// The first character counts; U+00E9 is the byte 0xE9.
		{query: "startChar=%C3%A9x&endChar=ab", want: "raw hex=true ignore=false start=e9 end=61"},
		{query: frame + "&bodyEncoding=UTF-8&ignoreResponse=TRUE", want: "raw hex=false ignore=true start=02 end=03"},
		{query: frame + "&bodyEncoding=utf8", want: "raw hex=false ignore=false start=02 end=03"},
		{query: frame + "&bodyEncoding=base64", want: raw,
			issues: []string{"warning: Invalid bodyEncoding 'base64'; expected 'hex' or 'utf-8'. Using hex."}},
		{query: frame + "&mode=serial", want: raw,
			issues: []string{"warning: Invalid mode 'serial'; expected 'raw' or 'astm'. Using raw."}},
		{query: frame + "&mode=RAW", want: raw},
		{query: frame + "&autoRespond=%05:%06,%03:%06&autoRespond=%17:%06",
			want: raw + " respond=05:06 respond=03:06 respond=17:06"},
		// Longest pattern first; the first of duplicate patterns wins.
		{query: frame + "&autoRespond=%03:%06,%0D%03:%15,%03:%15",
			want:   raw + " respond=0d03:15 respond=03:06",
			issues: []string{`warning: Duplicate autoRespond pattern "\x03"; keeping the first response.`}},
		{query: frame + "&autoRespond=%05,%05:,:%06,%05:%06:%07,%E2%82%AC:%06,,A:B",
			want: raw + " respond=41:42",
			issues: []string{
				`warning: Invalid autoRespond entry "\x05"; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid autoRespond entry "\x05:"; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid autoRespond entry ":\x06"; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid autoRespond entry "\x05:\x06:\a"; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid autoRespond entry "€:\x06"; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid autoRespond entry ""; expected PATTERN:RESPONSE, each one or more characters up to U+00FF. Ignoring it.`,
			}},
		{query: frame + "&stripSequence=AB,ABC&stripSequence=%1E,,%FF",
			want: raw + " strip=414243 strip=4142 strip=1e",
			issues: []string{
				`warning: Invalid stripSequence entry ""; expected one or more characters up to U+00FF. Ignoring it.`,
				`warning: Invalid stripSequence entry "\xff"; expected one or more characters up to U+00FF. Ignoring it.`,
			}},
		{query: frame + "&stripControlChars=true&keepControlChars=%0D%0A", want: raw + " stripControl keep=0a keep=0d"},
		{query: frame + "&keepControlChars=%0D", want: raw + " keep=0d",
			issues: []string{"warning: keepControlChars has no effect without stripControlChars=true."}},
		{query: frame + "&maxMessageBytes=10", want: raw + " max=10"},
		{query: frame + "&maxMessageBytes=0", want: raw,
			issues: []string{"warning: Invalid maxMessageBytes '0'; expected a number of bytes from 1 to 67108864. Using 1048576."}},
		{query: frame + "&ackEot=false&idleTimeout=5", want: raw,
			issues: []string{"warning: ackEot applies to mode=astm only; ignoring it.", "warning: idleTimeout applies to mode=astm only; ignoring it."}},

		{query: "mode=astm", want: astmDefaults},
		{query: "mode=ASTM&bodyEncoding=hex&ignoreResponse=true", want: strings.Replace(strings.Replace(astmDefaults, "hex=false", "hex=true", 1), "ignore=false", "ignore=true", 1)},
		{query: "mode=astm&bodyEncoding=latin1", want: astmDefaults,
			issues: []string{"warning: Invalid bodyEncoding 'latin1'; expected 'hex' or 'utf-8'. Using utf-8."}},
		{query: "mode=astm&ackEot=FALSE&strictFrameNumbers=true&idleTimeout=300ms&maxFrameBytes=32&maxSessionBytes=16",
			want: "astm hex=false ignore=false silentEOT=true strict=true idle=300ms frame=32 session=16"},
		{query: "mode=astm&idleTimeout=45", want: strings.Replace(astmDefaults, "idle=30s", "idle=45s", 1)},
		{query: "mode=astm&idleTimeout=0", want: strings.Replace(astmDefaults, "idle=30s", "idle=-1ns", 1)},
		{query: "mode=astm&ackEot=maybe&idleTimeout=-1s&maxFrameBytes=8&maxSessionBytes=99999999999",
			want: astmDefaults,
			issues: []string{
				"warning: Invalid ackEot 'maybe'; expected true or false. Using true.",
				"warning: Invalid idleTimeout '-1s'; expected a duration such as 30s or 500ms, or whole seconds. Using 30s.",
				"warning: Invalid maxFrameBytes '8'; expected a number of bytes from 16 to 67108864. Using 65536.",
				"warning: Invalid maxSessionBytes '99999999999'; expected a number of bytes from 1 to 67108864. Using 8388608.",
			}},
		{query: "mode=astm&idleTimeout=99999999999", want: astmDefaults,
			issues: []string{"warning: Invalid idleTimeout '99999999999'; expected a duration such as 30s or 500ms, or whole seconds. Using 30s."}},
		{query: "mode=astm&" + frame + "&autoRespond=%05:%06&stripControlChars=true", want: astmDefaults,
			issues: []string{
				"warning: startChar is ignored in astm mode.",
				"warning: endChar is ignored in astm mode.",
				"warning: autoRespond is ignored in astm mode.",
				"warning: stripControlChars is ignored in astm mode.",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			p, issues := parseStreamParams(q)
			if got := streamSummary(p); got != tt.want {
				t.Errorf("params\n got %s\nwant %s", got, tt.want)
			}
			if diff := cmp.Diff(tt.issues, issueTexts(issues)); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

// Issues carry the channel's label, and a missing framing character stops
// the channel from being configured.
func TestValidateByteStreamChannel(t *testing.T) {
	tests := []struct {
		address string
		ok      bool
		issues  []string
	}{
		{address: "tcp://0.0.0.0:5000?startChar=%02&endChar=%03", ok: true},
		{address: "tcp://0.0.0.0:5000", issues: []string{"error: [Byte Stream:bs] Failed to parse startChar and/or endChar query param(s)"}},
		{address: "tcp://0.0.0.0:5000?mode=astm&stripSequence=x", ok: true, issues: []string{"warning: [Byte Stream:bs] stripSequence is ignored in astm mode."}},
		{address: "tcp://0.0.0.0:70000?mode=astm", issues: []string{"error: Invalid port '70000' in endpoint address for channel 'bs'; expected an integer from 1 to 65535"}},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			spec, issues := validateChannel("bs", tt.address)
			if (spec != nil) != tt.ok {
				t.Errorf("spec = %v, want ok=%t", spec, tt.ok)
			}
			if spec != nil && spec.kind != byteStreamKind {
				t.Errorf("kind = %s, want the byte stream", spec.kind.label)
			}
			if diff := cmp.Diff(tt.issues, issueTexts(issues)); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSerialParams(t *testing.T) {
	tests := []struct {
		query  string
		line   string // the line settings as a URL, device left out
		stream string
		issues []string
	}{
		{query: "mode=astm", line: "serial:?baud=9600&dataBits=8&parity=none&stopBits=1",
			stream: "astm hex=false ignore=false silentEOT=false strict=false idle=30s frame=65536 session=8388608"},
		{query: "baudRate=19200&parity=EVEN&dataBits=7&stopBits=2&startChar=%02&endChar=%03",
			line: "serial:?baud=19200&dataBits=7&parity=even&stopBits=2", stream: "raw hex=true ignore=false start=02 end=03"},
		{query: "baud=fast&mode=astm", issues: []string{`error: serialport: invalid baud "fast": want a whole number from 50 to 4000000`}},
		{query: "baud=9600&baudRate=9600&mode=astm", issues: []string{`error: serialport: baud is given more than once in "serial:device?baud=9600&baudRate=9600&mode=astm"`}},
		{query: "baud=9600", line: "serial:?baud=9600&dataBits=8&parity=none&stopBits=1", stream: "raw hex=true ignore=false start=00 end=00",
			issues: []string{"error: Failed to parse startChar and/or endChar query param(s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			v, issues := parseSerialParams(q)
			if diff := cmp.Diff(tt.issues, issueTexts(issues)); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
			if tt.line == "" {
				return
			}
			p := v.(*serialParams)
			if got := p.line.String(); got != tt.line {
				t.Errorf("line settings %s, want %s", got, tt.line)
			}
			if got := streamSummary(p.stream); got != tt.stream {
				t.Errorf("stream params\n got %s\nwant %s", got, tt.stream)
			}
		})
	}
}

// feedRaw runs a raw framer over chunks and returns what it did, in wire
// order: "respond HEX" and "message HEX".
func feedRaw(p *byteStreamParams, chunks []string) (events []string, ignored, oversized int) {
	var f rawFramer
	for _, c := range chunks {
		for _, b := range []byte(c) {
			resp, msg := f.step(p, b)
			if resp != nil {
				events = append(events, fmt.Sprintf("respond %x", resp))
			}
			if msg != nil {
				events = append(events, fmt.Sprintf("message %x", msg))
			}
		}
	}
	return events, f.ignored, f.oversized
}

func mustStreamParams(t testing.TB, query string) *byteStreamParams {
	t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	p, issues := parseStreamParams(q)
	for _, is := range issues {
		if is.severity == isError {
			t.Fatalf("%s: %s", query, is.text)
		}
	}
	return p
}

func hexText(s string) string { return fmt.Sprintf("%x", s) }

func TestRawFraming(t *testing.T) {
	const frame = "startChar=%02&endChar=%03"
	const recipe = "startChar=%05&endChar=%04&autoRespond=%05:%06,%03:%06,%17:%06"
	tests := []struct {
		name      string
		query     string
		chunks    []string
		want      []string
		ignored   int
		oversized int
	}{
		{name: "scenario 46", query: frame, chunks: []string{"\x02HELLO\x03"}, want: []string{"message 0248454c4c4f03"}},
		{name: "scenario 47 split", query: frame, chunks: []string{"\x02HE", "LL", "O", "\x03"}, want: []string{"message 0248454c4c4f03"}},
		{name: "several per chunk", query: frame, chunks: []string{"\x02A\x03\x02B\x03\x02C"}, want: []string{"message 024103", "message 024203"}},
		// The framing decision (see rawFramer): bytes between an endChar and
		// the next startChar never join a message, in the same chunk or not.
		{name: "stray bytes in the same chunk are not included", query: frame,
			chunks: []string{"xx\x02AB\x03yy\x02CD\x03zz"}, want: []string{"message 02414203", "message 02434403"}, ignored: 6},
		{name: "stray bytes then a lone endChar emit nothing", query: frame,
			chunks: []string{"noise", "\x03"}, ignored: 6},
		{name: "endChar without a message is ignored", query: frame,
			chunks: []string{"\x03\x02A\x03"}, want: []string{"message 024103"}, ignored: 1},
		{name: "startChar restarts the message", query: frame,
			chunks: []string{"\x02AB", "\x02CD\x03"}, want: []string{"message 02434403"}, ignored: 3},
		{name: "equal start and end characters pair up", query: "startChar=~&endChar=~",
			chunks: []string{"~ab~~cd~"}, want: []string{"message 7e61627e", "message 7e63647e"}},
		{name: "message size limit", query: frame + "&maxMessageBytes=4",
			chunks: []string{"\x02AB\x03", "\x02ABC\x03", "\x02ABCDEF\x03", "\x02A\x03"},
			want:   []string{"message 02414203", "message 024103"}, oversized: 2, ignored: 3},
		{name: "scenario 48 every ENQ answered", query: frame + "&autoRespond=%05:%06",
			chunks: []string{"\x05", "\x05\x02A\x05B\x03"},
			want:   []string{"respond 06", "respond 06", "respond 06", "message 0241054203"}, ignored: 2},
		{name: "scenario 48 pattern split across chunks", query: frame + "&autoRespond=AB:%15",
			chunks: []string{"xA", "Bx", "A", "", "B"}, want: []string{"respond 15", "respond 15"}, ignored: 6},
		{name: "window resets on startChar", query: frame + "&autoRespond=A%02B:%15",
			chunks: []string{"A\x02B\x03"}, want: []string{"message 024203"}, ignored: 1},
		{name: "a match clears the window", query: frame + "&autoRespond=%05%05:%06",
			chunks: []string{"\x05\x05\x05", "\x05"}, want: []string{"respond 06", "respond 06"}, ignored: 4},
		{name: "the longest pattern answers", query: frame + "&autoRespond=%03:%06,%0D%03:%15",
			chunks: []string{"\x02a\r\x03\x02b\x03"},
			want:   []string{"respond 15", "message 02610d03", "respond 06", "message 026203"}},
		{name: "ASTM recipe", query: recipe,
			chunks: []string{"\x05", "\x021H|\\^&\r\x03AB\r\n", "\x022L|1\r\x17CD\r\n", "\x04"},
			want: []string{"respond 06", "respond 06", "respond 06",
				"message " + hexText("\x05\x021H|\\^&\r\x03AB\r\n\x022L|1\r\x17CD\r\n\x04")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustStreamParams(t, tt.query)
			got, ignored, oversized := feedRaw(p, tt.chunks)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if ignored != tt.ignored || oversized != tt.oversized {
				t.Errorf("ignored %d, oversized %d; want %d, %d", ignored, oversized, tt.ignored, tt.oversized)
			}
			// The same bytes in one chunk give the same result.
			if whole, _, _ := feedRaw(p, []string{strings.Join(tt.chunks, "")}); !cmp.Equal(got, whole) {
				t.Errorf("chunking changed the result: %v vs %v", got, whole)
			}
		})
	}
}

func TestRawMessageBody(t *testing.T) {
	tests := []struct {
		query, msg, want string
	}{
		{"", "\x02HELLO\x03", "0248454c4c4f03"},
		{"bodyEncoding=utf-8", "\x02caf\xc3\xa9\x03", "\x02café\x03"},
		{"bodyEncoding=utf-8", "\x02caf\xe9\x03", "\x02caf\uFFFD\x03"},
		// Scenario 49.
		{"stripControlChars=true&keepControlChars=%0D%0A&bodyEncoding=utf-8", "\x02LINE1\r\nLINE2\x01\x7f\x03", "LINE1\r\nLINE2\x7f"},
		{"stripControlChars=true&bodyEncoding=utf-8", "\x02A\r\nB\x03", "AB"},
		{"stripSequence=AB,ABC&bodyEncoding=utf-8", "\x02xABCyABzAAB\x03", "\x02xyzA\x03"},
		// Sequences go first, then control characters.
		{"stripSequence=%02%31,%03&stripControlChars=true&bodyEncoding=utf-8", "\x021H|1\r\x03", "H|1"},
		{"stripControlChars=true", "\x02\x03", ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			p := mustStreamParams(t, "startChar=%02&endChar=%03&"+tt.query)
			if got := p.encodeBody(p.clean([]byte(tt.msg))); got != tt.want {
				t.Errorf("body %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		query, body string
		want        []byte
		err         error
	}{
		{"", "06", []byte{6}, nil},
		{"", "0D0a", []byte{'\r', '\n'}, nil},
		{"", "0G", nil, errInvalidHex},
		{"", "060", nil, errInvalidHex},
		{"bodyEncoding=utf-8", "06", []byte("06"), nil},
		{"bodyEncoding=utf-8", "é", []byte{0xc3, 0xa9}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.query+" "+tt.body, func(t *testing.T) {
			p := mustStreamParams(t, "startChar=%02&endChar=%03&"+tt.query)
			got, err := p.decodeResponse(tt.body)
			if err != tt.err || string(got) != string(tt.want) {
				t.Errorf("decodeResponse = %x, %v; want %x, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// FuzzRawFraming checks that any stream under any framing parameters gives
// messages that run from startChar to endChar within the size limit, the
// same in one chunk as byte by byte.
func FuzzRawFraming(f *testing.F) {
	f.Add("startChar=%02&endChar=%03&autoRespond=%05:%06&maxMessageBytes=8", []byte("x\x02AB\x03\x05\x02\x02C"))
	f.Add("startChar=~&endChar=~&autoRespond=AB:C,B:D", []byte("~AB~~"))
	f.Fuzz(func(t *testing.T, query string, stream []byte) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		p, issues := parseStreamParams(q)
		for _, is := range issues {
			if is.severity == isError {
				return
			}
		}
		if p.astm {
			return
		}
		var bytewise []string
		for _, b := range stream {
			bytewise = append(bytewise, string([]byte{b}))
		}
		got, _, _ := feedRaw(p, bytewise)
		whole, _, _ := feedRaw(p, []string{string(stream)})
		if !cmp.Equal(got, whole) {
			t.Fatalf("chunking changed the result: %v vs %v", got, whole)
		}
		var f rawFramer
		for _, b := range stream {
			if _, msg := f.step(p, b); msg != nil {
				if len(msg) < 2 || msg[0] != p.startChar || msg[len(msg)-1] != p.endChar || len(msg) > p.maxMessage {
					t.Fatalf("message %x with start %02x, end %02x, limit %d", msg, p.startChar, p.endChar, p.maxMessage)
				}
				_ = p.encodeBody(p.clean(msg))
			}
		}
	})
}
