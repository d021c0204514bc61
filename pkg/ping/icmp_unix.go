//go:build linux || darwin

package ping

import (
	"net"
	"os"
	"syscall"
)

// openDatagram opens an unprivileged ICMP datagram socket ("ping socket"),
// which Linux allows for groups in net.ipv4.ping_group_range and macOS
// allows to everyone.
func openDatagram() (net.PacketConn, error) {
	// ForkLock keeps a concurrent fork from inheriting the descriptor
	// before it is marked close-on-exec.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, syscall.IPPROTO_ICMP)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{}); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close() // FilePacketConn works on a duplicate
	return net.FilePacketConn(f)
}
