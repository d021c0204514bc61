package protocol

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeCanonicalises(t *testing.T) {
	tests := []struct {
		in   string
		want Message
		err  bool
	}{
		{in: `{"type":"connected"}`, want: Message{Type: TypeConnectResponse}},
		{in: `{"type":"transmit","channel":"c","remote":"1.2.3.4:5","body":"x","statusCode":200}`,
			want: Message{Type: TypeTransmitResponse, Channel: "c", Remote: "1.2.3.4:5", Body: "x", StatusCode: 200}},
		{in: `{"type":"push","remote":"mllp://h:1","callback":"cb","extra":1}`,
			want: Message{Type: TypeTransmitRequest, Remote: "mllp://h:1", Callback: "cb"}},
		{in: `{"type":"agent:logs:request","limit":"invalid_limit"}`,
			want: Message{Type: TypeLogsRequest, Limit: []byte(`"invalid_limit"`)}},
		{in: `{"body":"x"}`, err: true},
		{in: `not json`, err: true},
	}
	for _, tt := range tests {
		got, err := Decode([]byte(tt.in))
		if (err != nil) != tt.err {
			t.Fatalf("Decode(%s) err = %v, want error %v", tt.in, err, tt.err)
		}
		if tt.err {
			continue
		}
		if d := cmp.Diff(tt.want, *got); d != "" {
			t.Errorf("Decode(%s) mismatch (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestEncodeOmitsAbsentFields(t *testing.T) {
	b, err := Encode(&Message{Type: TypeHeartbeatResponse, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"agent:heartbeat:response","version":"1.2.3"}`; got != want {
		t.Errorf("Encode = %s, want %s", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"agent:transmit:response","body":"MSH|^~\\&"}`))
	f.Add([]byte(`{"type":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err == nil {
			if _, err := Encode(m); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}

func TestValidateMatchesEncode(t *testing.T) {
	tests := []*Message{
		{Type: TypeLogsResponse, Logs: []byte(`[{"msg":"x"}]`)},
		{Type: TypeLogsResponse, Logs: []byte(`[{"msg":`)},
		{Type: TypeStatsResponse, Stats: []byte(`{}`)},
		{Type: TypeStatsResponse, Stats: []byte(`nope`)},
		{Type: TypeLogsRequest, Limit: []byte(`"invalid_limit"`)},
		{Type: TypeTransmitRequest, Body: "MSH|\xff\xfe"},
	}
	for _, m := range tests {
		_, encErr := Encode(m)
		if valErr := Validate(m); (encErr == nil) != (valErr == nil) {
			t.Errorf("%+v: Validate %v, Encode %v", m, valErr, encErr)
		}
	}
}
