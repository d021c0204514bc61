// Package scptest starts fake DICOM acceptors on 127.0.0.1 for the tests of
// the dicom commands: a real assoc.Server, or a raw TCP peer that
// misbehaves in ways a Server never does.
package scptest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// Start serves s on a free loopback port until the test ends and returns
// its address.
func Start(t testing.TB, s *assoc.Server) string {
	t.Helper()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.Addr().String()
}

// Raw accepts connections on a free loopback port and runs handle on each,
// until the test ends, when the listener and all connections are closed.
// It returns the address.
func Raw(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				// Accepted while the test ended: nobody would close it.
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Silent reads and ignores everything: a peer that never answers.
func Silent(c net.Conn) { io.Copy(io.Discard, c) }

// Hangup closes the connection at once: a service that is not DICOM.
func Hangup(c net.Conn) { c.Close() }

// AbortAfterRQ answers the A-ASSOCIATE-RQ with an A-ABORT from the service
// provider.
func AbortAfterRQ(c net.Conn) {
	defer c.Close()
	if _, err := pdu.Read(c, 0); err != nil {
		return
	}
	pdu.Write(c, &pdu.Abort{Source: pdu.AbortServiceProvider, Reason: pdu.AbortUnexpectedPDU})
	io.Copy(io.Discard, c)
}

// RefuseContexts accepts the association but rejects every presentation
// context with result, then answers the release.
func RefuseContexts(result pdu.Result) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		p, err := pdu.Read(c, 0)
		rq, ok := p.(*pdu.AssociateRQ)
		if err != nil || !ok {
			return
		}
		ac := &pdu.AssociateAC{
			ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
			ApplicationContext: dicom.ApplicationContextName,
			UserInfo:           pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3.4"},
		}
		for _, pc := range rq.PresentationContexts {
			ac.PresentationContexts = append(ac.PresentationContexts,
				pdu.PresentationContextAC{ID: pc.ID, Result: result, TransferSyntax: dicom.ImplicitVRLittleEndian})
		}
		if pdu.Write(c, ac) != nil {
			return
		}
		if p, err := pdu.Read(c, 0); err == nil && p.Type() == pdu.TypeReleaseRQ {
			pdu.Write(c, &pdu.ReleaseRP{})
		}
	}
}
