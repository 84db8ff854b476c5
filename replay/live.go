package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/streams"
)

// Live reads the history from a JetStream server with ordered consumers (no server-side
// state, no acks), one per stream.
type Live struct {
	js jetstream.JetStream
	// Progress, if set, is told how far each read is (messages delivered of those pending
	// when the read started).
	Progress ProgressFunc
	// Batch is how many messages the client asks for at once (default 4096).
	Batch int
}

var _ Source = (*Live)(nil)

// NewLive returns a source reading from js.
func NewLive(js jetstream.JetStream) *Live { return &Live{js: js} }

// Scan implements Source.
func (l *Live) Scan(ctx context.Context, q Query, fn func(*Record) error) error {
	desired := func(ctx context.Context, emit func(*Record) error) error {
		return l.scanStream(ctx, Desired, &q, false, emit)
	}
	status := func(ctx context.Context, emit func(*Record) error) error {
		return l.scanStream(ctx, Status, &q, false, emit)
	}
	dFilters, _ := q.filtersFor(Desired)
	sFilters, _ := q.filtersFor(Status)
	var err error
	switch {
	case dFilters != nil && sFilters != nil:
		err = mergeByTime(ctx, desired, status, fn)
	case dFilters != nil:
		err = desired(ctx, fn)
	case sFilters != nil:
		err = status(ctx, fn)
	}
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// Last implements Source with DeliverLastPerSubject: the server walks its subject index, so
// this costs what the number of subjects costs, not the length of the history.
func (l *Live) Last(ctx context.Context, s Stream, filters []string, fn func(*Record) error) error {
	q := Query{Subjects: filters}
	if s == Desired {
		q.Desired = &Range{}
	} else {
		q.Status = &Range{}
	}
	return l.scanStream(ctx, s, &q, true, fn)
}

func (l *Live) scanStream(ctx context.Context, s Stream, q *Query, lastPerSubject bool, emit func(*Record) error) error {
	filters, clientMatch := q.filtersFor(s)
	if filters == nil {
		return nil
	}
	r := q.rangeOf(s)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case lastPerSubject:
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	case r.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.FromSeq
	case !r.From.IsZero():
		// Safe with imported histories too: a message is stored no earlier than the
		// history time it carries, so nothing at or after From is skipped.
		t := r.From
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := l.js.OrderedConsumer(ctx, s.name(), cfg)
	if err != nil {
		return fmt.Errorf("read %s %v: %w", s.name(), filters, err)
	}
	info := cons.CachedInfo()
	if info == nil || info.NumPending == 0 {
		return nil
	}
	total := info.NumPending
	batch := l.Batch
	if batch <= 0 {
		batch = 4096
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(batch))
	if err != nil {
		return fmt.Errorf("read %s %v: %w", s.name(), filters, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	label := "reading " + s.name()
	for done := uint64(1); ; done++ {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read %s %v: %w", s.name(), filters, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: metadata of %s: %w", s.name(), m.Subject(), err)
		}
		if l.Progress != nil {
			l.Progress(label, done, total)
		}
		h := m.Headers()
		seq, t := originOf(h, md.Sequence.Stream, md.Timestamp)
		if r.past(seq, t) {
			return nil
		}
		if r.contains(seq, t) && (!clientMatch || q.matches(m.Subject())) {
			if err := emit(&Record{Stream: s, Subject: m.Subject(), Seq: seq, Time: t, Header: h, Data: m.Data()}); err != nil {
				return err
			}
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// SeqTime implements Source.
func (l *Live) SeqTime(ctx context.Context, seq uint64, atOrAfter bool) (time.Time, bool, error) {
	st, err := l.js.Stream(ctx, streams.DesiredStream)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read %s: %w", streams.DesiredStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read %s: %w", streams.DesiredStream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || (atOrAfter && seq > last) || (!atOrAfter && seq < first) {
		return time.Time{}, false, nil
	}
	n := min(seq, last)
	if atOrAfter {
		n = max(seq, first)
	}
	m, err := st.GetMsg(ctx, n)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read %s message %d: %w", streams.DesiredStream, n, err)
	}
	_, t := originOf(m.Header, m.Sequence, m.Time)
	return t, true, nil
}

// Now implements Source: the wall clock.
func (l *Live) Now(context.Context) (time.Time, error) { return time.Now(), nil }
