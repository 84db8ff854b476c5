package replay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// File format: see proto/netsource/v1/replay.proto.
const (
	fileFormat  = "netsource-replay"
	fileVersion = 1
	// maxRecord bounds one record (a message is at most 1 MiB by default, 8 MiB at most,
	// plus headers); a larger size prefix means the file is not a replay file.
	maxRecord = 64 << 20
)

// Writer writes a replay file.
type Writer struct {
	w    *bufio.Writer
	buf  []byte
	rec  nsv1.ReplayRecord
	opts proto.MarshalOptions
}

// NewWriter writes the file header to w and returns a writer for the records. Call Flush
// at the end.
func NewWriter(w io.Writer) (*Writer, error) {
	fw := &Writer{w: bufio.NewWriterSize(w, 1<<20), opts: proto.MarshalOptions{Deterministic: true}}
	if err := fw.writeMsg(&nsv1.ReplayFileHeader{Format: fileFormat, Version: fileVersion}); err != nil {
		return nil, err
	}
	return fw, nil
}

// Write appends one record. Headers are written in name order, without those storedHeader
// leaves out, so that the same history always gives the same bytes.
func (fw *Writer) Write(r *Record) error {
	rec := &fw.rec
	rec.Reset()
	rec.Stream = nsv1.ReplayStream_REPLAY_STREAM_DESIRED
	if r.Stream == Status {
		rec.Stream = nsv1.ReplayStream_REPLAY_STREAM_STATUS
	}
	rec.Subject, rec.Sequence, rec.Body = r.Subject, r.Seq, r.Data
	rec.Time = timestamppb.New(r.Time)
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		if storedHeader(k) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		rec.Headers = append(rec.Headers, &nsv1.ReplayHeader{Name: k, Values: r.Header[k]})
	}
	return fw.writeMsg(rec)
}

func (fw *Writer) writeMsg(m proto.Message) error {
	var err error
	fw.buf, err = fw.opts.MarshalAppend(fw.buf[:0], m)
	if err != nil {
		return fmt.Errorf("encode replay record: %w", err)
	}
	var size [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(size[:], uint64(len(fw.buf)))
	if _, err := fw.w.Write(size[:n]); err != nil {
		return fmt.Errorf("write replay file: %w", err)
	}
	if _, err := fw.w.Write(fw.buf); err != nil {
		return fmt.Errorf("write replay file: %w", err)
	}
	return nil
}

// Flush writes what is buffered.
func (fw *Writer) Flush() error {
	if err := fw.w.Flush(); err != nil {
		return fmt.Errorf("write replay file: %w", err)
	}
	return nil
}

// File reads a replay file. It re-reads the file for each Scan, so it holds no history in
// memory, and is safe for concurrent use.
type File struct {
	path string
	// Progress, if set, is told how many bytes of the file each scan has read.
	Progress ProgressFunc

	nowOnce sync.Once
	now     time.Time
	nowErr  error
}

var _ Source = (*File)(nil)

// OpenFile checks that path is a replay file and returns a source reading it.
func OpenFile(path string) (*File, error) {
	f := &File{path: path}
	r, err := f.open()
	if err != nil {
		return nil, err
	}
	r.close()
	return f, nil
}

// fileReader is one pass over the file.
type fileReader struct {
	f    *os.File
	br   *bufio.Reader
	read uint64 // bytes consumed
	size uint64
	buf  []byte
	path string
}

func (f *File) open() (*fileReader, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("open replay file: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("open replay file: %w", err)
	}
	r := &fileReader{f: fh, br: bufio.NewReaderSize(fh, 1<<20), size: uint64(st.Size()), path: f.path}
	data, err := r.next(false)
	if err == nil {
		hdr := &nsv1.ReplayFileHeader{}
		if uerr := proto.Unmarshal(data, hdr); uerr != nil || hdr.GetFormat() != fileFormat {
			err = errors.New("not a netsource replay file (written by `netsource replay export`)")
		} else if hdr.GetVersion() != fileVersion {
			err = fmt.Errorf("replay file format version %d; this netsource reads version %d", hdr.GetVersion(), fileVersion)
		}
	} else if errors.Is(err, io.EOF) {
		err = errors.New("empty file: not a netsource replay file")
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	return r, nil
}

func (r *fileReader) close() { r.f.Close() }

// next returns the next message's bytes: in a fresh buffer when fresh (the caller may keep
// it), otherwise in one reused until the following call. At the end it returns io.EOF.
func (r *fileReader) next(fresh bool) ([]byte, error) {
	size, err := binary.ReadUvarint(r.br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%s: truncated record size at byte %d: %w", r.path, r.read, err)
	}
	if size > maxRecord {
		return nil, fmt.Errorf("%s: record of %d bytes at byte %d: not a replay file or corrupt", r.path, size, r.read)
	}
	r.read += uint64(uvarintLen(size))
	buf := r.buf
	switch {
	case fresh:
		buf = make([]byte, size)
	case uint64(cap(buf)) < size:
		r.buf = make([]byte, size)
		buf = r.buf
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r.br, buf); err != nil {
		return nil, fmt.Errorf("%s: truncated record at byte %d: %w", r.path, r.read, err)
	}
	r.read += size
	return buf, nil
}

// record reads and decodes the next record; its Data aliases a buffer of its own. Headers
// are decoded only when asked for.
func (r *fileReader) record(headers bool) (*Record, error) {
	data, err := r.next(true)
	if err != nil {
		return nil, err
	}
	rec, err := decodeRecord(data, headers)
	if err != nil {
		return nil, fmt.Errorf("%s: record at byte %d: %w", r.path, r.read-uint64(len(data)), err)
	}
	return rec, nil
}

// decodeRecord decodes a ReplayRecord (see replay.proto) straight into a Record: the
// generic decoder allocates every field and header separately and validates UTF-8, which
// costs more than the rest of state reconstruction together. Data aliases data.
func decodeRecord(data []byte, headers bool) (*Record, error) {
	rec := &Record{}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		data = data[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(data)
			n = m
			switch nsv1.ReplayStream(v) {
			case nsv1.ReplayStream_REPLAY_STREAM_DESIRED:
				rec.Stream = Desired
			case nsv1.ReplayStream_REPLAY_STREAM_STATUS:
				rec.Stream = Status
			default:
				return nil, fmt.Errorf("unknown stream %d", v)
			}
		case num == 2 && typ == protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(data)
			rec.Subject = string(b)
		case num == 3 && typ == protowire.VarintType:
			rec.Seq, n = protowire.ConsumeVarint(data)
		case num == 4 && typ == protowire.BytesType:
			var b []byte
			if b, n = protowire.ConsumeBytes(data); n >= 0 {
				t, err := decodeTimestamp(b)
				if err != nil {
					return nil, err
				}
				rec.Time = t
			}
		case num == 5 && typ == protowire.BytesType:
			var b []byte
			if b, n = protowire.ConsumeBytes(data); n >= 0 && headers {
				if err := decodeHeader(b, rec); err != nil {
					return nil, err
				}
			}
		case num == 6 && typ == protowire.BytesType:
			rec.Data, n = protowire.ConsumeBytes(data)
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		data = data[n:]
	}
	if rec.Stream == 0 {
		return nil, errors.New("record names no stream")
	}
	if rec.Data == nil {
		rec.Data = []byte{}
	}
	return rec, nil
}

// decodeTimestamp decodes a google.protobuf.Timestamp as AsTime does.
func decodeTimestamp(b []byte) (time.Time, error) {
	var secs, nanos int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return time.Time{}, protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		if typ == protowire.VarintType {
			v, n = protowire.ConsumeVarint(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return time.Time{}, protowire.ParseError(n)
		}
		switch num {
		case 1:
			secs = int64(v)
		case 2:
			nanos = int64(int32(v))
		}
		b = b[n:]
	}
	return time.Unix(secs, nanos).UTC(), nil
}

// decodeHeader decodes one ReplayHeader into rec.Header.
func decodeHeader(b []byte, rec *Record) error {
	var name string
	var values []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if num == 1 {
				name = string(v)
			} else {
				values = append(values, string(v))
			}
			n = m
		} else if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	if rec.Header == nil {
		rec.Header = nats.Header{}
	}
	rec.Header[name] = append(rec.Header[name], values...)
	return nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// each calls fn for every record of the file, in file order.
func (f *File) each(ctx context.Context, headers bool, fn func(*Record) error) error {
	r, err := f.open()
	if err != nil {
		return err
	}
	defer r.close()
	label := "reading " + f.path
	for n := 0; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if f.Progress != nil {
				f.Progress(label, r.read, r.size)
			}
		}
		rec, err := r.record(headers)
		if errors.Is(err, io.EOF) {
			if f.Progress != nil {
				f.Progress(label, r.size, r.size)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
}

// Scan implements Source. Records come in file order, which export writes merged by time.
func (f *File) Scan(ctx context.Context, q Query, fn func(*Record) error) error {
	type sel struct {
		r           *Range
		clientMatch bool
		on, done    bool
	}
	var sels [3]sel
	active := 0
	for _, s := range []Stream{Desired, Status} {
		filters, _ := q.filtersFor(s)
		if filters != nil {
			sels[s] = sel{r: q.rangeOf(s), on: true}
			active++
		}
	}
	if active == 0 {
		return nil
	}
	return f.each(ctx, !q.NoHeaders, func(rec *Record) error {
		s := &sels[rec.Stream]
		if !s.on || s.done {
			return nil
		}
		if s.r.past(rec.Seq, rec.Time) {
			s.done = true
			if active--; active == 0 {
				return errStop
			}
			return nil
		}
		if !s.r.contains(rec.Seq, rec.Time) || !q.matches(rec.Subject) {
			return nil
		}
		return fn(rec)
	})
}

// Last implements Source by folding the whole file.
func (f *File) Last(ctx context.Context, s Stream, filters []string, fn func(*Record) error) error {
	q := Query{Subjects: filters, NoHeaders: true}
	if s == Desired {
		q.Desired = &Range{}
	} else {
		q.Status = &Range{}
	}
	last := map[string]*Record{}
	err := f.Scan(ctx, q, func(r *Record) error {
		if old, ok := last[r.Subject]; !ok || old.Seq < r.Seq {
			last[r.Subject] = r
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range last {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// SeqTime implements Source.
func (f *File) SeqTime(ctx context.Context, seq uint64, atOrAfter bool) (time.Time, bool, error) {
	var t time.Time
	found := false
	err := f.Scan(ctx, Query{Desired: &Range{}, NoHeaders: true}, func(r *Record) error {
		switch {
		case atOrAfter && r.Seq >= seq:
			t, found = r.Time, true
			return errStop
		case !atOrAfter && r.Seq <= seq:
			t, found = r.Time, true
		case !atOrAfter:
			return errStop
		}
		return nil
	})
	return t, found, err
}

// Now implements Source: the time of the newest record in the file.
func (f *File) Now(ctx context.Context) (time.Time, error) {
	f.nowOnce.Do(func() {
		f.nowErr = f.each(ctx, false, func(r *Record) error {
			if r.Time.After(f.now) {
				f.now = r.Time
			}
			return nil
		})
	})
	return f.now, f.nowErr
}
