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
//
// A consumer that cannot be created, or cannot recreate itself, in time is replaced by
// one of a new name, after the last sequence delivered (250 ms doubling to 5 s apart, for
// as long as ctx lasts). The name matters: for minutes after a cluster node is killed the
// others still count it as online (nats-server marks a silent node offline after 5 missed
// 30 s heartbeats) and may place a new single-replica consumer on it; that request is never
// answered, nor is any later one for the same name. Follow returns an error only for a
// stream that does not exist, a read its user is refused, or a reader that fails before it
// ever started for another reason than a timeout.
func Follow(ctx context.Context, js jetstream.JetStream, stream string, o FollowOptions, handle func(Msg)) error {
	caughtUp := o.CaughtUp
	markCaughtUp := func() {
		if caughtUp != nil {
			caughtUp()
			caughtUp = nil
		}
	}
	var last uint64 // stream sequence of the last message delivered
	started := false
	wait := 250 * time.Millisecond
	for {
		start := o.Start
		if last > 0 {
			start = Start{Seq: last + 1}
		}
		ok, err := followConsumer(ctx, js, stream, o, start, &last, markCaughtUp, handle)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		started = started || ok
		if errors.Is(err, jetstream.ErrStreamNotFound) || IsRefused(js.Conn().LastError(), stream) ||
			(!started && !IsTransient(err)) {
			return err
		}
		if ok {
			wait = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// createTimeout bounds the request that creates a reader's consumer (a server answers in
// milliseconds; one that does not answer in seconds will not).
const createTimeout = 5 * time.Second

// followConsumer is one ordered consumer of Follow, from start; last is updated with every
// message delivered. ok says whether the consumer was created. The consumer tries to
// recreate itself once (nats.go waits up to 10 s for that) before it gives up.
func followConsumer(ctx context.Context, js jetstream.JetStream, stream string, o FollowOptions, start Start, last *uint64,
	markCaughtUp func(), handle func(Msg)) (ok bool, err error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.Filters, HeadersOnly: o.HeadersOnly, MaxResetAttempts: 1}
	start.apply(&cfg)
	createCtx, cancel := context.WithTimeout(ctx, createTimeout)
	cons, err := js.OrderedConsumer(createCtx, stream, cfg)
	cancel()
	if err != nil {
		return false, fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return false, fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()

	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		markCaughtUp()
	}
	for ctx.Err() == nil {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return true, nil
			}
			return true, fmt.Errorf("read %s %v: %w", stream, o.Filters, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return true, fmt.Errorf("read %s: metadata of %s: %w", stream, m.Subject(), err)
		}
		*last = md.Sequence.Stream
		handle(Msg{Subject: m.Subject(), Seq: md.Sequence.Stream, Time: md.Timestamp, Header: m.Headers(), Data: m.Data()})
		if md.NumPending == 0 {
			markCaughtUp()
		}
	}
	return true, nil
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
