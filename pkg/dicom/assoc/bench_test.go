package assoc

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/internal/dicomtest"
)

// Throughput anchors of dicom.md 5.4: 200 instances of 525 KB over one
// association, dcmtk with TCP_NODELAY=1. Goals: our SCP (syncing every
// file) within 1.5x of storescp's wall time; our sender at least as fast as
// storescu. Compare the ns/op of
//
//	BenchmarkStorescuIntoOurSCP   vs BenchmarkStorescuIntoStorescp
//	BenchmarkOurSendIntoStorescp  vs BenchmarkStorescuIntoStorescp
//
// and BenchmarkEchoscuIntoOurSCP / BenchmarkEchoLoopback for 1000 echoes.

const benchFiles = 200

func benchInstances(b *testing.B) ([]string, int64) {
	b.Helper()
	dicomtest.RequireTools(b, "storescu", "storescp", "dump2dcm")
	files := dicomtest.MakeInstances(b, b.TempDir(), benchFiles, 512)
	var total int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			b.Fatal(err)
		}
		total += fi.Size()
	}
	return files, total
}

// emptyDir removes the files received by the previous iteration.
func emptyDir(b *testing.B, dir string) {
	b.StopTimer()
	defer b.StartTimer()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
}

func BenchmarkStorescuIntoOurSCP(b *testing.B) {
	files, total := benchInstances(b)
	s := startSCP(b, &Server{})
	b.SetBytes(total)
	for i := 0; i < b.N; i++ {
		emptyDir(b, s.recv)
		if r := dicomtest.Run(b, "storescu", append(s.args(), files...)...); r.Code != 0 {
			b.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
	}
}

func BenchmarkStorescuIntoStorescp(b *testing.B) {
	files, total := benchInstances(b)
	out := b.TempDir()
	addr, _ := dicomtest.StartSCP(b, "storescp", "-od", out)
	host, port := splitHostPort(b, addr)
	b.SetBytes(total)
	for i := 0; i < b.N; i++ {
		emptyDir(b, out)
		if r := dicomtest.Run(b, "storescu", append([]string{host, port}, files...)...); r.Code != 0 {
			b.Fatalf("storescu rc %d: %s", r.Code, r.Output)
		}
	}
}

func BenchmarkOurSendIntoStorescp(b *testing.B) {
	files, total := benchInstances(b)
	out := b.TempDir()
	addr, _ := dicomtest.StartSCP(b, "storescp", "-od", out)
	ctx := context.Background()
	b.SetBytes(total)
	for i := 0; i < b.N; i++ {
		emptyDir(b, out)
		a, err := Dial(ctx, addr, Options{CalledAE: "STORESCP", Contexts: []Context{
			{dicom.SecondaryCaptureImageStorage, []string{dicom.ExplicitVRLittleEndian}},
		}})
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			if st, err := storeFile(ctx, a, f); err != nil || st != dimse.StatusSuccess {
				b.Fatalf("Store = %v, %v", st, err)
			}
		}
		if err := a.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEchoscuIntoOurSCP(b *testing.B) {
	dicomtest.RequireTools(b, "echoscu")
	s := startSCP(b, &Server{})
	for i := 0; i < b.N; i++ {
		if r := dicomtest.Run(b, "echoscu", s.args("--repeat", "1000")...); r.Code != 0 {
			b.Fatalf("echoscu rc %d: %s", r.Code, r.Output)
		}
	}
}

func splitHostPort(b *testing.B, addr string) (string, string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatal(err)
	}
	return host, port
}
