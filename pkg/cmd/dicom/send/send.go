// Package send implements `medplum-agent dicom send`.
package send

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/shared"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// Options holds the inputs of `dicom send`.
type Options struct {
	IO     *iostreams.IOStreams
	Logger func() *slog.Logger

	Addr  string
	Paths []string
	Assoc shared.Association
	JSON  bool
}

// NewCmdSend builds the command; runF replaces the run function in tests.
func NewCmdSend(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Logger: f.Logger}
	cmd := &cobra.Command{
		Use:   "send HOST PORT PATH...",
		Short: "Send DICOM files to a storage SCP with C-STORE",
		Long: `Send Part-10 DICOM files to a storage SCP (C-STORE), all in one association.

Each PATH is a file or a directory, searched recursively. Inside directories,
hidden entries (names starting with a dot) and symbolic links to directories are
skipped; a DICOMDIR is skipped too. Every file is sent unchanged in its own
transfer syntax: one presentation context is proposed per SOP class and transfer
syntax found (at most 128). A file that is not Part-10, cannot be read, or whose
context the peer rejected is reported and counted as failed; the others are
still sent.

A progress bar is drawn on standard error when it is a terminal. The summary
(files, bytes, time, MB/s; --json adds each failure) goes to standard output.

Exit status: 0 every file was stored, 2 a PATH does not exist or no file was
found, 3 a file failed or the association was rejected or aborted, 5 could not
connect or the connection was lost, 124 no answer within --timeout,
130 interrupted.`,
		Example: `  medplum-agent dicom send 127.0.0.1 11112 --called-ae STORESCP study/
  medplum-agent dicom send pacs.example.org 104 --called-ae PACS img001.dcm img002.dcm
  medplum-agent dicom send 127.0.0.1 11112 /media/cdrom --json`,
		Args: cmdutil.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := shared.Addr(args[0], args[1])
			if err != nil {
				return err
			}
			opts.Addr, opts.Paths = addr, args[2:]
			if err := opts.Assoc.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return sendRun(cmd.Context(), opts)
		},
	}
	opts.Assoc.AddFlags(cmd)
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print the summary as JSON, with every failure")
	return cmd
}

// Summary is the result of a run; its JSON form is stable.
type Summary struct {
	Target   string  `json:"target"`
	Files    int     `json:"files"` // found; those not counted below were not attempted
	Sent     int     `json:"sent"`
	Failed   int     `json:"failed"`
	Skipped  int     `json:"skipped"`
	Bytes    int64   `json:"bytes"` // size of the files sent
	Seconds  float64 `json:"seconds"`
	MBPerSec float64 `json:"mbPerSec"`
	// Failures lists the first maxFailures failures; FailuresOmitted
	// counts the rest, so memory stays bounded on huge trees.
	Failures        []Failure `json:"failures"`
	FailuresOmitted int       `json:"failuresOmitted,omitempty"`
}

// Failure is one file that was not stored.
type Failure struct {
	Path   string `json:"path"`
	Status string `json:"status,omitempty"` // the peer's status code, e.g. "0xA700"
	Error  string `json:"error"`
}

const maxFailures = 1000

// maxContexts is the most presentation contexts one association can carry
// (odd IDs 1..255).
const maxContexts = 128

// pair is one presentation context to propose: a SOP class in one transfer
// syntax.
type pair struct{ sopClass, transferSyntax string }

// plan is the outcome of a first pass over the files: the counts for the
// progress bar and the contexts to propose. Keeping only these, not the
// file list, bounds memory whatever the size of the tree.
type plan struct {
	files int
	bytes int64
	pairs []pair
	index map[pair]int
}

func makePlan(paths []string) plan {
	p := plan{index: map[pair]int{}}
	for f := range files(paths) {
		p.files++
		p.bytes += f.size
		if f.err != nil {
			continue
		}
		fh, meta, _, err := openInstance(f.path)
		if err != nil {
			continue // reported by the sending pass
		}
		fh.Close()
		k := pair{meta.SOPClass, meta.TransferSyntax}
		if _, ok := p.index[k]; !ok && meta.SOPClass != mediaStorageDirectory && len(p.pairs) < maxContexts {
			p.index[k] = len(p.pairs)
			p.pairs = append(p.pairs, k)
		}
	}
	return p
}

func (p plan) contexts() []assoc.Context {
	out := make([]assoc.Context, len(p.pairs))
	for i, k := range p.pairs {
		out[i] = assoc.Context{AbstractSyntax: k.sopClass, TransferSyntaxes: []string{k.transferSyntax}}
	}
	return out
}

func sendRun(ctx context.Context, opts *Options) error {
	for _, p := range opts.Paths {
		if _, err := os.Stat(p); err != nil {
			return cmdutil.WithCode(cmdutil.ExitUsage, err)
		}
	}
	pl := makePlan(opts.Paths)
	if pl.files == 0 {
		return cmdutil.WithCode(cmdutil.ExitUsage, errors.New("no files found to send"))
	}
	s := &sender{opts: opts, plan: pl, sum: Summary{Target: opts.Addr, Failures: []Failure{}}}
	start := time.Now()
	if len(pl.pairs) > 0 {
		a, err := assoc.Dial(ctx, opts.Addr, opts.Assoc.Options(pl.contexts()))
		if err != nil {
			return opts.Assoc.Error(opts.Addr, err)
		}
		shared.LogPeer(opts.Logger(), opts.Addr, a)
		s.a, s.results = a, a.Contexts()
	}
	s.prog = startProgress(opts.IO, pl.files, pl.bytes)
	err := s.sendAll(ctx)
	if s.a != nil {
		if rerr := s.a.Release(ctx); err == nil {
			err = rerr
		}
	}
	s.prog.finish()
	s.finishSummary(time.Since(start))
	if perr := printSummary(opts, &s.sum); perr != nil {
		return perr
	}
	if err != nil {
		return opts.Assoc.Error(opts.Addr, err)
	}
	if s.sum.Failed > 0 {
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%d of %d files failed", s.sum.Failed, s.sum.Files))
	}
	return nil
}

// sender runs the second pass: it sends every file over the association.
type sender struct {
	opts    *Options
	plan    plan
	a       *assoc.Association // nil when no file was readable
	results []assoc.ContextResult
	prog    *progress
	sum     Summary
	seen    int
}

// sendAll stops at the first error that ends the association.
func (s *sender) sendAll(ctx context.Context) error {
	for f := range files(s.opts.Paths) {
		s.seen++
		err := s.sendOne(ctx, f)
		s.prog.advance(f.size)
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *sender) sendOne(ctx context.Context, f file) error {
	if f.err != nil {
		s.fail(f.path, "", f.err)
		return nil
	}
	fh, meta, dataset, err := openInstance(f.path)
	if err != nil {
		s.fail(f.path, "", err)
		return nil
	}
	defer fh.Close()
	if meta.SOPClass == mediaStorageDirectory {
		s.sum.Skipped++
		s.prog.notef("Skipped %s: a DICOMDIR (media index), not an instance", f.path)
		return nil
	}
	i, ok := s.plan.index[pair{meta.SOPClass, meta.TransferSyntax}]
	switch {
	case !ok:
		s.fail(f.path, "", fmt.Errorf("not proposed: more than %d SOP class and transfer syntax combinations", maxContexts))
		return nil
	case s.results[i].Result != pdu.ResultAcceptance:
		s.fail(f.path, "", fmt.Errorf("the peer rejected SOP class %s in %s: %s",
			meta.SOPClass, dicom.TransferSyntaxName(meta.TransferSyntax), s.results[i].Result))
		return nil
	}
	st, err := s.a.Store(ctx, meta.SOPClass, meta.SOPInstance, meta.TransferSyntax, dataset)
	if err != nil {
		s.fail(f.path, "", err)
		return err
	}
	switch st.Category() {
	case dimse.CategorySuccess:
	case dimse.CategoryWarning:
		s.prog.notef("Warning: %s: %s", f.path, st.Describe(dimse.CStoreRQ))
	default:
		s.fail(f.path, fmt.Sprintf("0x%04X", uint16(st)), errors.New(st.Describe(dimse.CStoreRQ)))
		return nil
	}
	s.sum.Sent++
	s.sum.Bytes += f.size
	return nil
}

func (s *sender) fail(path, status string, err error) {
	s.sum.Failed++
	s.prog.notef("Error: %s: %v", path, err)
	if len(s.sum.Failures) == maxFailures {
		s.sum.FailuresOmitted++
		return
	}
	s.sum.Failures = append(s.sum.Failures, Failure{Path: path, Status: status, Error: err.Error()})
}

func (s *sender) finishSummary(elapsed time.Duration) {
	// The tree may have grown between the two passes.
	s.sum.Files = max(s.plan.files, s.seen)
	s.sum.Seconds = math.Round(elapsed.Seconds()*1000) / 1000
	if elapsed > 0 {
		s.sum.MBPerSec = math.Round(float64(s.sum.Bytes)/1e6/elapsed.Seconds()*10) / 10
	}
}

func printSummary(opts *Options, sum *Summary) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(sum)
	}
	notAttempted := sum.Files - sum.Sent - sum.Failed - sum.Skipped
	extra := ""
	if sum.Skipped > 0 {
		extra += fmt.Sprintf(", %d skipped", sum.Skipped)
	}
	if notAttempted > 0 {
		extra += fmt.Sprintf(", %d not attempted", notAttempted)
	}
	_, err := fmt.Fprintf(opts.IO.Out, "target    %s\nfiles     %d found, %d sent, %d failed%s\nbytes     %d (%.1f MB)\ntime      %.3f s, %.1f MB/s\n",
		sum.Target, sum.Files, sum.Sent, sum.Failed, extra, sum.Bytes, float64(sum.Bytes)/1e6, sum.Seconds, sum.MBPerSec)
	return err
}
