package mllp

import (
	"context"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// benchPayload is a typical ADT^A01 of about 1 KiB.
var benchPayload = []byte(msgText("BENCH") + strings.Repeat("\rOBX|1|TX|NOTE||lorem ipsum dolor sit amet consectetur", 16))

// cycleReader serves data endlessly, up to 64 KiB per Read like a busy socket.
type cycleReader struct {
	data []byte
	off  int
}

func (r *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func BenchmarkReadFrame(b *testing.B) {
	var stream []byte
	for range 64 {
		stream = AppendFrame(stream, benchPayload)
		stream = append(stream, '\r', '\n') // junk between frames, as some senders do
	}
	r := NewReader(&cycleReader{data: stream}, 0)
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteFrame(io.Discard, benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip measures request/ACK round trips from a Client to a
// Server answering AA, over loopback: one message in flight, and many
// pipelined on one connection.
func BenchmarkRoundTrip(b *testing.B) {
	for _, inFlight := range []int{1, 32} {
		b.Run("inflight="+strconv.Itoa(inFlight), func(b *testing.B) {
			s := &Server{Handler: ackAA}
			addr := startServer(b, s)
			c, err := Dial(context.Background(), addr, ClientOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			var seq atomic.Int64
			send := func() {
				m := mustParse(b, msgText(strconv.FormatInt(seq.Add(1), 10)))
				if _, err := c.SendAndWait(ctx, m, ReturnAckFirst); err != nil {
					b.Error(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			if inFlight == 1 {
				for b.Loop() {
					send()
				}
			} else {
				b.SetParallelism(max(1, inFlight/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						send()
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
