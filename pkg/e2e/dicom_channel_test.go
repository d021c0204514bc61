package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/spoolfile"
)

// The dicom:// channel of `run`, driven by dcmtk: the scenarios of
// dicom.md 7.1 through the agent, the Binary and transmit each stored
// instance produces on the dev server, and instances acknowledged while the
// server was away surviving a kill -9. dcmtk runs with TCP_NODELAY=1
// (dicom.md 5.4) unless a scenario says otherwise.

// dicomSite is newSite with dicom:// channels.
func dicomSite(t *testing.T, channels ...string) site {
	t.Helper()
	s := newSite(t, channels...)
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, bytes.ReplaceAll(b, []byte(`"mllp://`), []byte(`"dicom://`)), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// devToken logs in to the dev server as the site's client.
func devToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.PostForm(base+"oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {devClient}, "client_secret": {devSecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

// dicomTransmit is one recorded transmit of a stored instance, with its
// Binary fetched from the dev server.
type dicomTransmit struct {
	remote      string
	association struct{ CallingAeTitle, CalledAeTitle string }
	dataset     map[string]struct {
		VR    string `json:"vr"`
		Value []any  `json:"Value"`
	}
	binary []byte
}

func (d dicomTransmit) value(tag string) string {
	if e, ok := d.dataset[tag]; ok && len(e.Value) > 0 {
		s, _ := e.Value[0].(string)
		return s
	}
	return ""
}

// dicomTransmits waits until the record holds at least n lines and returns
// the DICOM transmits from line from on by SOP instance UID.
func dicomTransmits(t *testing.T, base, record string, from, n int) map[string]dicomTransmit {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(record)
		if bytes.Count(b, []byte("\n")) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transmits recorded, want %d", bytes.Count(b, []byte("\n")), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok := devToken(t, base)
	out := map[string]dicomTransmit{}
	for _, line := range recorded(t, record)[from:] {
		if line["contentType"] != "application/json" {
			t.Fatalf("transmit content type %q", line["contentType"])
		}
		var body struct {
			Association struct{ CallingAeTitle, CalledAeTitle string }
			Dataset     json.RawMessage
			Binary      struct{ Reference string }
		}
		if err := json.Unmarshal([]byte(line["body"]), &body); err != nil {
			t.Fatalf("transmit body %q: %v", line["body"], err)
		}
		d := dicomTransmit{remote: line["remote"], association: body.Association}
		if err := json.Unmarshal(body.Dataset, &d.dataset); err != nil {
			t.Fatalf("dataset: %v", err)
		}
		d.binary = getBinary(t, base, tok, body.Binary.Reference)
		out[d.value("00080018")] = d
	}
	return out
}

func getBinary(t *testing.T, base, tok, ref string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"fhir/R4/"+ref, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/dicom")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", ref, resp.StatusCode, err)
	}
	return b
}

// dumpDataSet is dcmdump's view of a file without its meta header.
func dumpDataSet(t *testing.T, path string) string {
	t.Helper()
	r := runPeer(t, peer(t, "dcmdump"), "-q", path)
	if r.code != 0 {
		t.Fatalf("dcmdump %s: %s", path, r.stderr)
	}
	var keep []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if !strings.HasPrefix(l, "(0002,") && !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// spoolFiles lists everything in a channel's spool folder, temporary files
// included, but the spares the agent keeps to write instances into.
func spoolFiles(t *testing.T, dataDir, channel string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "dicom-spool", channel))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && !spoolfile.IsSpare(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func waitSpoolEmpty(t *testing.T, dataDir, channel string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(spoolFiles(t, dataDir, channel)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool still holds %v", spoolFiles(t, dataDir, channel))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func instancePaths(dir string, n int) []string {
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("img%03d.dcm", i+1))
	}
	return paths
}

func TestDICOMChannelScenarios(t *testing.T) {
	t.Setenv("TCP_NODELAY", "1")
	echoscu, storescu, findscu := peer(t, "echoscu"), peer(t, "storescu"), peer(t, "findscu")
	dcmcjpeg, dcmftest := peer(t, "dcmcjpeg"), peer(t, "dcmftest")

	s := dicomSite(t, "pacs=aet=GOSCP&maxPdu=131072")
	port, listen := s.ports["pacs"], "127.0.0.1:"+freePort(t)
	base, record, dataDir := "http://"+listen+"/", filepath.Join(t.TempDir(), "record.jsonl"), t.TempDir()
	startProc(t, "", "run", "--dev", "--dev-listen", listen, "--dev-config", s.config, "--dev-record", record, "--data-dir", dataDir)
	waitPort(t, port, 20*time.Second)

	src := t.TempDir()
	files := instancePaths(src, 30)
	uids := makeDICOM(t, 64, files...)
	big := filepath.Join(t.TempDir(), "big.dcm")
	bigUID := makeDICOM(t, 256, big)[0]
	jpeg := filepath.Join(t.TempDir(), "jpegll.dcm")
	if r := runPeer(t, dcmcjpeg, files[8], jpeg); r.code != 0 {
		t.Fatalf("dcmcjpeg: %s", r.stderr)
	}
	jpegMeta, _ := part10(t, jpeg)
	peerArgs := func(extra ...string) []string {
		return append(append([]string{"-aec", "GOSCP"}, extra...), "127.0.0.1", port)
	}
	transmitted := 0 // transmits recorded so far

	echoOK := func(t *testing.T) {
		t.Helper()
		if r := runPeer(t, echoscu, peerArgs("-v", "-aet", "ECHOSCU")...); r.code != 0 || !strings.Contains(r.stdout+r.stderr, "Received Echo Response (Success)") {
			t.Errorf("S-01 echoscu rc %d: %s%s", r.code, r.stdout, r.stderr)
		}
	}
	t.Run("S-01 echo", echoOK)
	for _, tc := range []struct {
		id   string
		args []string
	}{
		{"S-02 echo burst", []string{"--repeat", "1000"}},
		{"S-03 128 contexts x 38 transfer syntaxes", []string{"-ppc", "128", "-pts", "38"}},
		{"S-05 abort", []string{"--abort"}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if r := runPeer(t, echoscu, peerArgs(tc.args...)...); r.code != 0 {
				t.Errorf("echoscu rc %d: %s%s", r.code, r.stdout, r.stderr)
			}
			echoOK(t)
		})
	}
	t.Run("S-06 wrong called AE with aet set", func(t *testing.T) {
		r := runPeer(t, echoscu, "-aec", "NOTME", "127.0.0.1", port)
		if out := r.stdout + r.stderr; r.code == 0 || !strings.Contains(out, "Rejected Permanent, Source: Service User") ||
			!strings.Contains(out, "Called AE Title Not Recognized") {
			t.Errorf("echoscu rc %d: %s", r.code, out)
		}
	})
	t.Run("S-17 service not offered", func(t *testing.T) {
		r := runPeer(t, findscu, peerArgs("-S", "-k", "QueryRetrieveLevel=STUDY")...)
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "No Acceptable Presentation Contexts") {
			t.Errorf("findscu rc %d: %s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("S-19 garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || len(b) > 0 && !bytes.Equal(b, []byte{7, 0, 0, 0, 0, 4, 0, 0, 2, 1}) {
			t.Errorf("answer to garbage %x, %v", b, err)
		}
		echoOK(t)
	})

	// Each stored instance: Success for storescu, then on the server a
	// Binary holding our meta and the dataset as received, and a JSON
	// transmit naming both AEs, without pixel data.
	for _, tc := range []struct {
		id     string
		args   []string
		file   string
		uid    string
		wantTS string
	}{
		{"S-07 S-08 store one", nil, files[0], uids[0], dicom.ExplicitVRLittleEndian},
		{"S-04 small PDU", []string{"-pdu", "4096"}, files[1], uids[1], dicom.ExplicitVRLittleEndian},
		{"S-09 implicit only", []string{"-xi"}, files[2], uids[2], dicom.ImplicitVRLittleEndian},
		{"S-10 big endian preferred", []string{"-xb"}, files[3], uids[3], dicom.ExplicitVRLittleEndian},
		{"S-11 deflate", []string{"-R", "-xd"}, files[4], uids[4], dicom.DeflatedExplicitVRLittleEndian},
		{"S-12 compressed passthrough", []string{"-xs"}, jpeg, jpegMeta.SOPInstance, dicom.JPEGLosslessSV1},
		{"S-16 large PDU", []string{"-pdu", "131072"}, big, bigUID, dicom.ExplicitVRLittleEndian},
		{"S-21 abort after send", []string{"--abort"}, files[5], uids[5], dicom.ExplicitVRLittleEndian},
		{"S-22 release handshake", []string{"-d"}, files[6], uids[6], dicom.ExplicitVRLittleEndian},
	} {
		t.Run(tc.id, func(t *testing.T) {
			r := runPeer(t, storescu, append(peerArgs(append([]string{"-aet", "STORESCU"}, tc.args...)...), tc.file)...)
			out := r.stdout + r.stderr
			if r.code != 0 {
				t.Fatalf("storescu rc %d: %s", r.code, out)
			}
			if slices.Contains(tc.args, "-d") && (!strings.Contains(out, "Releasing Association") || regexp.MustCompile(`(?m)^[EF]: `).MatchString(out)) {
				t.Errorf("release: %s", out)
			}
			transmitted++
			d, ok := dicomTransmits(t, base, record, transmitted-1, transmitted)[tc.uid]
			if !ok {
				t.Fatalf("no transmit for %s", tc.uid)
			}
			if d.remote != "STORESCU" || d.association.CallingAeTitle != "STORESCU" || d.association.CalledAeTitle != "GOSCP" {
				t.Errorf("remote %q, association %+v", d.remote, d.association)
			}
			if _, ok := d.dataset["7FE00010"]; ok || d.value("00020010") != tc.wantTS || d.value("00020016") != "STORESCU" {
				t.Errorf("dataset: pixel data %v, TS %q, source AE %q", ok, d.value("00020010"), d.value("00020016"))
			}
			stored := filepath.Join(t.TempDir(), "stored.dcm")
			if err := os.WriteFile(stored, d.binary, 0o600); err != nil {
				t.Fatal(err)
			}
			if r := runPeer(t, dcmftest, stored); !strings.HasPrefix(r.stdout, "yes:") {
				t.Errorf("dcmftest: %s", r.stdout)
			}
			meta, data := part10(t, stored)
			srcMeta, srcData := part10(t, tc.file)
			if meta.TransferSyntax != tc.wantTS || meta.SourceAE != "STORESCU" || meta.SOPInstance != tc.uid {
				t.Errorf("Binary meta %+v", meta)
			}
			if srcMeta.TransferSyntax == tc.wantTS && !bytes.Equal(data, srcData) {
				t.Errorf("Binary dataset differs from the source (%d vs %d bytes)", len(data), len(srcData))
			}
			if a, b := dumpDataSet(t, tc.file), dumpDataSet(t, stored); a != b {
				t.Errorf("dcmdump of the Binary differs from the source:\n%s\n---\n%s", a, b)
			}
		})
	}

	t.Run("S-13 S-14 bulk", func(t *testing.T) {
		bulk := instancePaths(t.TempDir(), 200)
		makeDICOM(t, 16, bulk...)
		if r := runPeer(t, storescu, append(peerArgs(), bulk...)...); r.code != 0 {
			t.Fatalf("storescu rc %d: %s", r.code, r.stderr)
		}
		t.Setenv("TCP_NODELAY", "")
		if r := runPeer(t, storescu, append(peerArgs(), bulk[:20]...)...); r.code != 0 {
			t.Fatalf("storescu with Nagle rc %d: %s", r.code, r.stderr)
		}
		transmitted += 220
		dicomTransmits(t, base, record, transmitted-220, transmitted)
	})
	t.Run("S-15 parallel associations", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if r := runPeer(t, storescu, append(peerArgs("-aet", fmt.Sprintf("SCU%d", i)), files[10+5*i:15+5*i]...)...); r.code != 0 {
					t.Errorf("storescu %d rc %d: %s", i, r.code, r.stderr)
				}
			})
		}
		wg.Wait()
		transmitted += 20
		got := dicomTransmits(t, base, record, transmitted-20, transmitted)
		for i, uid := range uids[10:30] {
			if d, ok := got[uid]; !ok || d.remote != fmt.Sprintf("SCU%d", i/5) {
				t.Errorf("instance %s: transmitted %v from %q", uid, ok, d.remote)
			}
		}
	})
	t.Run("S-20 client killed mid-transfer", func(t *testing.T) {
		many := instancePaths(t.TempDir(), 60)
		manyUIDs := makeDICOM(t, 256, many...)
		// dcmtk's default Nagle paces the transfer (dicom.md 5.4), so that
		// the kill lands in the middle of it.
		t.Setenv("TCP_NODELAY", "")
		p := startProc(t, storescu, append(peerArgs(), many...)...)
		// Killed once a few instances were acknowledged: each is in the
		// spool, or already forwarded.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			b, _ := os.ReadFile(record)
			if bytes.Count(b, []byte("\n"))-transmitted+len(spoolFiles(t, dataDir, "pacs")) >= 3 || time.Now().After(deadline) {
				break
			}
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		waitSpoolEmpty(t, dataDir, "pacs")
		b, _ := os.ReadFile(record)
		got := dicomTransmits(t, base, record, transmitted, bytes.Count(b, []byte("\n")))
		n := 0
		for i, uid := range manyUIDs {
			d, ok := got[uid]
			if !ok {
				continue
			}
			n++
			_, want := part10(t, many[i])
			if _, data, err := dicom.ReadPart10Header(bytes.NewReader(d.binary)); err != nil {
				t.Errorf("%s: %v", uid, err)
			} else if got, _ := io.ReadAll(data); !bytes.Equal(got, want) {
				t.Errorf("instance %s is incomplete on the server", uid)
			}
		}
		if n < 3 {
			t.Errorf("%d instances reached the server, want at least the 3 acknowledged before the kill", n)
		}
		t.Logf("%d of %d instances stored before the kill, all complete on the server; no temporary file left", n, len(many))
		echoOK(t)
	})
}

// Instances acknowledged while the server is down are spooled; a kill -9
// of the agent does not lose them: the next run uploads and transmits them.
func TestDICOMChannelKeepsAcknowledgedAcrossCrash(t *testing.T) {
	t.Setenv("TCP_NODELAY", "1")
	storescu := peer(t, "storescu")
	s := dicomSite(t, "pacs=")
	port, listen, dataDir := s.ports["pacs"], "127.0.0.1:"+freePort(t), t.TempDir()
	srv, base := startDevServer(t, s, listen)
	agent := startAgent(t, s, base, dataDir)

	files := instancePaths(t.TempDir(), 3)
	uids := makeDICOM(t, 64, files...)
	srv.stop(t, syscall.SIGKILL)
	if r := runPeer(t, storescu, append([]string{"-aet", "CT1", "127.0.0.1", port}, files...)...); r.code != 0 {
		t.Fatalf("storescu rc %d: %s", r.code, r.stderr)
	}
	if got := spoolFiles(t, dataDir, "pacs"); len(got) != len(files) {
		t.Fatalf("spool holds %v after Success", got)
	}
	agent.stop(t, syscall.SIGKILL)

	record := filepath.Join(t.TempDir(), "record.jsonl")
	startDevServer(t, s, listen, "--record", record)
	startAgent(t, s, base, dataDir)
	got := dicomTransmits(t, base, record, 0, len(files))
	for i, uid := range uids {
		d, ok := got[uid]
		if !ok {
			t.Errorf("instance %s lost", uid)
			continue
		}
		_, want := part10(t, files[i])
		_, data, err := dicom.ReadPart10Header(bytes.NewReader(d.binary))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(data); !bytes.Equal(b, want) || d.remote != "CT1" {
			t.Errorf("instance %s: remote %q, dataset identical %v", uid, d.remote, bytes.Equal(b, want))
		}
	}
	waitSpoolEmpty(t, dataDir, "pacs")
}

// TestBenchmarkDICOMChannel times storescu sending 200 instances of 525 KB
// over one association into the agent's channel (spooling with fsync,
// uploading and transmitting to a dev server) and into dcmtk storescp
// storing to disk (dicom.md 5.4). Opt-in: E2E_BENCH=1 go test -run
// TestBenchmarkDICOMChannel -v ./pkg/e2e. It reports, it does not judge.
func TestBenchmarkDICOMChannel(t *testing.T) {
	if os.Getenv("E2E_BENCH") != "1" {
		t.Skip("set E2E_BENCH=1 to run the DICOM channel benchmark")
	}
	t.Setenv("TCP_NODELAY", "1")
	storescu := peer(t, "storescu")
	files := instancePaths(t.TempDir(), 200)
	makeDICOM(t, 512, files...)

	s := dicomSite(t, "pacs=")
	listen, dataDir := "127.0.0.1:"+freePort(t), t.TempDir()
	record := filepath.Join(t.TempDir(), "record.jsonl")
	_, base := startDevServer(t, s, listen, "--record", record)
	startAgent(t, s, base, dataDir)
	out := t.TempDir()
	scpPort, _ := startDcmtkSCP(t, "storescp", "-aet", "STORESCP", "-od", out)

	const rounds = 5
	var ours, drained, theirs []time.Duration
	for round := range rounds {
		start := time.Now()
		if r := runPeer(t, storescu, append([]string{"-aec", "GOSCP", "127.0.0.1", s.ports["pacs"]}, files...)...); r.code != 0 {
			t.Fatalf("storescu into the agent: %s", r.stderr)
		}
		ours = append(ours, time.Since(start))
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
			b, _ := os.ReadFile(record)
			if bytes.Count(b, []byte("\n")) >= (round+1)*len(files) && len(spoolFiles(t, dataDir, "pacs")) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the agent did not forward every instance")
			}
		}
		drained = append(drained, time.Since(start))

		entries, _ := os.ReadDir(out)
		for _, e := range entries {
			os.Remove(filepath.Join(out, e.Name()))
		}
		start = time.Now()
		if r := runPeer(t, storescu, append([]string{"-aec", "STORESCP", "127.0.0.1", scpPort}, files...)...); r.code != 0 {
			t.Fatalf("storescu into storescp: %s", r.stderr)
		}
		theirs = append(theirs, time.Since(start))
	}
	fi, _ := os.Stat(files[0])
	t.Logf("%d files of %d bytes, %d rounds, TCP_NODELAY=1 for dcmtk", len(files), fi.Size(), rounds)
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{{"storescu -> agent channel (Success)", ours}, {"  ... until all on the server", drained}, {"storescu -> storescp -od", theirs}} {
		slices.Sort(m.ds)
		t.Logf("%-38s min %6.3f s  median %6.3f s  max %6.3f s", m.name, m.ds[0].Seconds(), m.ds[len(m.ds)/2].Seconds(), m.ds[len(m.ds)-1].Seconds())
	}
}
