package astm

import (
	"io"
	"strings"
	"testing"
	"time"
)

type closerRW struct {
	io.Reader
	io.Writer
	io.Closer
}

func TestWithReadDeadline(t *testing.T) {
	r, w := io.Pipe()
	var sink strings.Builder
	c := WithReadDeadline(pipeRW{r, &sink})
	if c2 := WithReadDeadline(c); c2 != c {
		t.Error("wrapping a Conn again made a new one")
	}
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("Read = %v, want a timeout", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = w.Write([]byte("hello")) }()
	var got []byte
	for len(got) < 5 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hello" {
		t.Errorf("read %q", got)
	}
	if _, err := c.Write([]byte("out")); err != nil || sink.String() != "out" {
		t.Errorf("Write: %v, %q", err, sink.String())
	}
	// A deadline set while a read waits wakes it.
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}()
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Errorf("Read after a past deadline = %v", err)
	}
	w.Close()
	_ = c.SetReadDeadline(time.Time{})
	if _, err := c.Read(buf); err != io.EOF {
		t.Errorf("Read at end = %v, want EOF", err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Errorf("Read after end = %v, want EOF again", err)
	}
	if err := c.(io.Closer).Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestWithReadDeadlineClose(t *testing.T) {
	r, _ := io.Pipe()
	c := WithReadDeadline(closerRW{r, io.Discard, r})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Read after Close returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after Close")
	}
}
