package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/topology"
)

// JetStream error codes for a failed expected-sequence check: 10071 on every server, 10164
// from a clustered stream while an earlier write to the subject is still in flight.
const (
	errCodeWrongLastSequence         = 10071
	errCodeWrongLastSequenceInFlight = 10164
)

// ErrConflict is matched (errors.Is) by every *ConflictError.
var ErrConflict = errors.New("conflict")

// ConflictError says that the subject's last sequence was not the one the writer expected:
// someone else changed the object since it was read.
type ConflictError struct {
	Subject  string
	Expected uint64 // what the writer expected (0: no message yet)
	Actual   uint64 // what the stream had when the conflict was checked
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("conflict on %s: expected last sequence %d but the stream has %d; the object changed since it was read, re-read and retry",
		e.Subject, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Ack is the outcome of a stored publish.
type Ack struct {
	Seq uint64
	// Duplicate: the event had been stored before (a retry); Seq is the original sequence.
	Duplicate bool
}

// Publisher appends desired events with validation, optimistic concurrency and dedup.
type Publisher struct {
	js       jetstream.JetStream
	name     string
	attempts int
	timeout  time.Duration
}

// NewPublisher returns a publisher that signs its events with name (e.g. "alice@ops1").
func NewPublisher(js jetstream.JetStream, name string) *Publisher {
	return &Publisher{js: js, name: name, attempts: 4, timeout: 5 * time.Second}
}

// Name is the publisher identity written into events.
func (p *Publisher) Name() string { return p.name }

// ValidateSpec runs the per-object checks of the topology package on one aggregate.
func ValidateSpec(spec Spec) error {
	kind := string(KindOfSpec(spec))
	switch s := spec.(type) {
	case *nsv1.Network:
		return topology.ValidateNetwork(kind, s)
	case *nsv1.SecurityGroup:
		return topology.ValidateSecurityGroup(kind, s)
	case *nsv1.Port:
		return topology.ValidatePort(kind, s)
	case *nsv1.TapService:
		return topology.ValidateTapService(kind, s)
	case *nsv1.TapFlow:
		return topology.ValidateTapFlow(kind, s)
	case *nsv1.Trunk:
		return topology.ValidateTrunk(kind, s)
	case *nsv1.LoadBalancer:
		return topology.ValidateLoadBalancer(kind, s)
	}
	return fmt.Errorf("%T is not an aggregate", spec)
}

// Append validates ev and stores it on its subject, provided the subject's last sequence
// is expected (0: nothing stored yet). A stale expectation returns a *ConflictError. A
// timeout is retried with the same event id and expectation; a retry whose first attempt
// was stored (its acknowledgement lost) returns that first attempt's sequence.
func (p *Publisher) Append(ctx context.Context, ev *nsv1.DesiredEvent, expected uint64) (Ack, error) {
	if ev.GetChange() != nsv1.ChangeKind_CHANGE_KIND_DELETED {
		if err := ValidateSpec(SpecOf(ev)); err != nil {
			return Ack{}, err
		}
	}
	if ev.Publisher == "" {
		ev.Publisher = p.name
	}
	msg, err := EncodeDesired(ev)
	if err != nil {
		return Ack{}, err
	}
	var lastErr error
	for attempt := 0; attempt < p.attempts; attempt++ {
		ack, err := p.publishOnce(ctx, msg, expected)
		if err == nil {
			return ack, nil
		}
		if isWrongLastSequence(err) {
			return p.resolveConflict(ctx, msg, expected)
		}
		if !isRetryable(err) || ctx.Err() != nil {
			return Ack{}, fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		lastErr = err
	}
	return Ack{}, fmt.Errorf("publish %s: gave up after %d attempts: %w", msg.Subject, p.attempts, lastErr)
}

func (p *Publisher) publishOnce(ctx context.Context, msg *nats.Msg, expected uint64) (Ack, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	pa, err := p.js.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequencePerSubject(expected),
		jetstream.WithMsgID(msg.Header.Get(nats.MsgIdHdr)),
		jetstream.WithExpectStream(DesiredStream))
	if err != nil {
		return Ack{}, err
	}
	return Ack{Seq: pa.Sequence, Duplicate: pa.Duplicate}, nil
}

// resolveConflict tells a real conflict from our own earlier attempt: on a single-server
// stream a retry with the same Msg-Id fails the expected-sequence check before the dedup
// map is consulted, so the last message of the subject may be our own event.
func (p *Publisher) resolveConflict(ctx context.Context, msg *nats.Msg, expected uint64) (Ack, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	stream, err := p.js.Stream(ctx, DesiredStream)
	if err != nil {
		return Ack{}, fmt.Errorf("publish %s: conflict, then reading the stream: %w", msg.Subject, err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, msg.Subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Ack{}, &ConflictError{Subject: msg.Subject, Expected: expected}
	}
	if err != nil {
		return Ack{}, fmt.Errorf("publish %s: conflict, then reading the last message: %w", msg.Subject, err)
	}
	if last.Header.Get(nats.MsgIdHdr) == msg.Header.Get(nats.MsgIdHdr) {
		return Ack{Seq: last.Sequence, Duplicate: true}, nil
	}
	return Ack{}, &ConflictError{Subject: msg.Subject, Expected: expected, Actual: last.Sequence}
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == errCodeWrongLastSequence || apiErr.ErrorCode == errCodeWrongLastSequenceInFlight
}

func isRetryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}
