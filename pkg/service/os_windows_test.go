//go:build windows

package service

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/windows/svc"
)

func TestHandlerExecute(t *testing.T) {
	errBoom := errors.New("boom")
	interrogate := svc.Status{State: svc.Running, Accepts: accepted}
	tests := []struct {
		name         string
		requests     []svc.ChangeRequest
		runErr       error // returned by run on its own, before any request
		wantStates   []svc.State
		wantSpecific bool
		wantCode     uint32
		wantErr      error
	}{
		{
			name:       "stop cancels run",
			requests:   []svc.ChangeRequest{{Cmd: svc.Stop}},
			wantStates: []svc.State{svc.StartPending, svc.Running, svc.StopPending},
		},
		{
			name:       "shutdown cancels run",
			requests:   []svc.ChangeRequest{{Cmd: svc.Shutdown}},
			wantStates: []svc.State{svc.StartPending, svc.Running, svc.StopPending},
		},
		{
			name:       "interrogate echoes the current status",
			requests:   []svc.ChangeRequest{{Cmd: svc.Interrogate, CurrentStatus: interrogate}, {Cmd: svc.Stop}},
			wantStates: []svc.State{svc.StartPending, svc.Running, svc.Running, svc.StopPending},
		},
		{
			name:         "run failing stops the service with an error code",
			runErr:       errBoom,
			wantStates:   []svc.State{svc.StartPending, svc.Running, svc.StopPending},
			wantSpecific: true,
			wantCode:     1,
			wantErr:      errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := make(chan svc.ChangeRequest, len(tt.requests))
			for _, r := range tt.requests {
				req <- r
			}
			status := make(chan svc.Status, 10)
			h := &handler{run: func(ctx context.Context) error {
				if tt.runErr != nil {
					return tt.runErr
				}
				<-ctx.Done()
				return nil
			}}
			specific, code := h.Execute(nil, req, status)
			close(status)
			var states []svc.State
			for s := range status {
				states = append(states, s.State)
			}
			if diff := cmp.Diff(tt.wantStates, states); diff != "" {
				t.Errorf("states (-want +got):\n%s", diff)
			}
			if specific != tt.wantSpecific || code != tt.wantCode {
				t.Errorf("Execute = (%v, %d), want (%v, %d)", specific, code, tt.wantSpecific, tt.wantCode)
			}
			if !errors.Is(h.err, tt.wantErr) {
				t.Errorf("err = %v, want %v", h.err, tt.wantErr)
			}
		})
	}
}
