package devserver

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
)

const (
	offAgentID    = "off-agent"
	absentAgentID = "absent-agent"
	ackText       = "MSH|^~\\&|LIS|LAB|ADTSYS|HOSPITAL|20240101120001||ACK^A01|1|P|2.5\rMSA|AA|MSG00001|OK"
)

// opsConfig adds a device, an agent that is off and one that never connects.
func opsConfig() *Config {
	c := DefaultConfig()
	c.Agents[0].Name = "dev-agent"
	c.Agents = append(c.Agents,
		AgentConfig{ID: offAgentID, Name: "off", Status: "off"},
		AgentConfig{ID: absentAgentID, Name: "absent"},
	)
	c.Devices = []DeviceConfig{{ID: "lis", URL: "mllp://127.0.0.1:2575"}}
	return c
}

func outcomeText(t *testing.T, r response) string {
	t.Helper()
	var oo fhir.OperationOutcome
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %d %s", r.status, r.body)
	}
	return oo.Text()
}

func TestPush(t *testing.T) {
	s := start(t, Options{Config: opsConfig()})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)
	off := connect(t, s, tok, offAgentID)
	path := "fhir/R4/Agent/" + DefaultAgentID + "/$push"

	reply := func(m protocol.Message) *protocol.Message { return &m }
	tests := []struct {
		name        string
		path        string
		body        string
		agent       *fakeAgent
		wantRequest *protocol.Message // what the agent receives; nil when nothing
		reply       *protocol.Message // the agent's answer (callback filled in)
		wantStatus  int
		wantType    string
		wantBody    string // raw body, or the OperationOutcome text when wantType is FHIR JSON
	}{
		{
			name: "wait for ACK",
			path: path, agent: a,
			body:        `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x","waitForResponse":true,"returnAck":"application"}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|x", ReturnAck: "application"},
			reply:       reply(protocol.Message{Type: protocol.TypeTransmitResponse, StatusCode: 200, ContentType: protocol.ContentTypeHL7, Body: ackText}),
			wantStatus:  200, wantType: protocol.ContentTypeHL7, wantBody: ackText,
		},
		{
			name: "Parameters body, device search, type level by identifier",
			path: "fhir/R4/Agent/$push?identifier=none", agent: a,
			body:       `{"resourceType":"Parameters","parameter":[{"name":"destination","valueString":"Device?url=mllp://127.0.0.1:2575"}]}`,
			wantStatus: 404, wantType: fhirJSON, wantBody: "Not found",
		},
		{
			name: "Parameters body with device search",
			path: path, agent: a,
			body: `{"resourceType":"Parameters","parameter":[{"name":"destination","valueString":"Device?url=mllp://127.0.0.1:2575"},` +
				`{"name":"contentType","valueString":"x-application/hl7-v2+er7"},{"name":"body","valueString":"MSH|y"},` +
				`{"name":"waitForResponse","valueBoolean":true},{"name":"waitTimeout","valueInteger":20000}]}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|y"},
			reply:       reply(protocol.Message{Type: protocol.TypeTransmitResponse, StatusCode: 200, ContentType: protocol.ContentTypeHL7, Body: ackText}),
			wantStatus:  200, wantType: protocol.ContentTypeHL7, wantBody: ackText,
		},
		{
			name: "agent error",
			path: path, agent: a,
			body:        `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x","waitForResponse":true}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|x"},
			reply:       reply(protocol.Message{Type: protocol.TypeError, Body: "Agent.status is currently set to off"}),
			wantStatus:  400, wantType: fhirJSON, wantBody: "Agent.status is currently set to off",
		},
		{
			name: "agent status 400",
			path: path, agent: a,
			body:        `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x","waitForResponse":true}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|x"},
			reply:       reply(protocol.Message{Type: protocol.TypeTransmitResponse, StatusCode: 400, ContentType: protocol.ContentTypeText, Body: "connect ECONNREFUSED"}),
			wantStatus:  400, wantType: fhirJSON, wantBody: "connect ECONNREFUSED",
		},
		{
			name: "no wait",
			path: path, agent: a,
			body:        `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x"}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|x"},
			wantStatus:  200, wantType: fhirJSON, wantBody: "All OK",
		},
		{
			name: "ping a bare host on a disabled agent",
			path: "fhir/R4/Agent/" + offAgentID + "/$push", agent: off,
			body:        `{"destination":"127.0.0.1","contentType":"x-application/ping","body":"PING 2","waitForResponse":true}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "127.0.0.1", ContentType: protocol.ContentTypePing, Body: "PING 2"},
			reply:       reply(protocol.Message{Type: protocol.TypeTransmitResponse, StatusCode: 200, ContentType: protocol.ContentTypePing, Body: "2 packets transmitted"}),
			wantStatus:  200, wantType: protocol.ContentTypePing, wantBody: "2 packets transmitted",
		},
		{
			name: "timeout",
			path: path, agent: a,
			body:        `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x","waitForResponse":true,"waitTimeout":1}`,
			wantRequest: &protocol.Message{Type: protocol.TypeTransmitRequest, Remote: "mllp://127.0.0.1:2575", ContentType: protocol.ContentTypeHL7, Body: "MSH|x"},
			wantStatus:  504, wantType: fhirJSON, wantBody: "Timeout",
		},
		{
			name: "push to a disabled agent", path: "fhir/R4/Agent/" + offAgentID + "/$push",
			body:       `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x"}`,
			wantStatus: 400, wantType: fhirJSON, wantBody: "Agent is currently disabled",
		},
		{
			name: "agent not connected", path: "fhir/R4/Agent/" + absentAgentID + "/$push",
			body:       `{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x"}`,
			wantStatus: 400, wantType: fhirJSON, wantBody: "Agent not connected",
		},
		{"unknown agent", "fhir/R4/Agent/nobody/$push", `{}`, nil, nil, nil, 404, fhirJSON, "Not found"},
		{"type level without identifier", "fhir/R4/Agent/$push", `{}`, nil, nil, nil, 400, fhirJSON, "Must specify agent ID or identifier"},
		{"missing destination", path, `{"contentType":"text/plain","body":"x"}`, nil, nil, nil, 400, fhirJSON, "Missing destination"},
		{"missing contentType", path, `{"destination":"Device/lis","body":"x"}`, nil, nil, nil, 400, fhirJSON, "Missing contentType"},
		{"missing body", path, `{"destination":"Device/lis","contentType":"text/plain"}`, nil, nil, nil, 400, fhirJSON, "Missing body"},
		{"unknown device", path, `{"destination":"Device/nope","contentType":"text/plain","body":"x"}`, nil, nil, nil, 400, fhirJSON, "Destination device not found"},
		{"host without ping", path, `{"destination":"127.0.0.1","contentType":"text/plain","body":"x"}`, nil, nil, nil, 400, fhirJSON, "Destination device not found"},
		{"bad wait flag", path, `{"destination":"Device/lis","contentType":"text/plain","body":"x","waitForResponse":"maybe"}`, nil, nil, nil, 400, fhirJSON, `Invalid waitForResponse: "maybe" is not a boolean`},
		{"wait too long", path, `{"destination":"Device/lis","contentType":"text/plain","body":"x","waitTimeout":55001}`, nil, nil, nil, 400, fhirJSON, `Invalid waitTimeout: "55001" must be a positive integer of milliseconds no greater than 55000`},
		{"nested value", path, `{"destination":{"reference":"Device/lis"}}`, nil, nil, nil, 400, fhirJSON, "Invalid parameter destination: must be a string, number or boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := goDo(s, http.MethodPost, tt.path, tok, tt.body, map[string]string{"Content-Type": "application/json"})
			if tt.wantRequest != nil {
				got := tt.agent.recv()
				callback := got.Callback
				got.Callback = ""
				if diff := cmp.Diff(*tt.wantRequest, got); diff != "" || callback == "" {
					t.Errorf("callback %q, agent request (-want +got):\n%s", callback, diff)
				}
				if tt.reply != nil {
					r := *tt.reply
					r.Callback = callback
					tt.agent.send(r)
				}
			}
			r := wait(t, res)
			if r.status != tt.wantStatus || r.header.Get("Content-Type") != tt.wantType {
				t.Errorf("got %d %q, want %d %q: %s", r.status, r.header.Get("Content-Type"), tt.wantStatus, tt.wantType, r.body)
			}
			got := string(r.body)
			if tt.wantType == fhirJSON {
				got = outcomeText(t, r)
			}
			if got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
		})
	}
}

func TestPushAsync(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)
	if err := s.PutResource(json.RawMessage(`{"resourceType":"Device","id":"lis","url":"mllp://127.0.0.1:2575"}`)); err != nil {
		t.Fatal(err)
	}

	r := mustDo(t, s, http.MethodPost, "fhir/R4/Agent/"+DefaultAgentID+"/$push", tok,
		`{"destination":"Device/lis","contentType":"x-application/hl7-v2+er7","body":"MSH|x","waitForResponse":true}`,
		map[string]string{"Content-Type": "application/json", "Prefer": "respond-async"})
	if r.status != http.StatusAccepted || outcomeText(t, r) != "Accepted" {
		t.Fatalf("push: %d %s", r.status, r.body)
	}
	loc := r.header.Get("Content-Location")
	jobPath := loc[len(s.BaseURL()):]
	if r := mustDo(t, s, http.MethodGet, jobPath, tok, "", nil); r.status != http.StatusAccepted || r.json(t)["status"] != "accepted" {
		t.Errorf("pending job: %d %s", r.status, r.body)
	}

	req := a.recv()
	a.send(protocol.Message{Type: protocol.TypeTransmitResponse, Callback: req.Callback, StatusCode: 200, ContentType: protocol.ContentTypeHL7, Body: ackText})

	var job map[string]any
	for deadline := time.Now().Add(guard); ; {
		r = mustDo(t, s, http.MethodGet, jobPath, tok, "", nil)
		if r.status == http.StatusOK {
			job = r.json(t)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not complete: %d %s", r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	allOK, _ := json.Marshal(allOK())
	var wantAllOK any
	_ = json.Unmarshal(allOK, &wantAllOK)
	want := map[string]any{
		"resourceType": "Parameters",
		"parameter": []any{
			map[string]any{"name": "outcome", "resource": wantAllOK},
			map[string]any{"name": "responseBody", "valueString": ackText},
		},
	}
	if diff := cmp.Diff(want, job["output"]); diff != "" || job["status"] != "completed" {
		t.Errorf("status %v, output (-want +got):\n%s", job["status"], diff)
	}
}

func TestStatus(t *testing.T) {
	s := start(t, Options{HeartbeatInterval: 20 * time.Millisecond})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	status := func(path string) map[string]string {
		t.Helper()
		r := mustDo(t, s, http.MethodGet, path, tok, "", nil)
		var p fhir.Parameters
		if err := json.Unmarshal(r.body, &p); err != nil || r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		return paramValues(p)
	}
	instance := "fhir/R4/Agent/" + DefaultAgentID + "/$status"

	if diff := cmp.Diff(map[string]string{"status": "unknown", "version": "unknown"}, status(instance)); diff != "" {
		t.Errorf("before connecting (-want +got):\n%s", diff)
	}

	a := connect(t, s, tok, DefaultAgentID)
	// The server heartbeats on its own; the agent's answer carries its version.
	for m := a.recv(); m.Type != protocol.TypeHeartbeatRequest; m = a.recv() {
	}
	a.send(protocol.Message{Type: protocol.TypeHeartbeatResponse, Version: "5.1.28-1a2b3c4"})
	a.sync()
	if r := mustDo(t, s, http.MethodGet, "fhir/R4/Agent/$status?identifier=x", tok, "", nil); r.status != http.StatusNotFound {
		t.Errorf("status by unknown identifier: %d", r.status)
	}
	got := status(instance)
	if got["lastUpdated"] == "" {
		t.Error("no lastUpdated")
	}
	delete(got, "lastUpdated")
	if diff := cmp.Diff(map[string]string{"status": "connected", "version": "5.1.28-1a2b3c4"}, got); diff != "" {
		t.Errorf("connected (-want +got):\n%s", diff)
	}

	s.DisconnectAgents()
	got = status(instance)
	delete(got, "lastUpdated")
	if diff := cmp.Diff(map[string]string{"status": "disconnected", "version": "5.1.28-1a2b3c4"}, got); diff != "" {
		t.Errorf("disconnected (-want +got):\n%s", diff)
	}

	r := mustDo(t, s, http.MethodGet, "fhir/R4/Agent/$bulk-status?name=dev", tok, "", nil)
	var b fhir.Bundle
	if err := json.Unmarshal(r.body, &b); err != nil || b.Type != "collection" || len(b.Entry) != 1 {
		t.Fatalf("bulk status: %d %s", r.status, r.body)
	}
	var entry fhir.Parameters
	_ = json.Unmarshal(b.Entry[0].Resource, &entry)
	var agent fhir.Agent
	var result fhir.Parameters
	_ = json.Unmarshal(entry.Parameter[0].Resource, &agent)
	_ = json.Unmarshal(entry.Parameter[1].Resource, &result)
	if agent.ID != DefaultAgentID || paramValues(result)["status"] != "disconnected" {
		t.Errorf("bulk entry = %s", b.Entry[0].Resource)
	}
}

// paramValues flattens the primitive values of a Parameters.
func paramValues(p fhir.Parameters) map[string]string {
	out := map[string]string{}
	for _, pp := range p.Parameter {
		for _, v := range []*string{pp.ValueString, pp.ValueCode, pp.ValueInstant} {
			if v != nil {
				out[pp.Name] = *v
			}
		}
	}
	return out
}

func TestControlOperations(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	a := connect(t, s, tok, DefaultAgentID)
	base := "fhir/R4/Agent/" + DefaultAgentID + "/"
	logs := json.RawMessage(`[{"level":"INFO","msg":"a", "timestamp":"t1"},{"level":"WARN","msg":"b","timestamp":"t0"}]`)

	tests := []struct {
		name        string
		method      string
		path        string
		body        string
		wantRequest protocol.Message
		reply       protocol.Message
		wantStatus  int
		wantValues  map[string]string // Parameters values; nil for an OperationOutcome
		wantText    string
	}{
		{
			name: "reload", method: http.MethodGet, path: base + "$reload-config",
			wantRequest: protocol.Message{Type: protocol.TypeReloadConfigRequest},
			reply:       protocol.Message{Type: protocol.TypeReloadConfigResp, StatusCode: 200},
			wantStatus:  200, wantText: "All OK",
		},
		{
			name: "reload fails", method: http.MethodPost, path: base + "$reload-config",
			wantRequest: protocol.Message{Type: protocol.TypeReloadConfigRequest},
			reply:       protocol.Message{Type: protocol.TypeError, Body: "2 problem(s) found in agent config; no changes applied"},
			wantStatus:  400, wantText: "2 problem(s) found in agent config; no changes applied",
		},
		{
			name: "upgrade", method: http.MethodGet, path: base + "$upgrade?version=5.2.0&force=true",
			wantRequest: protocol.Message{Type: protocol.TypeUpgradeRequest, Version: "5.2.0", Force: true},
			reply:       protocol.Message{Type: protocol.TypeUpgradeResponse, StatusCode: 200},
			wantStatus:  200, wantText: "All OK",
		},
		{
			name: "fetch logs", method: http.MethodPost, path: base + "$fetch-logs",
			body:        `{"resourceType":"Parameters","parameter":[{"name":"limit","valueInteger":2}]}`,
			wantRequest: protocol.Message{Type: protocol.TypeLogsRequest, Limit: json.RawMessage("2")},
			reply:       protocol.Message{Type: protocol.TypeLogsResponse, StatusCode: 200, Logs: logs},
			wantStatus:  200,
			wantValues:  map[string]string{"logs": `{"level":"INFO","msg":"a","timestamp":"t1"}` + "\n" + `{"level":"WARN","msg":"b","timestamp":"t0"}`},
		},
		{
			name: "fetch logs with an invalid limit", method: http.MethodGet, path: base + "$fetch-logs?limit=invalid_limit",
			wantRequest: protocol.Message{Type: protocol.TypeLogsRequest, Limit: json.RawMessage(`"invalid_limit"`)},
			reply:       protocol.Message{Type: protocol.TypeError, Body: "Invalid limit: invalid_limit - must be a valid positive integer less than or equal to 1000"},
			wantStatus:  400, wantText: "Invalid limit: invalid_limit - must be a valid positive integer less than or equal to 1000",
		},
		{
			name: "stats", method: http.MethodGet, path: base + "$stats",
			wantRequest: protocol.Message{Type: protocol.TypeStatsRequest},
			reply:       protocol.Message{Type: protocol.TypeStatsResponse, StatusCode: 200, Stats: json.RawMessage(`{"live": true, "ping": 3}`)},
			wantStatus:  200, wantValues: map[string]string{"stats": `{"live":true,"ping":3}`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := goDo(s, tt.method, tt.path, tok, tt.body, map[string]string{"Content-Type": "application/fhir+json"})
			got := a.recv()
			callback := got.Callback
			got.Callback = ""
			if diff := cmp.Diff(tt.wantRequest, got); diff != "" || callback == "" {
				t.Errorf("callback %q, agent request (-want +got):\n%s", callback, diff)
			}
			tt.reply.Callback = callback
			a.send(tt.reply)
			r := wait(t, res)
			if r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if tt.wantValues == nil {
				if text := outcomeText(t, r); text != tt.wantText {
					t.Errorf("outcome = %q, want %q", text, tt.wantText)
				}
				return
			}
			var p fhir.Parameters
			_ = json.Unmarshal(r.body, &p)
			if diff := cmp.Diff(tt.wantValues, paramValues(p)); diff != "" {
				t.Errorf("Parameters (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("bulk reload", func(t *testing.T) {
		res := goDo(s, http.MethodGet, "fhir/R4/Agent/$reload-config?name=dev-agent", tok, "", nil)
		req := a.recv()
		a.send(protocol.Message{Type: protocol.TypeReloadConfigResp, Callback: req.Callback, StatusCode: 200})
		r := wait(t, res)
		var b fhir.Bundle
		if err := json.Unmarshal(r.body, &b); err != nil || b.Type != "collection" || len(b.Entry) != 1 {
			t.Fatalf("bulk: %d %s", r.status, r.body)
		}
		var p fhir.Parameters
		_ = json.Unmarshal(b.Entry[0].Resource, &p)
		var oo fhir.OperationOutcome
		_ = json.Unmarshal(p.Parameter[1].Resource, &oo)
		if p.Parameter[0].Name != "agent" || p.Parameter[1].Name != "result" || oo.Text() != "All OK" {
			t.Errorf("entry = %s", b.Entry[0].Resource)
		}
	})

	t.Run("invalid upgrade timeout", func(t *testing.T) {
		r := mustDo(t, s, http.MethodGet, base+"$upgrade?timeout=99999", tok, "", nil)
		if r.status != http.StatusBadRequest || outcomeText(t, r) != `Invalid timeout: "99999" must be a positive integer of milliseconds no greater than 56000` {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})
}
