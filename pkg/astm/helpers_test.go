package astm

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/astm/golden")

// testdata is the project copy of the ASTM fixtures.
const testdata = "../../testdata/astm"

func readTestdata(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func globTestdata(t testing.TB, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(testdata, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	return m
}

func mnemonic(t testing.TB, s string) []byte {
	t.Helper()
	b, err := ParseMnemonic(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	t.Cleanup(func() {
		client.Close()
		a.c.Close()
	})
	return client, a.c
}

// recordLines returns the records of a transcript file that holds one
// transmission.
func recordLines(t testing.TB, rel string) [][]byte {
	t.Helper()
	tx := ParseTranscript(readTestdata(t, rel), SplitBlank)
	if len(tx) != 1 {
		t.Fatalf("%s: %d transmissions, want 1", rel, len(tx))
	}
	return tx[0]
}

// bodyOf joins records the way a session body does.
func bodyOf(records [][]byte) string {
	var sb strings.Builder
	for _, r := range records {
		sb.Write(r)
		sb.WriteByte('\n')
	}
	return sb.String()
}
