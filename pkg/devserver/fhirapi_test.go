package devserver

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

func TestDefaultResources(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)

	var agent fhir.Agent
	r := mustDo(t, s, http.MethodGet, "fhir/R4/Agent/"+DefaultAgentID, tok, "", nil)
	if err := json.Unmarshal(r.body, &agent); err != nil || r.status != http.StatusOK {
		t.Fatalf("read Agent: %d %v", r.status, err)
	}
	var wantChannels []fhir.AgentChannel
	for _, name := range []string{"hl7", "astm", "dicom"} {
		wantChannels = append(wantChannels, fhir.AgentChannel{
			Name:            name,
			Endpoint:        fhir.Reference{Reference: "Endpoint/" + DefaultAgentID + "-" + name},
			TargetReference: fhir.Reference{Reference: "Bot/ack"},
		})
	}
	if diff := cmp.Diff(wantChannels, agent.Channel); diff != "" || agent.Status != "active" {
		t.Errorf("status %q, channels (-want +got):\n%s", agent.Status, diff)
	}
	if agent.Meta == nil || agent.Meta.VersionID == "" || agent.Meta.LastUpdated == "" {
		t.Errorf("meta = %+v", agent.Meta)
	}

	var ep fhir.Endpoint
	r = mustDo(t, s, http.MethodGet, "fhir/R4/"+agent.Channel[0].Endpoint.Reference, tok, "", nil)
	if err := json.Unmarshal(r.body, &ep); err != nil {
		t.Fatal(err)
	}
	if ep.Address != DefaultAddress || ep.Status != "active" {
		t.Errorf("endpoint = %+v", ep)
	}
	if ct := r.header.Get("Content-Type"); ct != fhirJSON {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestCRUDAndSearch(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)

	// Create: the server assigns the id.
	r := mustDo(t, s, http.MethodPost, "fhir/R4/Device", tok,
		`{"resourceType":"Device","id":"ignored","url":"mllp://127.0.0.1:2575","identifier":[{"system":"urn:x","value":"lis-1"}]}`, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	created := r.json(t)
	id := created["id"].(string)
	if id == "ignored" || len(id) != 36 || created["meta"].(map[string]any)["versionId"] == "" {
		t.Errorf("created = %v", created)
	}
	if loc := r.header.Get("Location"); loc != s.BaseURL()+"fhir/R4/Device/"+id {
		t.Errorf("Location = %q", loc)
	}

	// Update.
	r = mustDo(t, s, http.MethodPut, "fhir/R4/Device/"+id, tok, `{"resourceType":"Device","url":"mllp://127.0.0.1:2576","identifier":[{"system":"urn:x","value":"lis-1"}]}`, nil)
	if r.status != http.StatusOK || r.json(t)["url"] != "mllp://127.0.0.1:2576" {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	// Update as create.
	r = mustDo(t, s, http.MethodPut, "fhir/R4/Device/second", tok, `{"resourceType":"Device","url":"mllp://10.0.0.1:2575"}`, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("update-as-create: %d %s", r.status, r.body)
	}

	searches := []struct {
		query   string
		wantIDs []string
	}{
		{"", []string{id, "second"}},
		{"?url=mllp://127.0.0.1:2576", []string{id}},
		{"?identifier=urn:x|lis-1", []string{id}},
		{"?identifier=lis-1", []string{id}},
		{"?identifier=urn:y|lis-1", nil},
		{"?_id=second", []string{"second"}},
		{"?_count=1", []string{id}},
		{"?_count=1&_offset=1", []string{"second"}},
	}
	for _, tt := range searches {
		t.Run("search"+tt.query, func(t *testing.T) {
			r := mustDo(t, s, http.MethodGet, "fhir/R4/Device"+tt.query, tok, "", nil)
			var b fhir.Bundle
			if err := json.Unmarshal(r.body, &b); err != nil || r.status != http.StatusOK || b.Type != "searchset" {
				t.Fatalf("search: %d %v %s", r.status, err, r.body)
			}
			var ids []string
			for _, e := range b.Entry {
				var d fhir.Device
				_ = json.Unmarshal(e.Resource, &d)
				ids = append(ids, d.ID)
				if e.FullURL != s.BaseURL()+"fhir/R4/Device/"+d.ID {
					t.Errorf("fullUrl = %q", e.FullURL)
				}
			}
			if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}

	r = mustDo(t, s, http.MethodGet, "fhir/R4/Bot?name=REJ", tok, "", nil)
	var bots fhir.Bundle
	_ = json.Unmarshal(r.body, &bots)
	if bots.Total == nil || *bots.Total != 1 {
		t.Errorf("Bot?name=REJ: %s", r.body)
	}

	// Delete.
	if r = mustDo(t, s, http.MethodDelete, "fhir/R4/Device/"+id, tok, "", nil); r.status != http.StatusOK {
		t.Errorf("delete: %d", r.status)
	}
	if r = mustDo(t, s, http.MethodGet, "fhir/R4/Device/"+id, tok, "", nil); r.status != http.StatusNotFound {
		t.Errorf("read after delete: %d", r.status)
	}
	if r = mustDo(t, s, http.MethodDelete, "fhir/R4/Device/"+id, tok, "", nil); r.status != http.StatusNotFound {
		t.Errorf("second delete: %d", r.status)
	}
}

func TestFHIRErrors(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantText                 string
	}{
		{"unknown type", http.MethodGet, "fhir/R4/Patient/1", "", 404, "Unsupported resource type: Patient"},
		{"unknown search param", http.MethodGet, "fhir/R4/Agent?foo=bar", "", 400, "Unknown search parameter: foo"},
		{"count too big", http.MethodGet, "fhir/R4/Agent?_count=5000", "", 400, "_count must be at most 1000"},
		{"wrong resourceType", http.MethodPost, "fhir/R4/Device", `{"resourceType":"Agent"}`, 400, `Incorrect resource type: expected Device, got "Agent"`},
		{"not JSON", http.MethodPost, "fhir/R4/Device", `{`, 400, "invalid JSON: unexpected EOF"},
		{"not an object", http.MethodPost, "fhir/R4/Device", `[1]`, 400, "expected a JSON object"},
		{"id mismatch", http.MethodPut, "fhir/R4/Device/a", `{"resourceType":"Device","id":"b"}`, 400, "Incorrect ID"},
		{"bad id", http.MethodPut, "fhir/R4/Device/a_b", `{"resourceType":"Device"}`, 400, `invalid id "a_b"`},
		{"bad Agent shape", http.MethodPut, "fhir/R4/Agent/x", `{"resourceType":"Agent","channel":"hl7"}`, 400, "Invalid Agent: json: cannot unmarshal string into Go struct field Agent.channel of type []fhir.AgentChannel"},
		{"missing", http.MethodGet, "fhir/R4/Device/nope", "", 404, "Not found"},
		{"method", http.MethodPatch, "fhir/R4/Device/nope", "", 405, "Method not allowed"},
		{"unknown op", http.MethodGet, "fhir/R4/Agent/" + DefaultAgentID + "/$nope", "", 404, "Unsupported operation: $nope"},
		{"op on other type", http.MethodGet, "fhir/R4/Device/x/$status", "", 404, "Not found"},
		{"push by GET", http.MethodGet, "fhir/R4/Agent/" + DefaultAgentID + "/$push", "", 405, "Method not allowed"},
		{"instance bulk status", http.MethodGet, "fhir/R4/Agent/" + DefaultAgentID + "/$bulk-status", "", 404, "$bulk-status is a type-level operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustDo(t, s, tt.method, tt.path, tok, tt.body, map[string]string{"Content-Type": "application/fhir+json"})
			var oo fhir.OperationOutcome
			_ = json.Unmarshal(r.body, &oo)
			if r.status != tt.wantStatus || oo.Text() != tt.wantText {
				t.Errorf("got %d %q, want %d %q", r.status, oo.Text(), tt.wantStatus, tt.wantText)
			}
		})
	}
}

func TestBinary(t *testing.T) {
	s := start(t, Options{})
	tok := login(t, s, DefaultClientID, DefaultClientSecret)
	content := "\x00\x01DICM binary\xff"

	r := mustDo(t, s, http.MethodPost, "fhir/R4/Binary", tok, content, map[string]string{"Content-Type": "application/dicom"})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	res := r.json(t)
	id := res["id"].(string)
	if res["contentType"] != "application/dicom" || res["data"] != nil {
		t.Errorf("created Binary = %v", res)
	}

	r = mustDo(t, s, http.MethodGet, "fhir/R4/Binary/"+id, tok, "", nil)
	if string(r.body) != content || r.header.Get("Content-Type") != "application/dicom" {
		t.Errorf("raw read: %q %q", r.header.Get("Content-Type"), r.body)
	}
	r = mustDo(t, s, http.MethodGet, "fhir/R4/Binary/"+id, tok, "", map[string]string{"Accept": "application/fhir+json"})
	if got := r.json(t)["data"]; got != base64.StdEncoding.EncodeToString([]byte(content)) {
		t.Errorf("FHIR read data = %v", got)
	}

	// A Binary resource in FHIR JSON keeps its data beside the resource.
	r = mustDo(t, s, http.MethodPost, "fhir/R4/Binary", tok,
		fmt.Sprintf(`{"resourceType":"Binary","contentType":"text/plain","data":%q}`, base64.StdEncoding.EncodeToString([]byte("hello"))),
		map[string]string{"Content-Type": "application/fhir+json"})
	id = r.json(t)["id"].(string)
	r = mustDo(t, s, http.MethodGet, "fhir/R4/Binary/"+id, tok, "", nil)
	if string(r.body) != "hello" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("raw read: %q %q", r.header.Get("Content-Type"), r.body)
	}
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		declared int64 // Content-Length; -1 for none
		want     string
		wantErr  bool
	}{
		{"declared", "hello", 5, "hello", false},
		{"chunked", "hello", -1, "hello", false},
		{"declared over the limit", "hello world", 11, "", true},
		{"chunked over the limit", "hello world", -1, "", true},
		{"shorter than declared", "hello", 8, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/fhir/R4/Binary", strings.NewReader(tt.body))
			r.ContentLength = tt.declared
			got, err := readBody(httptest.NewRecorder(), r, 8)
			if (err != nil) != tt.wantErr || err == nil && string(got) != tt.want {
				t.Errorf("readBody = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPutResource(t *testing.T) {
	s := start(t, Options{})
	tests := []struct {
		name    string
		res     string
		wantErr string
	}{
		{"endpoint", `{"resourceType":"Endpoint","id":"e1","address":"mllp://0.0.0.0:57000"}`, ""},
		{"no id", `{"resourceType":"Endpoint","address":"x"}`, "devserver: Endpoint resource without id"},
		{"unknown type", `{"resourceType":"Patient","id":"p"}`, `unsupported resource type: "Patient"`},
		{"not JSON", `nope`, "invalid JSON: invalid character 'o' in literal null (expecting 'u')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.PutResource(json.RawMessage(tt.res))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("err = %q, want %q", got, tt.wantErr)
			}
		})
	}
	var ep fhir.Endpoint
	if err := s.store.getAs("Endpoint", "e1", &ep); err != nil || ep.Address != "mllp://0.0.0.0:57000" {
		t.Errorf("stored endpoint = %+v, %v", ep, err)
	}
}
