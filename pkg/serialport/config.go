// Package serialport opens serial ports named by serial:// URLs, gives them
// the read deadlines the ASTM link layer needs, and reopens a port whose
// device was unplugged.
//
// A URL names the device and the line settings; other query parameters are
// kept for the channel that uses the port:
//
//	serial:///dev/ttyUSB0?baud=9600&dataBits=8&parity=none&stopBits=1&mode=astm
//	serial://COM3?baud=19200
//
// Ports are driven by go.bug.st/serial. Nothing here logs or exits.
package serialport

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Line-setting defaults: the usual RS-232 setting of ASTM E1381 (9600 8N1).
const (
	DefaultBaud     = 9600
	DefaultDataBits = 8
	DefaultParity   = "none"
	DefaultStopBits = "1"
)

// Config is a serial port and its line settings.
type Config struct {
	Device   string // /dev/ttyUSB0, COM3
	Baud     int
	DataBits int    // 5 to 8
	Parity   string // none, odd, even, mark or space
	StopBits string // 1, 1.5 or 2
	// Params holds the URL's other query parameters (mode=astm, ...), which
	// belong to the channel rather than to the port.
	Params url.Values
}

// NewConfig returns the default line settings for device.
func NewConfig(device string) Config {
	return Config{Device: device, Baud: DefaultBaud, DataBits: DefaultDataBits, Parity: DefaultParity, StopBits: DefaultStopBits}
}

// Line-setting parameter names. baudRate is the reference agent's spelling.
var paramNames = []string{"baud", "baudRate", "dataBits", "parity", "stopBits"}

// ParseURL reads a serial:// URL. Unset line settings take the defaults;
// a setting given twice, or out of range, is an error that names it.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("serialport: %w", err)
	}
	if !strings.EqualFold(u.Scheme, "serial") {
		return Config{}, fmt.Errorf("serialport: %q is not a serial:// URL", raw)
	}
	// serial:///dev/ttyUSB0 has the device in the path, serial://COM3 in the
	// host and serial:COM3 in the opaque part.
	dev := u.Opaque
	if dev == "" {
		dev = u.Host + u.Path
	}
	if dev == "" {
		return Config{}, fmt.Errorf("serialport: %q names no device", raw)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("serialport: query of %q: %w", raw, err)
	}
	c := NewConfig(dev)
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		vals := q[name]
		if !slices.Contains(paramNames, name) {
			if c.Params == nil {
				c.Params = url.Values{}
			}
			c.Params[name] = vals
			continue
		}
		key := canonical(name)
		if seen[key] || len(vals) > 1 {
			return Config{}, fmt.Errorf("serialport: %s is given more than once in %q", key, raw)
		}
		seen[key] = true
		if err := c.Set(name, vals[0]); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

func canonical(name string) string {
	if name == "baudRate" {
		return "baud"
	}
	return name
}

// Set applies one line setting by its URL parameter name (baud, baudRate,
// dataBits, parity or stopBits) and checks the value.
func (c *Config) Set(name, value string) error {
	switch canonical(name) {
	case "baud":
		n, err := strconv.Atoi(value)
		if err != nil || n < 50 || n > 4_000_000 {
			return fmt.Errorf("serialport: invalid %s %q: want a whole number from 50 to 4000000", name, value)
		}
		c.Baud = n
	case "dataBits":
		n, err := strconv.Atoi(value)
		if err != nil || n < 5 || n > 8 {
			return fmt.Errorf("serialport: invalid dataBits %q: want 5, 6, 7 or 8", value)
		}
		c.DataBits = n
	case "parity":
		p := strings.ToLower(value)
		if !slices.Contains([]string{"none", "odd", "even", "mark", "space"}, p) {
			return fmt.Errorf("serialport: invalid parity %q: want none, odd, even, mark or space", value)
		}
		c.Parity = p
	case "stopBits":
		if value != "1" && value != "1.5" && value != "2" {
			return fmt.Errorf("serialport: invalid stopBits %q: want 1, 1.5 or 2", value)
		}
		if value == "1.5" && runtime.GOOS != "windows" {
			return errors.New("serialport: 1.5 stop bits are only available on Windows")
		}
		c.StopBits = value
	default:
		return fmt.Errorf("serialport: unknown line setting %q", name)
	}
	return nil
}

// String renders c as a serial:// URL that ParseURL reads back.
func (c Config) String() string {
	u := url.URL{Scheme: "serial"}
	if strings.HasPrefix(c.Device, "/") {
		u.Path = c.Device
	} else {
		u.Host = c.Device
	}
	q := url.Values{}
	for k, v := range c.Params {
		q[k] = v
	}
	q.Set("baud", strconv.Itoa(c.Baud))
	q.Set("dataBits", strconv.Itoa(c.DataBits))
	q.Set("parity", c.Parity)
	q.Set("stopBits", c.StopBits)
	u.RawQuery = q.Encode()
	return u.String()
}

// validate checks a Config built by hand rather than by ParseURL.
func (c Config) validate() error {
	if c.Device == "" {
		return errors.New("serialport: no device")
	}
	settings := [][2]string{
		{"baud", strconv.Itoa(c.Baud)}, {"dataBits", strconv.Itoa(c.DataBits)}, {"parity", c.Parity}, {"stopBits", c.StopBits},
	}
	for _, s := range settings {
		probe := c
		if err := probe.Set(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}
