package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A full disk fails intakes without breaking the store: once space is
// freed, intakes succeed again on the same Store.
func TestFullDiskRecovers(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	s := openAt(t, filepath.Join(mnt, DefaultFileName), newClock())
	ctx := context.Background()
	n := 0
	intake := func() error {
		n++
		_, err := s.Intake(ctx, hl7Intake("hl7", fmt.Sprintf("M%05d", n), RetryGuaranteed))
		return err
	}
	if err := intake(); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	failed := 0
	for range 200 {
		if err := intake(); err != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no intake failed on a full disk")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if err := intake(); err != nil {
			out, _ := exec.Command("ls", "-la", mnt).CombinedOutput()
			t.Fatalf("intake %d after freeing space: %v\n%s", i, err, out)
		}
	}
}

func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, os.ErrClosed) {
				t.Fatal(err)
			}
			return
		}
	}
}
