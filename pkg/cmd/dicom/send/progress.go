package send

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

const barWidth = 24

// progress draws a one-line progress bar on stderr when it is a terminal,
// and serializes the notes printed on stderr meanwhile so they do not land
// inside the bar.
type progress struct {
	w          io.Writer
	label      string
	totalFiles int
	totalBytes int64
	start      time.Time

	files atomic.Int64
	bytes atomic.Int64

	mu   sync.Mutex // serializes writes to w
	stop chan struct{}
	done chan struct{}
}

func startProgress(ios *iostreams.IOStreams, totalFiles int, totalBytes int64) *progress {
	p := &progress{w: ios.ErrOut, totalFiles: totalFiles, totalBytes: totalBytes, start: time.Now()}
	if !ios.IsStderrTTY() {
		return p
	}
	p.label = ios.ErrRenderer().NewStyle().Bold(true).Render("sending")
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.draw()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// advance counts one file handled, sent or not.
func (p *progress) advance(size int64) {
	p.files.Add(1)
	p.bytes.Add(size)
}

func (p *progress) draw() {
	files, bytes := p.files.Load(), p.bytes.Load()
	frac := 1.0
	if p.totalBytes > 0 {
		frac = min(float64(bytes)/float64(p.totalBytes), 1)
	}
	full := int(frac * barWidth)
	rate := float64(bytes) / 1e6 / max(time.Since(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r\033[K%s [%s%s] %3.0f%%  %d/%d files  %.1f MB  %.1f MB/s", p.label,
		strings.Repeat("#", full), strings.Repeat(".", barWidth-full), frac*100, files, p.totalFiles, float64(bytes)/1e6, rate)
}

// notef prints one line on stderr; the bar is redrawn on the next tick.
func (p *progress) notef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// finish stops drawing and clears the line.
func (p *progress) finish() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	fmt.Fprint(p.w, "\r\033[K")
}
