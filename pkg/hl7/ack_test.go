package hl7

import (
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAckCode(t *testing.T) {
	type props struct {
		Valid, Commit, Positive bool
		Text                    string
	}
	tests := []struct {
		code AckCode
		want props
	}{
		{AA, props{true, false, true, "OK"}},
		{AE, props{true, false, false, "Application Error"}},
		{AR, props{true, false, false, "Application Reject"}},
		{CA, props{true, true, true, "Commit Accept"}},
		{CE, props{true, true, false, "Commit Error"}},
		{CR, props{true, true, false, "Commit Reject"}},
		{"", props{}},
		{"aa", props{}},
		{"XX", props{}},
	}
	for _, tt := range tests {
		got := props{tt.code.Valid(), tt.code.Commit(), tt.code.Positive(), tt.code.DefaultText()}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.code, diff)
		}
	}
}

func TestAckCodeOf(t *testing.T) {
	tests := []struct {
		in   string
		want AckCode
	}{
		{"MSH|^~\\&\rMSA|AE|1|x", AE},
		{"MSH|^~\\&\rMSA| CA |1", CA},
		{"MSH|^~\\&\rMSA", ""},
		{"MSH|^~\\&\rPID|1", ""},
	}
	for _, tt := range tests {
		m, err := Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := AckCodeOf(m); got != tt.want {
			t.Errorf("AckCodeOf(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBuildAckDefaults(t *testing.T) {
	orig, err := Parse("MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|C1|P|2.5")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	ack := BuildAck(orig, AA, AckOptions{})
	ts, err := time.Parse("20060102150405.000", ack.Get("MSH-7"))
	if err != nil {
		t.Fatalf("MSH-7 %q: %v", ack.Get("MSH-7"), err)
	}
	if ts.Before(before.Truncate(time.Millisecond)) || ts.After(time.Now()) {
		t.Errorf("MSH-7 %v is not the current time", ts)
	}
	if id := ack.ControlID(); len(id) != 16 {
		t.Errorf("generated control id %q, want 16 digits", id)
	}
	if got := ack.Segment("MSH").NumFields(); got != 12 {
		t.Errorf("ACK MSH has %d fields, want 12", got)
	}
	// A message whose MSH lacks MSH-12 gets 2.5.1; a zero Message still yields a well-formed ACK.
	for _, m := range []*Message{mustParse(t, "MSH|^~\\&|S"), {}} {
		ack := BuildAck(m, AR, AckOptions{ControlID: "X"})
		if got := ack.Get("MSH-12"); got != "2.5.1" {
			t.Errorf("MSH-12 = %q", got)
		}
		if _, err := Parse(ack.String()); err != nil {
			t.Errorf("ACK %q does not parse: %v", ack.String(), err)
		}
	}
}

func mustParse(t *testing.T, s string) *Message {
	t.Helper()
	m, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestControlIDUnique(t *testing.T) {
	const goroutines, each = 4, 500
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // all in one millisecond
	var mu sync.Mutex
	seen := make(map[string]bool)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]string, 0, each)
			for range each {
				ids = append(ids, controlID(now))
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				seen[id] = true
			}
		}()
	}
	wg.Wait()
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct ids out of %d", len(seen), goroutines*each)
	}
	a, b := NewControlID(), NewControlID()
	na, _ := strconv.ParseUint(a, 10, 64)
	nb, _ := strconv.ParseUint(b, 10, 64)
	if nb <= na {
		t.Errorf("ids not increasing: %s then %s", a, b)
	}
}

func TestFormatTime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 3, 15, 9, 15, 0, 36_000_000, time.UTC), "20240315091500.036"},
		{time.Date(2024, 3, 15, 9, 15, 0, 7_000_000, time.UTC), "20240315091500.007"},
		{time.Date(2024, 3, 15, 9, 15, 0, 0, time.UTC), "20240315091500.000"},
		{time.Date(2024, 3, 15, 9, 15, 0, 999_999_999, time.UTC), "20240315091500.999"},
		{time.Date(2024, 3, 15, 10, 15, 0, 120_000_000, time.FixedZone("CET", 3600)), "20240315091500.120"},
		{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), "00010101000000.000"},
		{time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC), "123450101000000.000"},
	}
	for _, tt := range tests {
		if got := FormatTime(tt.in); got != tt.want {
			t.Errorf("FormatTime(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExampleADT(t *testing.T) {
	m := ExampleADT(fixedNow, "1710494100007")
	golden(t, filepath.Join("testdata", "example_adt.golden"), []byte(m.String()))
	want := map[string]string{
		"MSH-3": "ADTSYS", "MSH-4": "HOSPITAL", "MSH-5": "RECEIVER", "MSH-6": "DEST",
		"MSH-7": "20240315091500.007", "MSH-9": "ADT^A01", "MSH-10": "1710494100007", "MSH-11": "P", "MSH-12": "2.5",
		"EVN-1": "A01", "EVN-2": "20240315091500.007",
		"PID-1": "1", "PID-2": "12345", "PID-3": "12345^^^HOSP^MR", "PID-4": "123456",
		"PID-5": "DOE^JOHN^MIDDLE^SUFFIX", "PID-6": "19800101", "PID-7": "M",
		"PID-10": "123 STREET^APT 4B^CITY^ST^12345-6789", "PID-12": "555-555-5555", "PID-14": "S",
		"PV1-1": "1", "PV1-2": "I", "PV1-3": "2000^2012^01", "PV1-7": "12345^DOCTOR^DOC",
		"PV1-17": "1234567^DOCTOR^DOC", "PV1-19": "AMB", "PV1-44": "202309280900",
	}
	for path, v := range want {
		if got := m.Get(path); got != v {
			t.Errorf("%s = %q, want %q", path, got, v)
		}
	}
	counts := map[string]int{}
	for _, s := range m.Segments() {
		counts[s.Name()] = s.NumFields()
		if last := s.Field(s.NumFields()); last != "" {
			t.Errorf("%s does not end with an empty field", s.Name())
		}
	}
	if diff := cmp.Diff(map[string]int{"MSH": 13, "EVN": 4, "PID": 15, "PV1": 45}, counts); diff != "" {
		t.Errorf("field counts (-want +got):\n%s", diff)
	}
	if n := len(m.String()); n != 354 {
		t.Errorf("length %d, want 354", n)
	}
}
