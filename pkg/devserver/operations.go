package devserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

// Waits of the Agent operations, as the Medplum server uses them (ms).
const (
	pushDefaultWait    = 10000
	pushMaxWait        = 55000
	upgradeDefaultWait = 45000
	upgradeMaxWait     = 56000
	controlWait        = 5 * time.Second
	maxBulk            = 100
)

// opParamNames are operation inputs; in a type-level call every other query
// parameter selects agents.
var opParamNames = map[string]bool{
	"destination": true, "contentType": true, "body": true, "waitForResponse": true, "waitTimeout": true,
	"returnAck": true, "version": true, "timeout": true, "force": true, "limit": true,
}

// opParams are the inputs of one operation call, from the query string and
// from a JSON body that is either a plain object or a FHIR Parameters.
type opParams map[string]string

// agentOp runs an operation against one agent and returns the HTTP status
// and the resource (an OperationOutcome or a Parameters) to answer with.
type agentOp func(ctx context.Context, agent *fhir.Agent, p opParams) (int, any)

func (s *Server) handleOperation(w http.ResponseWriter, r *http.Request, typ, id, op string) {
	if typ != "Agent" {
		writeOutcome(w, http.StatusNotFound, notFound())
		return
	}
	if r.Method != http.MethodPost && (r.Method != http.MethodGet || op == "$push") {
		allow := "GET, POST"
		if op == "$push" {
			allow = "POST"
		}
		methodNotAllowed(w, allow)
		return
	}
	p, search, err := readParams(w, r)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, badRequest(err.Error()))
		return
	}
	var f agentOp
	switch op {
	case "$push":
		s.opPush(w, r, id, p, search)
		return
	case "$status":
		s.single(w, r, id, search, p, s.opStatus)
		return
	case "$bulk-status":
		if id != "" {
			writeOutcome(w, http.StatusNotFound, notSupported("$bulk-status is a type-level operation"))
			return
		}
		f = s.opStatus
	case "$reload-config":
		f = s.opReloadConfig
	case "$upgrade":
		f = s.opUpgrade
	case "$fetch-logs":
		f = s.opFetchLogs
	case "$stats":
		f = s.opStats
	default:
		writeOutcome(w, http.StatusNotFound, notSupported("Unsupported operation: "+op))
		return
	}
	if id != "" {
		s.single(w, r, id, search, p, f)
	} else {
		s.bulk(w, r, search, p, f)
	}
}

// readParams collects operation inputs and the remaining (search) query.
func readParams(w http.ResponseWriter, r *http.Request) (opParams, url.Values, error) {
	p := opParams{}
	search := url.Values{}
	for k, vs := range r.URL.Query() {
		if opParamNames[k] {
			p[k] = vs[0]
		} else {
			search[k] = vs
		}
	}
	body, err := readBody(w, r, maxResourceSize)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, search, nil
	}
	var probe struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	if probe.ResourceType == "Parameters" {
		var params fhir.Parameters
		if err := json.Unmarshal(body, &params); err != nil {
			return nil, nil, fmt.Errorf("invalid Parameters: %w", err)
		}
		for _, pp := range params.Parameter {
			switch {
			case pp.ValueString != nil:
				p[pp.Name] = *pp.ValueString
			case pp.ValueCode != nil:
				p[pp.Name] = *pp.ValueCode
			case pp.ValueBoolean != nil:
				p[pp.Name] = strconv.FormatBool(*pp.ValueBoolean)
			case pp.ValueInteger != nil:
				p[pp.Name] = strconv.FormatInt(*pp.ValueInteger, 10)
			}
		}
		return p, search, nil
	}
	obj, err := decodeResource(body)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range obj {
		switch v := v.(type) {
		case string:
			p[k] = v
		case bool:
			p[k] = strconv.FormatBool(v)
		case json.Number:
			p[k] = v.String()
		case nil:
		default:
			return nil, nil, fmt.Errorf("Invalid parameter %s: must be a string, number or boolean", k)
		}
	}
	return p, search, nil
}

func (p opParams) boolean(name string) (bool, error) {
	v, ok := p[name]
	if !ok {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("Invalid %s: %q is not a boolean", name, v)
	}
	return b, nil
}

// millis reads a wait in milliseconds: positive and at most max.
func (p opParams) millis(name string, def, max int) (time.Duration, error) {
	v, ok := p[name]
	if !ok {
		return time.Duration(def) * time.Millisecond, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > max {
		return 0, fmt.Errorf("Invalid %s: %q must be a positive integer of milliseconds no greater than %d", name, v, max)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// single runs f on the agent named by id, or by the identifier search
// parameter at type level.
func (s *Server) single(w http.ResponseWriter, r *http.Request, id string, search url.Values, p opParams, f agentOp) {
	agent, status, oo := s.selectAgent(id, search)
	if oo != nil {
		writeOutcome(w, status, oo)
		return
	}
	status, res := f(r.Context(), agent, p)
	writeJSON(w, status, fhirJSON, res)
}

func (s *Server) selectAgent(id string, search url.Values) (*fhir.Agent, int, *fhir.OperationOutcome) {
	if id == "" {
		ident := search.Get("identifier")
		if ident == "" {
			return nil, http.StatusBadRequest, badRequest("Must specify agent ID or identifier")
		}
		q := &query{count: 1, filters: []func(map[string]any) bool{identifierFilter(ident)}}
		page, _ := s.store.search("Agent", q)
		if len(page) == 0 {
			return nil, http.StatusNotFound, notFound()
		}
		id = str(page[0].resource()["id"])
	}
	var agent fhir.Agent
	if err := s.store.getAs("Agent", id, &agent); err != nil {
		return nil, http.StatusNotFound, notFound()
	}
	return &agent, 0, nil
}

// bulk runs f concurrently on every agent the search selects (at most 100)
// and answers a collection Bundle of Parameters{agent, result}.
func (s *Server) bulk(w http.ResponseWriter, r *http.Request, search url.Values, p opParams, f agentOp) {
	q, err := parseQuery(search, maxBulk)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, badRequest(err.Error()))
		return
	}
	page, _ := s.store.search("Agent", q)
	entries := make([]fhir.BundleEntry, len(page))
	var wg sync.WaitGroup
	for i, e := range page {
		wg.Go(func() {
			var agent fhir.Agent
			_ = json.Unmarshal(e.raw, &agent)
			_, res := f(r.Context(), &agent, p)
			result, _ := json.Marshal(res)
			b, _ := json.Marshal(fhir.Parameters{ResourceType: "Parameters", Parameter: []fhir.Parameter{
				{Name: "agent", Resource: e.raw},
				{Name: "result", Resource: result},
			}})
			entries[i] = fhir.BundleEntry{Resource: b}
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, fhirJSON, fhir.Bundle{ResourceType: "Bundle", Type: "collection", Entry: entries})
}

// ask sends a request to the agent and waits for its answer. A nil reply
// comes with the status and outcome to answer the HTTP request with.
func (s *Server) ask(ctx context.Context, agentID string, m *protocol.Message, wait time.Duration) (*protocol.Message, int, *fhir.OperationOutcome) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	reply, err := s.Request(ctx, agentID, m)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return nil, http.StatusGatewayTimeout, fhir.Outcome("error", "timeout", "Timeout")
	case err != nil:
		return nil, http.StatusBadRequest, badRequest(err.Error())
	case reply.Type == protocol.TypeError || reply.StatusCode >= 400:
		return nil, http.StatusBadRequest, badRequest(reply.Body)
	}
	return reply, 0, nil
}

func (s *Server) opReloadConfig(ctx context.Context, agent *fhir.Agent, _ opParams) (int, any) {
	if _, status, oo := s.ask(ctx, agent.ID, &protocol.Message{Type: protocol.TypeReloadConfigRequest}, controlWait); oo != nil {
		return status, oo
	}
	return http.StatusOK, allOK()
}

func (s *Server) opUpgrade(ctx context.Context, agent *fhir.Agent, p opParams) (int, any) {
	wait, err := p.millis("timeout", upgradeDefaultWait, upgradeMaxWait)
	if err != nil {
		return http.StatusBadRequest, badRequest(err.Error())
	}
	force, err := p.boolean("force")
	if err != nil {
		return http.StatusBadRequest, badRequest(err.Error())
	}
	m := &protocol.Message{Type: protocol.TypeUpgradeRequest, Version: p["version"], Force: force}
	if _, status, oo := s.ask(ctx, agent.ID, m, wait); oo != nil {
		return status, oo
	}
	return http.StatusOK, allOK()
}

// opFetchLogs answers Parameters{logs}: the entries as JSON, one per line.
// A limit is passed on as a number when it is one and as a string otherwise,
// so that the agent reports invalid limits itself.
func (s *Server) opFetchLogs(ctx context.Context, agent *fhir.Agent, p opParams) (int, any) {
	m := &protocol.Message{Type: protocol.TypeLogsRequest}
	if v, ok := p["limit"]; ok {
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			m.Limit = json.RawMessage(v)
		} else {
			m.Limit, _ = json.Marshal(v)
		}
	}
	reply, status, oo := s.ask(ctx, agent.ID, m, controlWait)
	if oo != nil {
		return status, oo
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(reply.Logs, &entries); err != nil && len(reply.Logs) > 0 {
		return http.StatusBadGateway, badRequest("Invalid logs from agent: " + err.Error())
	}
	lines := make([]string, len(entries))
	for i, e := range entries {
		var b bytes.Buffer
		if err := json.Compact(&b, e); err != nil {
			return http.StatusBadGateway, badRequest("Invalid logs from agent: " + err.Error())
		}
		lines[i] = b.String()
	}
	return http.StatusOK, parameters(fhir.Parameter{Name: "logs", ValueString: ptr(strings.Join(lines, "\n"))})
}

func (s *Server) opStats(ctx context.Context, agent *fhir.Agent, _ opParams) (int, any) {
	reply, status, oo := s.ask(ctx, agent.ID, &protocol.Message{Type: protocol.TypeStatsRequest}, controlWait)
	if oo != nil {
		return status, oo
	}
	var b bytes.Buffer
	if err := json.Compact(&b, reply.Stats); err != nil {
		return http.StatusBadGateway, badRequest("Invalid stats from agent: " + err.Error())
	}
	return http.StatusOK, parameters(fhir.Parameter{Name: "stats", ValueString: ptr(b.String())})
}

// opStatus reports the server's record of the agent: connected,
// disconnected, or unknown when it never connected.
func (s *Server) opStatus(_ context.Context, agent *fhir.Agent, _ opParams) (int, any) {
	s.mu.Lock()
	st := agentStatus{status: "unknown", version: "unknown"}
	if rec := s.status[agent.ID]; rec != nil {
		st = *rec
	}
	s.mu.Unlock()
	out := []fhir.Parameter{
		{Name: "status", ValueCode: ptr(st.status)},
		{Name: "version", ValueString: ptr(st.version)},
	}
	if !st.lastUpdated.IsZero() {
		out = append(out, fhir.Parameter{Name: "lastUpdated", ValueInstant: ptr(st.lastUpdated.UTC().Format("2006-01-02T15:04:05.000Z"))})
	}
	return http.StatusOK, parameters(out...)
}

func parameters(p ...fhir.Parameter) *fhir.Parameters {
	return &fhir.Parameters{ResourceType: "Parameters", Parameter: p}
}

func ptr[T any](v T) *T { return &v }

// pushResult is the outcome of a $push: either an agent answer (status,
// contentType, body) or an OperationOutcome.
type pushResult struct {
	status      int
	contentType string
	body        string
	outcome     *fhir.OperationOutcome
}

func (s *Server) opPush(w http.ResponseWriter, r *http.Request, id string, p opParams, search url.Values) {
	agent, status, oo := s.selectAgent(id, search)
	if oo != nil {
		writeOutcome(w, status, oo)
		return
	}
	m, wait, timeout, err := s.pushRequest(agent, p)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, badRequest(err.Error()))
		return
	}
	if !strings.Contains(r.Header.Get("Prefer"), "respond-async") {
		res := s.push(r.Context(), agent.ID, m, wait, timeout)
		if res.outcome != nil {
			writeOutcome(w, res.status, res.outcome)
			return
		}
		w.Header().Set("Content-Type", res.contentType)
		w.WriteHeader(res.status)
		_, _ = io.WriteString(w, res.body)
		return
	}
	jobID, err := s.create(map[string]any{
		"resourceType": "AsyncJob",
		"status":       "accepted",
		"requestTime":  now(),
		"request":      s.baseURL + strings.TrimPrefix(r.URL.RequestURI(), "/"),
	})
	if err != nil {
		writeOutcome(w, http.StatusInternalServerError, fhir.Outcome("error", "exception", err.Error()))
		return
	}
	if !s.track(func() { s.finishJob(jobID, s.push(s.ctx, agent.ID, m, wait, timeout)) }) {
		writeOutcome(w, http.StatusServiceUnavailable, fhir.Outcome("error", "transient", "Server is shutting down"))
		return
	}
	w.Header().Set("Content-Location", s.baseURL+"fhir/R4/job/"+jobID+"/status")
	oo = fhir.Outcome("information", "informational", "Accepted")
	oo.ID = "accepted"
	writeOutcome(w, http.StatusAccepted, oo)
}

// pushRequest validates $push inputs into the message for the agent.
func (s *Server) pushRequest(agent *fhir.Agent, p opParams) (m *protocol.Message, wait bool, timeout time.Duration, err error) {
	ping := p["contentType"] == protocol.ContentTypePing
	switch {
	case p["destination"] == "":
		return nil, false, 0, errors.New("Missing destination")
	case p["contentType"] == "":
		return nil, false, 0, errors.New("Missing contentType")
	case p["body"] == "" && !ping:
		return nil, false, 0, errors.New("Missing body")
	case agent.Status == "off" && !ping:
		return nil, false, 0, errors.New("Agent is currently disabled")
	}
	if wait, err = p.boolean("waitForResponse"); err != nil {
		return nil, false, 0, err
	}
	if timeout, err = p.millis("waitTimeout", pushDefaultWait, pushMaxWait); err != nil {
		return nil, false, 0, err
	}
	remote, err := s.destination(p["destination"], ping)
	if err != nil {
		return nil, false, 0, err
	}
	m = &protocol.Message{
		Type:        protocol.TypeTransmitRequest,
		Remote:      remote,
		ContentType: p["contentType"],
		Body:        p["body"],
		ReturnAck:   p["returnAck"],
		// Set even when nobody waits, as the agent echoes it in its answer.
		Callback: newCallback(),
	}
	return m, wait, timeout, nil
}

// hostname is what a ping destination may be besides an IP address.
var hostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// destination resolves Device/<id>, Device?<search>, or (pings only) a
// bare host to the remote the agent sends to.
func (s *Server) destination(dest string, ping bool) (string, error) {
	var dev fhir.Device
	if id, ok := strings.CutPrefix(dest, "Device/"); ok {
		if err := s.store.getAs("Device", id, &dev); err != nil {
			return "", errors.New("Destination device not found")
		}
	} else if rawQuery, ok := strings.CutPrefix(dest, "Device?"); ok {
		values, err := url.ParseQuery(rawQuery)
		if err != nil {
			return "", fmt.Errorf("Invalid destination search: %w", err)
		}
		q, err := parseQuery(values, maxCount)
		if err != nil {
			return "", err
		}
		page, _ := s.store.search("Device", q)
		if len(page) == 0 {
			return "", errors.New("Destination device not found")
		}
		_ = json.Unmarshal(page[0].raw, &dev)
	} else if ping && (net.ParseIP(dest) != nil || hostname.MatchString(dest)) {
		return dest, nil
	} else {
		return "", errors.New("Destination device not found")
	}
	if dev.URL == "" {
		return "", errors.New("Destination device missing url")
	}
	return dev.URL, nil
}

// push sends the message and, when asked to, waits for the agent's answer.
func (s *Server) push(ctx context.Context, agentID string, m *protocol.Message, wait bool, timeout time.Duration) pushResult {
	if !s.Connected(agentID) {
		return pushResult{status: http.StatusBadRequest, outcome: badRequest(ErrAgentNotConnected.Error())}
	}
	if !wait {
		if err := s.SendToAgent(agentID, m); err != nil {
			return pushResult{status: http.StatusBadRequest, outcome: badRequest(err.Error())}
		}
		return pushResult{status: http.StatusOK, outcome: allOK()}
	}
	reply, status, oo := s.ask(ctx, agentID, m, timeout)
	if oo != nil {
		return pushResult{status: status, outcome: oo}
	}
	res := pushResult{status: reply.StatusCode, contentType: reply.ContentType, body: reply.Body}
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.contentType == "" {
		res.contentType = protocol.ContentTypeText
	}
	return res
}

// finishJob completes an AsyncJob with Parameters{outcome, responseBody}.
func (s *Server) finishJob(id string, res pushResult) {
	status := "completed"
	var out []fhir.Parameter
	switch {
	case res.outcome == nil:
		out = []fhir.Parameter{
			{Name: "outcome", Resource: mustJSON(allOK())},
			{Name: "responseBody", ValueString: ptr(res.body)},
		}
	case res.status >= 400:
		status = "error"
		fallthrough
	default:
		out = []fhir.Parameter{{Name: "outcome", Resource: mustJSON(res.outcome)}}
	}
	var job map[string]any
	if e, err := s.store.get("AsyncJob", id); err == nil {
		job, _ = decodeResource(e.raw)
	}
	if job == nil {
		return // evicted or deleted meanwhile
	}
	job["status"] = status
	job["transactionTime"] = now()
	job["output"] = parameters(out...)
	b, _ := json.Marshal(job)
	if err := s.PutResource(b); err != nil {
		s.log.Error("cannot complete AsyncJob", "id", id, "err", err)
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// handleJobStatus serves job/<id>/status: 202 with the AsyncJob while it
// runs, 200 once it completed or failed.
func (s *Server) handleJobStatus(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	e, err := s.store.get("AsyncJob", id)
	if err != nil {
		writeOutcome(w, http.StatusNotFound, notFound())
		return
	}
	status := http.StatusOK
	if s := str(e.resource()["status"]); s == "accepted" || s == "active" {
		status = http.StatusAccepted
	}
	writeEntry(w, status, e, e.raw)
}
