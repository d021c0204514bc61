package protocol

import (
	"net"
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

func TestRemoteAddr(t *testing.T) {
	dual := &net.TCPAddr{IP: net.IPv6unspecified, Port: 2575}
	v4 := &net.TCPAddr{IP: net.IPv4zero.To4(), Port: 2575}
	tests := []struct {
		peer, listener net.Addr
		want           string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 51234}, nil, "10.0.0.5:51234"},
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 51234}, v4, "10.0.0.5:51234"},
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 51234}, dual, "::ffff:10.0.0.5:51234"},
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.5").To4(), Port: 1}, dual, "::ffff:10.0.0.5:1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 2575}, dual, "2001:db8::1:2575"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 2575, Zone: "eth0"}, nil, "fe80::1%eth0:2575"},
		{nil, nil, ""},
	}
	for _, tt := range tests {
		if got := RemoteAddr(tt.peer, tt.listener); got != tt.want {
			t.Errorf("RemoteAddr(%v, %v) = %q, want %q", tt.peer, tt.listener, got, tt.want)
		}
	}
}
