// Package ping answers ping requests from the server (agent:transmit:request
// with contentType x-application/ping, §4.3 of the protocol spec). It runs
// the system ping so the transcript is what the reference agent returns, and
// falls back to a native ICMP echo with the same transcript layout when no
// ping command is installed.
package ping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

const (
	// DefaultTimeout is the reference's exec timeout (DEFAULT_PING_TIMEOUT,
	// milliseconds): enough for one echo.
	DefaultTimeout = 3600 * time.Millisecond
	// MaxTimeout caps the timeout derived from a large count; the server
	// stops waiting after 55 s anyway.
	MaxTimeout = 60 * time.Second
	// maxOutput bounds what is kept of each output stream of the command.
	maxOutput = 64 << 10
	// defaultInterval is the pause between echo requests of the native
	// ping, as the system ping's default.
	defaultInterval = time.Second
)

// bodyUnused is the reference's warning for a body that is not "PING[ n]".
const bodyUnused = "Message body present but unused. Body for a ping request should be empty or a message formatted as `PING[ count]`."

// Options configure Handle.
type Options struct {
	// Timeout bounds the whole ping. 0 means DefaultTimeout, or count·1 s +
	// 2 s when that is longer (up to MaxTimeout), since the system ping sends
	// one echo per second and the reference's fixed 3.6 s would kill any
	// count above 3.
	Timeout time.Duration
	// Command is the ping program; "" looks up "ping" on PATH. When it
	// cannot be found the native ICMP echo runs instead.
	Command string

	interval time.Duration // between native echo requests; 0 means defaultInterval
}

func (o Options) timeout(count int) time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	if count >= int(MaxTimeout/time.Second) {
		return MaxTimeout
	}
	return min(max(DefaultTimeout, time.Duration(count)*time.Second+2*time.Second), MaxTimeout)
}

// Handle executes a ping request and returns the transmit response: 200
// x-application/ping with the trimmed transcript, or 400 text/plain with
// the error text. callback, remote and channel are echoed. logger may be nil.
func Handle(ctx context.Context, req *protocol.Message, opt Options, logger *slog.Logger) *protocol.Message {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out, err := run(ctx, req, opt, logger)
	if err != nil {
		host := req.Remote
		if host == "" {
			host = "NO_HOST_GIVEN"
		}
		logger.Error("Error during ping attempt to " + host + ": " + err.Error())
		return protocol.TransmitResponse(req, http.StatusBadRequest, protocol.ContentTypeText, err.Error())
	}
	logger.Info("Ping result for " + req.Remote + ":\n\n" + out)
	return protocol.TransmitResponse(req, http.StatusOK, protocol.ContentTypePing, out)
}

// run validates the request the way the reference does, in its order, and
// pings.
func run(ctx context.Context, req *protocol.Message, opt Options, logger *slog.Logger) (string, error) {
	host, body := req.Remote, req.Body
	if body != "" && !strings.HasPrefix(body, "PING") {
		logger.Warn(bodyUnused)
	}
	addr, ipErr := netip.ParseAddr(host)
	if ipErr == nil && addr.Is6() {
		return "", fmt.Errorf("Attempted to ping an IPv6 address: %s\n\nIPv6 is currently unsupported.", host)
	}
	if ipErr != nil && !validHostname(host) {
		return "", fmt.Errorf("Attempted to ping an invalid host.\n\n\"%s\" is not a valid IPv4 address or a resolvable hostname.", host)
	}
	count := 1
	if strings.HasPrefix(body, "PING") {
		if fields := strings.Split(body, " "); len(fields) > 1 && fields[1] != "" {
			n, ok := parseInt(fields[1])
			if !ok {
				return "", fmt.Errorf("Unable to ping %s \"%s\" times. \"%s\" is not a number.", host, fields[1], fields[1])
			}
			count = n
		}
	}
	timeout := opt.timeout(count)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	name := opt.Command
	if name == "" {
		name = "ping"
	}
	path, lookErr := exec.LookPath(name)
	if lookErr != nil {
		logger.Warn("ping command not available; using a native ICMP echo", "command", name, "err", lookErr)
		interval := opt.interval
		if interval <= 0 {
			interval = defaultInterval
		}
		return native(ctx, host, count, interval, lookErr)
	}
	return system(ctx, path, name, commandArgs(host, count), timeout)
}

// validHostname is the reference's hostname syntax check: dot-separated
// labels of letters, digits, '-' and '_' that start and end with a letter
// or digit. It also keeps option-like text away from the command line.
func validHostname(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || !isAlnum(label[0]) || !isAlnum(label[len(label)-1]) {
			return false
		}
		for i := range len(label) {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// parseInt reads a count as JavaScript's parseInt(s, 10) does: leading
// white space, an optional sign, then as many digits as there are; trailing
// text is ignored. It fails without a digit. Values beyond int range are
// clamped.
func parseInt(s string) (int, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r\u00a0\ufeff")
	end := 0
	if end < len(s) && (s[end] == '+' || s[end] == '-') {
		end++
	}
	digits := end
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	if end == digits {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:end], 10, 0)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return int(n), true // on ErrRange, n is the clamped value
}

// system runs the ping command. The error texts follow Node's exec, which
// the reference uses: "Command failed: <command>\n<stderr>" for a failed
// or killed process, "Received on stderr:\n\n<stderr>" for a successful one
// that complained. When a failed run wrote nothing on stderr its stdout is
// given instead, as it carries the reason (e.g. 100% packet loss).
func system(ctx context.Context, path, name string, args []string, timeout time.Duration) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Args[0] = name // as a shell would run it; ping names itself in its errors
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second // a child keeping the pipes open cannot hold us
	err := cmd.Run()
	if err != nil {
		lines := []string{"Command failed: " + strings.Join(append([]string{name}, args...), " ")}
		detail := strings.TrimSpace(stderr.String())
		if detail == "" {
			detail = strings.TrimSpace(stdout.String())
		}
		if detail != "" {
			lines = append(lines, detail)
		}
		var exitErr *exec.ExitError
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			lines = append(lines, fmt.Sprintf("ping did not finish within %s", timeout))
		case ctx.Err() != nil:
			lines = append(lines, ctx.Err().Error())
		case !errors.As(err, &exitErr):
			lines = append(lines, err.Error())
		}
		return "", errors.New(strings.Join(lines, "\n"))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		return "", errors.New("Received on stderr:\n\n" + s)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// capped keeps the first maxOutput bytes written to it and discards the
// rest, reporting them written so the command is not disturbed.
type capped struct{ b []byte }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string { return string(c.b) }
