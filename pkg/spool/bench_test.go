package spool

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchMessage is a 1 KiB ADT^A01.
var benchMessage = func() string {
	m := hl7Message("CTRL") + "\rPV1|1|I|WARD^101^A"
	return m + "\rNTE|1||" + strings.Repeat("x", 1024-len(m)-9)
}()

func benchIntake(i int64) Intake {
	id := fmt.Sprintf("B%d", i)
	body := strings.Replace(benchMessage, "CTRL", id, 1)
	in := hl7Intake("bench", id, RetryGuaranteed)
	in.Original, in.Body = []byte(body), body
	return in
}

// runIntakes performs b.N synced intakes from conc goroutines and returns
// each one's latency.
func runIntakes(b *testing.B, conc int) []time.Duration {
	s := openStore(b, &clock{t: time.Now()})
	ctx := context.Background()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if _, err := s.Intake(ctx, benchIntake(i)); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	return lat
}

// BenchmarkIntake measures durable (synchronous=FULL, fsynced) intake
// throughput of 1 KiB HL7 messages, one caller and eight concurrent callers
// (eight device connections).
func BenchmarkIntake(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("conns=%d", conc), func(b *testing.B) {
			runIntakes(b, conc)
		})
	}
}

// BenchmarkIntakeLatency reports intake latency percentiles with eight
// concurrent callers: the time a device waits for its CA, minus the network.
func BenchmarkIntakeLatency(b *testing.B) {
	lat := runIntakes(b, 8)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := max(0, int(float64(len(lat))*p+0.999999)-1)
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
