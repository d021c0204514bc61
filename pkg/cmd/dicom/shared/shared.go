// Package shared holds what `dicom echo` and `dicom send` have in common:
// the association flags, the target address and the mapping of association
// failures to messages and exit codes.
package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// minMaxPDU is the smallest Maximum Length we accept on the command line:
// dcmtk's lower bound, below which throughput collapses.
const minMaxPDU = 4096

// Association is the part of a requestor's configuration set by flags.
type Association struct {
	CallingAE string
	CalledAE  string
	Timeout   time.Duration
	MaxPDU    uint32
}

// AddFlags binds the association flags to cmd.
func (a *Association) AddFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&a.CallingAE, "calling-ae", assoc.DefaultCallingAE, "Our AE title (calling AE)")
	fs.StringVar(&a.CalledAE, "called-ae", assoc.DefaultCalledAE, "The peer's AE title (called AE)")
	fs.DurationVarP(&a.Timeout, "timeout", "t", 30*time.Second,
		"How long to wait for the connection, the association, each response and the release")
	fs.Uint32Var(&a.MaxPDU, "max-pdu", assoc.DefaultMaxPDU, "Largest PDU we accept, in `bytes` (4096 to 16777216)")
}

// Validate reports bad flag values as usage errors.
func (a *Association) Validate() error {
	for _, ae := range []struct{ flag, v string }{{"calling-ae", a.CallingAE}, {"called-ae", a.CalledAE}} {
		if !dicom.ValidAETitle(ae.v) {
			return cmdutil.FlagErrorf("invalid --%s %q: 1 to 16 printable ASCII characters, no backslash", ae.flag, ae.v)
		}
	}
	if a.Timeout <= 0 {
		return cmdutil.FlagErrorf("--timeout must be positive")
	}
	if a.MaxPDU < minMaxPDU || a.MaxPDU > pdu.HardLimit {
		return cmdutil.FlagErrorf("--max-pdu must be from %d to %d", minMaxPDU, pdu.HardLimit)
	}
	return nil
}

// Options turns the flags into assoc.Options proposing contexts.
func (a *Association) Options(contexts []assoc.Context) assoc.Options {
	return assoc.Options{
		CallingAE: a.CallingAE,
		CalledAE:  a.CalledAE,
		Contexts:  contexts,
		MaxPDU:    a.MaxPDU,
		Timeouts:  assoc.Timeouts{Connect: a.Timeout, ACSE: a.Timeout, DIMSE: a.Timeout},
	}
}

// Addr validates the HOST and PORT arguments and joins them.
func Addr(host, port string) (string, error) {
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", cmdutil.FlagErrorf("invalid port %q: must be a number from 1 to 65535", port)
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// LogPeer records at debug level what the acceptor announced and which
// contexts it refused, to diagnose negotiation without a packet capture.
func LogPeer(log *slog.Logger, addr string, a *assoc.Association) {
	p := a.Peer()
	log.Debug("association accepted", "peer", addr, "implementation_class_uid", p.ImplementationClassUID,
		"implementation_version", p.ImplementationVersionName, "peer_max_pdu", p.MaxPDU)
	for _, c := range a.Contexts() {
		if c.Result != pdu.ResultAcceptance {
			log.Debug("presentation context rejected", "id", c.ID, "abstract_syntax", c.AbstractSyntax, "result", c.Result.String())
		}
	}
}

// Error maps a failure of the association with addr to an error carrying
// the exit code and saying what happened in words: 3 when the peer said no
// (A-ASSOCIATE-RJ, A-ABORT, no accepted context), 5 when the connection
// failed or dropped, 124 on a timeout, 130 when interrupted.
func (a *Association) Error(addr string, err error) error {
	var rj *assoc.RejectError
	var ab *assoc.AbortError
	switch {
	case errors.Is(err, context.Canceled):
		return cmdutil.ErrInterrupted
	case errors.As(err, &rj):
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%s rejected the association: %s (result %d, source %d, reason %d)",
			addr, rj.AssociateRJ.String(), rj.Result, rj.Source, rj.Reason))
	case errors.As(err, &ab):
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%s aborted the association (%s)", addr, ab.Abort.String()))
	case errors.Is(err, assoc.ErrNoContext):
		return cmdutil.WithCode(cmdutil.ExitRejected, fmt.Errorf("%s: %w", addr, err))
	case errors.Is(err, assoc.ErrTimeout):
		return cmdutil.WithCode(cmdutil.ExitTimeout, fmt.Errorf("%s did not answer within %s: %w", addr, a.Timeout, err))
	case errors.Is(err, assoc.ErrConnect):
		return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("could not connect to %s: %w", addr, dialCause(err)))
	case connectionLost(err):
		return cmdutil.WithCode(cmdutil.ExitConnect, fmt.Errorf("connection to %s lost: %w", addr, err))
	}
	return fmt.Errorf("%s: %w", addr, err)
}

// dialCause returns the system or DNS error inside a connect failure, which
// says it best ("connection refused").
func dialCause(err error) error {
	var errno syscall.Errno
	var dns *net.DNSError
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.As(err, &dns):
		return dns
	}
	return err
}

// connectionLost reports a transport that closed or reset under the
// association, e.g. a peer that is not a DICOM service.
func connectionLost(err error) bool {
	var oe *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, assoc.ErrClosed) || errors.As(err, &oe) && !oe.Timeout()
}
