package serialport

import (
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    Config
		wantErr string
	}{
		{"defaults", "serial:///dev/ttyUSB0",
			Config{Device: "/dev/ttyUSB0", Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1"}, ""},
		{"all settings and a channel parameter", "serial:///dev/ttyS1?baud=19200&dataBits=7&parity=even&stopBits=2&mode=astm",
			Config{Device: "/dev/ttyS1", Baud: 19200, DataBits: 7, Parity: "even", StopBits: "2", Params: url.Values{"mode": {"astm"}}}, ""},
		{"reference spelling baudRate", "serial:///dev/ttyS1?baudRate=115200",
			Config{Device: "/dev/ttyS1", Baud: 115200, DataBits: 8, Parity: "none", StopBits: "1"}, ""},
		{"windows port in the host", "serial://COM3?parity=ODD",
			Config{Device: "COM3", Baud: 9600, DataBits: 8, Parity: "odd", StopBits: "1"}, ""},
		{"opaque form", "serial:COM4",
			Config{Device: "COM4", Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1"}, ""},
		{"upper-case scheme", "SERIAL:///dev/ttyACM0",
			Config{Device: "/dev/ttyACM0", Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1"}, ""},
		{"wrong scheme", "tcp://127.0.0.1:4000", Config{}, "is not a serial:// URL"},
		{"no device", "serial://", Config{}, "names no device"},
		{"baud not a number", "serial:///dev/ttyS0?baud=fast", Config{}, `invalid baud "fast": want a whole number from 50 to 4000000`},
		{"baud zero", "serial:///dev/ttyS0?baud=0", Config{}, `invalid baud "0"`},
		{"baud too high", "serial:///dev/ttyS0?baudRate=5000000", Config{}, `invalid baudRate "5000000"`},
		{"baud twice", "serial:///dev/ttyS0?baud=9600&baud=19200", Config{}, "baud is given more than once"},
		{"baud and baudRate", "serial:///dev/ttyS0?baud=9600&baudRate=9600", Config{}, "baud is given more than once"},
		{"data bits 9", "serial:///dev/ttyS0?dataBits=9", Config{}, `invalid dataBits "9": want 5, 6, 7 or 8`},
		{"data bits 4", "serial:///dev/ttyS0?dataBits=4", Config{}, `invalid dataBits "4"`},
		{"parity letter", "serial:///dev/ttyS0?parity=N", Config{}, `invalid parity "N": want none, odd, even, mark or space`},
		{"stop bits 3", "serial:///dev/ttyS0?stopBits=3", Config{}, `invalid stopBits "3": want 1, 1.5 or 2`},
		{"bad query", "serial:///dev/ttyS0?baud=%zz", Config{}, "query of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURL(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.url, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseURL(%q) (-want +got):\n%s", tt.url, diff)
			}
			back, err := ParseURL(got.String())
			if err != nil {
				t.Fatalf("ParseURL(String() = %q): %v", got.String(), err)
			}
			if diff := cmp.Diff(got, back); diff != "" {
				t.Errorf("String() %q does not read back (-want +got):\n%s", got.String(), diff)
			}
		})
	}
}

func TestOneAndAHalfStopBits(t *testing.T) {
	_, err := ParseURL("serial:///dev/ttyS0?stopBits=1.5")
	if runtime.GOOS == "windows" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "only available on Windows") {
		t.Fatalf("error = %v, want the Windows-only error", err)
	}
}

func TestString(t *testing.T) {
	c := NewConfig("/dev/ttyUSB0")
	c.Params = url.Values{"mode": {"astm"}}
	want := "serial:///dev/ttyUSB0?baud=9600&dataBits=8&mode=astm&parity=none&stopBits=1"
	if got := c.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no device", NewConfig(""), "no device"},
		{"zero value settings", Config{Device: "/dev/null"}, "invalid baud"},
		{"bad parity", Config{Device: "/dev/null", Baud: 9600, DataBits: 8, Parity: "x", StopBits: "1"}, "invalid parity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
