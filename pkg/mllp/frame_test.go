package mllp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// chunkReader returns one chunk per Read call, then err (io.EOF if nil).
type chunkReader struct {
	chunks [][]byte
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

func chunks(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

type readResult struct {
	Frames  []string
	Err     string
	Skipped int64
}

// readAll drains r and summarises what it produced.
func readAll(t testing.TB, r *Reader) readResult {
	t.Helper()
	var res readResult
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("ReadFrame never returned an error")
		}
		p, err := r.ReadFrame()
		if err != nil {
			res.Err = err.Error()
			break
		}
		res.Frames = append(res.Frames, string(p))
	}
	res.Skipped = r.Skipped()
	return res
}

func TestReader(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name     string
		chunks   []string
		tail     error // error after the chunks; nil means io.EOF
		maxFrame int
		want     readResult
	}{
		{
			name:   "one frame",
			chunks: []string{"\x0bMSH|^~\\&|A\x1c\r"},
			want:   readResult{Frames: []string{"MSH|^~\\&|A"}, Err: "EOF"},
		},
		{
			name:   "empty stream",
			chunks: nil,
			want:   readResult{Err: "EOF"},
		},
		{
			name:   "junk before VT is skipped and counted",
			chunks: []string{"junk\x0bA\x1c\r"},
			want:   readResult{Frames: []string{"A"}, Err: "EOF", Skipped: 4},
		},
		{
			name:   "junk only",
			chunks: []string{"abc", "def"},
			want:   readResult{Err: "EOF", Skipped: 6},
		},
		{
			name:   "frame split over reads",
			chunks: []string{"\x0bMS", "H|1", "\x1c", "\r"},
			want:   readResult{Frames: []string{"MSH|1"}, Err: "EOF"},
		},
		{
			name:   "several frames in one read",
			chunks: []string{"\x0bA\x1c\r\x0bB\x1c\r\x0bC\x1c\r"},
			want:   readResult{Frames: []string{"A", "B", "C"}, Err: "EOF"},
		},
		{
			name:   "FS without CR is content",
			chunks: []string{"\x0bA\x1cB\x1c\x1c\r"},
			want:   readResult{Frames: []string{"A\x1cB\x1c"}, Err: "EOF"},
		},
		{
			name:   "VT inside a frame is content",
			chunks: []string{"\x0bA\x0bB\x1c\r"},
			want:   readResult{Frames: []string{"A\x0bB"}, Err: "EOF"},
		},
		{
			name:   "CRLF between frames",
			chunks: []string{"\x0bA\x1c\r\r\n\x0bB\x1c\r\r\n"},
			want:   readResult{Frames: []string{"A", "B"}, Err: "EOF", Skipped: 4},
		},
		{
			name:   "empty frame",
			chunks: []string{"\x0b\x1c\r"},
			want:   readResult{Frames: []string{""}, Err: "EOF"},
		},
		{
			name:     "frame at the size limit",
			chunks:   []string{"\x0b1234\x1c\r"},
			maxFrame: 4,
			want:     readResult{Frames: []string{"1234"}, Err: "EOF"},
		},
		{
			name:     "oversized frame",
			chunks:   []string{"\x0bA\x1c\r\x0b12345\x1c\r\x0bB\x1c\r"},
			maxFrame: 4,
			want:     readResult{Frames: []string{"A"}, Err: ErrFrameTooLarge.Error()},
		},
		{
			name:     "oversized unterminated frame",
			chunks:   []string{"\x0b12345"},
			maxFrame: 4,
			want:     readResult{Err: ErrFrameTooLarge.Error()},
		},
		{
			name:   "EOF mid-frame",
			chunks: []string{"\x0bA\x1c\r\x0bMSH|"},
			want:   readResult{Frames: []string{"A"}, Err: io.ErrUnexpectedEOF.Error()},
		},
		{
			name:   "EOF between FS and CR",
			chunks: []string{"\x0bA\x1c"},
			want:   readResult{Frames: nil, Err: io.ErrUnexpectedEOF.Error()},
		},
		{
			name:   "read error after a frame",
			chunks: []string{"\x0bA\x1c\r"},
			tail:   errBoom,
			want:   readResult{Frames: []string{"A"}, Err: "boom"},
		},
	}
	for _, tt := range tests {
		input := strings.Join(tt.chunks, "")
		readers := []struct {
			name string
			r    io.Reader
		}{
			{"chunks", &chunkReader{chunks: chunks(tt.chunks...), err: tt.tail}},
			{"one read", &chunkReader{chunks: chunks(input), err: tt.tail}},
			{"byte at a time", iotest.OneByteReader(&chunkReader{chunks: chunks(input), err: tt.tail})},
			{"data with EOF", iotest.DataErrReader(&chunkReader{chunks: chunks(input), err: tt.tail})},
		}
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got := readAll(t, NewReader(rd.r, tt.maxFrame))
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("mismatch (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// repeatReader yields an endless stream of one byte and counts what it gave.
type repeatReader struct {
	b    byte
	read int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b
	}
	r.read += int64(len(p))
	return len(p), nil
}

func TestReaderOversizedBoundedMemory(t *testing.T) {
	for _, maxFrame := range []int{1, 1000, 100 << 10, 1 << 20} {
		src := &repeatReader{b: 'a'}
		r := NewReader(io.MultiReader(strings.NewReader("\x0b"), src), maxFrame)
		_, err := r.ReadFrame()
		if !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("maxFrame %d: err = %v, want ErrFrameTooLarge", maxFrame, err)
		}
		if len(r.buf) > maxFrame+frameSlack {
			t.Errorf("maxFrame %d: buffer grew to %d", maxFrame, len(r.buf))
		}
		if src.read > int64(maxFrame+frameSlack) {
			t.Errorf("maxFrame %d: consumed %d bytes before giving up", maxFrame, src.read)
		}
		if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("maxFrame %d: second call err = %v, want sticky ErrFrameTooLarge", maxFrame, err)
		}
	}
}

func TestReaderLargeFrameThenShrink(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	var cs []string
	frame := "\x0b" + big + "\x1c\r"
	for i := 0; i < len(frame); i += 1000 {
		cs = append(cs, frame[i:min(i+1000, len(frame))])
	}
	cs = append(cs, "\x0bsmall\x1c\r")
	r := NewReader(&chunkReader{chunks: chunks(cs...)}, 0)
	p, err := r.ReadFrame()
	if err != nil || len(p) != len(big) {
		t.Fatalf("big frame: len %d, err %v", len(p), err)
	}
	p, err = r.ReadFrame()
	if err != nil || string(p) != "small" {
		t.Fatalf("small frame: %q, %v", p, err)
	}
	if len(r.buf) != readBufSize {
		t.Errorf("buffer is %d bytes after the large frame, want %d", len(r.buf), readBufSize)
	}
}

// A frame arriving one byte per read must not be rescanned from its start on
// every read (a quadratic scan would touch ~10^10 bytes here); it also exercises
// buffer growth one byte at a time.
func TestReaderByteAtATimeLargeFrame(t *testing.T) {
	payload := strings.Repeat("MSH|^~\\&|", 25<<10)
	r := NewReader(iotest.OneByteReader(strings.NewReader("\x0b"+payload+"\x1c\r")), 0)
	got := readAll(t, r)
	if len(got.Frames) != 1 || got.Frames[0] != payload || got.Err != "EOF" {
		t.Fatalf("got %d frames, err %q", len(got.Frames), got.Err)
	}
}

// countingWriter counts Write calls.
type countingWriter struct {
	writes int
	buf    bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}

func TestWriteFrame(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    string
	}{
		{"empty", "", "\x0b\x1c\r"},
		{"message", "MSH|^~\\&|A\rPID|1", "\x0bMSH|^~\\&|A\rPID|1\x1c\r"},
		{"large", strings.Repeat("z", 200<<10), "\x0b" + strings.Repeat("z", 200<<10) + "\x1c\r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w countingWriter
			if err := WriteFrame(&w, []byte(tt.payload)); err != nil {
				t.Fatal(err)
			}
			if w.writes != 1 {
				t.Errorf("Write called %d times, want 1", w.writes)
			}
			if diff := cmp.Diff(tt.want, w.buf.String()); diff != "" {
				t.Errorf("wire bytes (-want +got):\n%s", diff)
			}
			if got := string(AppendFrame([]byte("pre"), []byte(tt.payload))); got != "pre"+tt.want {
				t.Errorf("AppendFrame = %q", got)
			}
			got := readAll(t, NewReader(&w.buf, 0))
			if diff := cmp.Diff(readResult{Frames: []string{tt.payload}, Err: "EOF"}, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// refFrames is an obviously correct whole-input model of the Reader.
func refFrames(data []byte, maxFrame int) readResult {
	var res readResult
	for {
		vt := bytes.IndexByte(data, StartBlock)
		if vt < 0 {
			res.Skipped += int64(len(data))
			res.Err = io.EOF.Error()
			return res
		}
		res.Skipped += int64(vt)
		body := data[vt+1:]
		end := bytes.Index(body, []byte{EndBlock, CarriageReturn})
		if end < 0 {
			partial := len(body)
			if partial > 0 && body[partial-1] == EndBlock {
				partial--
			}
			if partial > maxFrame {
				res.Err = ErrFrameTooLarge.Error()
			} else {
				res.Err = io.ErrUnexpectedEOF.Error()
			}
			return res
		}
		if end > maxFrame {
			res.Err = ErrFrameTooLarge.Error()
			return res
		}
		res.Frames = append(res.Frames, string(body[:end]))
		data = body[end+2:]
	}
}

// FuzzReader feeds random bytes in random chunkings and checks the Reader
// against refFrames, the frame size limit and the buffer bound.
func FuzzReader(f *testing.F) {
	f.Add([]byte("\x0bMSH|^~\\&|A\x1c\r"), []byte{3, 1, 7}, uint16(0))
	f.Add([]byte("junk\x0bA\x1cB\x1c\x1c\r\r\n\x0bC\x0bD\x1c\r\x0b"), []byte{1}, uint16(3))
	f.Add([]byte("\x0b12345\x1c\r\x0bA\x1c\r"), []byte{2, 0, 5}, uint16(4))
	f.Add([]byte("\x0b\x1c\r\x1c\r\x0b\x0b\x1c"), []byte{}, uint16(1))
	f.Fuzz(func(t *testing.T, data, sizes []byte, maxFrame uint16) {
		max := int(maxFrame)
		if max == 0 {
			max = DefaultMaxFrameSize
		}
		// Split data into chunks whose sizes come from the fuzzer.
		var cs [][]byte
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(sizes) > 0 {
				n = min(int(sizes[i%len(sizes)])+1, len(rest))
			}
			cs = append(cs, rest[:n])
			rest = rest[n:]
		}
		r := NewReader(&chunkReader{chunks: cs}, int(maxFrame))
		var got readResult
		for {
			p, err := r.ReadFrame()
			if len(r.buf) > max+frameSlack {
				t.Fatalf("buffer %d exceeds limit %d", len(r.buf), max+frameSlack)
			}
			if err != nil {
				got.Err = err.Error()
				break
			}
			if len(p) > max {
				t.Fatalf("frame of %d bytes exceeds max %d", len(p), max)
			}
			got.Frames = append(got.Frames, string(p))
		}
		got.Skipped = r.Skipped()
		if diff := cmp.Diff(refFrames(data, max), got); diff != "" {
			t.Errorf("reader disagrees with model (-want +got):\n%s", diff)
		}
	})
}
