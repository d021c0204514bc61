package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	clientID = "client-123"
	secret   = "s3cr3t+/=&value"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwt builds an unsigned token with the given claims.
func jwt(claims map[string]any) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(claims)
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(payload) + ".sig"
}

// tokenServer answers token requests with the responses in order (the last
// one repeats), after checking the request, and counts them.
type tokenServer struct {
	t         *testing.T
	responses []response
	count     atomic.Int32
	gate      chan struct{} // if set, each request waits for a value
	entered   chan struct{} // if set, signalled when a request arrives
}

type response struct {
	status int
	body   string
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(s.count.Add(1))
	if r.Method != http.MethodPost || r.URL.Path != "/base/oauth2/token" ||
		r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		s.t.Errorf("request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if err := r.ParseForm(); err != nil {
		s.t.Error(err)
	}
	want := map[string][]string{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}
	if d := cmp.Diff(want, map[string][]string(r.PostForm)); d != "" {
		s.t.Errorf("form mismatch (-want +got):\n%s", d)
	}
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.gate != nil {
		<-s.gate
	}
	resp := s.responses[min(n, len(s.responses))-1]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.status)
	io.WriteString(w, resp.body)
}

func ok(token string, expiresIn int) response {
	body := fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":%d,"project":{}}`, token, expiresIn)
	if expiresIn == 0 {
		body = fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer"}`, token)
	}
	return response{200, body}
}

// setup starts a token server and a client for it with an injected clock and
// a log buffer; at cleanup it checks that no secret or token was ever logged.
func setup(t *testing.T, srv *tokenServer) (*ClientCredentials, *clock, *bytes.Buffer) {
	t.Helper()
	srv.t = t
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := &clock{t: t0}
	var logs bytes.Buffer
	cc := &ClientCredentials{
		BaseURL: hs.URL + "/base/", ClientID: clientID, ClientSecret: secret,
		HTTPClient: hs.Client(), Now: c.Now, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	}
	t.Cleanup(func() { assertNoSecrets(t, logs.String()) })
	return cc, c, &logs
}

// assertNoSecrets fails if s contains the client secret or any part of a
// token used in these tests.
func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	for _, bad := range []string{secret, url.QueryEscape(secret), "tok-", "eyJ"} {
		if strings.Contains(s, bad) {
			t.Errorf("secret material %q in %q", bad, s)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestTokenCachesAndRefreshes(t *testing.T) {
	tests := []struct {
		name      string
		resp      response
		wantLife  time.Duration
		refreshAt time.Duration // after issue
	}{
		{name: "expires_in one hour: 5 minutes early", resp: ok("tok-a", 3600), wantLife: time.Hour, refreshAt: 55 * time.Minute},
		{name: "short life: at half", resp: ok("tok-a", 240), wantLife: 4 * time.Minute, refreshAt: 2 * time.Minute},
		{name: "exactly ten minutes", resp: ok("tok-a", 600), wantLife: 10 * time.Minute, refreshAt: 5 * time.Minute},
		{name: "no expiry at all: one hour", resp: ok("tok-a", 0), wantLife: time.Hour, refreshAt: 55 * time.Minute},
		{
			name:      "JWT exp when expires_in is missing",
			resp:      ok(jwt(map[string]any{"exp": t0.Add(20 * time.Minute).Unix(), "client_id": clientID}), 0),
			wantLife:  20 * time.Minute,
			refreshAt: 15 * time.Minute,
		},
		{
			name:      "JWT exp earlier than expires_in",
			resp:      ok(jwt(map[string]any{"exp": t0.Add(20 * time.Minute).Unix()}), 3600),
			wantLife:  20 * time.Minute,
			refreshAt: 15 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &tokenServer{responses: []response{tt.resp, ok("tok-b", 3600)}}
			cc, c, _ := setup(t, srv)
			var want string
			json.Unmarshal([]byte(tt.resp.body), &struct {
				AccessToken *string `json:"access_token"`
			}{&want})

			for _, step := range []struct {
				at       time.Duration
				token    string
				requests int32
			}{
				{0, want, 1},
				{tt.refreshAt - time.Second, want, 1},
				{tt.refreshAt, "tok-b", 2},
			} {
				c.Add(step.at - c.Now().Sub(t0))
				got, err := cc.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if got != step.token || srv.count.Load() != step.requests {
					t.Fatalf("at +%v: token %q after %d requests, want %q after %d", step.at, got, srv.count.Load(), step.token, step.requests)
				}
				if step.requests == 1 && !cc.Expiry().Equal(t0.Add(tt.wantLife)) {
					t.Fatalf("Expiry = %v, want %v", cc.Expiry(), t0.Add(tt.wantLife))
				}
			}
		})
	}
}

func TestConcurrentCallersShareOneRequest(t *testing.T) {
	srv := &tokenServer{responses: []response{ok("tok-a", 3600)}, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	cc, _, _ := setup(t, srv)
	const callers = 20
	tokens := make(chan string, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			tokens <- tok
		}()
	}
	<-srv.entered
	close(srv.gate)
	wg.Wait()
	close(tokens)
	for tok := range tokens {
		if tok != "tok-a" {
			t.Errorf("token %q", tok)
		}
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestCancelledWaitDoesNotCancelRequest(t *testing.T) {
	srv := &tokenServer{responses: []response{ok("tok-a", 3600)}, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	cc, _, _ := setup(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := cc.Token(ctx)
		done <- err
	}()
	<-srv.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	close(srv.gate)
	tok, err := cc.Token(context.Background())
	if err != nil || tok != "tok-a" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestInvalidate(t *testing.T) {
	srv := &tokenServer{responses: []response{ok("tok-a", 3600), ok("tok-b", 3600)}}
	cc, _, _ := setup(t, srv)
	if tok, _ := cc.Token(context.Background()); tok != "tok-a" {
		t.Fatalf("token %q", tok)
	}
	cc.Invalidate()
	if !cc.Expiry().IsZero() {
		t.Errorf("Expiry after Invalidate = %v", cc.Expiry())
	}
	if tok, _ := cc.Token(context.Background()); tok != "tok-b" {
		t.Fatalf("token after Invalidate %q, want tok-b", tok)
	}
}

func TestFailedRefreshKeepsValidToken(t *testing.T) {
	srv := &tokenServer{responses: []response{ok("tok-a", 3600), {503, `{"error":"unavailable"}`}}}
	cc, c, logs := setup(t, srv)
	steps := []struct {
		at       time.Duration
		token    string
		err      string
		requests int32
	}{
		{0, "tok-a", "", 1},
		{55 * time.Minute, "tok-a", "", 2},                // refresh fails, old token served
		{55*time.Minute + 9*time.Second, "tok-a", "", 2},  // no retry within 10 s
		{55*time.Minute + 10*time.Second, "tok-a", "", 3}, // retried
		{time.Hour, "", "token request: HTTP 503 unavailable", 4},
	}
	for _, step := range steps {
		c.Add(step.at - c.Now().Sub(t0))
		tok, err := cc.Token(context.Background())
		if tok != step.token || errText(err) != step.err || srv.count.Load() != step.requests {
			t.Fatalf("at +%v: Token = %q, %v after %d requests; want %q, %q after %d",
				step.at, tok, err, srv.count.Load(), step.token, step.err, step.requests)
		}
	}
	if n := strings.Count(logs.String(), "Token refresh failed"); n != 2 {
		t.Errorf("%d refresh warnings logged, want 2:\n%s", n, logs)
	}
}

func TestTokenErrors(t *testing.T) {
	big := `{"access_token":"tok-` + strings.Repeat("x", maxResponseBytes) + `"}`
	tests := []struct {
		name  string
		resp  response
		want  string
		creds bool
	}{
		{
			name:  "Medplum bad secret",
			resp:  response{400, `{"error":"invalid_request","error_description":"Invalid secret"}`},
			want:  "client credentials rejected by the server (HTTP 400 invalid_request: Invalid secret); check clientId and clientSecret",
			creds: true,
		},
		{
			name:  "unknown client",
			resp:  response{401, `{"error":"invalid_client"}`},
			want:  "client credentials rejected by the server (HTTP 401 invalid_client); check clientId and clientSecret",
			creds: true,
		},
		{
			name:  "401 without a body",
			resp:  response{401, ``},
			want:  "client credentials rejected by the server (HTTP 401); check clientId and clientSecret",
			creds: true,
		},
		{
			name:  "server echoes the secret",
			resp:  response{403, `{"error":"unauthorized_client","error_description":"bad secret ` + secret + `\n"}`},
			want:  "client credentials rejected by the server (HTTP 403 unauthorized_client: bad secret [REDACTED] ); check clientId and clientSecret",
			creds: true,
		},
		{name: "grant type not enabled", resp: response{400, `{"error":"unsupported_grant_type"}`}, want: "token request: HTTP 400 unsupported_grant_type"},
		{name: "proxy page", resp: response{403, `<html>blocked</html>`}, want: "token request: HTTP 403"},
		{name: "server error", resp: response{500, `{"error":"server_error","error_description":"boom"}`}, want: "token request: HTTP 500 server_error: boom"},
		{name: "not JSON", resp: response{200, `<html>`}, want: "token request: invalid response: invalid character '<' looking for beginning of value"},
		{name: "no token", resp: response{200, `{"token_type":"Bearer"}`}, want: "token request: response has no access_token"},
		{name: "wrong token type", resp: response{200, `{"access_token":"tok-x","token_type":"mac"}`}, want: `token request: unsupported token_type "mac"`},
		{name: "too large", resp: response{200, big}, want: "token request: response larger than 1048576 bytes"},
		{
			name: "expired on arrival",
			resp: ok(jwt(map[string]any{"exp": t0.Add(-time.Minute).Unix()}), 3600),
			want: "token request: token already expired; check the host clock",
		},
		{
			name: "issued for another client",
			resp: ok(jwt(map[string]any{"exp": t0.Add(time.Hour).Unix(), "client_id": "other"}), 3600),
			want: "token request: token was not issued for this client",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, _, _ := setup(t, &tokenServer{responses: []response{tt.resp}})
			tok, err := cc.Token(context.Background())
			if tok != "" || errText(err) != tt.want {
				t.Fatalf("Token = %q, %q; want error %q", tok, errText(err), tt.want)
			}
			if IsCredentialsError(err) != tt.creds {
				t.Errorf("IsCredentialsError = %v, want %v", !tt.creds, tt.creds)
			}
			assertNoSecrets(t, err.Error())
		})
	}
}

func TestNetworkErrorIsNotCredentialsError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cc := &ClientCredentials{BaseURL: "http://" + addr + "/", ClientID: clientID, ClientSecret: secret}
	_, err = cc.Token(context.Background())
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("err = %v, want a *net.OpError in the chain", err)
	}
	if IsCredentialsError(err) {
		t.Error("network error reported as a credentials error")
	}
	if !strings.HasPrefix(err.Error(), "token request: Post \"http://"+addr+"/oauth2/token\"") {
		t.Errorf("err = %q", err)
	}
	assertNoSecrets(t, err.Error())
}

func TestParseClaims(t *testing.T) {
	tests := []struct {
		token string
		want  claims
	}{
		{token: jwt(map[string]any{"exp": 1700000000, "client_id": "c"}), want: claims{Exp: 1700000000, ClientID: "c"}},
		{token: "opaque-token"},
		{token: "a.%%%.c"},
		{token: "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + ".c"},
		{token: "a." + base64.URLEncoding.EncodeToString([]byte(`{"exp":5}`)) + ".c", want: claims{Exp: 5}},
	}
	for _, tt := range tests {
		if got := parseClaims(tt.token); got != tt.want {
			t.Errorf("parseClaims(%q) = %+v, want %+v", tt.token, got, tt.want)
		}
	}
}

// roundTrip serves a fixed response without a network.
type roundTrip struct {
	status int
	body   []byte
}

func (rt roundTrip) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: rt.status, Body: io.NopCloser(bytes.NewReader(rt.body)), Header: http.Header{}}, nil
}

// FuzzTokenResponse feeds arbitrary token endpoint answers: no panic, and
// no secret in any error.
func FuzzTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"x","expires_in":3600,"token_type":"Bearer"}`))
	f.Add(200, []byte(`{"access_token":"`+jwt(map[string]any{"exp": 1e300})+`","expires_in":1e300}`))
	f.Add(200, []byte(`{"access_token":"a.b.c","expires_in":"-5"}`))
	f.Add(400, []byte(`{"error":"invalid_request","error_description":"`+secret+`"}`))
	f.Add(401, []byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			status = 200
		}
		cc := &ClientCredentials{
			BaseURL: "http://127.0.0.1:1/", ClientID: clientID, ClientSecret: secret,
			HTTPClient: &http.Client{Transport: roundTrip{status, body}},
			Now:        func() time.Time { return t0 },
		}
		tok, err := cc.Token(context.Background())
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("secret in error %q", err)
			}
			return
		}
		if tok == "" || !cc.Expiry().After(t0) {
			t.Fatalf("Token = %q with expiry %v", tok, cc.Expiry())
		}
	})
}
