package actors

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Reporter receives status events. Report must not block for long: actors call it inline.
type Reporter interface {
	Report(ev *nsv1.StatusEvent)
}

// AsyncReporter publishes status events from one goroutine in the order they were
// reported, so actors never wait for JetStream.
type AsyncReporter struct {
	publish func(context.Context, *nsv1.StatusEvent) error
	log     zerolog.Logger
	queue   chan *nsv1.StatusEvent
	done    chan struct{}
	once    sync.Once
}

// NewAsyncReporter starts a reporter that publishes through sink.
func NewAsyncReporter(sink *streams.StatusSink, log zerolog.Logger) *AsyncReporter {
	r := &AsyncReporter{
		publish: func(ctx context.Context, ev *nsv1.StatusEvent) error { _, err := sink.Publish(ctx, ev); return err },
		log:     log,
		queue:   make(chan *nsv1.StatusEvent, 4096),
		done:    make(chan struct{}),
	}
	go r.run()
	return r
}

// Report queues ev for publishing.
func (r *AsyncReporter) Report(ev *nsv1.StatusEvent) { r.queue <- ev }

// Close publishes what is queued and stops.
func (r *AsyncReporter) Close() {
	r.once.Do(func() { close(r.queue) })
	<-r.done
}

func (r *AsyncReporter) run() {
	defer close(r.done)
	for ev := range r.queue {
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := r.publish(ctx, ev)
			cancel()
			if err == nil {
				break
			}
			r.log.Warn().Err(err).Str("kind", ev.GetKind()).Str("id", ev.GetId()).Int("attempt", attempt).Msg("status publish failed")
			if attempt >= 3 {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
	}
}

// RecordingReporter keeps every status event; for tests and the replay simulator.
type RecordingReporter struct {
	mu     sync.Mutex
	events []*nsv1.StatusEvent
	notify chan struct{}
}

// NewRecordingReporter returns an empty recorder.
func NewRecordingReporter() *RecordingReporter {
	return &RecordingReporter{notify: make(chan struct{}, 1)}
}

// Report records a copy of ev.
func (r *RecordingReporter) Report(ev *nsv1.StatusEvent) {
	r.mu.Lock()
	r.events = append(r.events, proto.Clone(ev).(*nsv1.StatusEvent))
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Events returns the recorded events.
func (r *RecordingReporter) Events() []*nsv1.StatusEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*nsv1.StatusEvent(nil), r.events...)
}

// Latest returns the last event of (kind, id), or nil.
func (r *RecordingReporter) Latest(kind streams.Kind, id string) *nsv1.StatusEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if ev := r.events[i]; ev.GetKind() == string(kind) && ev.GetId() == id {
			return ev
		}
	}
	return nil
}

// WaitFor blocks until the latest event of (kind, id) has the phase, or ctx ends.
func (r *RecordingReporter) WaitFor(ctx context.Context, kind streams.Kind, id string, phase nsv1.Phase) (*nsv1.StatusEvent, error) {
	for {
		if ev := r.Latest(kind, id); ev != nil && ev.GetPhase() == phase {
			return ev, nil
		}
		select {
		case <-ctx.Done():
			return r.Latest(kind, id), ctx.Err()
		case <-r.notify:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// statusTracker publishes an object's status only when something an operator would care
// about changed (phase, reason, desired version), so a restart of a converged agent does
// not flood the status stream.
type statusTracker struct {
	host, kind, id string
	rep            Reporter
	phase          nsv1.Phase
	reason         string
	seq            uint64
	// live: seq was reported by this process (a seeded one may be from a desired stream
	// that has since been recreated with lower sequences).
	live bool
}

func (s *statusTracker) report(phase nsv1.Phase, reason string, seq uint64, since time.Time, details map[string]string, l2 *nsv1.PortL2) {
	if phase == s.phase && reason == s.reason && seq == s.seq {
		return
	}
	if s.live && seq < s.seq {
		// Never go back to an older desired version: after an invalid version was reported,
		// what still runs from the one before must not overwrite that ERROR.
		return
	}
	s.phase, s.reason, s.seq, s.live = phase, reason, seq, true
	ev := &nsv1.StatusEvent{
		Host: s.host, Kind: s.kind, Id: s.id, Phase: phase, Reason: reason, DesiredSeq: seq,
		Time: timestamppb.Now(), Details: details, PortL2: l2,
	}
	if !since.IsZero() {
		ev.Convergence = durationpb.New(time.Since(since))
	}
	s.rep.Report(ev)
}

// seed sets the last published status (from the status stream at start) without publishing.
func (s *statusTracker) seed(ev *nsv1.StatusEvent) {
	if ev != nil {
		s.phase, s.reason, s.seq = ev.GetPhase(), ev.GetReason(), ev.GetDesiredSeq()
	}
}
