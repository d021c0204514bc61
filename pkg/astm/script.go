package astm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// StepKind is the kind of one script step.
type StepKind int

const (
	StepWrite        StepKind = iota // "> BYTES": the peer writes Data
	StepRead                         // "< BYTES": the peer must read exactly Data next
	StepReadOptional                 // "<? BYTES": Data, or nothing, within the quiet window
	StepQuiet                        // "< none DUR": nothing may arrive for Dur
	StepChunk                        // "! chunk N": later writes go out N bytes at a time
	StepSleep                        // "! sleep DUR"
	StepClose                        // "! close": close the connection
	StepMinGap                       // "! min-gap DUR": the next read must not complete sooner than Dur after the last write
)

// Step is one line of a script's conversation.
type Step struct {
	Line int           // 1-based line number in the script
	Kind StepKind      //
	Data []byte        // StepWrite, StepRead, StepReadOptional
	Dur  time.Duration // StepQuiet, StepSleep, StepMinGap
	N    int           // StepChunk; 0 means whole writes
}

// Script is a scripted conversation (the scenarios/*.script grammar). The
// peer is the side the script drives: with Role "listener" it plays the
// instrument against a listener under test, with Role "sender" it plays the
// LIS against a sender under test.
type Script struct {
	Role  string   // "@ role": "listener" or "sender"
	Title string   // "@ title"
	Input string   // "@ input": records file for the sender under test, relative to the script
	Flags []string // "@ flags": command-line flags for the tool under test
	Steps []Step

	// Expectations about the side under test, checked by the harness.
	Messages  []string // "= message TEXT", in order, escapes decoded
	NoMessage bool     // "= no-message"
	Exit      *int     // "= exit N"
}

// maxScriptLine bounds one script line; frames in scripts are far smaller.
const maxScriptLine = 1 << 20

// ParseScript reads a script. Lines are "# comment", "@ key value",
// "> BYTES", "< BYTES", "<? BYTES", "< none DUR", "! chunk N",
// "! sleep DUR", "! close", "! min-gap DUR", "= message TEXT",
// "= no-message" and "= exit N"; BYTES are in mnemonic notation, DUR in Go
// duration syntax (300ms, 2s) and TEXT uses the escapes \n, \r, \t and \\.
func ParseScript(r io.Reader) (*Script, error) {
	s := &Script{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxScriptLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if err := s.parseLine(n, line); err != nil {
			return nil, fmt.Errorf("astm: script line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("astm: script: %w", err)
	}
	return s, nil
}

func (s *Script) parseLine(n int, line string) error {
	op, arg, _ := strings.Cut(line, " ")
	switch op {
	case "@":
		return s.parseHeader(arg)
	case ">", "<", "<?":
		return s.parseIO(n, op, arg)
	case "!":
		return s.parseDirective(n, arg)
	case "=":
		return s.parseExpectation(arg)
	}
	return fmt.Errorf("unknown line %q", line)
}

func (s *Script) parseHeader(arg string) error {
	key, val, _ := strings.Cut(arg, " ")
	switch key {
	case "role":
		if val != "listener" && val != "sender" {
			return fmt.Errorf("role %q: want listener or sender", val)
		}
		s.Role = val
	case "title":
		s.Title = val
	case "input":
		s.Input = val
	case "flags":
		s.Flags = strings.Fields(val)
	default:
		return fmt.Errorf("unknown header %q", key)
	}
	return nil
}

func (s *Script) parseIO(n int, op, arg string) error {
	if op == "<" && strings.HasPrefix(arg, "none ") {
		d, err := parseDur(strings.TrimPrefix(arg, "none "))
		if err != nil {
			return err
		}
		s.Steps = append(s.Steps, Step{Line: n, Kind: StepQuiet, Dur: d})
		return nil
	}
	data, err := ParseMnemonic(arg)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("%q with no bytes", op)
	}
	kind := map[string]StepKind{">": StepWrite, "<": StepRead, "<?": StepReadOptional}[op]
	s.Steps = append(s.Steps, Step{Line: n, Kind: kind, Data: data})
	return nil
}

func (s *Script) parseDirective(n int, arg string) error {
	name, val, _ := strings.Cut(arg, " ")
	st := Step{Line: n}
	var err error
	switch name {
	case "chunk":
		st.Kind = StepChunk
		st.N, err = strconv.Atoi(val)
		if err == nil && st.N < 0 {
			err = fmt.Errorf("negative chunk size %d", st.N)
		}
	case "sleep":
		st.Kind = StepSleep
		st.Dur, err = parseDur(val)
	case "min-gap":
		st.Kind = StepMinGap
		st.Dur, err = parseDur(val)
	case "close":
		st.Kind = StepClose
	default:
		return fmt.Errorf("unknown directive %q", name)
	}
	if err != nil {
		return err
	}
	s.Steps = append(s.Steps, st)
	return nil
}

func (s *Script) parseExpectation(arg string) error {
	name, val, _ := strings.Cut(arg, " ")
	switch name {
	case "message":
		text, err := unescapeText(val)
		if err != nil {
			return err
		}
		s.Messages = append(s.Messages, text)
	case "no-message":
		s.NoMessage = true
	case "exit":
		code, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("exit code %q: %w", val, err)
		}
		s.Exit = &code
	default:
		return fmt.Errorf("unknown expectation %q", name)
	}
	return nil
}

func parseDur(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = fmt.Errorf("negative duration %s", s)
	}
	return d, err
}

func unescapeText(s string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			sb.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", errors.New(`dangling \ in message text`)
		}
		i++
		switch s[i] {
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case '\\':
			sb.WriteByte('\\')
		default:
			return "", fmt.Errorf(`unknown escape \%c in message text`, s[i])
		}
	}
	return sb.String(), nil
}

// PlayOptions tune Script.Play.
type PlayOptions struct {
	// ReadTimeout bounds the wait for each "<" step (default 2 s).
	ReadTimeout time.Duration
	// QuietWindow is how long a "<?" step waits for its optional bytes
	// (default 200 ms).
	QuietWindow time.Duration
	// Trace, if set, sees the bytes written ('>') and read ('<').
	Trace func(dir byte, unit []byte)
}

// ExpectError is a failed expectation of a script step.
type ExpectError struct {
	Line int
	Want []byte // expected bytes, if the step expected bytes
	Got  []byte // bytes that arrived instead
	Msg  string
}

func (e *ExpectError) Error() string {
	s := fmt.Sprintf("astm: script line %d: %s", e.Line, e.Msg)
	if e.Want != nil {
		s += fmt.Sprintf(": want %s, got %s", FormatMnemonic(e.Want), FormatMnemonic(e.Got))
	}
	return s
}

// Play runs the script's steps as the peer over c. It returns an
// *ExpectError when the other side does not behave as the script says, or
// the I/O error that stopped it. "! close" needs c to be an io.Closer.
// Expectations about messages and exit codes are left to the caller.
func (s *Script) Play(ctx context.Context, c Conn, opts PlayOptions) error {
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 2 * time.Second
	}
	if opts.QuietWindow <= 0 {
		opts.QuietWindow = 200 * time.Millisecond
	}
	p := &player{ctx: ctx, c: c, opts: opts}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for _, st := range s.Steps {
		if err := p.step(st); err != nil {
			return err
		}
	}
	return nil
}

type player struct {
	ctx       context.Context
	c         Conn
	opts      PlayOptions
	chunk     int
	pending   []byte
	lastWrite time.Time     // start of the last write
	minGap    time.Duration // pending "! min-gap"
}

func (p *player) step(st Step) error {
	switch st.Kind {
	case StepWrite:
		return p.write(st.Data)
	case StepRead:
		return p.expect(st, p.opts.ReadTimeout, false)
	case StepReadOptional:
		return p.expect(st, p.opts.QuietWindow, true)
	case StepQuiet:
		got, err := p.read(time.Now().Add(st.Dur), 1)
		if err != nil {
			return err
		}
		if len(got) > 0 {
			return &ExpectError{Line: st.Line, Got: got, Msg: fmt.Sprintf("expected nothing for %s, got %s", st.Dur, FormatMnemonic(got))}
		}
	case StepChunk:
		p.chunk = st.N
	case StepSleep:
		t := time.NewTimer(st.Dur)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
	case StepMinGap:
		p.minGap = st.Dur
	case StepClose:
		cl, ok := p.c.(io.Closer)
		if !ok {
			return fmt.Errorf("astm: script line %d: connection cannot be closed", st.Line)
		}
		return cl.Close()
	}
	return nil
}

func (p *player) write(b []byte) error {
	for len(b) > 0 {
		n := len(b)
		if p.chunk > 0 && n > p.chunk {
			n = p.chunk
		}
		if p.opts.Trace != nil {
			p.opts.Trace('>', b[:n])
		}
		p.lastWrite = time.Now()
		if err := writeWithin(p.c, b[:n], p.opts.ReadTimeout); err != nil {
			return fmt.Errorf("astm: script write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// expect reads len(st.Data) bytes within d and compares them. optional
// steps also pass when nothing at all arrives.
func (p *player) expect(st Step, d time.Duration, optional bool) error {
	got, err := p.read(time.Now().Add(d), len(st.Data))
	if err != nil {
		return err
	}
	if optional && len(got) == 0 {
		return nil
	}
	if !bytes.Equal(got, st.Data) {
		msg := "unexpected bytes"
		if len(got) < len(st.Data) {
			msg = fmt.Sprintf("nothing more within %s", d)
		}
		return &ExpectError{Line: st.Line, Want: st.Data, Got: got, Msg: msg}
	}
	if gap := time.Since(p.lastWrite); p.minGap > 0 && gap < p.minGap {
		return &ExpectError{Line: st.Line, Msg: fmt.Sprintf("arrived %s after the last write, before the minimum gap of %s", gap.Round(time.Millisecond), p.minGap)}
	}
	p.minGap = 0
	return nil
}

// read returns up to n bytes, fewer if the deadline passes first.
func (p *player) read(deadline time.Time, n int) ([]byte, error) {
	for len(p.pending) < n {
		if err := p.c.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		if err := p.ctx.Err(); err != nil {
			return nil, err
		}
		buf := make([]byte, 4096)
		k, err := p.c.Read(buf)
		if k > 0 && p.opts.Trace != nil {
			p.opts.Trace('<', buf[:k])
		}
		p.pending = append(p.pending, buf[:k]...)
		if err != nil {
			if p.ctx.Err() != nil {
				return nil, p.ctx.Err()
			}
			if isTimeout(err) || errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("astm: script read: %w", err)
		}
	}
	k := min(n, len(p.pending))
	got := p.pending[:k:k]
	p.pending = p.pending[k:]
	return got, nil
}
