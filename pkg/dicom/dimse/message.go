package dimse

import (
	"errors"
	"fmt"
	"io"

	"github.com/medplum-agent/medplum-agent/pkg/dicom/pdu"
)

// Default limits of a Reader.
const (
	// DefaultMaxCommandSize bounds a reassembled command set; real ones are
	// a few hundred bytes.
	DefaultMaxCommandSize = 64 << 10
	// DefaultMaxDataSetSize bounds one streamed dataset. Datasets are
	// streamed, so this guards disk rather than memory.
	DefaultMaxDataSetSize = 4 << 30
	// MaxSendPDU caps the P-DATA-TF PDUs we send, even when the peer
	// announces a larger or unlimited maximum length.
	MaxSendPDU = 128 << 10
)

// Reassembly errors. Each leaves the Reader unusable: the association must
// be aborted.
var (
	ErrTooLarge = errors.New("dimse: message exceeds the size limit")
	ErrSequence = errors.New("dimse: fragment out of sequence")
)

// PDVSource yields received PDVs in arrival order. The Data of a returned
// PDV must stay valid until the next call.
type PDVSource interface {
	NextPDV() (pdu.PDV, error)
}

// Limits bounds what a Reader accepts; zero fields take the defaults.
type Limits struct {
	MaxCommandSize int
	MaxDataSetSize int64
}

// Message is one received DIMSE message.
type Message struct {
	ContextID uint8
	Command   *Command
	// DataSet streams the dataset fragments as they arrive, or is nil when
	// the command announces no dataset. It is valid until the next
	// ReadMessage and implements io.WriterTo, so io.Copy to a file writes
	// each fragment without an intermediate copy.
	DataSet io.Reader
}

// Reader reassembles DIMSE messages from PDVs.
type Reader struct {
	src PDVSource
	lim Limits
	cmd []byte
	ds  *dataSetReader
	err error // sticky
}

// NewReader returns a Reader taking PDVs from src.
func NewReader(src PDVSource, lim Limits) *Reader {
	if lim.MaxCommandSize <= 0 {
		lim.MaxCommandSize = DefaultMaxCommandSize
	}
	if lim.MaxDataSetSize <= 0 {
		lim.MaxDataSetSize = DefaultMaxDataSetSize
	}
	return &Reader{src: src, lim: lim}
}

// ReadMessage reads the next command set and returns the message with its
// dataset stream. Whatever the caller left unread of the previous dataset is
// discarded first. Errors from the PDV source are returned as they are.
func (r *Reader) ReadMessage() (*Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.ds != nil {
		if _, err := io.Copy(io.Discard, r.ds); err != nil {
			return nil, err
		}
		r.ds = nil
	}
	r.cmd = r.cmd[:0]
	var ctxID uint8
	for first := true; ; first = false {
		v, err := r.src.NextPDV()
		if err != nil {
			return nil, r.fail(err)
		}
		switch {
		case !v.Command:
			return nil, r.fail(fmt.Errorf("%w: dataset fragment where a command was expected", ErrSequence))
		case !first && v.ContextID != ctxID:
			return nil, r.fail(fmt.Errorf("%w: command fragment on context %d inside a command on context %d", ErrSequence, v.ContextID, ctxID))
		case len(r.cmd)+len(v.Data) > r.lim.MaxCommandSize:
			return nil, r.fail(fmt.Errorf("%w: command set over %d bytes", ErrTooLarge, r.lim.MaxCommandSize))
		}
		ctxID = v.ContextID
		r.cmd = append(r.cmd, v.Data...)
		if v.Last {
			break
		}
	}
	c, err := DecodeCommand(r.cmd)
	if err != nil {
		return nil, r.fail(err)
	}
	m := &Message{ContextID: ctxID, Command: c}
	if c.HasDataSet {
		r.ds = &dataSetReader{r: r, ctxID: ctxID}
		m.DataSet = r.ds
	}
	return m, nil
}

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// dataSetReader streams the dataset fragments of one message.
type dataSetReader struct {
	r     *Reader
	ctxID uint8
	cur   []byte // unread part of the current fragment
	last  bool   // the current fragment is the last one
	n     int64  // bytes received so far
}

// next makes the next fragment current. It returns io.EOF after the last.
func (d *dataSetReader) next() error {
	if d.r.err != nil {
		return d.r.err
	}
	if d.last {
		return io.EOF
	}
	v, err := d.r.src.NextPDV()
	switch {
	case err != nil:
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return d.r.fail(err)
	case v.Command:
		return d.r.fail(fmt.Errorf("%w: command fragment inside a dataset", ErrSequence))
	case v.ContextID != d.ctxID:
		return d.r.fail(fmt.Errorf("%w: dataset fragment on context %d for a command on context %d", ErrSequence, v.ContextID, d.ctxID))
	}
	d.n += int64(len(v.Data))
	if d.n > d.r.lim.MaxDataSetSize {
		return d.r.fail(fmt.Errorf("%w: dataset over %d bytes", ErrTooLarge, d.r.lim.MaxDataSetSize))
	}
	d.cur, d.last = v.Data, v.Last
	return nil
}

func (d *dataSetReader) Read(p []byte) (int, error) {
	for len(d.cur) == 0 {
		if err := d.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	return n, nil
}

// WriteTo writes the remaining fragments straight from the PDU buffer.
func (d *dataSetReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(d.cur) > 0 {
			n, err := w.Write(d.cur)
			total += int64(n)
			d.cur = d.cur[n:]
			if err != nil {
				return total, err
			}
		}
		if err := d.next(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// Writer sends DIMSE messages as P-DATA-TF PDUs, one PDV per PDU and one
// Write call per PDU, with fragments sized to the peer's maximum length.
type Writer struct {
	w    io.Writer
	frag int       // largest fragment
	bufs [2][]byte // PDU buffers, allocated on first use
}

// NewWriter returns a Writer on w for a peer that announced peerMaxPDU as
// its Maximum Length (0: no limit). PDUs never exceed min(peerMaxPDU,
// MaxSendPDU).
func NewWriter(w io.Writer, peerMaxPDU uint32) *Writer {
	limit := uint32(MaxSendPDU)
	if peerMaxPDU != 0 && peerMaxPDU < limit {
		limit = peerMaxPDU
	}
	// The PDV header takes 6 bytes of the PDU length; keep at least one
	// data byte per fragment even for an absurdly small peer limit.
	return &Writer{w: w, frag: max(int(limit)-6, 1)}
}

func (w *Writer) buf(i int) []byte {
	if w.bufs[i] == nil {
		w.bufs[i] = make([]byte, pdu.PDataHeaderLen+w.frag)
	}
	return w.bufs[i]
}

// WriteCommand sends the command set c on presentation context ctxID.
func (w *Writer) WriteCommand(ctxID uint8, c *Command) error {
	data := EncodeCommand(c)
	b := w.buf(0)
	for {
		n := min(len(data), w.frag)
		copy(b[pdu.PDataHeaderLen:], data[:n])
		last := n == len(data)
		pdu.PutPDataHeader(b, ctxID, true, last, n)
		if _, err := w.w.Write(b[:pdu.PDataHeaderLen+n]); err != nil {
			return err
		}
		if last {
			return nil
		}
		data = data[n:]
	}
}

// WriteDataSet streams r as the dataset of the message whose command was
// just sent. Each fragment is read straight into the PDU buffer; one
// fragment is read ahead so the last one can carry the last-fragment bit.
// An error from r leaves the message incomplete: the association must then
// be aborted.
func (w *Writer) WriteDataSet(ctxID uint8, r io.Reader) (int64, error) {
	const h = pdu.PDataHeaderLen
	var total int64
	cur := w.buf(0)
	n, err := io.ReadFull(r, cur[h:])
	for i := 0; ; i = 1 - i {
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return total, err
		}
		last := err != nil
		var next []byte
		var m int
		if !last {
			next = w.buf(1 - i)
			m, err = io.ReadFull(r, next[h:])
			last = m == 0 && err == io.EOF
		}
		pdu.PutPDataHeader(cur, ctxID, false, last, n)
		if _, werr := w.w.Write(cur[:h+n]); werr != nil {
			return total, werr
		}
		total += int64(n)
		if last {
			return total, nil
		}
		cur, n = next, m
	}
}
