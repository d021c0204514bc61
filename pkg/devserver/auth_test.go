package devserver

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTokenEndpoint(t *testing.T) {
	s := start(t, Options{})
	good := url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID}, "client_secret": {DefaultClientSecret}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range good {
			f[kk] = vv
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	tests := []struct {
		name      string
		form      url.Values
		wantError map[string]any
	}{
		{"good", good, nil},
		{"wrong secret", with("client_secret", "nope"), map[string]any{"error": "invalid_request", "error_description": "Invalid secret"}},
		{"unknown client", with("client_id", "nobody"), map[string]any{"error": "invalid_request", "error_description": "Invalid client"}},
		{"missing client id", with("client_id", ""), map[string]any{"error": "invalid_request", "error_description": "Missing client_id"}},
		{"missing secret", with("client_secret", ""), map[string]any{"error": "invalid_request", "error_description": "Missing client_secret"}},
		{"password grant", with("grant_type", "password"), map[string]any{"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}},
		{"missing grant", with("grant_type", ""), map[string]any{"error": "invalid_request", "error_description": "Missing grant_type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tokenRequest(s, tt.form)
			if err != nil {
				t.Fatal(err)
			}
			body := r.json(t)
			if tt.wantError != nil {
				if r.status != http.StatusBadRequest {
					t.Errorf("status = %d, want 400", r.status)
				}
				if diff := cmp.Diff(tt.wantError, body); diff != "" {
					t.Errorf("error body (-want +got):\n%s", diff)
				}
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("status = %d: %s", r.status, r.body)
			}
			got := map[string]any{"token_type": body["token_type"], "expires_in": body["expires_in"], "profile": body["profile"]}
			want := map[string]any{
				"token_type": "Bearer",
				"expires_in": float64(3600),
				"profile":    map[string]any{"reference": "ClientApplication/" + DefaultClientID, "display": DefaultClientID},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("token response (-want +got):\n%s", diff)
			}
			if _, ok := body["project"].(map[string]any); !ok {
				t.Errorf("no project in %s", r.body)
			}
			claims := jwtClaims(t, body["access_token"].(string))
			if claims["client_id"] != DefaultClientID || claims["login_id"] == "" || claims["exp"].(float64)-claims["iat"].(float64) != 3600 {
				t.Errorf("claims = %v", claims)
			}
		})
	}
}

func TestTokenBasicAuth(t *testing.T) {
	s := start(t, Options{})
	req, _ := http.NewRequest(http.MethodPost, s.BaseURL()+"oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(DefaultClientID, DefaultClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestBearerRequired(t *testing.T) {
	s := start(t, Options{})
	expired := start(t, Options{TokenTTL: time.Nanosecond})
	tests := []struct {
		name  string
		s     *Server
		token string
	}{
		{"no token", s, ""},
		{"unknown token", s, "a.b.c"},
		{"token of another server", s, login(t, expired, DefaultClientID, DefaultClientSecret)},
		{"expired token", expired, login(t, expired, DefaultClientID, DefaultClientSecret)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustDo(t, tt.s, http.MethodGet, "fhir/R4/Agent/"+DefaultAgentID, tt.token, "", nil)
			if r.status != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401", r.status)
			}
			if got := r.json(t)["resourceType"]; got != "OperationOutcome" {
				t.Errorf("resourceType = %v", got)
			}
		})
	}
}
