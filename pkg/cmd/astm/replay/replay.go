// Package replay implements `medplum-agent astm replay`.
package replay

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

// Connection strategies for --conn.
const (
	ConnPerRun          = "per-run"
	ConnPerFile         = "per-file"
	ConnPerTransmission = "per-transmission"
)

// FormatAuto sniffs each file's format.
const FormatAuto = "auto"

// Options holds the inputs of `astm replay`.
type Options struct {
	IO *iostreams.IOStreams

	// Where to: a TCP listener, or a serial port when Serial is set.
	Host           string
	Port           int
	Serial         *serialport.Config
	ConnectTimeout time.Duration
	Conn           string // ConnPerRun, ConnPerFile or ConnPerTransmission

	Files        []string
	Format       string // FormatAuto or an astm.InputFormat name
	FixChecksums bool
	Renumber     bool

	// Records input: where transmissions end, and how they are framed;
	// FrameSize 0 never splits.
	Split     astm.Split
	Packing   astm.Packing
	FrameSize int
	Style     astm.FrameStyle

	// E1381 sender behaviour.
	AckTimeout      time.Duration
	MaxAttempts     int
	ENQRetryDelay   time.Duration
	MaxENQAttempts  int
	ContentionDelay time.Duration
	HonorInterrupt  bool
	EOTWait         time.Duration
	Corrupt         []int
	Chunk           int
	ChunkDelay      time.Duration
	NoWait          bool
	// Pauses before each frame after a transmission's first, and between
	// transmissions.
	FrameDelay        time.Duration
	TransmissionDelay time.Duration

	Repeat int
	Trace  string // "" off, "-" standard error, else a file
	JSON   bool
}

// NewCmdReplay builds the command; runF replaces the run function in tests.
func NewCmdReplay(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams}
	var serial string
	var rf recordFlags
	cmd := &cobra.Command{
		Use:   "replay {HOST PORT | --serial DEVICE} FILE...",
		Short: "Play an instrument: replay ASTM records, captures or scripts to a listener",
		Long: `Connect to an ASTM E1381 listener (our agent, the reference agent or any LIS) as the
instrument and replay each FILE, one after the other, over one connection (--conn).

Input formats (--format, sniffed per file by default):
  records   E1394 text, one record per line (LF, CR LF or CR); lines starting with #
            are comments. --split says where a transmission ends: blank (a blank
            line, the default), header (before each H record) or file (one per
            file). Framed per --pack and --frame-size; --start-fn, --checksum-case
            and --trailer emulate instruments that stray from E1381 (first frame
            numbered other than 1, lower-case checksum, LF or nothing after it).
  raw       the instrument's bytes as captured: ENQ, frames, EOT. Each frame is sent on
            its own and must be answered, like a real instrument; recorded checksums are
            checked (--fix-checksums recomputes them, --renumber rewrites frame numbers).
  mnemonic  the same written as <STX>1H|...<CR><ETX>A1<CR><LF>, line breaks being layout;
            lines starting with # are comments.
  script    a scripted conversation (> send, < expect, ...) played as the instrument, on a
            connection of its own; a role sender script plays the LIS and is refused.

The sender follows E1381: ENQ until answered ACK (NAK: wait --enq-retry-delay; ENQ:
contention, wait --contention-delay), then each frame until ACKed (EOT counts as ACK
unless --honor-interrupt), at most --max-attempts sends, then EOT. After EOT it waits
up to --eot-wait for the ACK some listeners send, so it is not taken for the answer to
the next ENQ. --inter-frame-delay paces the frames of a transmission (not the
retransmissions), --inter-transmission-delay the transmissions; neither applies to
scripts. --no-wait writes everything without waiting and then collects replies.

--trace writes both directions in mnemonic notation as a script ("> " sent, "< "
received) that --format script can replay; --trace alone writes it to standard error,
--trace=FILE to a file. A summary goes to standard output (--json for JSON).

Exit status: 0 every transmission accepted (every script passed), 3 frames rejected
--max-attempts times, a listener that stayed busy or a script expectation that failed,
5 could not connect or the connection was lost, 124 no reply within --ack-timeout,
130 interrupted.`,
		Example: `  medplum-agent astm replay 127.0.0.1 4000 results.astm
  medplum-agent astm replay lis.local 5000 capture.e1381.bin --repeat 100 --json
  medplum-agent astm replay 127.0.0.1 4000 session.e1381.txt --trace
  medplum-agent astm replay --serial /dev/ttyUSB0 --baud 9600 results.astm
  medplum-agent astm replay --serial 'serial:///dev/ttyS0?baud=19200&parity=even&dataBits=7' results.astm`,
		Args: cmdutil.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if serial != "" {
				cfg, err := serialConfig(serial, fl)
				if err != nil {
					return &cmdutil.FlagError{Err: err}
				}
				opts.Serial = &cfg
				opts.Files = args
			} else {
				for _, s := range serialFlags {
					if fl.Changed(s.flag) {
						return cmdutil.FlagErrorf("--%s needs --serial", s.flag)
					}
				}
				if len(args) < 3 {
					return cmdutil.FlagErrorf("give HOST PORT and at least one FILE, or --serial DEVICE and the files")
				}
				opts.Host = args[0]
				port, err := strconv.Atoi(args[1])
				if err != nil || port < 1 || port > 65535 {
					return cmdutil.FlagErrorf("invalid port %q: must be a number from 1 to 65535", args[1])
				}
				opts.Port = port
				opts.Files = args[2:]
			}
			if opts.Format != FormatAuto {
				if _, err := astm.ParseInputFormat(opts.Format); err != nil {
					return cmdutil.FlagErrorf("invalid --format %q: use auto, records, raw, mnemonic or script", opts.Format)
				}
			}
			if err := opts.setRecordFlags(rf); err != nil {
				return err
			}
			if err := opts.validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return replayRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&serial, "serial", "", "Replay over the serial port `DEVICE` (a path or a serial:// URL) instead of TCP")
	// Read back by serialConfig through the flag set, which knows which were given.
	fl.Int("baud", serialport.DefaultBaud, "Serial line speed")
	fl.Int("data-bits", serialport.DefaultDataBits, "Serial data bits: 5, 6, 7 or 8")
	fl.String("parity", serialport.DefaultParity, "Serial parity: none, odd, even, mark or space")
	fl.String("stop-bits", serialport.DefaultStopBits, "Serial stop bits: 1, 1.5 or 2")
	fl.DurationVar(&opts.ConnectTimeout, "connect-timeout", 5*time.Second, "How long to wait for the TCP connection")
	fl.StringVar(&opts.Conn, "conn", ConnPerRun, "Connection use: per-run (one for everything), per-file or per-transmission")

	fl.StringVar(&opts.Format, "format", FormatAuto, "Input format: auto, records, raw, mnemonic or script")
	fl.BoolVar(&opts.FixChecksums, "fix-checksums", false, "Raw and mnemonic input: recompute recorded checksums")
	fl.BoolVar(&opts.Renumber, "renumber", false, "Raw and mnemonic input: renumber frames 1, 2, ... 7, 0 from each ENQ (recomputes checksums)")
	fl.StringVar(&rf.split, "split", "blank", "Records input: a transmission ends at a blank line (blank), before each H record (header) or with the file (file)")
	fl.StringVar(&rf.packing, "pack", "record", "Records input: record (CR ETX per record), frame-per-record (ETB between records) or stream")
	fl.IntVar(&opts.FrameSize, "frame-size", astm.DefaultFrameSize, "Records input: longest frame text, 0 never splits")
	fl.IntVar(&rf.startFN, "start-fn", 1, "Records input: number of each transmission's first frame, 0 to 7")
	fl.StringVar(&rf.checksumCase, "checksum-case", "upper", "Records input: checksum hex digits in upper or lower case")
	fl.StringVar(&rf.trailer, "trailer", "crlf", "Records input: what follows each frame's checksum: crlf, lf or none")

	fl.DurationVar(&opts.AckTimeout, "ack-timeout", astm.DefaultReplyTimeout, "Wait for a reply to ENQ and to each frame (and for each script expectation)")
	fl.IntVar(&opts.MaxAttempts, "max-attempts", astm.DefaultMaxAttempts, "Sends of one frame before giving up")
	fl.DurationVar(&opts.ENQRetryDelay, "enq-retry-delay", astm.DefaultBusyDelay, "Wait after a NAK to ENQ (listener busy) before bidding again")
	fl.IntVar(&opts.MaxENQAttempts, "max-enq-attempts", astm.DefaultMaxAttempts, "ENQ bids before giving up")
	fl.DurationVar(&opts.ContentionDelay, "contention-delay", astm.DefaultContentionDelay, "Wait after an ENQ answered with ENQ before bidding again")
	fl.BoolVar(&opts.HonorInterrupt, "honor-interrupt", false, "Stop a transmission when a frame is answered EOT (default: take it as ACK)")
	fl.DurationVar(&opts.EOTWait, "eot-wait", 200*time.Millisecond, "After EOT, wait this long for a listener's ACK (0: none); with --no-wait, the quiet time that ends reply collection")
	fl.IntSliceVar(&opts.Corrupt, "corrupt", nil, "Send frame `N[,M...]` of each transmission with a wrong checksum the first time")
	fl.IntVar(&opts.Chunk, "chunk", 0, "Split every write into writes of at most `N` bytes")
	fl.DurationVar(&opts.ChunkDelay, "chunk-delay", 0, "Pause between the writes of --chunk")
	fl.DurationVar(&opts.FrameDelay, "inter-frame-delay", 0, "Pause before each frame after the first of a transmission")
	fl.DurationVar(&opts.TransmissionDelay, "inter-transmission-delay", 0, "Pause between transmissions")
	fl.BoolVar(&opts.NoWait, "no-wait", false, "Write all bytes without waiting for replies, then collect the replies")

	fl.IntVarP(&opts.Repeat, "repeat", "n", 1, "Replay all files this many times")
	fl.StringVar(&opts.Trace, "trace", "", "Write both directions in mnemonic notation to `FILE` (--trace alone: standard error)")
	fl.Lookup("trace").NoOptDefVal = "-"
	fl.BoolVar(&opts.JSON, "json", false, "Print the summary as JSON")

	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{FormatAuto, "records", "raw", "mnemonic", "script"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("split", cobra.FixedCompletions([]string{"blank", "header", "file"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("pack", cobra.FixedCompletions([]string{"record", "frame-per-record", "stream"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("checksum-case", cobra.FixedCompletions([]string{"upper", "lower"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("trailer", cobra.FixedCompletions([]string{"crlf", "lf", "none"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("conn", cobra.FixedCompletions([]string{ConnPerRun, ConnPerFile, ConnPerTransmission}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("parity", cobra.FixedCompletions([]string{"none", "odd", "even", "mark", "space"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("stop-bits", cobra.FixedCompletions([]string{"1", "1.5", "2"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// serialFlags maps the serial flags to serial:// URL parameters.
var serialFlags = []struct{ flag, param string }{
	{"baud", "baud"}, {"data-bits", "dataBits"}, {"parity", "parity"}, {"stop-bits", "stopBits"},
}

// serialConfig reads --serial (a device path or a serial:// URL) and lays
// the serial flags that were given over it.
func serialConfig(device string, fl *pflag.FlagSet) (serialport.Config, error) {
	cfg := serialport.NewConfig(device)
	if strings.HasPrefix(strings.ToLower(device), "serial:") {
		var err error
		if cfg, err = serialport.ParseURL(device); err != nil {
			return cfg, err
		}
	}
	for _, s := range serialFlags {
		if fl.Changed(s.flag) {
			if err := cfg.Set(s.param, fl.Lookup(s.flag).Value.String()); err != nil {
				return cfg, err
			}
		}
	}
	return cfg, nil
}

// recordFlags are the records-input flags that Options holds parsed.
type recordFlags struct {
	split, packing, checksumCase, trailer string
	startFN                               int
}

// setRecordFlags checks the records-input flags and sets them in o.
func (o *Options) setRecordFlags(rf recordFlags) error {
	var err error
	if o.Split, err = astm.ParseSplit(rf.split); err != nil {
		return cmdutil.FlagErrorf("invalid --split %q: use blank, header or file", rf.split)
	}
	if o.Packing, err = astm.ParsePacking(rf.packing); err != nil {
		return cmdutil.FlagErrorf("invalid --pack %q: use record, frame-per-record or stream", rf.packing)
	}
	if rf.startFN < 0 || rf.startFN > 7 {
		return cmdutil.FlagErrorf("invalid --start-fn %d: frame numbers go from 0 to 7", rf.startFN)
	}
	o.Style.FirstNumber = '0' + byte(rf.startFN)
	switch rf.checksumCase {
	case "upper":
	case "lower":
		o.Style.LowerChecksum = true
	default:
		return cmdutil.FlagErrorf("invalid --checksum-case %q: use upper or lower", rf.checksumCase)
	}
	if o.Style.Trailer, err = astm.ParseTrailer(rf.trailer); err != nil {
		return cmdutil.FlagErrorf("invalid --trailer %q: use crlf, lf or none", rf.trailer)
	}
	return nil
}

func (o *Options) validate() error {
	switch {
	case o.Conn != ConnPerRun && o.Conn != ConnPerFile && o.Conn != ConnPerTransmission:
		return cmdutil.FlagErrorf("invalid --conn %q: use per-run, per-file or per-transmission", o.Conn)
	case o.ConnectTimeout <= 0:
		return cmdutil.FlagErrorf("--connect-timeout must be positive")
	case o.FrameSize < 0:
		return cmdutil.FlagErrorf("--frame-size must not be negative")
	case o.AckTimeout <= 0:
		return cmdutil.FlagErrorf("--ack-timeout must be positive")
	case o.MaxAttempts < 1 || o.MaxENQAttempts < 1:
		return cmdutil.FlagErrorf("--max-attempts and --max-enq-attempts must be at least 1")
	case o.ENQRetryDelay < 0 || o.ContentionDelay < 0 || o.EOTWait < 0 || o.ChunkDelay < 0 || o.FrameDelay < 0 || o.TransmissionDelay < 0:
		return cmdutil.FlagErrorf("delays must not be negative")
	case o.Chunk < 0:
		return cmdutil.FlagErrorf("--chunk must not be negative")
	case o.Repeat < 1:
		return cmdutil.FlagErrorf("--repeat must be at least 1")
	case o.NoWait && len(o.Corrupt) > 0:
		return cmdutil.FlagErrorf("--corrupt needs replies, so it cannot be used with --no-wait")
	case o.NoWait && (o.FrameDelay > 0 || o.TransmissionDelay > 0):
		return cmdutil.FlagErrorf("--inter-frame-delay and --inter-transmission-delay pace the E1381 sender, which --no-wait bypasses; use --chunk-delay")
	}
	return nil
}

// target names where the replay goes, for messages and the summary.
func (o *Options) target() string {
	if o.Serial != nil {
		return o.Serial.String()
	}
	return net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
}
