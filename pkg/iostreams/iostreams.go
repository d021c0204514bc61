// Package iostreams owns the three standard streams, decides per stream
// whether it is a terminal and whether colour is wanted, and holds the
// lipgloss renderers bound to each stream. Commands print data to Out and
// diagnostics to ErrOut.
package iostreams

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"golang.org/x/term"
)

// IOStreams bundles the standard streams with their terminal state.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer

	stdinTTY, stdoutTTY, stderrTTY bool
	noColor                        bool
	getenv                         func(string) string

	logLevel slog.LevelVar

	once        sync.Once
	outRenderer *lipgloss.Renderer
	errRenderer *lipgloss.Renderer
}

// System wraps the process's standard streams.
func System() *IOStreams {
	return &IOStreams{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		stdinTTY:  isTerminal(os.Stdin),
		stdoutTTY: isTerminal(os.Stdout),
		stderrTTY: isTerminal(os.Stderr),
		getenv:    os.Getenv,
	}
}

// Test returns streams backed by buffers, none of them a terminal.
func Test() (*IOStreams, *bytes.Buffer, *bytes.Buffer, *bytes.Buffer) {
	in, out, errOut := &bytes.Buffer{}, &bytes.Buffer{}, &bytes.Buffer{}
	return &IOStreams{In: in, Out: out, ErrOut: errOut, getenv: func(string) string { return "" }}, in, out, errOut
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// SetTTY overrides terminal detection (tests).
func (s *IOStreams) SetTTY(stdin, stdout, stderr bool) {
	s.stdinTTY, s.stdoutTTY, s.stderrTTY = stdin, stdout, stderr
}

// IsStdinTTY reports whether standard input is a terminal.
func (s *IOStreams) IsStdinTTY() bool { return s.stdinTTY }

// IsStdoutTTY reports whether standard output is a terminal.
func (s *IOStreams) IsStdoutTTY() bool { return s.stdoutTTY }

// IsStderrTTY reports whether standard error is a terminal.
func (s *IOStreams) IsStderrTTY() bool { return s.stderrTTY }

// SetNoColor turns colour off on every stream (--no-color).
func (s *IOStreams) SetNoColor(v bool) { s.noColor = v }

// colorEnabled applies the usual policy: NO_COLOR and --no-color win, then
// CLICOLOR_FORCE, then CLICOLOR=0, then whether the stream is a terminal.
func (s *IOStreams) colorEnabled(tty bool) bool {
	if s.noColor || s.getenv("NO_COLOR") != "" {
		return false
	}
	if v := s.getenv("CLICOLOR_FORCE"); v != "" && v != "0" {
		return true
	}
	if s.getenv("CLICOLOR") == "0" {
		return false
	}
	return tty
}

// ColorEnabled reports whether styled output may go to Out.
func (s *IOStreams) ColorEnabled() bool { return s.colorEnabled(s.stdoutTTY) }

// ErrColorEnabled reports whether styled output may go to ErrOut.
func (s *IOStreams) ErrColorEnabled() bool { return s.colorEnabled(s.stderrTTY) }

func (s *IOStreams) renderers() {
	s.once.Do(func() {
		s.outRenderer = newRenderer(s.Out, s.ColorEnabled())
		s.errRenderer = newRenderer(s.ErrOut, s.ErrColorEnabled())
	})
}

func newRenderer(w io.Writer, color bool) *lipgloss.Renderer {
	r := lipgloss.NewRenderer(w)
	if !color {
		r.SetColorProfile(termenv.Ascii)
	}
	return r
}

// OutRenderer is the lipgloss renderer for Out.
func (s *IOStreams) OutRenderer() *lipgloss.Renderer { s.renderers(); return s.outRenderer }

// ErrRenderer is the lipgloss renderer for ErrOut.
func (s *IOStreams) ErrRenderer() *lipgloss.Renderer { s.renderers(); return s.errRenderer }

// SetLogLevel sets the level of the diagnostics logger.
func (s *IOStreams) SetLogLevel(l slog.Level) { s.logLevel.Set(l) }

// LogLevel returns the diagnostics level chosen by --log-level.
func (s *IOStreams) LogLevel() slog.Level { return s.logLevel.Level() }

// Logger returns a text logger on ErrOut at the --log-level level.
func (s *IOStreams) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s.ErrOut, &slog.HandlerOptions{Level: &s.logLevel}))
}
