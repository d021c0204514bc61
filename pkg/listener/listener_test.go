package listener

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// scripted is a listener whose Accept returns the given errors, then
// ErrClosed.
type scripted struct {
	net.Listener
	errs []error
}

func (s *scripted) Accept() (net.Conn, error) {
	if len(s.errs) == 0 {
		return nil, net.ErrClosed
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return nil, err
}

func TestServe(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	other := errors.New("listener broke")
	tests := []struct {
		name    string
		errs    []error
		want    error
		retries int
	}{
		{"closed", nil, nil, 0},
		{"descriptor shortage is retried", []error{emfile, emfile}, nil, 2},
		{"other errors end the loop", []error{emfile, other}, other, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var retries int
			err := Serve(&scripted{errs: tt.errs}, nil, func(net.Conn) { t.Error("no connection expected") },
				func(error, time.Duration) { retries++ })
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Serve = %v, want %v", err, tt.want)
			}
			if retries != tt.retries {
				t.Errorf("retries = %d, want %d", retries, tt.retries)
			}
		})
	}
}

func TestServeHandsOverConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn, 3)
	done := make(chan error, 1)
	go func() { done <- Serve(ln, nil, func(c net.Conn) { got <- c }, nil) }()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(<-got).Close()
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
}
