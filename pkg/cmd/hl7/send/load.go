package send

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/hl7"
	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// Report is the result of a load run; its JSON form is stable.
type Report struct {
	Target         string         `json:"target"`
	Messages       int            `json:"messages"`
	Connections    int            `json:"connections"`
	DurationSec    float64        `json:"durationSec"`
	MessagesPerSec float64        `json:"messagesPerSec"`
	Latency        LatencyReport  `json:"latencyMs"`
	Acks           map[string]int `json:"acks"`
	Negative       int            `json:"negative"`
	Timeouts       int            `json:"timeouts"`
	Errors         int            `json:"errors"`
	Interrupted    bool           `json:"interrupted,omitempty"`
}

// LatencyReport gives send-to-ACK latencies in milliseconds.
type LatencyReport struct {
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// worker results are merged once at the end, so the hot loop shares nothing
// but two atomic counters.
type workerResult struct {
	latencies []time.Duration
	acks      map[string]int
	negative  int
	timeouts  int
	errors    int
}

// limiter spaces sends evenly to reach a total rate across all workers.
type limiter struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	slot := l.next
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()
	d := time.Until(slot)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func loadRun(ctx context.Context, opts *Options, template *hl7.Message) error {
	var lim *limiter
	if opts.Rate > 0 {
		lim = &limiter{interval: time.Duration(float64(time.Second) / opts.Rate)}
	}
	var issued, done atomic.Int64
	results := make([]workerResult, opts.Concurrency)
	start := time.Now()

	stopProgress := startProgress(opts, &done)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *workerResult) {
			defer wg.Done()
			runWorker(ctx, opts, template, lim, &issued, &done, r)
		}(&results[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	rep := buildReport(opts, results, elapsed)
	rep.Interrupted = ctx.Err() != nil
	if err := printReport(opts, rep); err != nil {
		return err
	}
	switch {
	case rep.Interrupted:
		return cmdutil.ErrInterrupted
	case rep.Errors > 0:
		return cmdutil.Silent(cmdutil.ExitConnect)
	case rep.Timeouts > 0:
		return cmdutil.Silent(cmdutil.ExitTimeout)
	case rep.Negative > 0:
		return cmdutil.Silent(cmdutil.ExitRejected)
	}
	return nil
}

func runWorker(ctx context.Context, opts *Options, template *hl7.Message, lim *limiter, issued, done *atomic.Int64, r *workerResult) {
	r.acks = map[string]int{}
	r.latencies = make([]time.Duration, 0, opts.Count/opts.Concurrency+1)
	var c *mllp.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil && issued.Add(1) <= int64(opts.Count) {
		if err := lim.wait(ctx); err != nil {
			return
		}
		if c == nil {
			var err error
			if c, err = mllp.Dial(ctx, opts.addr(), mllp.ClientOptions{Encoding: opts.Encoding, ConnectTimeout: opts.Timeout}); err != nil {
				c = nil
				if ctx.Err() != nil {
					return
				}
				r.errors++
				done.Add(1)
				time.Sleep(10 * time.Millisecond) // do not spin on a dead peer
				continue
			}
		}
		m := template.Clone()
		if err := m.SetRaw("MSH-10", hl7.NewControlID()); err != nil {
			r.errors++
			done.Add(1)
			continue
		}
		sent := time.Now()
		wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		ack, err := c.SendAndWait(wctx, m, opts.ReturnAck)
		cancel()
		switch {
		case err == nil:
			r.latencies = append(r.latencies, time.Since(sent))
			code := hl7.AckCodeOf(ack)
			r.acks[string(code)]++
			if !code.Positive() {
				r.negative++
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			r.timeouts++
		default:
			r.errors++
			c.Close()
			c = nil
		}
		done.Add(1)
	}
}

func buildReport(opts *Options, results []workerResult, elapsed time.Duration) Report {
	rep := Report{Target: opts.addr(), Connections: opts.Concurrency, Acks: map[string]int{}, DurationSec: elapsed.Seconds()}
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.latencies...)
		for k, v := range r.acks {
			rep.Acks[k] += v
		}
		rep.Negative += r.negative
		rep.Timeouts += r.timeouts
		rep.Errors += r.errors
	}
	rep.Messages = len(all) + rep.Timeouts + rep.Errors
	if elapsed > 0 {
		rep.MessagesPerSec = math.Round(float64(len(all))/elapsed.Seconds()*10) / 10
	}
	if len(all) > 0 {
		slices.Sort(all)
		rep.Latency = LatencyReport{
			Min: ms(all[0]), P50: ms(percentile(all, 50)), P95: ms(percentile(all, 95)),
			P99: ms(percentile(all, 99)), Max: ms(all[len(all)-1]),
		}
	}
	return rep
}

// percentile uses the nearest-rank method on sorted samples, like the agent's
// RTT statistics: the sample at index ceil(p/100*n)-1.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

func printReport(opts *Options, rep Report) error {
	if opts.JSON {
		return json.NewEncoder(opts.IO.Out).Encode(rep)
	}
	acks := ""
	for _, k := range slices.Sorted(maps.Keys(rep.Acks)) {
		acks += fmt.Sprintf("%s %d  ", k, rep.Acks[k])
	}
	if acks == "" {
		acks = "none  "
	}
	_, err := fmt.Fprintf(opts.IO.Out,
		"target       %s\nmessages     %d over %d connection(s) in %.2f s\nthroughput   %.1f msg/s\n"+
			"latency ms   min %.3f  p50 %.3f  p95 %.3f  p99 %.3f  max %.3f\n"+
			"acks         %snegative %d  timeouts %d  errors %d\n",
		rep.Target, rep.Messages, rep.Connections, rep.DurationSec, rep.MessagesPerSec,
		rep.Latency.Min, rep.Latency.P50, rep.Latency.P95, rep.Latency.P99, rep.Latency.Max,
		acks, rep.Negative, rep.Timeouts, rep.Errors)
	return err
}

// startProgress draws a progress line on stderr when it is a terminal; the
// returned func stops it and clears the line.
func startProgress(opts *Options, done *atomic.Int64) func() {
	if !opts.IO.IsStderrTTY() {
		return func() {}
	}
	style := opts.IO.ErrRenderer().NewStyle().Bold(true)
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-stop:
				fmt.Fprint(opts.IO.ErrOut, "\r\033[K")
				return
			case <-t.C:
				n := done.Load()
				rate := float64(n) / time.Since(start).Seconds()
				fmt.Fprintf(opts.IO.ErrOut, "\r\033[K%s %d/%d  %.0f msg/s", style.Render("sending"), n, opts.Count, rate)
			}
		}
	}()
	return func() { close(stop); <-finished }
}
