// Package listen implements `medplum-agent hl7 listen`.
package listen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/hl7/charset"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// Options holds the inputs of `hl7 listen`.
type Options struct {
	IO  *iostreams.IOStreams
	Now func() time.Time

	Host        string
	Port        int
	Encoding    string
	Ack         hl7.AckCode // "" = send nothing
	Enhanced    bool
	JSON        bool
	IdleTimeout time.Duration
}

// NewCmdListen builds the command; runF replaces the run function in tests.
func NewCmdListen(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Now: f.Now}
	var ack string
	cmd := &cobra.Command{
		Use:   "listen PORT",
		Short: "Receive HL7 v2 messages over MLLP, print them and answer with an ACK",
		Long: `Listen for MLLP connections, print every HL7 message received (carriage returns
turned into line feeds, or one JSON object per line with --json) and answer it.

--ack chooses the answer (AA by default; AE, AR and CA simulate other devices, none
never answers). --enhanced answers CA at once and then the --ack code, like an
enhanced-mode receiver. Frames that are not HL7 are reported on standard error and
never disturb the messages around them.

Runs until interrupted (SIGINT or SIGTERM) and then exits 0. A port already in use
is an error (exit 5).`,
		Example: `  medplum-agent hl7 listen 2575
  medplum-agent hl7 listen 2575 --host 127.0.0.1 --ack AE
  medplum-agent hl7 listen 2575 --enhanced --json > received.jsonl`,
		Args: cmdutil.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[0])
			if err != nil || port < 0 || port > 65535 {
				return cmdutil.FlagErrorf("invalid port %q: must be a number from 0 to 65535", args[0])
			}
			opts.Port = port
			switch a := strings.ToUpper(ack); a {
			case "NONE":
				opts.Ack = ""
			case "AA", "AE", "AR", "CA", "CE", "CR":
				opts.Ack = hl7.AckCode(a)
			default:
				return cmdutil.FlagErrorf("invalid --ack %q: use AA, AE, AR, CA, CE, CR or none", ack)
			}
			if _, err := charset.Lookup(opts.Encoding); err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return listenRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Host, "host", "", "Address to bind (default all interfaces)")
	fl.StringVarP(&opts.Encoding, "encoding", "e", "utf-8", "Wire `charset` (utf-8, iso-8859-1, windows-1252, us-ascii, ...)")
	fl.StringVar(&ack, "ack", "AA", "Answer to each message: AA, AE, AR, CA, CE, CR or none")
	fl.BoolVar(&opts.Enhanced, "enhanced", false, "Send a commit ACK (CA) at once, then the --ack answer")
	fl.BoolVar(&opts.JSON, "json", false, "Print one JSON object per message per line")
	fl.DurationVar(&opts.IdleTimeout, "idle-timeout", 0, "Close connections idle this long (0 = never)")
	_ = cmd.RegisterFlagCompletionFunc("ack", cobra.FixedCompletions([]string{"AA", "AE", "AR", "CA", "CE", "CR", "none"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("encoding", cobra.FixedCompletions(charset.Names(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

type jsonMessage struct {
	Time      string `json:"time"`
	Remote    string `json:"remote"`
	ControlID string `json:"controlId"`
	Type      string `json:"type"`
	Ack       string `json:"ack,omitempty"`
	Message   string `json:"message"`
}

func listenRun(ctx context.Context, opts *Options) error {
	var outMu sync.Mutex // messages from many connections print whole
	print := func(c *mllp.Conn, m *hl7.Message) {
		outMu.Lock()
		defer outMu.Unlock()
		if opts.JSON {
			code, trigger, structure := m.Type()
			typ := strings.TrimRight(code+"^"+trigger+"^"+structure, "^")
			_ = json.NewEncoder(opts.IO.Out).Encode(jsonMessage{
				Time: opts.Now().UTC().Format(time.RFC3339Nano), Remote: c.RemoteAddr(), ControlID: m.ControlID(),
				Type: typ, Ack: string(opts.Ack), Message: m.String(),
			})
			return
		}
		fmt.Fprintln(opts.IO.Out, strings.ReplaceAll(m.String(), "\r", "\n"))
	}
	warn := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(opts.IO.ErrOut, "warning: "+format+"\n", args...)
	}

	srv := &mllp.Server{
		Encoding:    opts.Encoding,
		IdleTimeout: opts.IdleTimeout,
		Handler: func(c *mllp.Conn, m *hl7.Message) {
			print(c, m)
			if opts.Enhanced && opts.Ack != hl7.CA {
				if err := c.Send(hl7.BuildAck(m, hl7.CA, hl7.AckOptions{})); err != nil {
					warn("sending CA to %s: %v", c.RemoteAddr(), err)
					return
				}
			}
			if opts.Ack != "" {
				if err := c.Send(hl7.BuildAck(m, opts.Ack, hl7.AckOptions{})); err != nil {
					warn("sending %s to %s: %v", opts.Ack, c.RemoteAddr(), err)
				}
			}
		},
		OnBadFrame: func(c *mllp.Conn, payload []byte, err error) {
			warn("ignored a %d-byte frame from %s: %v", len(payload), c.RemoteAddr(), err)
		},
		OnDisconnect: func(c *mllp.Conn, err error) {
			if err != nil && !errors.Is(err, net.ErrClosed) {
				warn("connection from %s closed: %v", c.RemoteAddr(), err)
			}
		},
	}
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	if err := srv.Listen(addr); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("cannot listen on %s: the port is already in use", addr))
		}
		return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("cannot listen on %s: %w", addr, err))
	}
	fmt.Fprintf(opts.IO.ErrOut, "Listening on %s\n", srv.Addr())

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-served
	return nil
}
