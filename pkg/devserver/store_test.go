package devserver

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStoreKeepsNewestGenerated(t *testing.T) {
	s := newStore(3)
	put := func(typ, id string) {
		t.Helper()
		if _, _, err := s.put(map[string]any{"resourceType": typ, "id": id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		put("AuditEvent", fmt.Sprint("a", i))
		put("Device", fmt.Sprint("d", i))
	}
	s.remove("AuditEvent", "a3")
	put("AuditEvent", "a5")
	put("AuditEvent", "a2") // an update keeps its place

	ids := func(typ string) []string {
		var out []string
		for _, e := range s.all(typ) {
			out = append(out, str(e.res["id"]))
		}
		return out
	}
	if diff := cmp.Diff([]string{"a2", "a4", "a5"}, ids("AuditEvent")); diff != "" {
		t.Errorf("AuditEvents (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"d0", "d1", "d2", "d3", "d4"}, ids("Device")); diff != "" {
		t.Errorf("Devices (-want +got):\n%s", diff)
	}
}
