package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/medplum-agent/medplum-agent/pkg/ping"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/push"
)

// maxOutbound bounds the pushes and pings in progress at once. Each waits
// on a device or a ping command, so the excess is refused at once rather
// than queued behind them: the server gives up after 55 s anyway.
const maxOutbound = 64

// outbound runs the server's agent:transmit:requests: pings, and pushes to
// devices through the client pools. Each runs in its own goroutine, so the
// link's dispatch goroutine never waits on a device.
type outbound struct {
	pools *push.Pools
	log   *slog.Logger
	sem   chan struct{}
	// ctx ends the requests in progress; close cancels it once its budget
	// is spent.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed against wg.Add racing close's Wait
	closed bool
	wg     sync.WaitGroup
}

func newOutbound(log *slog.Logger) *outbound {
	ctx, cancel := context.WithCancel(context.Background())
	return &outbound{
		pools:  push.NewPools(push.Settings{}, log),
		log:    log,
		sem:    make(chan struct{}, maxOutbound),
		ctx:    ctx,
		cancel: cancel,
	}
}

// handle starts req and answers through reply once it is done. It never
// blocks: once closed, or with maxOutbound requests in progress, it answers
// 503 at once.
func (o *outbound) handle(req *protocol.Message, reply func(*protocol.Message)) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		reply(protocol.TransmitResponse(req, http.StatusServiceUnavailable, protocol.ContentTypeText, "Agent is stopping"))
		return
	}
	select {
	case o.sem <- struct{}{}:
	default:
		o.mu.Unlock()
		o.log.Warn("Refusing a push or ping: too many in progress", "limit", maxOutbound, "remote", req.Remote, "callback", req.Callback)
		reply(protocol.TransmitResponse(req, http.StatusServiceUnavailable, protocol.ContentTypeText,
			fmt.Sprintf("Too many pushes and pings in progress (%d); try again later", maxOutbound)))
		return
	}
	o.wg.Add(1)
	o.mu.Unlock()
	go func() {
		defer o.wg.Done()
		defer func() { <-o.sem }()
		reply(o.run(req))
	}()
}

func (o *outbound) run(req *protocol.Message) *protocol.Message {
	if req.ContentType == protocol.ContentTypePing {
		return ping.Handle(o.ctx, req, ping.Options{}, o.log)
	}
	return o.pools.Handle(o.ctx, req)
}

// close refuses new requests, lets those in progress finish until ctx ends,
// then cancels them and closes every outbound client.
func (o *outbound) close(ctx context.Context) {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	done := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		o.log.Warn("Cancelling pushes and pings still in progress")
	}
	// Pushes and pings end promptly once cancelled: the push waits select
	// on the context and the ping command is killed.
	o.cancel()
	<-done
	o.pools.Close()
}
