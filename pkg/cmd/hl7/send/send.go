// Package send implements `medplum-agent hl7 send`.
package send

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// Options holds the inputs of `hl7 send`.
type Options struct {
	IO  *iostreams.IOStreams
	Now func() time.Time

	Host            string
	Port            int
	Body            string
	File            string
	GenerateExample bool
	Encoding        string
	Timeout         time.Duration
	ReturnAck       mllp.ReturnAck
	JSON            bool

	// Load mode.
	Count       int
	Concurrency int
	Rate        float64
}

// NewCmdSend builds the command; runF replaces the run function in tests.
func NewCmdSend(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Now: f.Now}
	var returnAck string
	cmd := &cobra.Command{
		Use:   "send HOST PORT [BODY]",
		Short: "Send HL7 v2 messages over MLLP and print the ACKs",
		Long: `Send one or more HL7 v2 messages to an MLLP listener and print each ACK, with
carriage returns turned into line feeds.

The message comes from BODY, from --file (several messages in one file are sent in
order, split at each MSH segment; - reads standard input), or from --generate-example
(the sample ADT^A01 of 'medplum hl7 send').

Load mode (--count) sends N copies of the message over --concurrency connections,
each with a fresh MSH-10, and prints a throughput and latency report.

Exit status: 0 every ACK positive (AA/CA), 3 a negative ACK (AE/AR/CE/CR),
5 could not connect or the connection was lost, 124 no ACK within --timeout,
130 interrupted.`,
		Example: `  medplum-agent hl7 send localhost 56000 --generate-example
  medplum-agent hl7 send 10.0.0.5 2575 --file results.hl7 --encoding iso-8859-1
  cat adt.hl7 | medplum-agent hl7 send localhost 2575 --file - --json
  medplum-agent hl7 send localhost 2575 --generate-example --count 20000 --concurrency 8`,
		Args: cmdutil.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Host = args[0]
			port, err := strconv.Atoi(args[1])
			if err != nil || port < 1 || port > 65535 {
				return cmdutil.FlagErrorf("invalid port %q: must be a number from 1 to 65535", args[1])
			}
			opts.Port = port
			if len(args) == 3 {
				opts.Body = args[2]
			}
			if opts.ReturnAck, err = mllp.ParseReturnAck(returnAck); err != nil {
				return cmdutil.FlagErrorf("invalid --return-ack %q: use first or application", returnAck)
			}
			if _, err := charset.Lookup(opts.Encoding); err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			n := 0
			for _, set := range []bool{opts.Body != "", opts.File != "", opts.GenerateExample} {
				if set {
					n++
				}
			}
			if n == 0 {
				return cmdutil.FlagErrorf("missing HL7 message: give BODY, --file or --generate-example")
			}
			if n > 1 {
				return cmdutil.FlagErrorf("give only one of BODY, --file and --generate-example")
			}
			if opts.Timeout <= 0 {
				return cmdutil.FlagErrorf("--timeout must be positive")
			}
			if cmd.Flags().Changed("count") && opts.Count < 1 {
				return cmdutil.FlagErrorf("--count must be at least 1")
			}
			if opts.Concurrency < 1 {
				return cmdutil.FlagErrorf("--concurrency must be at least 1")
			}
			if opts.Rate < 0 {
				return cmdutil.FlagErrorf("--rate must not be negative")
			}
			if opts.Count == 0 && (cmd.Flags().Changed("concurrency") || cmd.Flags().Changed("rate")) {
				return cmdutil.FlagErrorf("--concurrency and --rate need --count")
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return sendRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&opts.GenerateExample, "generate-example", false, "Send the sample ADT^A01 message")
	fl.StringVarP(&opts.File, "file", "f", "", "Read messages from `FILE` (- for standard input)")
	fl.StringVarP(&opts.Encoding, "encoding", "e", "utf-8", "Wire `charset`, also used to read --file (utf-8, iso-8859-1, windows-1252, us-ascii, ...)")
	fl.DurationVarP(&opts.Timeout, "timeout", "t", 30*time.Second, "How long to wait for the connection and for each ACK")
	fl.StringVar(&returnAck, "return-ack", "application", "Which ACK completes a message: first (a CA counts) or application (CA is skipped)")
	fl.BoolVar(&opts.JSON, "json", false, "Print one JSON object per ACK (or the load report as JSON)")
	fl.IntVarP(&opts.Count, "count", "n", 0, "Load mode: send this many messages")
	fl.IntVarP(&opts.Concurrency, "concurrency", "c", 1, "Load mode: number of connections")
	fl.Float64Var(&opts.Rate, "rate", 0, "Load mode: total messages per second (0 = as fast as possible)")
	_ = cmd.RegisterFlagCompletionFunc("return-ack", cobra.FixedCompletions([]string{"first", "application"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("encoding", cobra.FixedCompletions(charset.Names(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *Options) addr() string { return net.JoinHostPort(o.Host, strconv.Itoa(o.Port)) }

// messages returns the messages to send, parsed.
func (o *Options) messages() ([]*hl7.Message, error) {
	if o.GenerateExample {
		return []*hl7.Message{hl7.ExampleADT(o.Now(), hl7.NewControlID())}, nil
	}
	text := o.Body
	if o.File != "" {
		raw, err := o.readFile()
		if err != nil {
			return nil, err
		}
		if text, err = charset.Decode(o.Encoding, raw); err != nil {
			return nil, fmt.Errorf("reading %s: %w", o.File, err)
		}
	}
	parts := SplitMessages(text)
	if len(parts) == 0 {
		return nil, cmdutil.WithCode(cmdutil.ExitUsage, errors.New("no HL7 message found in the input"))
	}
	msgs := make([]*hl7.Message, 0, len(parts))
	for i, p := range parts {
		m, err := hl7.Parse(p)
		if err != nil {
			return nil, cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("message %d: %w", i+1, err))
		}
		if m.ControlID() == "" {
			return nil, cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("message %d: %w", i+1, mllp.ErrMissingControlID))
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// maxInput bounds what --file reads, like the MLLP frame limit.
const maxInput = mllp.DefaultMaxFrameSize * 4

func (o *Options) readFile() ([]byte, error) {
	var r io.Reader
	if o.File == "-" {
		r = o.IO.In
	} else {
		f, err := os.Open(o.File)
		if err != nil {
			return nil, cmdutil.WithCode(cmdutil.ExitUsage, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("input larger than %d MiB", maxInput>>20))
	}
	return bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), nil
}

// SplitMessages cuts text into messages at each line that starts an MSH
// segment, and drops trailing line breaks so each goes out like the
// reference's (segments joined by CR, no trailing CR).
func SplitMessages(text string) []string {
	var out []string
	start := -1
	for i := 0; i < len(text); {
		lineStart := i == 0 || text[i-1] == '\r' || text[i-1] == '\n'
		if lineStart && strings.HasPrefix(text[i:], "MSH") {
			if start >= 0 {
				out = appendTrimmed(out, text[start:i])
			}
			start = i
		}
		i++
	}
	if start >= 0 {
		out = appendTrimmed(out, text[start:])
	} else if strings.TrimSpace(text) != "" {
		out = append(out, strings.TrimSpace(text)) // not HL7: let Parse report it
	}
	return out
}

func appendTrimmed(out []string, s string) []string {
	s = strings.TrimRight(s, "\r\n")
	if s == "" {
		return out
	}
	return append(out, s)
}

func sendRun(ctx context.Context, opts *Options) error {
	msgs, err := opts.messages()
	if err != nil {
		return err
	}
	if opts.Count > 0 {
		return loadRun(ctx, opts, msgs[0])
	}
	c, err := dial(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()

	worst := cmdutil.ExitOK
	for _, m := range msgs {
		start := time.Now()
		ack, err := sendOne(ctx, c, m, opts)
		if err != nil {
			return err
		}
		if err := printAck(opts, m, ack, time.Since(start)); err != nil {
			return err
		}
		if !hl7.AckCodeOf(ack).Positive() {
			worst = cmdutil.ExitRejected
			fmt.Fprintf(opts.IO.ErrOut, "Error: negative acknowledgement %s for MSH-10 %s: %s\n",
				describeCode(ack), m.ControlID(), ack.Get("MSA-3"))
		}
	}
	if worst != cmdutil.ExitOK {
		return cmdutil.Silent(worst)
	}
	return nil
}

func describeCode(ack *hl7.Message) string {
	if c := hl7.AckCodeOf(ack); c != "" {
		return string(c)
	}
	return "(no MSA-1)"
}

func dial(ctx context.Context, opts *Options) (*mllp.Client, error) {
	c, err := mllp.Dial(ctx, opts.addr(), mllp.ClientOptions{Encoding: opts.Encoding, ConnectTimeout: opts.Timeout})
	if err != nil {
		return nil, connectError(opts, err)
	}
	return c, nil
}

func connectError(opts *Options, err error) error {
	if errors.Is(err, context.Canceled) {
		return cmdutil.ErrInterrupted
	}
	code := cmdutil.ExitConnect
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = cmdutil.ExitTimeout
	}
	return cmdutil.WithCode(code, fmt.Errorf("could not connect to %s: %w", opts.addr(), err))
}

// sendOne sends m and classifies failures into exit codes.
func sendOne(ctx context.Context, c *mllp.Client, m *hl7.Message, opts *Options) (*hl7.Message, error) {
	wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ack, err := c.SendAndWait(wctx, m, opts.ReturnAck)
	switch {
	case err == nil:
		return ack, nil
	case ctx.Err() != nil:
		return nil, cmdutil.ErrInterrupted
	case errors.Is(err, context.DeadlineExceeded):
		return nil, cmdutil.WithCode(cmdutil.ExitTimeout,
			fmt.Errorf("no ACK for MSH-10 %s from %s within %s", m.ControlID(), opts.addr(), opts.Timeout))
	case errors.Is(err, mllp.ErrClosed):
		return nil, cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("%s: %w", opts.addr(), err))
	}
	return nil, err
}

type jsonAck struct {
	ControlID string  `json:"controlId"`
	AckCode   string  `json:"ackCode"`
	AckText   string  `json:"ackText,omitempty"`
	LatencyMs float64 `json:"latencyMs"`
	Ack       string  `json:"ack"`
}

func printAck(opts *Options, m, ack *hl7.Message, latency time.Duration) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(jsonAck{
			ControlID: m.ControlID(),
			AckCode:   string(hl7.AckCodeOf(ack)),
			AckText:   ack.Get("MSA-3"),
			LatencyMs: float64(latency.Microseconds()) / 1000,
			Ack:       ack.String(),
		})
	}
	_, err := fmt.Fprintln(opts.IO.Out, strings.ReplaceAll(ack.String(), "\r", "\n"))
	return err
}
