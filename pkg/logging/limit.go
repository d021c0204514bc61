package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits of agent:logs:request.
const (
	DefaultFetchLimit = 20
	MaxFetchLimit     = 1000
)

// ParseLimit validates the raw "limit" field of an agent:logs:request.
//
// Absent or JSON null means DefaultFetchLimit. Otherwise it must be a JSON
// number with an integral value in 1..MaxFetchLimit; 10.0 and 1e2 are
// accepted because the reference cannot tell them from 10 and 100. A numeric
// string such as "10" is rejected, as the reference does (it checks
// typeof limit === 'number'). The error text matches the reference, with the
// value as given (strings without their quotes).
func ParseLimit(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultFetchLimit, nil
	}
	// json.Valid rules out Go-only forms ParseFloat accepts, like 0x1p4.
	if (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) && json.Valid(raw) {
		if f, err := strconv.ParseFloat(string(raw), 64); err == nil &&
			f >= 1 && f <= MaxFetchLimit && f == math.Trunc(f) {
			return int(f), nil
		}
	}
	return 0, invalidLimit(limitText(raw))
}

// invalidLimit builds the reference agent's error text, capital letter
// included, which servers and tests match verbatim.
func invalidLimit(text string) error {
	return fmt.Errorf("Invalid limit: %s - must be a valid positive integer less than or equal to %d", text, MaxFetchLimit)
}

// maxLimitText bounds how much of a bogus limit is echoed back, so a huge
// value cannot inflate the error reply or the log line that records it.
const maxLimitText = 100

// limitText renders the offending value the way the reference's template
// string does for the common cases: strings unquoted, anything else verbatim.
func limitText(raw json.RawMessage) string {
	s := string(raw)
	var unquoted string
	if raw[0] == '"' && json.Unmarshal(raw, &unquoted) == nil {
		s = unquoted
	}
	if len(s) > maxLimitText {
		s = strings.ToValidUTF8(s[:maxLimitText], "") + "..."
	}
	return s
}
