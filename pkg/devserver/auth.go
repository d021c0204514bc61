package devserver

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// projectID is the single project every dev-server login belongs to.
const projectID = "0b7e6c1d-3f5a-4e2b-8c9d-a1b2c3d4e5f6"

const maxFormSize = 64 << 10

// tokens is the table of issued access tokens. A token is JWT-shaped so that
// clients can read its claims, but it is trusted only because it is in this
// table: the third part is random, not a signature.
type tokens struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[string]tokenInfo
}

type tokenInfo struct {
	clientID string
	exp      time.Time
}

func newTokens(ttl time.Duration) *tokens {
	return &tokens{ttl: ttl, m: map[string]tokenInfo{}}
}

// issue mints a token for clientID and forgets expired ones.
func (t *tokens) issue(clientID, issuer string) (string, time.Time) {
	iat := time.Now()
	exp := iat.Add(t.ttl)
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss":       issuer,
		"sub":       clientID,
		"client_id": clientID,
		"login_id":  uuid.NewString(),
		"profile":   "ClientApplication/" + clientID,
		"scope":     "openid",
		"iat":       iat.Unix(),
		"exp":       exp.Unix(),
	})
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	tok := enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(nonce)

	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.m {
		if iat.After(v.exp) {
			delete(t.m, k)
		}
	}
	t.m[tok] = tokenInfo{clientID: clientID, exp: exp}
	return tok, exp
}

// valid reports whether tok was issued here and has not expired.
func (t *tokens) valid(tok string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	info, ok := t.m[tok]
	if !ok {
		return false
	}
	if time.Now().After(info.exp) {
		delete(t.m, tok)
		return false
	}
	return true
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// handleToken is POST /oauth2/token, the client-credentials grant. Client
// credentials come from the form or from HTTP Basic authentication and are
// checked against the ClientApplication resources.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := r.ParseForm(); err != nil {
		tokenError(w, "invalid_request", "Invalid form body")
		return
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		tokenError(w, "invalid_request", "Missing grant_type")
		return
	default:
		tokenError(w, "unsupported_grant_type", "Unsupported grant type")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if bid, bsecret, ok := r.BasicAuth(); ok && id == "" {
		id, secret = bid, bsecret
	}
	if id == "" {
		tokenError(w, "invalid_request", "Missing client_id")
		return
	}
	if secret == "" {
		tokenError(w, "invalid_request", "Missing client_secret")
		return
	}
	var client struct {
		Secret string `json:"secret"`
	}
	if err := s.store.getAs("ClientApplication", id, &client); err != nil {
		tokenError(w, "invalid_request", "Invalid client")
		return
	}
	if client.Secret == "" || subtle.ConstantTimeCompare([]byte(client.Secret), []byte(secret)) != 1 {
		s.log.Info("token request rejected", "clientId", id)
		tokenError(w, "invalid_request", "Invalid secret")
		return
	}
	tok, exp := s.tokens.issue(id, s.baseURL)
	s.log.Debug("token issued", "clientId", id)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"token_type":   "Bearer",
		"access_token": tok,
		"expires_in":   int64(time.Until(exp).Round(time.Second) / time.Second),
		"scope":        "openid",
		"project":      map[string]string{"reference": "Project/" + projectID, "display": "Dev"},
		"profile":      map[string]string{"reference": "ClientApplication/" + id, "display": id},
	})
}

func tokenError(w http.ResponseWriter, code, description string) {
	writeJSON(w, http.StatusBadRequest, "application/json", map[string]string{"error": code, "error_description": description})
}
