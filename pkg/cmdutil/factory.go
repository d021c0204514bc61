package cmdutil

import (
	"log/slog"
	"os"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// Factory injects what commands need from the outside world, so tests can
// replace each piece.
type Factory struct {
	IOStreams *iostreams.IOStreams
	// Logger returns the diagnostics logger (stderr) at the level chosen by
	// --log-level. It is a func because the flag is parsed after the
	// Factory is built.
	Logger  func() *slog.Logger
	Now     func() time.Time
	Getenv  func(string) string
	WorkDir func() (string, error)
}

// New builds the production Factory.
func New() *Factory {
	f := &Factory{
		IOStreams: iostreams.System(),
		Now:       time.Now,
		Getenv:    os.Getenv,
		WorkDir:   os.Getwd,
	}
	f.Logger = func() *slog.Logger { return f.IOStreams.Logger() }
	return f
}
