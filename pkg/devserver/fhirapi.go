package devserver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

// Request body limits.
const (
	maxResourceSize = 16 << 20
	maxBinarySize   = 256 << 20
)

// handleFHIR serves /fhir/R4/: CRUD and search on the supported types,
// Agent operations and asynchronous job status.
func (s *Server) handleFHIR(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/fhir/R4/"), "/")
	if len(parts) == 3 && parts[0] == "job" && parts[2] == "status" {
		s.handleJobStatus(w, r, parts[1])
		return
	}
	typ := parts[0]
	if !resourceTypes[typ] {
		writeOutcome(w, http.StatusNotFound, notSupported("Unsupported resource type: "+typ))
		return
	}
	switch {
	case len(parts) == 1 || len(parts) == 2 && parts[1] == "":
		s.handleType(w, r, typ)
	case len(parts) == 2 && strings.HasPrefix(parts[1], "$"):
		s.handleOperation(w, r, typ, "", parts[1])
	case len(parts) == 2:
		s.handleInstance(w, r, typ, parts[1])
	case len(parts) == 3 && strings.HasPrefix(parts[2], "$"):
		s.handleOperation(w, r, typ, parts[1], parts[2])
	default:
		writeOutcome(w, http.StatusNotFound, notFound())
	}
}

func (s *Server) handleType(w http.ResponseWriter, r *http.Request, typ string) {
	switch r.Method {
	case http.MethodGet:
		q, err := parseQuery(r.URL.Query(), maxCount)
		if err != nil {
			writeOutcome(w, http.StatusBadRequest, badRequest(err.Error()))
			return
		}
		page, total := s.store.search(typ, q)
		writeJSON(w, http.StatusOK, fhirJSON, s.bundle("searchset", page, &total))
	case http.MethodPost:
		s.write(w, r, typ, "")
	default:
		methodNotAllowed(w, "GET, POST")
	}
}

func (s *Server) handleInstance(w http.ResponseWriter, r *http.Request, typ, id string) {
	switch r.Method {
	case http.MethodGet:
		e, err := s.store.get(typ, id)
		if err != nil {
			writeOutcome(w, http.StatusNotFound, notFound())
			return
		}
		if typ != "Binary" {
			writeEntry(w, http.StatusOK, e, e.raw)
		} else if strings.Contains(r.Header.Get("Accept"), "application/fhir+json") {
			writeEntry(w, http.StatusOK, e, binaryJSON(e))
		} else {
			w.Header().Set("Content-Type", str(e.resource()["contentType"]))
			_, _ = w.Write(e.data)
		}
	case http.MethodPut:
		s.write(w, r, typ, id)
	case http.MethodDelete:
		if !s.store.remove(typ, id) {
			writeOutcome(w, http.StatusNotFound, notFound())
			return
		}
		writeOutcome(w, http.StatusOK, allOK())
	default:
		methodNotAllowed(w, "GET, PUT, DELETE")
	}
}

// write creates (id == "") or updates a resource from the request body.
func (s *Server) write(w http.ResponseWriter, r *http.Request, typ, id string) {
	res, data, status, err := readResource(w, r, typ)
	if err != nil {
		writeOutcome(w, status, badRequest(err.Error()))
		return
	}
	if got := str(res["id"]); id != "" && got != "" && got != id {
		writeOutcome(w, http.StatusBadRequest, badRequest("Incorrect ID"))
		return
	}
	res["id"] = id // a create always gets a server-assigned id
	e, created, err := s.store.put(res, data)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, badRequest(err.Error()))
		return
	}
	status = http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("Location", s.baseURL+"fhir/R4/"+typ+"/"+str(e.resource()["id"]))
	writeEntry(w, status, e, e.raw)
}

// readResource reads a resource of type typ from the body. A Binary sent
// with any content type other than FHIR JSON is its own content.
func readResource(w http.ResponseWriter, r *http.Request, typ string) (res map[string]any, data []byte, status int, err error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	limit := int64(maxResourceSize)
	if typ == "Binary" {
		limit = maxBinarySize
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", limit)
		}
		return nil, nil, http.StatusBadRequest, err
	}
	if typ == "Binary" && ct != "application/fhir+json" {
		contentType := r.Header.Get("Content-Type")
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		return map[string]any{"resourceType": "Binary", "contentType": contentType}, body, 0, nil
	}
	res, err = decodeResource(body)
	if err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	if rt := str(res["resourceType"]); rt != typ {
		return nil, nil, http.StatusBadRequest, fmt.Errorf("Incorrect resource type: expected %s, got %q", typ, rt)
	}
	if err := checkShape(typ, body); err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	if data, err = binaryData(res); err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	return res, data, 0, nil
}

// readBody reads a request body of at most limit bytes, into one buffer of
// the declared length when there is one: io.ReadAll grows its buffer step
// by step, which for a DICOM instance costs more than the upload itself.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n > 0 && n <= limit {
		b := make([]byte, n)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(body)
}

// binaryData moves a Binary's base64 data out of the resource: the store
// keeps content beside the resource so that reads of the resource stay small.
func binaryData(res map[string]any) ([]byte, error) {
	if res["resourceType"] != "Binary" {
		return nil, nil
	}
	data, err := base64.StdEncoding.DecodeString(str(res["data"]))
	if err != nil {
		return nil, fmt.Errorf("Invalid Binary.data: %w", err)
	}
	delete(res, "data")
	return data, nil
}

// checkShape rejects resources the server itself reads when their fields
// have the wrong JSON types.
func checkShape(typ string, body []byte) error {
	var v any
	switch typ {
	case "Agent":
		v = &fhir.Agent{}
	case "Endpoint":
		v = &fhir.Endpoint{}
	case "Device":
		v = &fhir.Device{}
	default:
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("Invalid %s: %w", typ, err)
	}
	return nil
}

// PutResource creates or replaces a resource given as JSON; it must have a
// supported resourceType and an id. Changes are seen by the next request,
// as they would be after a FHIR update (agents still need $reload-config).
func (s *Server) PutResource(resource json.RawMessage) error {
	res, err := decodeResource(resource)
	if err != nil {
		return err
	}
	typ := str(res["resourceType"])
	if str(res["id"]) == "" {
		return fmt.Errorf("devserver: %s resource without id", typ)
	}
	if err := checkShape(typ, resource); err != nil {
		return err
	}
	data, err := binaryData(res)
	if err != nil {
		return err
	}
	_, _, err = s.store.put(res, data)
	return err
}

// Resources returns every stored resource of a type, oldest first.
func (s *Server) Resources(resourceType string) []json.RawMessage {
	var out []json.RawMessage
	for _, e := range s.store.all(resourceType) {
		out = append(out, e.raw)
	}
	return out
}

func (s *Server) bundle(typ string, entries []*entry, total *int) fhir.Bundle {
	b := fhir.Bundle{ResourceType: "Bundle", Type: typ, Total: total, Entry: []fhir.BundleEntry{}}
	for _, e := range entries {
		b.Entry = append(b.Entry, fhir.BundleEntry{
			FullURL:  s.baseURL + "fhir/R4/" + str(e.resource()["resourceType"]) + "/" + str(e.resource()["id"]),
			Resource: e.raw,
		})
	}
	return b
}

// writeEntry answers with body, the JSON of e.
func writeEntry(w http.ResponseWriter, status int, e *entry, body []byte) {
	if meta, _ := e.resource()["meta"].(map[string]any); meta != nil {
		w.Header().Set("ETag", `W/"`+str(meta["versionId"])+`"`)
	}
	w.Header().Set("Content-Type", fhirJSON)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// binaryJSON is a Binary resource with its content inlined as data.
func binaryJSON(e *entry) []byte {
	res := e.resource()
	m := make(map[string]any, len(res)+1)
	for k, v := range res {
		m[k] = v
	}
	m["data"] = base64.StdEncoding.EncodeToString(e.data)
	b, _ := json.Marshal(m)
	return b
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeOutcome(w, http.StatusMethodNotAllowed, badRequest("Method not allowed"))
}
