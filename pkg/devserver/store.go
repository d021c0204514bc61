package devserver

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
)

// resourceTypes are the types the FHIR API serves.
var resourceTypes = map[string]bool{
	"Agent": true, "Endpoint": true, "Bot": true, "Device": true, "Binary": true,
	"AuditEvent": true, "ClientApplication": true, "AsyncJob": true,
}

// maxKept bounds the server-generated types, which grow with traffic: the
// oldest entries are dropped beyond it.
const maxKept = 10000

var cappedTypes = map[string]bool{"AuditEvent": true, "AsyncJob": true}

var (
	errNotFound    = errors.New("Not found")
	errUnknownType = errors.New("unsupported resource type")
)

// entry is one stored resource version.
type entry struct {
	seq  uint64 // creation order, kept across updates
	raw  []byte // the resource JSON, id and meta included
	data []byte // Binary content

	// res is raw decoded, for search and rendering. Server-generated
	// entries (one AuditEvent per message) decode it only when asked.
	resOnce sync.Once
	res     map[string]any
}

// resource returns the decoded resource.
func (e *entry) resource() map[string]any {
	e.resOnce.Do(func() {
		if e.res == nil {
			e.res, _ = decodeResource(e.raw)
		}
	})
	return e.res
}

// store is an in-memory FHIR repository. Entries are immutable once stored,
// so readers may keep them after releasing the lock.
type store struct {
	mu    sync.RWMutex
	types map[string]map[string]*entry
	seq   uint64
	fifo  map[string][]string // ids in creation order, for capped types
	keep  int                 // how many of each capped type to keep
}

func newStore(keep int) *store {
	return &store{types: map[string]map[string]*entry{}, fifo: map[string][]string{}, keep: keep}
}

// decodeResource parses a JSON object keeping numbers exact.
func decodeResource(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("expected a JSON object")
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: data after the resource")
	}
	return m, nil
}

func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// put stores res under its type and id (a new UUID when id is empty),
// stamping meta.versionId and meta.lastUpdated. created reports whether the
// id was new.
func (s *store) put(res map[string]any, data []byte) (e *entry, created bool, err error) {
	typ, _ := res["resourceType"].(string)
	if !resourceTypes[typ] {
		return nil, false, fmt.Errorf("%w: %q", errUnknownType, typ)
	}
	id, _ := res["id"].(string)
	if id == "" {
		id = uuid.NewString()
	} else if !fhirID.MatchString(id) {
		return nil, false, fmt.Errorf("invalid id %q", id)
	}
	res["id"] = id
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = uuid.NewString()
	meta["lastUpdated"] = now()
	res["meta"] = meta
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, false, err
	}
	return s.insert(typ, id, &entry{raw: raw, res: res, data: data})
}

// putNew stores a server-generated resource of type typ whose JSON is built
// by render from a fresh id and meta. It skips the decode/encode round trip
// of put, which matters for the AuditEvent written for every message.
func (s *store) putNew(typ string, render func(id string, meta fhir.Meta) ([]byte, error)) (*entry, error) {
	id := uuid.NewString()
	raw, err := render(id, fhir.Meta{VersionID: uuid.NewString(), LastUpdated: now()})
	if err != nil {
		return nil, err
	}
	e, _, err := s.insert(typ, id, &entry{raw: raw})
	return e, err
}

// insert makes e the current version of typ/id.
func (s *store) insert(typ, id string, e *entry) (*entry, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byID := s.types[typ]
	if byID == nil {
		byID = map[string]*entry{}
		s.types[typ] = byID
	}
	old := byID[id]
	if old != nil {
		e.seq = old.seq
	} else {
		s.seq++
		e.seq = s.seq
		if cappedTypes[typ] {
			s.trim(typ, byID, id)
		}
	}
	byID[id] = e
	return e, old == nil, nil
}

// trim records a new id of a capped type and drops the oldest beyond keep.
func (s *store) trim(typ string, byID map[string]*entry, id string) {
	q := append(s.fifo[typ], id)
	for len(byID) >= s.keep && len(q) > 0 {
		delete(byID, q[0])
		q = q[1:]
	}
	// Deleted ids linger in the queue; compact it before it outgrows the cap.
	if len(q) > 2*s.keep {
		q = slices.DeleteFunc(q, func(id string) bool { return byID[id] == nil })
	}
	s.fifo[typ] = q
}

func (s *store) get(typ, id string) (*entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.types[typ][id]
	if e == nil {
		return nil, errNotFound
	}
	return e, nil
}

// getAs reads a resource into v.
func (s *store) getAs(typ, id string, v any) error {
	e, err := s.get(typ, id)
	if err != nil {
		return err
	}
	return json.Unmarshal(e.raw, v)
}

func (s *store) remove(typ, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.types[typ][id] == nil {
		return false
	}
	delete(s.types[typ], id)
	return true
}

// all returns the entries of one type in creation order.
func (s *store) all(typ string) []*entry {
	s.mu.RLock()
	out := make([]*entry, 0, len(s.types[typ]))
	for _, e := range s.types[typ] {
		out = append(out, e)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// query is a parsed search: every filter must match.
type query struct {
	filters []func(map[string]any) bool
	count   int
	offset  int
}

const (
	defaultCount = 20
	maxCount     = 1000
)

// parseQuery supports _id, _count, _offset, name (case-insensitive prefix),
// identifier ([system|]value), status, url and entity (AuditEvent reference).
func parseQuery(params map[string][]string, countLimit int) (*query, error) {
	q := &query{count: defaultCount}
	for name, values := range params {
		for _, v := range values {
			switch name {
			case "_count", "_offset":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("Invalid %s: %s", name, v)
				}
				if name == "_offset" {
					q.offset = n
				} else if n > countLimit {
					return nil, fmt.Errorf("_count must be at most %d", countLimit)
				} else {
					q.count = n
				}
			case "_id":
				ids := strings.Split(v, ",")
				q.filters = append(q.filters, func(r map[string]any) bool { return slices.Contains(ids, str(r["id"])) })
			case "name":
				prefix := strings.ToLower(v)
				q.filters = append(q.filters, func(r map[string]any) bool {
					return strings.HasPrefix(strings.ToLower(str(r["name"])), prefix)
				})
			case "status", "url":
				q.filters = append(q.filters, func(r map[string]any) bool { return str(r[name]) == v })
			case "identifier":
				q.filters = append(q.filters, identifierFilter(v))
			case "entity":
				q.filters = append(q.filters, func(r map[string]any) bool {
					for _, e := range list(r["entity"]) {
						if what, _ := e.(map[string]any)["what"].(map[string]any); str(what["reference"]) == v {
							return true
						}
					}
					return false
				})
			default:
				return nil, fmt.Errorf("Unknown search parameter: %s", name)
			}
		}
	}
	return q, nil
}

func identifierFilter(v string) func(map[string]any) bool {
	system, value, hasSystem := strings.Cut(v, "|")
	if !hasSystem {
		value = v
	}
	return func(r map[string]any) bool {
		for _, id := range list(r["identifier"]) {
			m, _ := id.(map[string]any)
			if str(m["value"]) == value && (!hasSystem || str(m["system"]) == system) {
				return true
			}
		}
		return false
	}
}

// search returns the page of matches and the total number of matches.
func (s *store) search(typ string, q *query) ([]*entry, int) {
	var matches []*entry
	for _, e := range s.all(typ) {
		if q.matches(e.resource()) {
			matches = append(matches, e)
		}
	}
	total := len(matches)
	if q.offset >= total {
		return nil, total
	}
	matches = matches[q.offset:]
	if len(matches) > q.count {
		matches = matches[:q.count]
	}
	return matches, total
}

func (q *query) matches(r map[string]any) bool {
	for _, f := range q.filters {
		if !f(r) {
			return false
		}
	}
	return true
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// decoded caches the typed form of stored resources read on every message
// (the Agent and its Bots). Entries are immutable, so a cached value stays
// valid while the store still holds the same entry. Values are shared:
// callers must not modify them.
type decoded[T any] struct {
	mu sync.Mutex
	m  map[string]cachedValue[T]
}

type cachedValue[T any] struct {
	e *entry
	v T
}

func (d *decoded[T]) get(st *store, typ, id string) (T, error) {
	var zero T
	e, err := st.get(typ, id)
	if err != nil {
		return zero, err
	}
	d.mu.Lock()
	c, ok := d.m[id]
	d.mu.Unlock()
	if ok && c.e == e {
		return c.v, nil
	}
	var v T
	if err := json.Unmarshal(e.raw, &v); err != nil {
		return zero, err
	}
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]cachedValue[T]{}
	}
	d.m[id] = cachedValue[T]{e: e, v: v}
	d.mu.Unlock()
	return v, nil
}
