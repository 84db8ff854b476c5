package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is one stored message as readers see it.
type Msg struct {
	Subject string
	Seq     uint64
	Time    time.Time
	Header  nats.Header
	Data    []byte
}

// Start says where a reader begins.
type Start struct {
	// LastPerSubject delivers the last message of every matching subject first: the
	// current state. It is the default.
	LastPerSubject bool
	// All delivers every message from the beginning.
	All bool
	// New delivers only messages stored after the reader started.
	New bool
	// Seq delivers from this stream sequence on.
	Seq uint64
	// Time delivers from this time on.
	Time time.Time
}

func (s Start) apply(cfg *jetstream.OrderedConsumerConfig) {
	switch {
	case s.All:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case s.New:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case s.Seq > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = s.Seq
	case !s.Time.IsZero():
		t := s.Time
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	}
}

// FollowOptions configures Follow.
type FollowOptions struct {
	// Filters are the subjects to read (wildcards allowed, must not overlap).
	Filters []string
	// Start says where to begin; the zero value reads the last message per subject.
	Start Start
	// CaughtUp, if set, is called once when every message that was stored when the reader
	// started has been delivered (at once when there was none). With LastPerSubject this
	// is the moment the whole current state is known.
	CaughtUp func()
	// HeadersOnly skips message bodies.
	HeadersOnly bool
}

// Follow delivers messages to handle, in stream order, until ctx ends; then it returns nil.
// It uses an ordered consumer, which recreates itself after gaps or server restarts and
// continues after the last sequence it delivered. handle runs on Follow's goroutine.
func Follow(ctx context.Context, js jetstream.JetStream, stream string, o FollowOptions, handle func(Msg)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.Filters, HeadersOnly: o.HeadersOnly}
	o.Start.apply(&cfg)
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()

	caughtUp := o.CaughtUp
	markCaughtUp := func() {
		if caughtUp != nil {
			caughtUp()
			caughtUp = nil
		}
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		markCaughtUp()
	}
	for ctx.Err() == nil {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: metadata of %s: %w", stream, m.Subject(), err)
		}
		handle(Msg{Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Header: m.Headers(), Data: m.Data()})
		if md.NumPending == 0 {
			markCaughtUp()
		}
	}
	return nil
}

// Read returns every message from start up to the moment all messages stored when it began
// have been delivered. With the zero Start it returns the current state: the last message
// of each subject matching filters.
func Read(ctx context.Context, js jetstream.JetStream, stream string, start Start, filters ...string) ([]Msg, error) {
	readCtx, caughtUp := context.WithCancel(ctx)
	defer caughtUp()
	var out []Msg
	err := Follow(readCtx, js, stream, FollowOptions{Filters: filters, Start: start, CaughtUp: caughtUp}, func(m Msg) {
		out = append(out, m)
	})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("read %s %v: %w", stream, filters, ctx.Err())
	}
	return out, nil
}

// LoadLast returns the last message of each subject matching filters.
func LoadLast(ctx context.Context, js jetstream.JetStream, stream string, filters ...string) ([]Msg, error) {
	return Read(ctx, js, stream, Start{}, filters...)
}
