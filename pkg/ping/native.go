package ping

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	payloadSize   = 56 // data bytes per echo, as the system ping sends
	icmpHeader    = 8
	icmpEchoReply = 0
	icmpEchoReq   = 8
)

// native pings host with ICMP echo requests sent from this process and
// renders the result in the iputils layout, "ping statistics" block
// included. It is used only when the ping command is missing (lookErr says
// why). Every figure comes from replies actually received.
func native(ctx context.Context, host string, count int, interval time.Duration, lookErr error) (string, error) {
	if count < 1 {
		return "", fmt.Errorf("Unable to ping %s %d times; the count must be at least 1", host, count)
	}
	ip, err := resolve4(ctx, host)
	if err != nil {
		return "", fmt.Errorf("ping: %s: %w", host, err)
	}
	conn, raw, err := openICMP()
	if err != nil {
		return "", fmt.Errorf("Unable to ping %s: the ping command is unavailable (%v) and ICMP sockets are not permitted (%v)", host, lookErr, err)
	}
	defer conn.Close()
	return exchange(ctx, conn, raw, host, ip, count, interval)
}

// exchange sends count echo requests to ip over conn, one per interval, and
// returns the transcript; it fails when no reply came back.
func exchange(ctx context.Context, conn net.PacketConn, raw bool, host string, ip net.IP, count int, interval time.Duration) (string, error) {
	var dst net.Addr = &net.UDPAddr{IP: ip}
	if raw {
		dst = &net.IPAddr{IP: ip}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	// Cut a wait short when the caller gives up.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	// A datagram ICMP socket gets its identifier from the kernel, which also
	// routes only our replies to it; a raw socket sees every ICMP packet, so
	// replies are told apart by a random identifier.
	id := uint16(rand.Uint32())
	label := ip.String()
	if label != host {
		label = host + " (" + label + ")"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "PING %s (%s) %d(%d) bytes of data.\n", host, ip, payloadSize, payloadSize+icmpHeader+20)
	var rtts []time.Duration
	sent := 0
	start := time.Now()
	buf := make([]byte, 1500)
	for seq := 1; seq <= count && ctx.Err() == nil; seq++ {
		if seq > 1 {
			next := start.Add(time.Duration(seq-1) * interval)
			if err := sleepUntil(ctx, next); err != nil {
				break
			}
		}
		sentAt := time.Now()
		if _, err := conn.WriteTo(echoRequest(id, uint16(seq)), dst); err != nil {
			fmt.Fprintf(&b, "ping: sendto: %v\n", err)
			break
		}
		sent++
		// Wait for this reply until the next request is due; the last one
		// may use what is left of the timeout.
		waitUntil := sentAt.Add(interval)
		if seq == count || waitUntil.After(deadline) {
			waitUntil = deadline
		}
		if err := conn.SetReadDeadline(waitUntil); err != nil {
			return "", err
		}
		for {
			n, _, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // lost
			}
			if err != nil {
				return "", fmt.Errorf("ping: receiving from %s: %w", host, err)
			}
			if !isReply(buf[:n], raw, id, uint16(seq)) {
				continue
			}
			d := time.Since(sentAt)
			rtts = append(rtts, d)
			fmt.Fprintf(&b, "%d bytes from %s: icmp_seq=%d time=%s ms\n", n, label, seq, formatRTT(d))
			break
		}
	}
	writeStats(&b, host, sent, rtts, time.Since(start))
	out := strings.TrimSpace(b.String())
	if len(rtts) == 0 {
		return "", fmt.Errorf("No reply from %s\n\n%s", host, out)
	}
	return out, nil
}

// resolve4 returns the IPv4 address of host (a literal or a name).
func resolve4(ctx context.Context, host string) (net.IP, error) {
	if ip := net.ParseIP(host).To4(); ip != nil {
		return ip, nil
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", host)
	if err != nil {
		return nil, err
	}
	return ips[0].To4(), nil
}

// openICMP prefers an unprivileged datagram ICMP socket and falls back to a
// raw one, which needs root or CAP_NET_RAW (administrator on Windows). raw
// reports which one it got.
func openICMP() (conn net.PacketConn, raw bool, err error) {
	conn, dgramErr := openDatagram()
	if dgramErr == nil {
		return conn, false, nil
	}
	conn, rawErr := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if rawErr == nil {
		return conn, true, nil
	}
	return nil, false, fmt.Errorf("%v; %v", dgramErr, rawErr)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// echoRequest builds an ICMP echo request with a patterned payload.
func echoRequest(id, seq uint16) []byte {
	p := make([]byte, icmpHeader+payloadSize)
	p[0] = icmpEchoReq
	binary.BigEndian.PutUint16(p[4:], id)
	binary.BigEndian.PutUint16(p[6:], seq)
	for i := icmpHeader; i < len(p); i++ {
		p[i] = byte(i)
	}
	binary.BigEndian.PutUint16(p[2:], checksum(p))
	return p
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// isReply reports whether p (an ICMP message without IP header) is the echo
// reply for seq; on a raw socket the identifier must match too.
func isReply(p []byte, raw bool, id, seq uint16) bool {
	if len(p) < icmpHeader || p[0] != icmpEchoReply || p[1] != 0 {
		return false
	}
	if raw && binary.BigEndian.Uint16(p[4:]) != id {
		return false
	}
	return binary.BigEndian.Uint16(p[6:]) == seq
}

// formatRTT prints a round trip as iputils does: three significant digits
// below 100 ms.
func formatRTT(d time.Duration) string {
	ms := float64(d.Microseconds()) / 1000
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	case ms >= 10:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	case ms >= 1:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	}
	return strconv.FormatFloat(ms, 'f', 3, 64)
}

// writeStats appends the iputils statistics block.
func writeStats(b *strings.Builder, host string, sent int, rtts []time.Duration, elapsed time.Duration) {
	loss := 0.0
	if sent > 0 {
		loss = float64(sent-len(rtts)) * 100 / float64(sent)
	}
	fmt.Fprintf(b, "\n--- %s ping statistics ---\n", host)
	fmt.Fprintf(b, "%d packets transmitted, %d received, %s%% packet loss, time %dms\n",
		sent, len(rtts), strconv.FormatFloat(loss, 'g', 6, 64), elapsed.Milliseconds())
	if len(rtts) == 0 {
		return
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	var sum, sumSq float64
	for _, d := range rtts {
		ms := float64(d.Microseconds()) / 1000
		lo, hi = min(lo, ms), max(hi, ms)
		sum += ms
		sumSq += ms * ms
	}
	n := float64(len(rtts))
	avg := sum / n
	mdev := math.Sqrt(max(sumSq/n-avg*avg, 0))
	fmt.Fprintf(b, "rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", lo, avg, hi, mdev)
}
