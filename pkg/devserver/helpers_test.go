package devserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// guard bounds every blocking read in the tests so that a bug fails instead
// of hanging; it is not an assertion on timing.
const guard = 10 * time.Second

const hl7Message = "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20240101120000||ADT^A01|MSG00001|P|2.5\r" +
	"PID|1||12345^^^HOSP^MR||DOE^JOHN"

func start(t *testing.T, opt Options) *Server {
	t.Helper()
	opt.Listen = "127.0.0.1:0"
	if opt.HeartbeatInterval == 0 {
		opt.HeartbeatInterval = -1
	}
	s, err := New(opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not JSON: %v: %s", r.status, err, r.body)
	}
	return m
}

// do sends an HTTP request; a nil error means a response arrived.
func do(s *Server, method, path, token string, body io.Reader, header map[string]string) (response, error) {
	req, err := http.NewRequest(method, s.BaseURL()+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func mustDo(t *testing.T, s *Server, method, path, token, body string, header map[string]string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := do(s, method, path, token, rd, header)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func tokenRequest(s *Server, form url.Values) (response, error) {
	return do(s, http.MethodPost, "oauth2/token", "", strings.NewReader(form.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

func login(t *testing.T, s *Server, clientID, secret string) string {
	t.Helper()
	r, err := tokenRequest(s, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}})
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("login: %v %d %s", err, r.status, r.body)
	}
	return r.json(t)["access_token"].(string)
}

// fakeAgent plays the agent side of /ws/agent.
type fakeAgent struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, s *Server) *fakeAgent {
	t.Helper()
	u := "ws" + strings.TrimPrefix(s.BaseURL(), "http") + "ws/agent"
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &fakeAgent{t: t, ws: ws}
}

// connect dials and completes agent:connect.
func connect(t *testing.T, s *Server, token, agentID string) *fakeAgent {
	t.Helper()
	a := dial(t, s)
	a.send(protocol.Message{Type: protocol.TypeConnectRequest, AccessToken: token, AgentID: agentID})
	if m := a.recv(); m.Type != protocol.TypeConnectResponse {
		t.Fatalf("connect: got %+v", m)
	}
	return a
}

func (a *fakeAgent) send(m protocol.Message) {
	a.t.Helper()
	if err := a.ws.WriteJSON(m); err != nil {
		a.t.Fatalf("send: %v", err)
	}
}

func (a *fakeAgent) recv() protocol.Message {
	a.t.Helper()
	_ = a.ws.SetReadDeadline(time.Now().Add(guard))
	_, data, err := a.ws.ReadMessage()
	if err != nil {
		a.t.Fatalf("recv: %v", err)
	}
	var m protocol.Message
	if err := json.Unmarshal(data, &m); err != nil {
		a.t.Fatalf("recv: %v: %s", err, data)
	}
	return m
}

// sync sends a heartbeat and reads up to its answer: the server handles one
// socket's frames in order, so everything sent before has been handled.
// Frames read on the way are returned.
func (a *fakeAgent) sync() []protocol.Message {
	a.t.Helper()
	a.send(protocol.Message{Type: protocol.TypeHeartbeatRequest, Callback: "sync"})
	var skipped []protocol.Message
	for {
		m := a.recv()
		if m.Type == protocol.TypeHeartbeatResponse && m.Callback == "sync" {
			return skipped
		}
		skipped = append(skipped, m)
	}
}

// httpResult carries a response from a goroutine back to the test.
type httpResult struct {
	r   response
	err error
}

func goDo(s *Server, method, path, token, body string, header map[string]string) <-chan httpResult {
	ch := make(chan httpResult, 1)
	go func() {
		r, err := do(s, method, path, token, bytes.NewBufferString(body), header)
		ch <- httpResult{r, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan httpResult) response {
	t.Helper()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("request: %v", res.err)
		}
		return res.r
	case <-time.After(guard):
		t.Fatal("request did not finish")
	}
	return response{}
}
