package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recorded is what the fake server saw of one request.
type recorded struct {
	Method, Path, Query, Auth, CacheControl, ContentType, Body string
	Length                                                     int64 // -1: chunked
}

func newTestClient(t *testing.T, status int, respBody string) (*Client, *[]recorded) {
	t.Helper()
	var seen []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, recorded{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Auth: r.Header.Get("Authorization"),
			CacheControl: r.Header.Get("Cache-Control"), ContentType: r.Header.Get("Content-Type"), Body: string(b),
			Length: r.ContentLength,
		})
		w.WriteHeader(status)
		io.WriteString(w, respBody)
	}))
	t.Cleanup(srv.Close)
	token := func(context.Context) (string, error) { return "tok", nil }
	return NewClient(srv.URL+"/", token, srv.Client()), &seen
}

func TestClientReads(t *testing.T) {
	const agentJSON = `{"resourceType":"Agent","id":"a1","status":"active","channel":[{"name":"c","endpoint":{"reference":"Endpoint/e1"},"targetReference":{"reference":"Bot/b"}}]}`
	c, seen := newTestClient(t, 200, agentJSON)
	ctx := context.Background()

	agent, raw, err := c.ReadAgent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != agentJSON {
		t.Errorf("raw = %s", raw)
	}
	if agent.ID != "a1" || agent.Status != "active" || len(agent.Channel) != 1 || agent.Channel[0].Endpoint.Reference != "Endpoint/e1" {
		t.Errorf("agent = %+v", agent)
	}
	if _, _, err := c.ReadEndpoint(ctx, "Endpoint/e1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Search(ctx, "Device", url.Values{"name": {"x y"}}); err != nil {
		t.Fatal(err)
	}
	want := []recorded{
		{Method: "GET", Path: "/fhir/R4/Agent/a1", Auth: "Bearer tok", CacheControl: "no-cache"},
		{Method: "GET", Path: "/fhir/R4/Endpoint/e1", Auth: "Bearer tok", CacheControl: "no-cache"},
		{Method: "GET", Path: "/fhir/R4/Device", Query: "name=x+y", Auth: "Bearer tok", CacheControl: "no-cache"},
	}
	if diff := cmp.Diff(want, *seen); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestClientWrites(t *testing.T) {
	c, seen := newTestClient(t, 201, `{"resourceType":"Binary","id":"bin1"}`)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.dcm")
	if err := os.WriteFile(path, []byte("DICM"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.CreateBinary(ctx, "application/dicom", f, 4)
	if err != nil || id != "bin1" {
		t.Fatalf("CreateBinary = %q, %v", id, err)
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the uploaded file was not closed (%v)", err)
	}
	var out map[string]any
	if err := c.Create(ctx, "Device", map[string]string{"resourceType": "Device"}, &out); err != nil {
		t.Fatal(err)
	}
	want := []recorded{
		{Method: "POST", Path: "/fhir/R4/Binary", Auth: "Bearer tok", ContentType: "application/dicom", Body: "DICM", Length: 4},
		{Method: "POST", Path: "/fhir/R4/Device", Auth: "Bearer tok", ContentType: "application/fhir+json", Body: `{"resourceType":"Device"}`, Length: 25},
	}
	if diff := cmp.Diff(want, *seen); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		call    func(*Client) error
		wantErr string
		status0 int
	}{
		{
			name: "outcome text", status: 404,
			body:    `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","details":{"text":"Not found"}}]}`,
			call:    func(c *Client) error { _, _, err := c.ReadAgent(context.Background(), "x"); return err },
			wantErr: "GET Agent/x: 404 Not Found: Not found", status0: 404,
		},
		{
			name: "plain body", status: 500, body: "boom",
			call:    func(c *Client) error { _, _, err := c.ReadEndpoint(context.Background(), "Endpoint/e"); return err },
			wantErr: "GET Endpoint/e: 500 Internal Server Error: boom", status0: 500,
		},
		{
			name: "bad reference", status: 200, body: "{}",
			call:    func(c *Client) error { _, _, err := c.ReadEndpoint(context.Background(), "Bot/e"); return err },
			wantErr: `invalid Endpoint reference "Bot/e"`,
		},
		{
			name: "bad id", status: 200, body: "{}",
			call:    func(c *Client) error { return c.Read(context.Background(), "Agent", "a/../b", nil) },
			wantErr: `invalid Agent id "a/../b"`,
		},
		{
			name: "too large", status: 200, body: `"` + strings.Repeat("a", maxResponseSize) + `"`,
			call:    func(c *Client) error { var s string; return c.Read(context.Background(), "Agent", "a", &s) },
			wantErr: "GET Agent/a: response larger than 8388608 bytes",
		},
		{
			name: "binary without id", status: 201, body: `{}`,
			call: func(c *Client) error {
				_, err := c.CreateBinary(context.Background(), "x/y", strings.NewReader(""), 0)
				return err
			},
			wantErr: "POST Binary: response has no id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestClient(t, tt.status, tt.body)
			err := tt.call(c)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			var fe *Error
			if got := errors.As(err, &fe); got != (tt.status0 != 0) || (got && fe.Status != tt.status0) {
				t.Errorf("errors.As *Error = %v (%+v), want status %d", got, fe, tt.status0)
			}
		})
	}
}

func TestClientTokenError(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", func(context.Context) (string, error) {
		return "", errors.New("no token")
	}, nil)
	var raw json.RawMessage
	err := c.Read(context.Background(), "Agent", "a", &raw)
	if err == nil || err.Error() != "GET Agent/a: no token" {
		t.Fatalf("err = %v", err)
	}
}

// A request without a deadline gets the client's; one with a deadline of
// its own (a long upload) keeps it, however long.
func TestClientTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
		}
		io.WriteString(w, `{"resourceType":"Binary","id":"b1"}`)
	}))
	t.Cleanup(srv.Close)
	c := NewClient(srv.URL+"/", func(context.Context) (string, error) { return "tok", nil }, srv.Client())
	c.timeout = 50 * time.Millisecond
	var raw json.RawMessage
	if err := c.Read(context.Background(), "Agent", "a", &raw); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("without a deadline: err = %v, want the client's timeout", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if id, err := c.CreateBinary(ctx, "application/dicom", strings.NewReader("x"), 1); err != nil || id != "b1" {
		t.Errorf("with a longer deadline: %q, %v", id, err)
	}
}
