package spool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const helperEnv = "SPOOL_CRASH_HELPER_DB"

// TestHelperProcess is the child of TestCrashKeepsAcknowledgedIntakes: it
// intakes messages from 8 goroutines and prints each id once Intake has
// returned, that is once the device could have been acknowledged.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestCrashKeepsAcknowledgedIntakes")
	}
	s, err := Open(Options{Path: path, AgentID: testAgent})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				in := hl7Intake(fmt.Sprintf("ch-%d", g%2), fmt.Sprintf("%d-%d-%d", os.Getpid(), g, i), RetryGuaranteed)
				res, err := s.Intake(context.Background(), in)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintln(out, res.ID)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestCrashKeepsAcknowledgedIntakes SIGKILLs a process that is intaking at a
// random moment, several times on the same file, and checks that every id
// it reported is in the database afterwards.
func TestCrashKeepsAcknowledgedIntakes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), DefaultFileName)
	var acked []int64
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a random number of acknowledged intakes, so the kill
		// lands at an arbitrary point of the commit cycle.
		killAfter := 50 + rand.IntN(400)
		sc := bufio.NewScanner(stdout)
		var ids []int64
		for sc.Scan() {
			id, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("round %d: child printed %q", round, sc.Text())
			}
			ids = append(ids, id)
			if len(ids) == killAfter {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = cmd.Wait()
		if len(ids) < killAfter {
			t.Fatalf("round %d: child exited after %d intakes: %v", round, len(ids), err)
		}
		acked = append(acked, ids...)
	}

	s := openAt(t, path, &clock{t: time.Now()})
	for _, id := range acked {
		if r, err := s.Get(context.Background(), id); err != nil || r.State != StateQueued {
			t.Fatalf("acknowledged intake %d lost after kill: %v", id, err)
		}
	}
	t.Logf("%d acknowledged intakes survived 4 kills", len(acked))
}
