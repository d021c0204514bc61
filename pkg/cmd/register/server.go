package register

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/service"
)

// Identifier systems register puts on what it creates, so that the next run
// finds the same resources instead of creating twins.
const (
	AgentNameSystem = "https://medplum-agent.dev/agent-name"
	ChannelSystem   = "https://medplum-agent.dev/agent-channel" // value: <agent name>/<channel name>
)

// Resource is the outcome for the Agent.
type Resource struct {
	// Reference is empty for a resource a dry run would create.
	Reference string         `json:"reference,omitempty"`
	Name      string         `json:"name,omitempty"`
	Action    service.Action `json:"action"`
	Channels  []string       `json:"channels,omitempty"` // with --agent-id: the Agent's channel names
}

// EndpointResult is the outcome for one --channel.
type EndpointResult struct {
	Channel   string         `json:"channel"`
	Address   string         `json:"address"`
	Bot       string         `json:"bot"`
	Reference string         `json:"reference,omitempty"`
	Action    service.Action `json:"action"`
}

// server does the FHIR side of register.
type server struct {
	fc     *fhir.Client
	base   string // {baseUrl}fhir/R4/
	token  func(context.Context) (string, error)
	hc     *http.Client
	dryRun bool
	bots   map[string]bool // Bot references already checked
}

// verifyAgent reads the Agent the credentials will run as.
func (s *server) verifyAgent(ctx context.Context, id string) (Resource, error) {
	a, _, err := s.fc.ReadAgent(ctx, id)
	if err != nil {
		if isNotFound(err) {
			return Resource{}, fmt.Errorf("Agent/%s not found; check --agent-id", id)
		}
		return Resource{}, err
	}
	r := Resource{Reference: "Agent/" + a.ID, Name: a.Name, Action: service.Verified}
	for _, c := range a.Channel {
		r.Channels = append(r.Channels, c.Name)
	}
	return r, nil
}

// ensureAgent makes the Agent called name exist with an Endpoint per
// channel, each channel pointing at its Endpoint and Bot. Channels already
// on the Agent that are not named are left alone.
func (s *server) ensureAgent(ctx context.Context, name string, channels []Channel) (Resource, []EndpointResult, error) {
	agent, doc, err := s.findAgent(ctx, name)
	if err != nil {
		return Resource{}, nil, err
	}
	var entries []map[string]json.RawMessage // Agent.channel, other fields kept as they are
	if raw, ok := doc["channel"]; ok {
		if err := json.Unmarshal(raw, &entries); err != nil {
			return Resource{}, nil, fmt.Errorf("Agent/%s: reading channel: %w", agent.ID, err)
		}
	}
	changed := false
	results := make([]EndpointResult, 0, len(channels))
	for _, c := range channels {
		i := channelIndex(agent, c.Name)
		var cur fhir.AgentChannel
		if i >= 0 {
			cur = agent.Channel[i]
		}
		bot := c.Bot
		if bot == "" {
			bot = cur.TargetReference.Reference
		}
		if bot == "" {
			return Resource{}, nil, fmt.Errorf("channel %s is new: name its Bot with --channel %s=%s,bot=Bot/ID", c.Name, c.Name, c.Address)
		}
		if err := s.checkBot(ctx, bot); err != nil {
			return Resource{}, nil, err
		}
		ep, err := s.ensureEndpoint(ctx, name, c, cur.Endpoint.Reference)
		if err != nil {
			return Resource{}, nil, err
		}
		ep.Bot = bot
		results = append(results, ep)
		if i >= 0 && cur.Endpoint.Reference == ep.Reference && ep.Reference != "" && cur.TargetReference.Reference == bot {
			continue
		}
		changed = true
		entry := map[string]json.RawMessage{"name": mustJSON(c.Name)}
		if i >= 0 {
			entry = entries[i]
		}
		entry["endpoint"] = mustJSON(fhir.Reference{Reference: ep.Reference})
		entry["targetReference"] = mustJSON(fhir.Reference{Reference: bot})
		if i < 0 {
			entries = append(entries, entry)
			agent.Channel = append(agent.Channel, fhir.AgentChannel{Name: c.Name})
		}
	}
	identifier := fhir.Identifier{System: AgentNameSystem, Value: name}
	hasIdentifier := slices.Contains(agent.Identifier, identifier)

	res := Resource{Name: name, Action: service.Unchanged}
	switch {
	case agent.ID == "":
		res.Action = service.Created
		if s.dryRun {
			break
		}
		body := map[string]any{
			"resourceType": "Agent",
			"name":         name,
			"status":       "active",
			"identifier":   []fhir.Identifier{identifier},
		}
		if len(entries) > 0 { // FHIR JSON has no empty arrays
			body["channel"] = entries
		}
		var created fhir.Agent
		if err := s.fc.Create(ctx, "Agent", body, &created); err != nil {
			return Resource{}, nil, err
		}
		agent.ID = created.ID
	case changed || !hasIdentifier:
		res.Action = service.Updated
		if s.dryRun {
			break
		}
		if changed {
			doc["channel"] = mustJSON(entries)
		}
		if !hasIdentifier {
			doc["identifier"] = mustJSON(append(agent.Identifier, identifier))
		}
		if err := s.update(ctx, "Agent", agent.ID, doc); err != nil {
			return Resource{}, nil, err
		}
	}
	if agent.ID != "" {
		res.Reference = "Agent/" + agent.ID
	}
	return res, results, nil
}

func channelIndex(a *fhir.Agent, name string) int {
	for i, c := range a.Channel {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// findAgent looks the Agent up by the identifier register sets, then by
// exact name (an Agent made in the Medplum app has no identifier). A new,
// empty Agent is returned when there is none.
func (s *server) findAgent(ctx context.Context, name string) (*fhir.Agent, map[string]json.RawMessage, error) {
	byIdentifier := func(a *fhir.Agent) bool {
		for _, id := range a.Identifier {
			if id.System == AgentNameSystem && id.Value == name {
				return true
			}
		}
		return false
	}
	found, err := search(ctx, s.fc, "Agent", url.Values{"identifier": {AgentNameSystem + "|" + name}}, byIdentifier)
	if err == nil && len(found) == 0 {
		// The server's name search is a prefix match; only equal names count.
		found, err = search(ctx, s.fc, "Agent", url.Values{"name": {name}}, func(a *fhir.Agent) bool { return a.Name == name })
	}
	switch {
	case err != nil:
		return nil, nil, err
	case len(found) == 0:
		return &fhir.Agent{Name: name}, map[string]json.RawMessage{}, nil
	case len(found) > 1:
		refs := make([]string, len(found))
		for i, f := range found {
			refs[i] = "Agent/" + f.typed.ID
		}
		return nil, nil, fmt.Errorf("%d Agents are named %q (%s); register with --agent-id instead", len(found), name, strings.Join(refs, ", "))
	}
	return found[0].typed, found[0].doc, nil
}

// ensureEndpoint finds the channel's Endpoint (through the Agent's
// reference, else by identifier), creates it when missing and corrects its
// address when it differs.
func (s *server) ensureEndpoint(ctx context.Context, agentName string, c Channel, ref string) (EndpointResult, error) {
	res := EndpointResult{Channel: c.Name, Address: c.Address}
	var ep *fhir.Endpoint
	var doc map[string]json.RawMessage
	if id, ok := strings.CutPrefix(ref, "Endpoint/"); ok {
		var raw json.RawMessage
		switch err := s.fc.Read(ctx, "Endpoint", id, &raw); {
		case err == nil:
			ep, doc = new(fhir.Endpoint), map[string]json.RawMessage{}
			if err := decodeBoth(raw, ep, &doc); err != nil {
				return res, fmt.Errorf("%s: %w", ref, err)
			}
		case !isNotFound(err):
			return res, err
		}
	}
	value := agentName + "/" + c.Name
	if ep == nil {
		found, err := search(ctx, s.fc, "Endpoint", url.Values{"identifier": {ChannelSystem + "|" + value}}, func(*fhir.Endpoint) bool { return true })
		if err != nil {
			return res, err
		}
		if len(found) > 0 {
			ep, doc = found[0].typed, found[0].doc
		}
	}
	if ep == nil {
		res.Action = service.Created
		if s.dryRun {
			return res, nil
		}
		body := map[string]any{
			"resourceType":   "Endpoint",
			"status":         "active",
			"name":           value,
			"identifier":     []fhir.Identifier{{System: ChannelSystem, Value: value}},
			"connectionType": connectionType(c.Address),
			"payloadType":    []any{map[string]any{"coding": []any{map[string]string{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "any"}}}},
			"address":        c.Address,
		}
		var created fhir.Endpoint
		if err := s.fc.Create(ctx, "Endpoint", body, &created); err != nil {
			return res, err
		}
		res.Reference = "Endpoint/" + created.ID
		return res, nil
	}
	res.Reference = "Endpoint/" + ep.ID
	res.Action = service.Unchanged
	if ep.Address == c.Address {
		return res, nil
	}
	res.Action = service.Updated
	if s.dryRun {
		return res, nil
	}
	doc["address"] = mustJSON(c.Address)
	return res, s.update(ctx, "Endpoint", ep.ID, doc)
}

// connectionType codes the endpoint protocol: HL7's code for MLLP, our own
// system for the schemes HL7 has no code for.
func connectionType(address string) map[string]string {
	scheme, _, _ := strings.Cut(address, "://")
	if scheme == "mllp" {
		return map[string]string{"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7v2-mllp"}
	}
	return map[string]string{"system": "https://medplum-agent.dev/endpoint-connection-type", "code": scheme}
}

// checkBot makes sure a channel's Bot exists before anything points at it.
func (s *server) checkBot(ctx context.Context, ref string) error {
	if s.bots[ref] {
		return nil
	}
	var raw json.RawMessage
	if err := s.fc.Read(ctx, "Bot", strings.TrimPrefix(ref, "Bot/"), &raw); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s not found; create the Bot first or name another one", ref)
		}
		return err
	}
	s.bots[ref] = true
	return nil
}

// match is a search result, typed and as a field map for a lossless update.
type match[T any] struct {
	typed *T
	doc   map[string]json.RawMessage
}

// search returns the entries of type typ that keep accepts.
func search[T any](ctx context.Context, fc *fhir.Client, typ string, q url.Values, keep func(*T) bool) ([]match[T], error) {
	b, err := fc.Search(ctx, typ, q)
	if err != nil {
		return nil, err
	}
	var out []match[T]
	for _, e := range b.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		if json.Unmarshal(e.Resource, &head) != nil || head.ResourceType != typ {
			continue // e.g. an OperationOutcome entry
		}
		m := match[T]{typed: new(T)}
		if err := decodeBoth(e.Resource, m.typed, &m.doc); err != nil {
			return nil, fmt.Errorf("%s search: %w", typ, err)
		}
		if keep(m.typed) {
			out = append(out, m)
		}
	}
	return out, nil
}

func decodeBoth(raw json.RawMessage, typed any, doc *map[string]json.RawMessage) error {
	if err := json.Unmarshal(raw, typed); err != nil {
		return err
	}
	return json.Unmarshal(raw, doc)
}

// mustJSON encodes values built here from strings, maps and slices, for
// which encoding cannot fail.
func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func isNotFound(err error) bool {
	var fe *fhir.Error
	return errors.As(err, &fe) && (fe.Status == http.StatusNotFound || fe.Status == http.StatusGone)
}

// maxUpdateResponse bounds the body read after an update; only an error
// text is taken from it.
const maxUpdateResponse = 1 << 20

// update replaces typ/id with doc (FHIR update, PUT), authenticated like
// the fhir.Client calls.
func (s *server) update(ctx context.Context, typ, id string, doc map[string]json.RawMessage) error {
	path := typ + "/" + url.PathEscape(id)
	body, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	token, err := s.token(ctx)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpdateResponse))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var oo fhir.OperationOutcome
		_ = json.Unmarshal(data, &oo) // a non-FHIR error body leaves the text empty
		return &fhir.Error{Method: http.MethodPut, Path: path, Status: resp.StatusCode, Text: oo.Text()}
	}
	return nil
}
