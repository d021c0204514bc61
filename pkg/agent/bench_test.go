package agent

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/mllp"
)

// BenchmarkInbound pipelines messages from 8 devices through the agent and
// the dev server's ack Bot and back; b.N is the total number of messages.
func BenchmarkInbound(b *testing.B) {
	for _, query := range []string{"", "enhanced=true&appLevelAck=NE"} {
		b.Run("query="+query, func(b *testing.B) { benchInbound(b, query) })
	}
}

func benchInbound(b *testing.B, query string) {
	const devices = 8
	port := freePort(b)
	e := newEnv(b, ch{name: "bench", address: mllpAddr(port, query)})
	// The production period: a flood must not delay heartbeats past it.
	e.heartbeat = defaultHeartbeatPeriod
	e.agent = e.newAgent(e.ds.BaseURL())
	e.start()
	msg := mllp.AppendFrame(nil, []byte(adt("bench")))
	var ds []*device
	for range devices {
		ds = append(ds, dial(b, port))
	}
	per := b.N/devices + 1
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() {
			for range per {
				if _, err := d.c.Write(msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			d.c.SetReadDeadline(time.Now().Add(waitFor))
			for i := range per {
				if _, err := d.rd.ReadFrame(); err != nil {
					b.Error(fmt.Sprint("ack ", i, ": ", err))
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if b.Failed() {
		b.Logf("stats %+v\n%s", e.stats(), e.mainLogText())
	}
	b.ReportMetric(float64(per*devices)/b.Elapsed().Seconds(), "msg/s")
}
