// Package auth obtains and caches the agent's access token with the OAuth2
// client-credentials grant, as the Medplum server expects it: the client id
// and secret go in the form body of POST {baseUrl}oauth2/token.
//
// Neither the client secret nor any token ever appears in an error text or a
// log line written by this package.
package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	// maxResponseBytes bounds the token response; real ones are ~1 KiB.
	maxResponseBytes = 1 << 20
	// requestTimeout bounds one token request when the caller's client has
	// no timeout of its own.
	requestTimeout = 30 * time.Second
	// refreshMargin is how long before expiry a token is replaced, as in
	// the Medplum SDK.
	refreshMargin = 5 * time.Minute
	// defaultLifetime is assumed when the server states no expiry at all.
	defaultLifetime = time.Hour
	// maxLifetime and maxUnix keep absurd expiries from overflowing.
	maxLifetime = 365 * 24 * time.Hour
	maxUnix     = 1 << 40
	// retryAfterFailure spaces out refresh attempts while an older token is
	// still valid and keeps being served; it matches the reference agent's
	// login retry interval.
	retryAfterFailure = 10 * time.Second
)

// ClientCredentials hands out access tokens for one client. It is safe for
// concurrent use; the zero value of the optional fields is usable.
type ClientCredentials struct {
	BaseURL      string // ends with "/"
	ClientID     string
	ClientSecret string
	// HTTPClient makes the token requests; nil means a client with a 30 s
	// timeout.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger, if set, is told about failed refreshes that are hidden from
	// callers because the previous token is still valid.
	Logger *slog.Logger

	mu        sync.Mutex
	token     string
	expiry    time.Time
	refreshAt time.Time
	inflight  *call
}

// call is one token request shared by every caller that needs it.
type call struct {
	done  chan struct{}
	token string
	err   error
}

var defaultClient = &http.Client{Timeout: requestTimeout}

// Token returns a valid access token, requesting one when none is cached or
// its refresh is due: 5 minutes before expiry, or at half its lifetime for
// tokens that live less than 10 minutes. Concurrent callers share a single request. If a refresh
// fails while the cached token is still valid, that token is returned and the
// refresh is retried 10 s later at the earliest. ctx only bounds the wait.
func (c *ClientCredentials) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	now := c.now()
	if c.token != "" && now.Before(c.refreshAt) {
		token := c.token
		c.mu.Unlock()
		return token, nil
	}
	cl := c.inflight
	if cl == nil {
		cl = &call{done: make(chan struct{})}
		c.inflight = cl
		// Detached from ctx: other callers may be waiting on this request,
		// and fetch has its own timeout.
		go c.refresh(context.WithoutCancel(ctx), cl)
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.token, cl.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// refresh runs one token request and publishes its outcome.
func (c *ClientCredentials) refresh(ctx context.Context, cl *call) {
	token, expiry, refreshAt, err := c.fetch(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(cl.done)
	c.inflight = nil
	now := c.now()
	switch {
	case err == nil:
		c.token, c.expiry, c.refreshAt = token, expiry, refreshAt
		cl.token = token
	case c.token != "" && now.Before(c.expiry):
		c.refreshAt = now.Add(retryAfterFailure)
		cl.token = c.token
		if c.Logger != nil {
			c.Logger.Warn("Token refresh failed; using the current token until it expires",
				"error", err, "expires", c.expiry.UTC().Format(time.RFC3339))
		}
	default:
		cl.err = err
	}
}

// Invalidate drops the cached token, e.g. after the server rejected it, so
// the next Token call requests a new one.
func (c *ClientCredentials) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token, c.expiry, c.refreshAt = "", time.Time{}, time.Time{}
}

// Expiry is when the cached token expires; zero if there is none.
func (c *ClientCredentials) Expiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expiry
}

func (c *ClientCredentials) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// CredentialsError means the server rejected the client id or secret. It is
// not worth retrying until the configuration changes.
type CredentialsError struct {
	Status      int    // HTTP status
	Code        string // OAuth error code, e.g. invalid_client
	Description string // server's error_description, secret removed
}

func (e *CredentialsError) Error() string {
	s := fmt.Sprintf("client credentials rejected by the server (HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s + "); check clientId and clientSecret"
}

// IsCredentialsError reports whether err, or an error it wraps, is a
// *CredentialsError.
func IsCredentialsError(err error) bool {
	var ce *CredentialsError
	return errors.As(err, &ce)
}

// OAuth error codes (RFC 6749 §5.2) that mean the credentials themselves are
// wrong. Medplum answers a bad secret with invalid_request.
var credentialCodes = map[string]bool{
	"invalid_client":      true,
	"invalid_request":     true,
	"unauthorized_client": true,
	"invalid_grant":       true,
	"access_denied":       true,
}

type tokenResponse struct {
	AccessToken      string      `json:"access_token"`
	ExpiresIn        json.Number `json:"expires_in"`
	TokenType        string      `json:"token_type"`
	Error            string      `json:"error"`
	ErrorDescription string      `json:"error_description"`
}

// fetch performs one client-credentials request.
func (c *ClientCredentials) fetch(ctx context.Context) (token string, expiry, refreshAt time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	endpoint := c.BaseURL + "oauth2/token"
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {c.ClientID},
		"client_secret": {c.ClientSecret},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := c.HTTPClient
	if hc == nil {
		hc = defaultClient
	}
	issued := c.now()
	resp, err := hc.Do(req)
	if err != nil {
		// The *url.Error names the endpoint but never the form body; the
		// network error stays in the chain for errors.As.
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: reading response: %w", err)
	}
	if len(body) > maxResponseBytes {
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: response larger than %d bytes", maxResponseBytes)
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(body, &tr) // error bodies may be HTML from a proxy

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		code, desc := c.scrub(tr.Error), c.scrub(tr.ErrorDescription)
		if resp.StatusCode == http.StatusUnauthorized ||
			(resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusForbidden) && credentialCodes[tr.Error] {
			return "", time.Time{}, time.Time{}, &CredentialsError{Status: resp.StatusCode, Code: code, Description: desc}
		}
		msg := fmt.Sprintf("token request: HTTP %d", resp.StatusCode)
		if code != "" {
			msg += " " + code
		}
		if desc != "" {
			msg += ": " + desc
		}
		return "", time.Time{}, time.Time{}, errors.New(msg)
	}
	if jsonErr != nil {
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: invalid response: %w", jsonErr)
	}
	if tr.AccessToken == "" {
		return "", time.Time{}, time.Time{}, errors.New("token request: response has no access_token")
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return "", time.Time{}, time.Time{}, fmt.Errorf("token request: unsupported token_type %q", c.scrub(tr.TokenType))
	}
	claims := parseClaims(tr.AccessToken)
	if claims.ClientID != "" && claims.ClientID != c.ClientID {
		return "", time.Time{}, time.Time{}, errors.New("token request: token was not issued for this client")
	}
	life := defaultLifetime
	secs, err := tr.ExpiresIn.Float64()
	haveExpiresIn := err == nil && secs > 0
	if haveExpiresIn {
		life = time.Duration(min(secs, maxLifetime.Seconds()) * float64(time.Second))
	}
	if claims.Exp > 0 {
		exp := time.Unix(int64(min(claims.Exp, maxUnix)), 0)
		if !exp.After(issued) {
			return "", time.Time{}, time.Time{}, errors.New("token request: token already expired; check the host clock")
		}
		// expires_in wins when given, but never beyond the token's own exp.
		if d := min(exp.Sub(issued), maxLifetime); !haveExpiresIn || d < life {
			life = d
		}
	}
	expiry = issued.Add(life)
	// 5 minutes early, but never before half the lifetime: a token shorter
	// than 10 minutes would otherwise be due again the moment it arrives.
	refreshAt = expiry.Add(-refreshMargin)
	if half := issued.Add(life / 2); half.After(refreshAt) {
		refreshAt = half
	}
	return tr.AccessToken, expiry, refreshAt, nil
}

// scrub keeps server-provided text safe to show: bounded, printable, and
// without the secret should a server ever echo it.
func (c *ClientCredentials) scrub(s string) string {
	if c.ClientSecret != "" {
		s = strings.ReplaceAll(s, c.ClientSecret, "[REDACTED]")
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// claims are the JWT payload fields the agent checks. The signature is not
// verified: the token came straight from the server over the same channel.
type claims struct {
	Exp      float64 `json:"exp"`
	ClientID string  `json:"client_id"`
}

// parseClaims reads the payload of a JWT; anything unreadable yields no
// claims, since the server may issue opaque tokens.
func parseClaims(token string) claims {
	var cl claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return cl
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return cl
	}
	if json.Unmarshal(payload, &cl) != nil {
		return claims{}
	}
	return cl
}
