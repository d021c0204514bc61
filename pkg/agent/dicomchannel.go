package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/medplum-agent/medplum-agent/pkg/auth"
	"github.com/medplum-agent/medplum-agent/pkg/dicom"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/assoc"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/dimse"
	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
	"github.com/medplum-agent/medplum-agent/pkg/fhir"
	"github.com/medplum-agent/medplum-agent/pkg/protocol"
	"github.com/medplum-agent/medplum-agent/pkg/spoolfile"
)

// The dicom:// channel is a Verification and Storage SCP. Each C-STORE is
// streamed into a spool file in the channel's folder (a checksummed
// header, see spoolfile, then the Part-10 instance), synced, and only then
// answered Success. Workers then upload each spooled instance as a FHIR
// Binary and send agent:transmit:request with its DICOM JSON (as the
// reference does), off the association, so that a slow or absent server
// never holds up the modality. A spool file goes once the server has
// answered its transmit, its file kept to write a later instance into;
// files left by a stop or a crash are sent again at the next start.
// Nothing acknowledged is lost; an instance may reach the server twice.
//
// With the durable queue the same steps map onto it: the spool write is
// PutBlob + Intake, forward's upload and JSON are the Prepare hook, and
// the dispatcher replaces the pending map below.

var dicomKind = &channelKind{scheme: "dicom", label: "DICOM", parse: parseDICOMParams, open: openDICOM}

const (
	// dicomMaxAssociations caps a channel's concurrent associations; more
	// are rejected as transient (local limit exceeded), which senders retry.
	dicomMaxAssociations = 64
	// dicomWorkers bounds concurrent uploads per channel.
	dicomWorkers = 4
	// maxSpooled caps the instances a channel holds for the server. Beyond
	// it C-STORE answers Out of Resources, so the sender retries later; it
	// bounds the names kept in memory.
	maxSpooled = 100_000
	// dicomAnswerWait is how long, counted while the link is live, a
	// handed-over instance waits for the server's answer. Error answers
	// (4xx, 5xx) never reach the channel, so after it the spool file goes
	// anyway.
	dicomAnswerWait = time.Minute
	dicomSweepEvery = 5 * time.Second
	// dicomLiveCheck paces the wait for the link before an upload.
	dicomLiveCheck = time.Second
	// A channel keeps up to dicomSpares forwarded files of at most
	// dicomSpareSize bytes to write the next instances into, sparing a file
	// creation and deletion per instance (see spoolfile).
	dicomSpares    = 16
	dicomSpareSize = 4 << 20

	dicomSpoolDir  = "dicom-spool" // in the data dir, one folder per channel
	dicomFailedDir = "failed"      // in a channel's folder: refused by the server
	dicomSpoolExt  = ".spool"      // a spoolfile: a header, then the instance
	// dicomFileExt marks Part-10 files: in the failed folder, and in the
	// spool as earlier versions left them.
	dicomFileExt = ".dcm"
)

var (
	// errDICOMResponse is the reference's answer to a server response for a
	// DICOM channel: there is no remote to send it to.
	errDICOMResponse = errors.New("sendToRemote not implemented")
	errSpoolFull     = errors.New("DICOM spool full")
	errBadSpoolName  = errors.New("not a spool file name")
)

// dicomParams are the URL parameters of a dicom:// address.
type dicomParams struct {
	aeTitle          string   // when set, the only called AE accepted
	allowedCallers   []string // when set, the only calling AEs accepted
	maxPDU           uint32   // 0: assoc.DefaultMaxPDU, the reference's 64 KiB
	transferSyntaxes []string // nil: dicom.DefaultTransferSyntaxes()
}

func parseDICOMParams(q url.Values) (any, []issue) {
	p := &dicomParams{}
	var issues []issue
	// AE title settings guard who may store: a wrong one has no fallback.
	if v := q.Get("aet"); v != "" {
		if !dicom.ValidAETitle(v) {
			issues = append(issues, problem("Invalid aet '%s'; expected 1 to 16 characters without backslash or control characters", v))
		}
		p.aeTitle = strings.TrimSpace(v)
	}
	if v := q.Get("allowedCallers"); v != "" {
		for ae := range strings.SplitSeq(v, ",") {
			if !dicom.ValidAETitle(ae) {
				issues = append(issues, problem("Invalid AE title '%s' in allowedCallers", ae))
				continue
			}
			p.allowedCallers = append(p.allowedCallers, strings.TrimSpace(ae))
		}
	}
	if v := q.Get("maxPdu"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil && n >= 1024 && n <= pdu.HardLimit {
			p.maxPDU = uint32(n)
		} else {
			issues = append(issues, warning("Invalid maxPdu: '%s'; must be an integer from 1024 to %d. Using %d.", v, pdu.HardLimit, assoc.DefaultMaxPDU))
		}
	}
	if v := q.Get("transferSyntaxes"); v != "" {
		for ts := range strings.SplitSeq(v, ",") {
			switch ts = strings.TrimSpace(ts); {
			case ts == "uncompressed":
				p.transferSyntaxes = append(p.transferSyntaxes, dicom.UncompressedTransferSyntaxes()...)
			case ts == "compressed":
				p.transferSyntaxes = append(p.transferSyntaxes, dicom.CompressedTransferSyntaxes()...)
			case dicom.ValidUID(ts):
				p.transferSyntaxes = append(p.transferSyntaxes, ts)
			default:
				issues = append(issues, problem("Invalid transfer syntax '%s' in transferSyntaxes; expected UIDs, 'uncompressed' or 'compressed'", ts))
			}
		}
	}
	return p, issues
}

// dicomChannel is a DICOM listener with its spool and upload workers.
type dicomChannel struct {
	a     *Agent
	name  string      // fixed: a renamed channel is a new channel
	cfg   channelSpec // touched under the agent's apply lock only
	log   *slog.Logger
	chLog *slog.Logger
	spool *dicomSpool

	srv      *assoc.Server // touched under the agent's apply lock only
	serving  sync.WaitGroup
	stopWork context.CancelFunc
	workers  sync.WaitGroup
}

func openDICOM(a *Agent, s channelSpec) channel {
	return &dicomChannel{
		a:     a,
		name:  s.name,
		cfg:   s,
		log:   a.log.With("channel", s.name),
		chLog: a.chLog.With("channel", s.name),
		spool: newDICOMSpool(filepath.Join(a.cfg.DataDir, dicomSpoolDir, spoolDirName(s.name))),
	}
}

func (ch *dicomChannel) spec() channelSpec { return ch.cfg }

func (ch *dicomChannel) start() error {
	stale, err := ch.spool.open()
	if err != nil {
		return fmt.Errorf("Channel '%s' cannot start: DICOM spool: %w", ch.name, err)
	}
	if err := ch.listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch.stopWork = cancel
	for range dicomWorkers {
		ch.workers.Go(func() { ch.work(ctx) })
	}
	ch.workers.Go(func() { ch.sweep(ctx) })
	ch.log.Info("Channel started", "address", ch.cfg.address, "spooled", stale)
	return nil
}

// listen starts an SCP with the current parameters.
func (ch *dicomChannel) listen() error {
	p := ch.cfg.params.(*dicomParams)
	srv := &assoc.Server{
		AETitle:          p.aeTitle,
		AllowedCallers:   p.allowedCallers,
		MaxPDU:           p.maxPDU,
		TransferSyntaxes: p.transferSyntaxes,
		Handlers:         assoc.Handlers{OnStore: ch.onStore},
		MaxAssociations:  dicomMaxAssociations,
		WriteTimeout:     deviceWriteTimeout,
		Logger:           ch.log,
	}
	if err := srv.Listen(listenAddr(ch.cfg.port)); err != nil {
		return bindError(ch.name, ch.cfg.port, err)
	}
	ch.srv = srv
	ch.serving.Go(func() {
		if err := srv.Serve(); err != nil {
			ch.log.Error("Channel stopped accepting connections", "err", err)
		}
	})
	return nil
}

// reconfigure restarts the SCP, whose settings are fixed when it listens:
// associations in progress finish their current message and are aborted.
// The spool and its workers carry on.
func (ch *dicomChannel) reconfigure(s channelSpec) error {
	ch.cfg = s
	ctx, cancel := context.WithTimeout(context.Background(), channelStopGrace)
	defer cancel()
	ch.shutdownServer(ctx)
	if err := ch.listen(); err != nil {
		return err
	}
	ch.log.Info("Channel reconfigured", "address", s.address)
	return nil
}

func (ch *dicomChannel) stop(ctx context.Context) {
	ch.shutdownServer(ctx)
	// Uploads in progress are cancelled: their files stay for the next start.
	ch.stopWork()
	ch.workers.Wait()
	ch.log.Info("Channel stopped")
}

func (ch *dicomChannel) shutdownServer(ctx context.Context) {
	if err := ch.srv.Shutdown(ctx); err != nil {
		ch.log.Warn("Closed associations with transfers still in progress", "err", err)
	}
	ch.serving.Wait()
}

// handleResponse settles the instance the server answered; the answer
// itself cannot go anywhere.
func (ch *dicomChannel) handleResponse(m *protocol.Message) error {
	if name, ok := ch.spool.answered(m.Callback); ok {
		ch.chLog.Debug("Server answered; spool file removed", "remote", m.Remote, "file", name)
	}
	return errDICOMResponse
}

// onStore runs on the association's goroutine: the instance is on disk,
// synced, before Success is returned.
func (ch *dicomChannel) onStore(_ context.Context, req assoc.StoreRequest) dimse.Status {
	if !dicom.ValidUID(req.SOPClass) || !dicom.ValidUID(req.SOPInstance) {
		ch.log.Warn("C-STORE refused: invalid SOP class or instance UID", "remote", req.CallingAE)
		return dimse.StatusCannotUnderstand
	}
	data := &dataReader{r: req.Data}
	name, err := ch.spool.store(req, data)
	var te transferError
	switch {
	case errors.As(err, &te):
		// No response can be sent; the sender has to send it again.
		ch.log.Warn("C-STORE interrupted mid-transfer", "remote", req.CallingAE, "err", te.error)
		return dimse.StatusProcessingFailure
	case err != nil:
		ch.log.Error("Cannot spool DICOM instance; answering Out of Resources", "remote", req.CallingAE, "err", err)
		return dimse.StatusOutOfResources
	}
	ch.log.Debug("DICOM instance received", "remote", req.CallingAE, "bytes", data.n)
	ch.chLog.Info("Received", "remote", req.CallingAE, "calledAe", req.CalledAE, "sopClass", req.SOPClass,
		"sopInstance", req.SOPInstance, "transferSyntax", req.TransferSyntax, "bytes", data.n, "file", name)
	return dimse.StatusSuccess
}

// transferError is a failure to receive a dataset, as opposed to storing it.
type transferError struct{ error }

// dataReader counts a dataset's bytes and marks read errors as transfer
// errors.
type dataReader struct {
	r io.Reader
	n int64
}

func (d *dataReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err != nil && err != io.EOF {
		err = transferError{err}
	}
	return n, err
}

// WriteTo lets io.Copy hand w the fragments straight from the PDU buffer,
// as the dataset stream is an io.WriterTo, rather than through a copy
// buffer; w's failures stay storage errors.
func (d *dataReader) WriteTo(w io.Writer) (int64, error) {
	sw := &sinkWriter{w: w}
	n, err := io.Copy(sw, d.r)
	d.n += n
	if err != nil && sw.err == nil {
		err = transferError{err}
	}
	return n, err
}

// sinkWriter remembers the failure of its writer.
type sinkWriter struct {
	w   io.Writer
	err error
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// work uploads and transmits spooled instances until ctx ends.
func (ch *dicomChannel) work(ctx context.Context) {
	bo := auth.Backoff{Base: time.Second, Max: time.Minute, Factor: 2, Jitter: 0.2}
	for {
		name, ok := ch.spool.next(ctx)
		if !ok {
			return
		}
		err := ch.forward(ctx, name)
		var fe *fhir.Error
		switch {
		case err == nil:
			bo.Reset()
			continue
		case ctx.Err() != nil || ch.a.draining():
			// Stopping: the file is sent at the next start.
			ch.spool.retry(name)
			<-ctx.Done()
			return
		case errors.Is(err, fs.ErrNotExist):
			ch.spool.forget(name)
			ch.log.Warn("Spooled DICOM instance disappeared", "file", name)
			continue
		case errors.Is(err, spoolfile.ErrIncomplete):
			// Cut short by a crash: its C-STORE was never answered Success.
			ch.spool.forget(name)
			ch.spool.drop(name)
			ch.log.Warn("Removed a spool file a crash left incomplete", "file", name)
			continue
		case errors.Is(err, errBadSpoolName), errors.As(err, &fe) && refused(fe.Status):
			ch.log.Error("DICOM instance refused; kept in the spool's failed folder", "file", name, "err", err)
			if err := ch.spool.fail(name); err != nil {
				ch.log.Error("Cannot move the refused instance", "file", name, "err", err)
			}
			continue
		}
		ch.spool.retry(name)
		d := bo.Next()
		ch.log.Warn("Cannot forward DICOM instance; retrying", "err", err, "retryIn", d)
		if !sleepCtx(ctx, d) {
			return
		}
	}
}

// refused reports upload statuses that retrying cannot change.
func refused(status int) bool {
	switch status {
	case 400, 413, 415, 422:
		return true
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dicomTransmit is the transmit body of a stored instance, as the
// reference sends it.
type dicomTransmit struct {
	Association dicomAssociation `json:"association"`
	Dataset     json.RawMessage  `json:"dataset"`
	Binary      fhir.Reference   `json:"binary"`
}

type dicomAssociation struct {
	CallingAETitle string `json:"callingAeTitle"`
	CalledAETitle  string `json:"calledAeTitle"`
}

// forward uploads one spooled instance as a Binary and hands its transmit
// to the link; the file stays until the server answers.
func (ch *dicomChannel) forward(ctx context.Context, name string) error {
	sf, err := parseSpoolName(name)
	if err != nil {
		return err
	}
	for !ch.a.link.Live() {
		// The transmit could only wait in memory: keep it on disk instead.
		if ch.a.draining() || !sleepCtx(ctx, dicomLiveCheck) {
			return context.Canceled
		}
	}
	f, size, err := ch.spool.openFile(name, sf)
	if err != nil {
		return err
	}
	defer f.Close() // if the upload did not
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	// The JSON first: the upload sends the rest of the file itself, from
	// the kernel's cache without a copy through the agent, and closes it.
	ds, jsonErr := dicomJSON(io.NewSectionReader(f, start, size))
	uctx, cancel := context.WithTimeout(ctx, uploadTimeout(size))
	id, err := ch.a.fhir.CreateBinary(uctx, protocol.ContentTypeDICOM, f, size)
	cancel()
	if err != nil {
		return err
	}
	if jsonErr != nil {
		ch.log.Warn("DICOM dataset only partly decoded; the transmit has the elements before the fault", "file", name, "err", jsonErr)
	}
	body, err := json.Marshal(dicomTransmit{
		Association: sf.as,
		Dataset:     ds,
		Binary:      fhir.Reference{Reference: "Binary/" + id},
	})
	if err != nil {
		return err
	}
	cb := ch.a.newCallback()
	ch.spool.hand(cb, name) // before deliver: the answer may come at once
	err = ch.a.deliver(&protocol.Message{
		Type:        protocol.TypeTransmitRequest,
		Channel:     ch.name,
		Remote:      sf.as.CallingAETitle,
		ContentType: protocol.ContentTypeJSON,
		Body:        string(body),
		Callback:    cb,
	})
	if err != nil {
		ch.spool.unhand(cb)
		return fmt.Errorf("queueing the transmit: %w", err)
	}
	ch.log.Debug("DICOM instance forwarded", "remote", sf.as.CallingAETitle, "binary", id)
	ch.chLog.Info("Sent", "remote", sf.as.CallingAETitle, "file", name, "binary", "Binary/"+id, "callback", cb)
	return nil
}

// uploadTimeout allows a slow 1 MB/s on top of a fixed allowance.
func uploadTimeout(size int64) time.Duration {
	return 2*time.Minute + time.Duration(size>>20)*time.Second
}

// sweep drops spool files whose transmit got no success answer in time.
func (ch *dicomChannel) sweep(ctx context.Context) {
	t := time.NewTicker(dicomSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, name := range ch.spool.expire(now, ch.a.link.Live()) {
				ch.log.Warn("No success answer from the server for a DICOM transmit; spool file removed", "file", name)
			}
		}
	}
}

// dicomSpool is a channel's folder of received instances, and which of
// them await upload or an answer. Files are named
// <hex sequence>.<calling AE>.<called AE>.spool (AEs in unpadded
// base64url), so the association survives a restart without a second
// file; the sequence is the spoolfile id.
type dicomSpool struct {
	dir  string
	disk *spoolfile.Dir
	wake chan struct{} // signalled when todo grows

	mu      sync.Mutex
	todo    []string          // waiting for a worker, oldest first
	pending map[string]handed // by transmit callback
	files   int               // in the folder, in any state
	lastSeq int64
	// unverified holds the spool files found at start: a crash may have cut
	// them short, so they are read against their checksum before upload.
	unverified map[string]bool
}

type handed struct {
	name  string
	since time.Time // reset while the link is down
}

func newDICOMSpool(dir string) *dicomSpool {
	return &dicomSpool{
		dir: dir, disk: spoolfile.New(dir, dicomSpares, dicomSpareSize),
		wake: make(chan struct{}, 1), pending: map[string]handed{}, unverified: map[string]bool{},
	}
}

// spoolDirName keeps letters, digits, '-' and '_' of a channel name and
// escapes the rest, so any name is one safe folder name.
func spoolDirName(channel string) string {
	var b strings.Builder
	for i := 0; i < len(channel); i++ {
		c := channel[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// spoolFile is what a spool file's name tells.
type spoolFile struct {
	seq  int64
	as   dicomAssociation
	part bool // a plain Part-10 file (dicomFileExt), not a spoolfile
}

func spoolName(seq int64, calling, called, ext string) string {
	enc := base64.RawURLEncoding
	return fmt.Sprintf("%016x.%s.%s%s", seq, enc.EncodeToString([]byte(calling)), enc.EncodeToString([]byte(called)), ext)
}

func parseSpoolName(name string) (spoolFile, error) {
	var sf spoolFile
	base, ok := strings.CutSuffix(name, dicomSpoolExt)
	if !ok {
		base, sf.part = strings.CutSuffix(name, dicomFileExt)
	}
	parts := strings.Split(base, ".")
	if !ok && !sf.part || len(parts) != 3 || len(parts[0]) != 16 {
		return sf, fmt.Errorf("%w: %s", errBadSpoolName, name)
	}
	seq, err := strconv.ParseUint(parts[0], 16, 63)
	if err != nil {
		return sf, fmt.Errorf("%w: %s", errBadSpoolName, name)
	}
	sf.seq = int64(seq)
	for i, dst := range []*string{&sf.as.CallingAETitle, &sf.as.CalledAETitle} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i+1])
		if err != nil || !dicom.ValidAETitle(string(b)) {
			return sf, fmt.Errorf("%w: %s", errBadSpoolName, name)
		}
		*dst = string(b)
	}
	return sf, nil
}

// open creates the folder and queues the instances a previous run left,
// oldest first. Spares are kept for reuse; other hidden files are
// temporary files of writes a crash interrupted (earlier versions wrote
// through them) and are removed.
func (sp *dicomSpool) open() (int, error) {
	if err := os.MkdirAll(sp.dir, 0o700); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(sp.dir) // sorted by name: oldest first
	if err != nil {
		return 0, err
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir():
		case strings.HasPrefix(name, "."):
			if !sp.disk.Adopt(name) {
				os.Remove(filepath.Join(sp.dir, name))
			}
		case len(sp.todo) >= maxSpooled:
		case strings.HasSuffix(name, dicomSpoolExt):
			sp.unverified[name] = true
			sp.todo = append(sp.todo, name)
		case strings.HasSuffix(name, dicomFileExt):
			sp.todo = append(sp.todo, name)
		}
	}
	sp.files = len(sp.todo)
	if sp.files > 0 {
		sp.signal()
	}
	return sp.files, nil
}

// store writes the Part-10 file of a C-STORE durably and queues it.
func (sp *dicomSpool) store(req assoc.StoreRequest, data io.Reader) (string, error) {
	sp.mu.Lock()
	if sp.files >= maxSpooled {
		sp.mu.Unlock()
		return "", errSpoolFull
	}
	sp.files++
	sp.lastSeq = max(time.Now().UnixNano(), sp.lastSeq+1)
	seq := sp.lastSeq
	name := spoolName(seq, req.CallingAE, req.CalledAE, dicomSpoolExt)
	sp.mu.Unlock()

	err := sp.disk.Create(name, uint64(seq), dicom.Buffered(func(w io.Writer) error {
		if err := dicom.WritePart10Header(w, req.SOPClass, req.SOPInstance, req.TransferSyntax,
			dicom.ImplementationClassUID, dicom.ImplementationVersionName, req.CallingAE); err != nil {
			return err
		}
		_, err := io.Copy(w, data)
		return err
	}))
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err != nil {
		sp.files--
		return "", err
	}
	sp.todo = append(sp.todo, name)
	sp.signal()
	return name, nil
}

func (sp *dicomSpool) signal() {
	select {
	case sp.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued file, waiting until there is one; false
// when ctx ends.
func (sp *dicomSpool) next(ctx context.Context) (string, bool) {
	for {
		sp.mu.Lock()
		if len(sp.todo) > 0 {
			name := sp.todo[0]
			sp.todo = sp.todo[1:]
			if len(sp.todo) > 0 {
				sp.signal() // wake the next worker too
			} else {
				sp.todo = nil
			}
			sp.mu.Unlock()
			return name, true
		}
		sp.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-sp.wake:
		}
	}
}

// retry puts a file back at the head of the queue.
func (sp *dicomSpool) retry(name string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.todo = append([]string{name}, sp.todo...)
}

// openFile opens a spooled file, positioned at its Part-10 content, and
// returns it with the content's length.
func (sp *dicomSpool) openFile(name string, sf spoolFile) (*os.File, int64, error) {
	path := filepath.Join(sp.dir, name)
	if sf.part {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, st.Size(), nil
	}
	sp.mu.Lock()
	verify := sp.unverified[name]
	sp.mu.Unlock()
	f, n, err := spoolfile.Open(path, uint64(sf.seq), verify)
	if err == nil && verify {
		sp.mu.Lock()
		delete(sp.unverified, name)
		sp.mu.Unlock()
	}
	return f, n, err
}

// forget counts out a file that is no longer in the folder.
func (sp *dicomSpool) forget(name string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.files--
	delete(sp.unverified, name)
}

// drop removes a file that is done with, or was never complete.
func (sp *dicomSpool) drop(name string) {
	sp.mu.Lock()
	delete(sp.unverified, name)
	sp.mu.Unlock()
	// Part-10 files are not checked at start, so a crash must not bring
	// one back with another instance's bytes: no reuse.
	if sf, err := parseSpoolName(name); err == nil && sf.part {
		os.Remove(filepath.Join(sp.dir, name))
		return
	}
	sp.disk.Recycle(name)
}

// fail moves a file the server refused out of the queue, as a Part-10
// file for an operator.
func (sp *dicomSpool) fail(name string) error {
	sp.mu.Lock()
	sp.files--
	delete(sp.unverified, name)
	sp.mu.Unlock()
	dir := filepath.Join(sp.dir, dicomFailedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(sp.dir, name)
	sf, err := parseSpoolName(name)
	if err != nil || sf.part {
		return os.Rename(path, filepath.Join(dir, name))
	}
	return spoolfile.Export(path, filepath.Join(dir, spoolName(sf.seq, sf.as.CallingAETitle, sf.as.CalledAETitle, dicomFileExt)), uint64(sf.seq))
}

func (sp *dicomSpool) hand(callback, name string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.pending[callback] = handed{name: name, since: time.Now()}
}

func (sp *dicomSpool) unhand(callback string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	delete(sp.pending, callback)
}

// answered removes the file whose transmit the server answered.
func (sp *dicomSpool) answered(callback string) (string, bool) {
	sp.mu.Lock()
	h, ok := sp.pending[callback]
	if ok {
		delete(sp.pending, callback)
		sp.files--
	}
	sp.mu.Unlock()
	if ok {
		sp.drop(h.name)
	}
	return h.name, ok
}

// expire removes the files that waited dicomAnswerWait for an answer with
// the link live; while it is down the wait starts over.
func (sp *dicomSpool) expire(now time.Time, live bool) []string {
	var gone []string
	sp.mu.Lock()
	for cb, h := range sp.pending {
		switch {
		case !live:
			sp.pending[cb] = handed{name: h.name, since: now}
		case now.Sub(h.since) >= dicomAnswerWait:
			delete(sp.pending, cb)
			sp.files--
			gone = append(gone, h.name)
		}
	}
	sp.mu.Unlock()
	for _, name := range gone {
		sp.drop(name)
	}
	return gone
}
