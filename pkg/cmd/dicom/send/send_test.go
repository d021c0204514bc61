package send

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/internal/scptest"
	"github.com/medplum-agent/medplum-agent/pkg/cmd/dicom/shared"
	"github.com/medplum-agent/medplum-agent/pkg/cmdutil"
	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/iostreams"
)

const (
	ctImage = "1.2.840.10008.5.1.4.1.1.2"
	uidRoot = "1.2.826.0.1.3680043.9.7133.2."
)

func TestNewCmdSend(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		want     Options
		wantCode int
	}{
		{name: "defaults", args: []string{"127.0.0.1", "104", "a.dcm", "dir"},
			want: Options{Addr: "127.0.0.1:104", Paths: []string{"a.dcm", "dir"},
				Assoc: shared.Association{CallingAE: "MEDPLUM", CalledAE: "ANY-SCP", Timeout: 30 * time.Second, MaxPDU: 65536}}},
		{name: "every flag", args: []string{"pacs", "11112", "dir", "--calling-ae", "GOSCU", "--called-ae", "STORESCP",
			"-t", "2s", "--max-pdu", "131072", "--json"},
			want: Options{Addr: "pacs:11112", Paths: []string{"dir"}, JSON: true,
				Assoc: shared.Association{CallingAE: "GOSCU", CalledAE: "STORESCP", Timeout: 2 * time.Second, MaxPDU: 131072}}},
		{name: "no path", args: []string{"127.0.0.1", "104"}, wantCode: 2},
		{name: "bad port", args: []string{"127.0.0.1", "0", "a.dcm"}, wantCode: 2},
		{name: "max PDU too large", args: []string{"h", "104", "a.dcm", "--max-pdu", "16777217"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, _ := testFactory()
			var got *Options
			cmd := NewCmdSend(f, func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.Execute()
			if code := cmdutil.ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d", code, err, tt.wantCode)
			}
			if tt.wantCode != 0 {
				return
			}
			if diff := cmp.Diff(tt.want, *got, cmpopts.IgnoreFields(Options{}, "IO", "Logger")); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func testFactory() (*cmdutil.Factory, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	return &cmdutil.Factory{
		IOStreams: ios,
		Logger:    func() *slog.Logger { return slog.New(slog.DiscardHandler) },
		Now:       time.Now,
	}, out, errOut
}

// instance is a Part-10 file written for a test, and what an SCP should
// receive for it.
type instance struct {
	SOPClass, TransferSyntax string
	DataSet                  []byte
	FileSize                 int64 // of the source file; the SCP does not see it
}

// writeInstance writes a Part-10 file whose dataset is n recognizable
// bytes; the SCP does not parse datasets, so they need not be valid.
func writeInstance(t *testing.T, path, sopClass, sopInstance, ts string, n int) instance {
	t.Helper()
	var b bytes.Buffer
	if err := dicom.WritePart10Header(&b, sopClass, sopInstance, ts, "1.2.3", "", ""); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte(sopInstance+";"), n/(len(sopInstance)+1)+1)[:n]
	b.Write(data)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return instance{sopClass, ts, data, int64(b.Len())}
}

// recorder is a storage SCP's handler that keeps what it received, by SOP
// instance UID, and answers with the status set for an instance, if any.
type recorder struct {
	mu       sync.Mutex
	got      map[string]instance
	statuses map[string]dimse.Status
}

func (r *recorder) onStore(_ context.Context, req assoc.StoreRequest) dimse.Status {
	data, err := io.ReadAll(req.Data)
	if err != nil {
		return dimse.StatusProcessingFailure
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string]instance{}
	}
	r.got[req.SOPInstance] = instance{SOPClass: req.SOPClass, TransferSyntax: req.TransferSyntax, DataSet: data}
	return r.statuses[req.SOPInstance]
}

func (r *recorder) received() map[string]instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// tree is the standard test input: instances in nested directories in
// three SOP class / transfer syntax combinations, plus entries that must
// not be sent.
func tree(t *testing.T) (string, map[string]instance) {
	dir := t.TempDir()
	want := map[string]instance{
		uidRoot + "1": writeInstance(t, filepath.Join(dir, "a", "1.dcm"), dicom.SecondaryCaptureImageStorage, uidRoot+"1", dicom.ExplicitVRLittleEndian, 10000),
		uidRoot + "2": writeInstance(t, filepath.Join(dir, "a", "b", "2.dcm"), dicom.SecondaryCaptureImageStorage, uidRoot+"2", dicom.ImplicitVRLittleEndian, 4091),
		uidRoot + "3": writeInstance(t, filepath.Join(dir, "c", "3.dcm"), ctImage, uidRoot+"3", dicom.ExplicitVRLittleEndian, 1),
		uidRoot + "4": writeInstance(t, filepath.Join(dir, "c", "4.dcm"), ctImage, uidRoot+"4", dicom.ExplicitVRLittleEndian, 0),
	}
	// Hidden entries and a DICOMDIR are skipped; a link to a file is
	// followed, a link to a directory (here a loop) is not.
	writeInstance(t, filepath.Join(dir, ".hidden", "5.dcm"), ctImage, uidRoot+"5", dicom.ExplicitVRLittleEndian, 10)
	writeInstance(t, filepath.Join(dir, "a", ".6.dcm"), ctImage, uidRoot+"6", dicom.ExplicitVRLittleEndian, 10)
	writeInstance(t, filepath.Join(dir, "DICOMDIR"), mediaStorageDirectory, uidRoot+"7", dicom.ExplicitVRLittleEndian, 10)
	outside := filepath.Join(t.TempDir(), "8.dcm")
	want[uidRoot+"8"] = writeInstance(t, outside, ctImage, uidRoot+"8", dicom.ExplicitVRBigEndian, 300)
	for _, l := range [][2]string{{outside, filepath.Join(dir, "link.dcm")}, {dir, filepath.Join(dir, "c", "loop")}} {
		if err := os.Symlink(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	return dir, want
}

func TestSendRun(t *testing.T) {
	type setup struct {
		dir  string
		want map[string]instance // what the SCP must hold afterwards
	}
	tests := []struct {
		name string
		// prepare builds the input and returns the paths to send.
		prepare      func(t *testing.T, s *setup) []string
		server       *assoc.Server // default: all storage classes, every transfer syntax
		statuses     map[string]dimse.Status
		flags        []string
		wantCode     int
		wantSummary  Summary // compared without Target, Seconds and MBPerSec; Bytes is the size of the files in want
		wantStderr   []string
		wantErr      string
		noConnection bool // the peer must not be contacted
	}{
		{
			name: "directory tree",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir, s.want = tree(t)
				return []string{s.dir}
			},
			// Small PDUs: the 10000-byte dataset spans several fragments.
			server:      &assoc.Server{MaxPDU: 4096},
			wantSummary: Summary{Files: 6, Sent: 5, Skipped: 1, Failures: []Failure{}},
			wantStderr:  []string{"Skipped ", "DICOMDIR: a DICOMDIR (media index), not an instance"},
		},
		{
			name: "files and directories mixed, failures do not stop the others",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				a := filepath.Join(s.dir, "x.dcm")
				s.want = map[string]instance{uidRoot + "1": writeInstance(t, a, ctImage, uidRoot+"1", dicom.ExplicitVRLittleEndian, 100)}
				sub := filepath.Join(s.dir, "sub")
				s.want[uidRoot+"2"] = writeInstance(t, filepath.Join(sub, "y.dcm"), ctImage, uidRoot+"2", dicom.ExplicitVRLittleEndian, 100)
				os.WriteFile(filepath.Join(sub, "readme.txt"), []byte("not DICOM"), 0o644)
				return []string{filepath.Join(s.dir, "sub"), a}
			},
			wantCode: 3,
			wantSummary: Summary{Files: 3, Sent: 2, Failed: 1, Failures: []Failure{
				{Path: "DIR/sub/readme.txt", Error: "dicom: not a Part-10 file (no DICM prefix)"},
			}},
			wantStderr: []string{"Error: DIR/sub/readme.txt: dicom: not a Part-10 file (no DICM prefix)"},
			wantErr:    "1 of 3 files failed",
		},
		{
			name: "failure and warning statuses",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				s.want = map[string]instance{}
				for i := 1; i <= 3; i++ {
					uid := fmt.Sprintf("%s%d", uidRoot, i)
					s.want[uid] = writeInstance(t, filepath.Join(s.dir, fmt.Sprintf("%d.dcm", i)), ctImage, uid, dicom.ExplicitVRLittleEndian, 68)
				}
				return []string{s.dir}
			},
			statuses: map[string]dimse.Status{uidRoot + "1": dimse.StatusOutOfResources, uidRoot + "2": dimse.StatusCoercionOfDataElements},
			wantCode: 3,
			wantSummary: Summary{Files: 3, Sent: 2, Failed: 1, Failures: []Failure{
				{Path: "DIR/1.dcm", Status: "0xA700", Error: "Failure: refused, out of resources (0xA700)"},
			}},
			wantStderr: []string{"Warning: DIR/2.dcm: Warning: coercion of data elements (0xB000)"},
			wantErr:    "1 of 3 files failed",
		},
		{
			name: "contexts the peer rejects",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				s.want = map[string]instance{uidRoot + "1": writeInstance(t, filepath.Join(s.dir, "1.dcm"), ctImage, uidRoot+"1", dicom.ExplicitVRLittleEndian, 68)}
				writeInstance(t, filepath.Join(s.dir, "2.dcm"), "1.2.3.4.5", uidRoot+"2", dicom.ExplicitVRLittleEndian, 68)
				writeInstance(t, filepath.Join(s.dir, "3.dcm"), ctImage, uidRoot+"3", dicom.ImplicitVRLittleEndian, 68)
				return []string{s.dir}
			},
			server:   &assoc.Server{TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian}},
			wantCode: 3,
			wantSummary: Summary{Files: 3, Sent: 1, Failed: 2, Failures: []Failure{
				{Path: "DIR/2.dcm", Error: "the peer rejected SOP class 1.2.3.4.5 in Explicit VR Little Endian: abstract syntax not supported (provider rejection)"},
				{Path: "DIR/3.dcm", Error: "the peer rejected SOP class " + ctImage + " in Implicit VR Little Endian: transfer syntaxes not supported (provider rejection)"},
			}},
			wantErr: "2 of 3 files failed",
		},
		{
			name: "more combinations than contexts",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				s.want = map[string]instance{}
				for i := 1; i <= maxContexts+1; i++ {
					uid := fmt.Sprintf("%s%d", uidRoot, i)
					in := writeInstance(t, filepath.Join(s.dir, fmt.Sprintf("%03d.dcm", i)), fmt.Sprintf("1.2.840.10008.5.1.4.1.1.%d", i), uid, dicom.ExplicitVRLittleEndian, 10)
					if i <= maxContexts {
						s.want[uid] = in
					}
				}
				return []string{s.dir}
			},
			wantCode: 3,
			wantSummary: Summary{Files: maxContexts + 1, Sent: maxContexts, Failed: 1, Failures: []Failure{
				{Path: "DIR/129.dcm", Error: "not proposed: more than 128 SOP class and transfer syntax combinations"},
			}},
			wantErr: "1 of 129 files failed",
		},
		{
			name: "nothing readable: no association",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				os.WriteFile(filepath.Join(s.dir, "a.txt"), []byte("x"), 0o644)
				return []string{s.dir}
			},
			noConnection: true,
			wantCode:     3,
			wantSummary: Summary{Files: 1, Failed: 1, Failures: []Failure{
				{Path: "DIR/a.txt", Error: "dicom: not a Part-10 file (no DICM prefix)"},
			}},
			wantErr: "1 of 1 files failed",
		},
		{
			name: "missing path",
			prepare: func(t *testing.T, s *setup) []string {
				return []string{filepath.Join(t.TempDir(), "nope")}
			},
			noConnection: true,
			wantCode:     2,
			wantErr:      "no such file or directory",
		},
		{
			name:         "empty directory",
			prepare:      func(t *testing.T, s *setup) []string { return []string{t.TempDir()} },
			noConnection: true,
			wantCode:     2,
			wantErr:      "no files found to send",
		},
		{
			name: "association rejected",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir, _ = tree(t)
				return []string{s.dir}
			},
			server:   &assoc.Server{AETitle: "GOSCP"},
			wantCode: 3,
			wantErr:  "rejected the association: rejected permanent, source: service user, reason: called AE title not recognized (result 1, source 1, reason 7)",
		},
		{
			name: "aborted mid-run",
			prepare: func(t *testing.T, s *setup) []string {
				s.dir = t.TempDir()
				s.want = map[string]instance{uidRoot + "1": writeInstance(t, filepath.Join(s.dir, "1.dcm"), ctImage, uidRoot+"1", dicom.ExplicitVRLittleEndian, 100)}
				writeInstance(t, filepath.Join(s.dir, "2.dcm"), ctImage, uidRoot+"2", dicom.ExplicitVRLittleEndian, 5000)
				writeInstance(t, filepath.Join(s.dir, "3.dcm"), ctImage, uidRoot+"3", dicom.ExplicitVRLittleEndian, 100)
				return []string{s.dir}
			},
			server:   &assoc.Server{MaxDataSetSize: 1000},
			wantCode: 3,
			wantSummary: Summary{Files: 3, Sent: 1, Failed: 1, Failures: []Failure{
				{Path: "DIR/2.dcm", Error: "dicom: association aborted by the peer (source: service provider, reason: invalid PDU parameter value)"},
			}},
			wantErr: "aborted the association",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s setup
			paths := tt.prepare(t, &s)
			rec := &recorder{statuses: tt.statuses}
			var addr string
			if tt.noConnection {
				addr = scptest.Raw(t, func(c net.Conn) {
					t.Error("the peer was contacted")
					c.Close()
				})
			} else {
				srv := tt.server
				if srv == nil {
					srv = &assoc.Server{}
				}
				srv.Handlers.OnStore = rec.onStore
				addr = scptest.Start(t, srv)
			}
			f, out, errOut := testFactory()
			host, port, _ := net.SplitHostPort(addr)
			cmd := NewCmdSend(f, nil)
			cmd.SetArgs(append(append([]string{host, port}, paths...), append([]string{"--json"}, tt.flags...)...))
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			err := cmd.ExecuteContext(context.Background())
			if code := cmdutil.ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit code %d (%v), want %d\nstdout: %s\nstderr: %s", code, err, tt.wantCode, out, errOut)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(s.want, rec.received(), cmpopts.EquateEmpty(), cmpopts.IgnoreFields(instance{}, "FileSize")); diff != "" {
				t.Errorf("SCP received (-want +got):\n%s", diff)
			}
			stderr := strings.ReplaceAll(errOut.String(), s.dir, "DIR")
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "\033") {
				t.Errorf("escape sequences on a stderr that is not a terminal: %q", stderr)
			}
			if out.Len() == 0 && tt.wantSummary.Files == 0 {
				return
			}
			var got Summary
			if err := json.Unmarshal([]byte(strings.ReplaceAll(out.String(), s.dir, "DIR")), &got); err != nil {
				t.Fatalf("%v in %q", err, out)
			}
			if got.Target != addr {
				t.Errorf("target %q, want %q", got.Target, addr)
			}
			want := tt.wantSummary
			for uid, in := range s.want {
				if tt.statuses[uid].Category() != dimse.CategoryFailure {
					want.Bytes += in.FileSize
				}
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Summary{}, "Target", "Seconds", "MBPerSec")); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// The human summary goes to stdout; on a terminal the progress line is
// cleared at the end and notes do not land inside it.
func TestSendHumanOutput(t *testing.T) {
	dir := t.TempDir()
	in := writeInstance(t, filepath.Join(dir, "1.dcm"), ctImage, uidRoot+"1", dicom.ExplicitVRLittleEndian, 868)
	os.WriteFile(filepath.Join(dir, "2.txt"), []byte("x"), 0o644)
	addr := scptest.Start(t, &assoc.Server{Handlers: assoc.Handlers{OnStore: (&recorder{}).onStore}})
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			f, out, errOut := testFactory()
			f.IOStreams.SetTTY(false, false, tty)
			host, port, _ := net.SplitHostPort(addr)
			cmd := NewCmdSend(f, nil)
			cmd.SetArgs([]string{host, port, dir})
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
			if code := cmdutil.ExitCode(cmd.ExecuteContext(context.Background())); code != 3 {
				t.Fatalf("exit code %d, want 3", code)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			want := []string{"target    " + addr, "files     2 found, 1 sent, 1 failed", fmt.Sprintf("bytes     %d (0.0 MB)", in.FileSize)}
			if len(lines) != 4 || !cmp.Equal(lines[:3], want) || !strings.HasPrefix(lines[3], "time      ") {
				t.Errorf("stdout:\n%s\nwant %q then the time", out, want)
			}
			note := "Error: " + filepath.Join(dir, "2.txt") + ": dicom: not a Part-10 file (no DICM prefix)\n"
			got := errOut.String()
			// On a terminal the bar may have been drawn meanwhile; the
			// note clears it first and the end clears it again.
			ok := got == note
			if tty {
				ok = strings.Contains(got, "\r\033[K"+note) && strings.HasSuffix(got, "\r\033[K")
			}
			if !ok {
				t.Errorf("stderr %q, want the note %q, around it clearing the bar only on a terminal", got, note)
			}
		})
	}
}

func TestProgressDraw(t *testing.T) {
	tests := []struct {
		name       string
		totalBytes int64
		advance    []int64
		want       string
	}{
		{"start", 1000, nil, "[........................]   0%  0/4 files  0.0 MB"},
		{"half", 1000, []int64{250, 250}, "[############............]  50%  2/4 files  0.0 MB"},
		{"done", 2_000_000, []int64{1_000_000, 1_000_000, 0, 0}, "[########################] 100%  4/4 files  2.0 MB"},
		{"more than planned", 1000, []int64{600, 600}, "[########################] 100%  2/4 files  0.0 MB"},
		{"nothing to read", 0, []int64{0}, "[########################] 100%  1/4 files  0.0 MB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := &progress{w: &b, label: "sending", totalFiles: 4, totalBytes: tt.totalBytes, start: time.Now()}
			for _, n := range tt.advance {
				p.advance(n)
			}
			p.draw()
			want := "\r\033[Ksending " + tt.want + "  "
			if got := b.String(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, " MB/s") {
				t.Errorf("drew %q, want %q then the rate", got, want)
			}
		})
	}
}
