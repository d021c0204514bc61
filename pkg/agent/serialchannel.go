package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/serialport"
)

// serialKind is serial:///dev/ttyUSB0?baud=9600&dataBits=8&parity=none&stopBits=1
// plus the byte-stream parameters (mode=astm, or raw framing with
// startChar and endChar). The device is the link: it is reopened whenever
// it goes away (a USB adapter unplugged) or cannot be opened yet. The
// remote of its messages is the device path.
var serialKind = &channelKind{scheme: "serial", label: "Serial", parse: parseSerialParams, open: openSerial, device: true}

// serialRetry is the first wait before reopening a device; it doubles up
// to serialport's ceiling while the device stays away.
const serialRetry = time.Second

// serialParams are a serial address's line settings and channel parameters.
type serialParams struct {
	line   serialport.Config // Device is empty: it is in the address's path
	stream *byteStreamParams
}

// parseSerialParams checks the line settings with serialport's own rules;
// the device itself is not in q, so a placeholder stands in for it.
func parseSerialParams(q url.Values) (any, []issue) {
	u := url.URL{Scheme: "serial", Opaque: "device", RawQuery: q.Encode()}
	line, err := serialport.ParseURL(u.String())
	if err != nil {
		return nil, []issue{problem("%v", err)}
	}
	stream, issues := parseStreamParams(line.Params)
	line.Device, line.Params = "", nil
	return &serialParams{line: line, stream: stream}, issues
}

// serialChannel keeps one serial port open and serves it.
type serialChannel struct {
	*streamChannel
	cfg channelSpec // touched under the agent's apply lock only

	cancel context.CancelFunc
	done   chan struct{} // closed when the port loop has ended
}

func openSerial(a *Agent, s channelSpec) channel {
	return &serialChannel{
		streamChannel: newStreamChannel(a, s.name, s.params.(*serialParams).stream),
		cfg:           s,
	}
}

func (ch *serialChannel) spec() channelSpec { return ch.cfg }

// portConfig is the device of the address with the validated line settings.
func portConfig(s channelSpec) (serialport.Config, error) {
	u, err := serialport.ParseURL(s.address)
	if err != nil {
		return serialport.Config{}, err
	}
	cfg := s.params.(*serialParams).line
	cfg.Device = u.Device
	return cfg, nil
}

// start launches the port loop. A device that is absent now is not an
// error: it is opened when it appears.
func (ch *serialChannel) start() error {
	cfg, err := portConfig(ch.cfg)
	if err != nil {
		return fmt.Errorf("Channel '%s' cannot start: %w", ch.cfg.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch.cancel, ch.done = cancel, make(chan struct{})
	go ch.run(ctx, cfg, ch.done)
	ch.log.Info("Channel started", "address", ch.cfg.address)
	return nil
}

func (ch *serialChannel) run(ctx context.Context, cfg serialport.Config, done chan<- struct{}) {
	defer close(done)
	opts := serialport.KeepOptions{
		RetryDelay: serialRetry,
		OnRetry: func(err error, after time.Duration) {
			ch.log.Warn("Serial port unavailable; retrying", "device", cfg.Device, "retryIn", after, "err", err)
		},
	}
	err := serialport.Keep(ctx, cfg, opts, func(ctx context.Context, c *serialport.Conn) error {
		ch.log.Info("Serial port opened", "device", cfg.Device)
		err := ch.serve(ctx, &deviceConn{streamConn: c, remote: cfg.Device})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Whatever ended the link (end of stream, a failed read or
		// write), the device is reopened.
		if !errors.Is(err, serialport.ErrDisconnected) {
			err = fmt.Errorf("%w: %v", serialport.ErrDisconnected, err)
		}
		return err
	})
	if ctx.Err() == nil {
		ch.log.Error("Serial channel stopped", "device", cfg.Device, "err", err)
	}
}

// reconfigure applies new channel parameters in place; a new device, new
// line settings, a new mode or new ASTM receiver options reopen the port.
func (ch *serialChannel) reconfigure(s channelSpec) error {
	old, next := ch.cfg.params.(*serialParams), s.params.(*serialParams)
	oldPort, _ := portConfig(ch.cfg)
	newPort, err := portConfig(s)
	if err != nil {
		return fmt.Errorf("Channel '%s' cannot start: %w", s.name, err)
	}
	ch.cfg = s
	ch.params.Store(next.stream)
	ch.log.Info("Channel reconfigured", "address", s.address)
	if oldPort.String() == newPort.String() && old.stream.sameLink(next.stream) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), channelStopGrace)
	defer cancel()
	ch.halt(ctx)
	return ch.start()
}

// halt ends the port loop, which closes the port; a read loop finishes the
// chunk it read first.
func (ch *serialChannel) halt(ctx context.Context) {
	ch.cancel()
	select {
	case <-ch.done:
	case <-ctx.Done():
		ch.log.Warn("Serial port still busy; leaving it to close by itself")
	}
}

func (ch *serialChannel) stop(ctx context.Context) {
	ch.halt(ctx)
	ch.log.Info("Channel stopped")
}
