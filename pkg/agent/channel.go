package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"syscall"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// channel is one device-facing listener. The agent calls start, reconfigure
// and stop from one goroutine at a time (under its apply lock);
// handleResponse may run concurrently with them.
type channel interface {
	// start binds the port and begins serving.
	start() error
	// reconfigure applies new URL parameters of the same kind and port,
	// keeping device connections where it can.
	reconfigure(s channelSpec) error
	// stop stops accepting, lets exchanges in progress finish until ctx is
	// done, then closes every connection.
	stop(ctx context.Context)
	// handleResponse routes a server response to the device it answers. An
	// error is reported to the server as an agent:error.
	handleResponse(m *protocol.Message) error
	// spec returns the configuration the channel runs.
	spec() channelSpec
}

// channelKind is one URL scheme of Endpoint.address.
type channelKind struct {
	scheme string // address prefix, e.g. "mllp"
	label  string // for logs, e.g. "HL7"
	// parse validates the URL parameters and returns the kind's parameter
	// value and any issues.
	parse func(q url.Values) (any, []issue)
	open  func(a *Agent, s channelSpec) channel
	// device marks kinds that open a local device (the address's path)
	// rather than bind a port.
	device bool
}

// channelKinds are tried in order against the address prefix.
var channelKinds = []*channelKind{hl7Kind, byteStreamKind, serialKind, dicomKind}

// listenAddr is where a channel binds: every interface, on the address's
// port. The host part of the address is ignored, as in the reference; a
// config written for the reference with 127.0.0.1 or localhost in it still
// receives from the network after a switch to this agent.
func listenAddr(port int) string { return ":" + strconv.Itoa(port) }

// bindError names the channel and the port in a bind failure, with the
// POSIX code the reference reports (e.g. "EADDRINUSE").
func bindError(name string, port int, err error) error {
	reason := err.Error()
	for _, e := range []struct {
		errno syscall.Errno
		code  string
	}{{syscall.EADDRINUSE, "EADDRINUSE"}, {syscall.EACCES, "EACCES"}} {
		if errors.Is(err, e.errno) {
			reason = e.code
		}
	}
	return fmt.Errorf("Channel '%s' cannot start: Unable to bind port %d: %s", name, port, reason)
}

// probePort checks that port can be bound now, by binding it and letting go.
func probePort(name string, port int) error {
	ln, err := net.Listen("tcp", listenAddr(port))
	if err != nil {
		return bindError(name, port, err)
	}
	return ln.Close()
}
