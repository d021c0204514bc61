package logging

import (
	"context"
	"log/slog"
	"testing"
)

// BenchmarkLogLine measures one channel-log line through the whole path:
// level filter, JSON encoding, buffering and file writes.
func BenchmarkLogLine(b *testing.B) {
	l, err := New(Options{Dir: b.TempDir(), Name: "channels", Level: "INFO"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	log := l.Slog().With("channel", "adt-in")
	body := "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261125100000||ORU^R01|MSG00001|P|2.5.1\rPID|1||12345^^^HOSP^MR||DOE^JOHN"
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			log.LogAttrs(ctx, slog.LevelInfo, "Received", slog.String("remote", "10.0.0.7:50312"), slog.String("body", body))
		}
	})
}
