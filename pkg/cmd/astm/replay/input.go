package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/medplum-agent/medplum-agent/pkg/astm"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
)

// maxInput bounds one input file; the largest real captures are far smaller.
const maxInput = 64 << 20

// input is one FILE, parsed before anything is sent so that a bad file is
// reported before the listener sees a byte.
type input struct {
	name   string
	script *astm.Script // script format
	txs    [][][]byte   // frames of each transmission
	units  [][]byte     // --no-wait: every unit to write, in order
}

// loadInput reads and parses one file; warn receives problems that do not
// stop the replay.
func (o *Options) loadInput(name string, warn func(format string, args ...any)) (*input, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	format := astm.DetectInputFormat(data)
	if o.Format != FormatAuto {
		format, _ = astm.ParseInputFormat(o.Format) // checked by the command
	}
	in := &input{name: name}
	bad := func(err error) error { return cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("%s: %w", name, err)) }
	switch format {
	case astm.InputScript:
		if in.script, err = astm.ParseScript(bytes.NewReader(data)); err != nil {
			return nil, bad(err)
		}
		if in.script.Role == "sender" {
			return nil, bad(errors.New("the script plays the LIS (@ role sender); replay plays the instrument, so it needs a role listener script"))
		}
		return in, nil
	case astm.InputRecords:
		frameSize := o.FrameSize
		if frameSize == 0 {
			frameSize = -1 // BuildFrames: never split
		}
		for _, records := range astm.ParseTranscript(data, o.Split) {
			in.txs = append(in.txs, astm.BuildFrames(records, o.Packing, frameSize, o.Style))
		}
		if o.NoWait {
			for _, frames := range in.txs {
				in.units = append(append(append(in.units, []byte{astm.ENQ}), frames...), []byte{astm.EOT})
			}
		}
	case astm.InputMnemonic:
		if data, err = astm.ParseMnemonic(string(stripComments(data))); err != nil {
			return nil, bad(err)
		}
		fallthrough
	case astm.InputRaw:
		o.splitCapture(in, data, warn)
	}
	if len(in.txs) == 0 {
		return nil, bad(fmt.Errorf("nothing to send in %s input", format))
	}
	return in, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, cmdutil.WithCode(cmdutil.ExitUsage, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(b) > maxInput {
		return nil, cmdutil.WithCode(cmdutil.ExitUsage, fmt.Errorf("%s: larger than %d MiB", name, maxInput>>20))
	}
	return b, nil
}

// stripComments drops mnemonic lines whose first non-blank byte is '#';
// a unit never starts with '#' because frames start with <STX>.
func stripComments(data []byte) []byte {
	var out []byte
	for line := range bytes.Lines(data) {
		if t := bytes.TrimLeft(line, " \t"); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// splitCapture groups a capture's units into transmissions: ENQ opens one,
// EOT closes it, and frames outside ENQ…EOT open one of their own. Bytes
// that are not a complete frame can only be written with --no-wait, since
// no listener answers them.
func (o *Options) splitCapture(in *input, data []byte, warn func(format string, args ...any)) {
	var cur [][]byte
	open := false
	end := func() {
		if open {
			in.txs = append(in.txs, cur)
		}
		cur, open = nil, false
	}
	for _, u := range astm.SplitUnits(data) {
		out := u
		switch {
		case len(u) == 1 && u[0] == astm.ENQ:
			end()
			open = true
		case len(u) == 1 && u[0] == astm.EOT:
			end()
		default:
			f, err := astm.DecodeFrame(u)
			if err != nil {
				if !o.NoWait && len(bytes.TrimSpace(u)) > 0 {
					warn("%s: skipping bytes that are not a complete frame (%s); --no-wait sends them", in.name, preview(u))
				}
				break
			}
			open = true
			out = o.fixFrame(in.name, len(in.txs)+1, len(cur)+1, f, u, warn)
			cur = append(cur, out)
		}
		if o.NoWait {
			in.units = append(in.units, out)
		}
	}
	end()
}

// preview renders the start of b for a message.
func preview(b []byte) string {
	const n = 24
	if len(b) > n {
		return astm.FormatMnemonic(b[:n]) + "..."
	}
	return astm.FormatMnemonic(b)
}

// fixFrame applies --renumber and --fix-checksums to frame n of transmission
// tx, or reports a wrong recorded checksum.
func (o *Options) fixFrame(name string, tx, n int, f astm.Frame, unit []byte, warn func(format string, args ...any)) []byte {
	if o.Renumber {
		f.Number = '0' + byte(n%8)
		return f.Encode()
	}
	if f.ChecksumOK() {
		return unit
	}
	if o.FixChecksums {
		return f.Encode()
	}
	good := f.Encode()
	warn("%s: transmission %d, frame %d: recorded checksum %s, computed %s; sent as recorded (--fix-checksums corrects it)",
		name, tx, n, f.Checksum[:], good[len(good)-4:len(good)-2])
	return unit
}
