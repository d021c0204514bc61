package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponseSize bounds every response body read by Client. Agent-side
// resources are a few kilobytes; anything near this size is a fault.
const maxResponseSize = 8 << 20

const contentTypeFHIR = "application/fhir+json"

// Client is a small FHIR R4 REST client for a Medplum server: reads, creates,
// searches and Binary uploads, each authenticated with a bearer token.
type Client struct {
	base  string // {baseUrl}fhir/R4/
	token func(context.Context) (string, error)
	hc    *http.Client
	// timeout bounds a request whose context has no deadline; callers
	// with long transfers (Binary uploads) set their own.
	timeout time.Duration
}

// DefaultTimeout bounds a request whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// NewClient returns a client for the FHIR base under baseURL (which should
// end with "/"). token is asked for a bearer token before every request;
// httpClient nil means http.DefaultClient.
func NewClient(baseURL string, token func(context.Context) (string, error), httpClient *http.Client) *Client {
	if !strings.HasSuffix(baseURL, "/") {
		baseURL += "/"
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: baseURL + "fhir/R4/", token: token, hc: httpClient, timeout: DefaultTimeout}
}

// Error is a response with a status other than 2xx.
type Error struct {
	Method string
	Path   string // relative to the FHIR base, e.g. "Agent/123"
	Status int
	// Text is the OperationOutcome's first issue text when the server sent
	// one, else a bounded excerpt of the body.
	Text string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// ReadAgent reads Agent/{id}, returning the typed resource and its raw JSON.
func (c *Client) ReadAgent(ctx context.Context, id string) (*Agent, json.RawMessage, error) {
	return readTyped[Agent](ctx, c, "Agent", id)
}

// ReadEndpoint reads the Endpoint a reference such as "Endpoint/abc" points
// to, returning the typed resource and its raw JSON.
func (c *Client) ReadEndpoint(ctx context.Context, ref string) (*Endpoint, json.RawMessage, error) {
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || typ != "Endpoint" {
		return nil, nil, fmt.Errorf("invalid Endpoint reference %q", ref)
	}
	return readTyped[Endpoint](ctx, c, typ, id)
}

func readTyped[T any](ctx context.Context, c *Client, typ, id string) (*T, json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.Read(ctx, typ, id, &raw); err != nil {
		return nil, nil, err
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, nil, fmt.Errorf("GET %s/%s: decode: %w", typ, id, err)
	}
	return v, raw, nil
}

// Read reads typ/id into into (a pointer, or *json.RawMessage for the raw
// body). Caches are bypassed, like the reference agent does, so a reload
// always sees the current configuration.
func (c *Client) Read(ctx context.Context, typ, id string, into any) error {
	if id == "" || strings.ContainsAny(id, "/?#") {
		return fmt.Errorf("invalid %s id %q", typ, id)
	}
	return c.do(ctx, http.MethodGet, typ+"/"+url.PathEscape(id), "", nil, 0, into)
}

// Create posts body (marshalled to JSON) as a new typ resource and decodes
// the created resource into into, which may be nil.
func (c *Client) Create(ctx context.Context, typ string, body any, into any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("POST %s: encode: %w", typ, err)
	}
	return c.do(ctx, http.MethodPost, typ, contentTypeFHIR, bytes.NewReader(b), int64(len(b)), into)
}

// Search runs a type-level search and returns the result Bundle.
func (c *Client) Search(ctx context.Context, typ string, query url.Values) (*Bundle, error) {
	path := typ
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	var b Bundle
	if err := c.do(ctx, http.MethodGet, path, "", nil, 0, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// CreateBinary uploads the size bytes of r as a Binary with the given
// content type and returns the new resource id. Like http.Client.Do, it
// closes r if r is an io.Closer; an *os.File is then sent with sendfile.
func (c *Client) CreateBinary(ctx context.Context, contentType string, r io.Reader, size int64) (string, error) {
	var created struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, "Binary", contentType, r, size, &created); err != nil {
		return "", err
	}
	if created.ID == "" {
		return "", errors.New("POST Binary: response has no id")
	}
	return created.ID, nil
}

// do sends a request with body, of size bytes, and decodes the answer into
// into.
func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, size int64, into any) error {
	fail := func(err error) error { return fmt.Errorf("%s %s: %w", method, path, err) }
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	token, err := c.token(ctx)
	if err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fail(err)
	}
	if body != nil {
		// Declared rather than chunked: the server can size its buffer.
		req.ContentLength = size
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", contentTypeFHIR)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if method == http.MethodGet {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return fail(err)
	}
	if len(data) > maxResponseSize {
		return fail(fmt.Errorf("response larger than %d bytes", maxResponseSize))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &Error{Method: method, Path: path, Status: resp.StatusCode, Text: outcomeText(data)}
	}
	if into == nil {
		return nil
	}
	if raw, ok := into.(*json.RawMessage); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fail(fmt.Errorf("decode: %w", err))
	}
	return nil
}

// outcomeText extracts the message of an error response: the
// OperationOutcome text if the body is one, else a short excerpt.
func outcomeText(body []byte) string {
	var oo OperationOutcome
	if json.Unmarshal(body, &oo) == nil && oo.ResourceType == "OperationOutcome" {
		return oo.Text()
	}
	const maxExcerpt = 200
	s := strings.TrimSpace(string(body))
	if len(s) > maxExcerpt {
		s = s[:maxExcerpt] + "..."
	}
	return s
}
