package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// Summary is the outcome of a replay; its JSON form is stable.
type Summary struct {
	Target          string  `json:"target"`
	Files           int     `json:"files"`
	Repeat          int     `json:"repeat"`
	Transmissions   int     `json:"transmissions"` // ENQ…EOT transmissions attempted
	Accepted        int     `json:"accepted"`      // of which every frame was accepted
	Scripts         int     `json:"scripts"`       // scripts played to the end
	Frames          int     `json:"frames"`        // frames accepted
	NAKs            int     `json:"naks"`
	Retransmissions int     `json:"retransmissions"`
	ENQs            int     `json:"enqs"`
	Busy            int     `json:"busy"`        // ENQs answered NAK
	Contentions     int     `json:"contentions"` // ENQs answered ENQ
	Interrupts      int     `json:"interrupts"`  // transmissions where a frame was answered EOT
	BytesSent       int64   `json:"bytesSent"`
	BytesReceived   int64   `json:"bytesReceived"`
	DurationSec     float64 `json:"durationSec"`
	SessionsPerSec  float64 `json:"sessionsPerSec"` // accepted transmissions and passed scripts
	BytesPerSec     float64 `json:"bytesPerSec"`    // bytes sent
	Error           string  `json:"error,omitempty"`
}

func (s *Summary) add(res astm.Result) {
	s.Transmissions++
	s.Frames += res.Frames
	s.NAKs += res.NAKs
	s.Retransmissions += res.Retransmissions
	s.ENQs += res.ENQs
	s.Busy += res.Busy
	s.Contentions += res.Contentions
	if res.Interrupted {
		s.Interrupts++
	}
}

func (s *Summary) finish(elapsed time.Duration, err error) {
	s.DurationSec = math.Round(elapsed.Seconds()*1000) / 1000
	if sec := elapsed.Seconds(); sec > 0 {
		s.SessionsPerSec = math.Round(float64(s.Accepted+s.Scripts)/sec*10) / 10
		s.BytesPerSec = math.Round(float64(s.BytesSent) / sec)
	}
	if err != nil {
		s.Error = err.Error()
	}
}

func printSummary(opts *Options, s *Summary) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(s)
	}
	scripts := ""
	if s.Scripts > 0 {
		scripts = fmt.Sprintf("  scripts %d passed", s.Scripts)
	}
	_, err := fmt.Fprintf(opts.IO.Out,
		"target         %s\ntransmissions  %d accepted of %d%s\nframes         %d  NAKs %d  retransmissions %d\n"+
			"link           ENQs %d  busy %d  contention %d  interrupts %d\nbytes          %d sent  %d received\n"+
			"duration       %.3f s\nthroughput     %.1f sessions/s  %.0f bytes/s\n",
		s.Target, s.Accepted, s.Transmissions, scripts, s.Frames, s.NAKs, s.Retransmissions,
		s.ENQs, s.Busy, s.Contentions, s.Interrupts, s.BytesSent, s.BytesReceived,
		s.DurationSec, s.SessionsPerSec, s.BytesPerSec)
	return err
}

// tracer writes both directions as a role listener script: "> " for bytes
// sent, "< " for bytes received. A nil tracer writes nothing.
type tracer struct {
	w   io.Writer
	buf *bufio.Writer // set when writing to a file
	f   *os.File
	err error // the first write error; later writes are skipped
}

func openTrace(opts *Options) (*tracer, error) {
	var t *tracer
	switch opts.Trace {
	case "":
		return nil, nil
	case "-":
		t = &tracer{w: opts.IO.ErrOut} // unbuffered: a live view
	default:
		f, err := os.Create(opts.Trace)
		if err != nil {
			return nil, err
		}
		t = &tracer{f: f, buf: bufio.NewWriter(f)}
		t.w = t.buf
	}
	t.printf("@ role listener\n@ title astm replay to %s\n", opts.target())
	return t, nil
}

func (t *tracer) printf(format string, args ...any) {
	if t == nil || t.err != nil {
		return
	}
	_, t.err = fmt.Fprintf(t.w, format, args...)
}

func (t *tracer) unit(dir byte, b []byte) {
	if t != nil {
		t.printf("%c %s\n", dir, astm.FormatMnemonic(b))
	}
}

func (t *tracer) close() error {
	if t == nil {
		return nil
	}
	if t.buf != nil {
		if err := t.buf.Flush(); t.err == nil {
			t.err = err
		}
	}
	if t.f != nil {
		if err := t.f.Close(); t.err == nil {
			t.err = err
		}
	}
	return t.err
}

// progress draws one line on standard error when it is a terminal and the
// trace does not go there. A nil progress draws nothing.
type progress struct {
	io    *iostreams.IOStreams
	style lipgloss.Style
	total int
	start time.Time
	last  time.Time
	shown bool
}

// progressEvery limits redraws; units can arrive thousands of times a second.
const progressEvery = 100 * time.Millisecond

func newProgress(opts *Options, total int) *progress {
	if !opts.IO.IsStderrTTY() || opts.Trace == "-" {
		return nil
	}
	return &progress{io: opts.IO, style: opts.IO.ErrRenderer().NewStyle().Bold(true), total: total, start: time.Now()}
}

func (p *progress) update(sessions, frames int, sent int64) {
	now := time.Now()
	if now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	p.shown = true
	rate := float64(sessions) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.io.ErrOut, "\r\033[K%s %d/%d sessions  %d frames  %d bytes  %.1f sessions/s",
		p.style.Render("replaying"), sessions, p.total, frames, sent, rate)
}

func (p *progress) clear() {
	if p != nil && p.shown {
		fmt.Fprint(p.io.ErrOut, "\r\033[K")
	}
}
