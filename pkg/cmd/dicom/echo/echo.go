// Package echo implements `medplum-agent dicom echo`.
package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/shared"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

// Options holds the inputs of `dicom echo`.
type Options struct {
	IO     *iostreams.IOStreams
	Logger func() *slog.Logger

	Addr  string
	Assoc shared.Association
	Count int
	JSON  bool
}

// NewCmdEcho builds the command; runF replaces the run function in tests.
func NewCmdEcho(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Logger: f.Logger}
	cmd := &cobra.Command{
		Use:   "echo HOST PORT",
		Short: "Check a DICOM peer with C-ECHO",
		Long: `Open an association with a DICOM peer, send C-ECHO requests (Verification, proposed in
explicit and implicit VR little endian), print each status and round-trip time,
then release the association.

--count sends several echoes in the same association and prints round-trip
statistics at the end.

Exit status: 0 every echo succeeded, 3 the association was rejected or aborted or
an echo returned a non-success status, 5 could not connect or the connection was
lost, 124 no answer within --timeout, 130 interrupted.`,
		Example: `  medplum-agent dicom echo 127.0.0.1 11112 --called-ae STORESCP
  medplum-agent dicom echo pacs.example.org 104 --calling-ae MEDPLUM --called-ae PACS --timeout 5s
  medplum-agent dicom echo 127.0.0.1 11112 --count 1000 --json`,
		Args: cmdutil.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := shared.Addr(args[0], args[1])
			if err != nil {
				return err
			}
			opts.Addr = addr
			if err := opts.Assoc.Validate(); err != nil {
				return err
			}
			if opts.Count < 1 {
				return cmdutil.FlagErrorf("--count must be at least 1")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return echoRun(cmd.Context(), opts)
		},
	}
	opts.Assoc.AddFlags(cmd)
	cmd.Flags().IntVarP(&opts.Count, "count", "n", 1, "Number of echoes to send in the one association")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "Print only a JSON summary")
	return cmd
}

// Report summarizes the echoes; its JSON form is stable.
type Report struct {
	Target string `json:"target"`
	Echoes int    `json:"echoes"`
	OK     int    `json:"ok"`
	// Statuses counts the responses by status code ("0x0000").
	Statuses map[string]int `json:"statuses"`
	RTT      RTT            `json:"rttMs"`

	total time.Duration
}

// RTT gives round-trip times in milliseconds.
type RTT struct {
	Min float64 `json:"min"`
	Avg float64 `json:"avg"`
	Max float64 `json:"max"`
}

func (r *Report) add(st dimse.Status, rtt time.Duration) {
	r.Echoes++
	if st == dimse.StatusSuccess {
		r.OK++
	}
	r.Statuses[fmt.Sprintf("0x%04X", uint16(st))]++
	v := ms(rtt)
	if r.Echoes == 1 || v < r.RTT.Min {
		r.RTT.Min = v
	}
	r.RTT.Max = max(r.RTT.Max, v)
	r.total += rtt
	r.RTT.Avg = ms(r.total / time.Duration(r.Echoes))
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Nanoseconds())/1e3) / 1e3 }

func echoRun(ctx context.Context, opts *Options) error {
	a, err := assoc.Dial(ctx, opts.Addr, opts.Assoc.Options(nil))
	if err != nil {
		return opts.Assoc.Error(opts.Addr, err)
	}
	shared.LogPeer(opts.Logger(), opts.Addr, a)

	rep := &Report{Target: opts.Addr, Statuses: map[string]int{}}
	var opErr error
	for i := 1; i <= opts.Count; i++ {
		start := time.Now()
		st, err := a.Echo(ctx)
		rtt := time.Since(start)
		if err != nil {
			opErr = err
			break
		}
		rep.add(st, rtt)
		if !opts.JSON {
			fmt.Fprintf(opts.IO.Out, "echo %d: %s, %.3f ms\n", i, st.Describe(dimse.CEchoRQ), ms(rtt))
		}
	}
	// After a failed echo the association is already gone and Release
	// returns at once; otherwise this is the orderly end.
	if err := a.Release(ctx); opErr == nil {
		opErr = err
	}
	if rep.Echoes > 0 {
		if err := printReport(opts, rep); err != nil {
			return err
		}
	}
	if opErr != nil {
		return opts.Assoc.Error(opts.Addr, opErr)
	}
	if rep.OK < rep.Echoes {
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%d of %d echoes did not succeed", rep.Echoes-rep.OK, rep.Echoes))
	}
	return nil
}

func printReport(opts *Options, rep *Report) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(rep)
	}
	noun := "echoes"
	if rep.Echoes == 1 {
		noun = "echo"
	}
	_, err := fmt.Fprintf(opts.IO.Out, "%d %s to %s, %d successful, round trip min %.3f ms, avg %.3f ms, max %.3f ms\n",
		rep.Echoes, noun, rep.Target, rep.OK, rep.RTT.Min, rep.RTT.Avg, rep.RTT.Max)
	return err
}
