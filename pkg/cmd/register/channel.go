package register

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Channel is one --channel NAME=URL[,bot=Bot/ID].
type Channel struct {
	Name    string
	Address string
	Bot     string // "Bot/<id>", or "" to keep the Agent's current Bot
}

// Channel names travel in every agent:transmit:request and appear in logs,
// so they are kept to a safe alphabet.
var (
	channelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	fhirID      = regexp.MustCompile(`^[A-Za-z0-9.-]{1,64}$`)
)

// channelSchemes are the endpoint address schemes the agent listens on.
var channelSchemes = map[string]bool{"mllp": true, "tcp": true, "dicom": true}

const botSuffix = ",bot="

// ParseChannel parses NAME=URL[,bot=Bot/ID]. The bot part is found from the
// end, so the URL itself may contain commas.
func ParseChannel(s string) (Channel, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || rest == "" {
		return Channel{}, fmt.Errorf("invalid --channel %q: want NAME=URL[,bot=Bot/ID]", s)
	}
	if !channelName.MatchString(name) {
		return Channel{}, fmt.Errorf("invalid channel name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	c := Channel{Name: name, Address: rest}
	if i := strings.LastIndex(rest, botSuffix); i >= 0 {
		c.Address = rest[:i]
		bot, err := botReference(rest[i+len(botSuffix):])
		if err != nil {
			return Channel{}, fmt.Errorf("channel %s: %w", name, err)
		}
		c.Bot = bot
	}
	if err := checkAddress(c.Address); err != nil {
		return Channel{}, fmt.Errorf("channel %s: %w", name, err)
	}
	return c, nil
}

// botReference accepts "Bot/ID" or a bare ID.
func botReference(s string) (string, error) {
	id := strings.TrimPrefix(s, "Bot/")
	if !fhirID.MatchString(id) {
		return "", fmt.Errorf("invalid bot %q: want Bot/ID", s)
	}
	return "Bot/" + id, nil
}

// checkAddress accepts what the agent can listen on: mllp://, tcp:// or
// dicom:// with a host and a port.
func checkAddress(addr string) error {
	u, err := url.Parse(addr)
	if err != nil || !channelSchemes[u.Scheme] || u.Host == "" {
		return fmt.Errorf("invalid address %q: want mllp://, tcp:// or dicom://HOST:PORT", addr)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid address %q: the port must be 1 to 65535", addr)
	}
	return nil
}
