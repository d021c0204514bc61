//go:build !linux && !darwin

package ping

import (
	"errors"
	"net"
)

// openDatagram reports that this system has no unprivileged ICMP sockets;
// only the raw socket remains.
func openDatagram() (net.PacketConn, error) {
	return nil, errors.New("unprivileged ICMP sockets are not supported on this system")
}
