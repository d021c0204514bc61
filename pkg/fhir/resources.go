// Package fhir holds the few FHIR R4 resource shapes the agent and the dev
// server exchange, and a small REST client for a Medplum FHIR base. Only the
// fields the agent reads are typed; everything else is carried through as-is
// by whoever stores the resource.
package fhir

import "encoding/json"

// Reference is a FHIR Reference.
type Reference struct {
	Reference string `json:"reference,omitempty"`
	Display   string `json:"display,omitempty"`
}

// Identifier is a FHIR Identifier.
type Identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

// Meta is the resource metadata the agent looks at.
type Meta struct {
	VersionID   string `json:"versionId,omitempty"`
	LastUpdated string `json:"lastUpdated,omitempty"`
}

// Agent is Medplum's Agent resource.
type Agent struct {
	ResourceType string         `json:"resourceType"`
	ID           string         `json:"id,omitempty"`
	Meta         *Meta          `json:"meta,omitempty"`
	Identifier   []Identifier   `json:"identifier,omitempty"`
	Name         string         `json:"name,omitempty"`
	Status       string         `json:"status,omitempty"`
	Channel      []AgentChannel `json:"channel,omitempty"`
	Setting      []AgentSetting `json:"setting,omitempty"`
}

// AgentChannel binds a channel name to an Endpoint (where the agent listens)
// and a Bot (what the server runs for each message).
type AgentChannel struct {
	Name            string    `json:"name"`
	Endpoint        Reference `json:"endpoint"`
	TargetReference Reference `json:"targetReference"`
}

// AgentSetting is a name plus exactly one typed value.
type AgentSetting struct {
	Name         string   `json:"name"`
	ValueBoolean *bool    `json:"valueBoolean,omitempty"`
	ValueInteger *int64   `json:"valueInteger,omitempty"`
	ValueDecimal *float64 `json:"valueDecimal,omitempty"`
	ValueString  *string  `json:"valueString,omitempty"`
}

// Endpoint is the FHIR Endpoint; address is the channel URL.
type Endpoint struct {
	ResourceType   string          `json:"resourceType"`
	ID             string          `json:"id,omitempty"`
	Meta           *Meta           `json:"meta,omitempty"`
	Name           string          `json:"name,omitempty"`
	Status         string          `json:"status,omitempty"`
	Address        string          `json:"address"`
	ConnectionType json.RawMessage `json:"connectionType,omitempty"`
	PayloadType    json.RawMessage `json:"payloadType,omitempty"`
}

// Device is a FHIR Device; url is the push destination (mllp://host:port?...).
type Device struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id,omitempty"`
	URL          string `json:"url,omitempty"`
}

// OperationOutcome reports the result of a FHIR interaction.
type OperationOutcome struct {
	ResourceType string                  `json:"resourceType"`
	ID           string                  `json:"id,omitempty"`
	Issue        []OperationOutcomeIssue `json:"issue"`
}

// OperationOutcomeIssue is one issue of an OperationOutcome.
type OperationOutcomeIssue struct {
	Severity string        `json:"severity"`
	Code     string        `json:"code"`
	Details  *CodeableText `json:"details,omitempty"`
}

// CodeableText is the text-only form of a CodeableConcept.
type CodeableText struct {
	Text string `json:"text,omitempty"`
}

// Outcome builds a one-issue OperationOutcome.
func Outcome(severity, code, text string) *OperationOutcome {
	oo := &OperationOutcome{ResourceType: "OperationOutcome", Issue: []OperationOutcomeIssue{{Severity: severity, Code: code}}}
	if text != "" {
		oo.Issue[0].Details = &CodeableText{Text: text}
	}
	return oo
}

// Text returns the first issue's details text, or its code.
func (o *OperationOutcome) Text() string {
	if o == nil || len(o.Issue) == 0 {
		return ""
	}
	if d := o.Issue[0].Details; d != nil && d.Text != "" {
		return d.Text
	}
	return o.Issue[0].Code
}

// Parameters is a FHIR Parameters resource.
type Parameters struct {
	ResourceType string      `json:"resourceType"`
	Parameter    []Parameter `json:"parameter,omitempty"`
}

// Parameter is one named value of a Parameters resource.
type Parameter struct {
	Name         string          `json:"name"`
	ValueString  *string         `json:"valueString,omitempty"`
	ValueBoolean *bool           `json:"valueBoolean,omitempty"`
	ValueInteger *int64          `json:"valueInteger,omitempty"`
	ValueCode    *string         `json:"valueCode,omitempty"`
	ValueInstant *string         `json:"valueInstant,omitempty"`
	Resource     json.RawMessage `json:"resource,omitempty"`
	Part         []Parameter     `json:"part,omitempty"`
}

// Bundle is a FHIR Bundle (search results, collections).
type Bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Total        *int          `json:"total,omitempty"`
	Entry        []BundleEntry `json:"entry,omitempty"`
}

// BundleEntry holds one resource of a Bundle.
type BundleEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
}
