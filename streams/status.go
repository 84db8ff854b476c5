package streams

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// PhaseName is the short upper-case name of a phase (ACTIVE, DOWN, ...).
func PhaseName(p nsv1.Phase) string { return strings.TrimPrefix(p.String(), "PHASE_") }

// ParsePhase accepts ACTIVE, active or PHASE_ACTIVE.
func ParsePhase(s string) (nsv1.Phase, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "PHASE_") {
		name = "PHASE_" + name
	}
	v, ok := nsv1.Phase_value[name]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown phase %q (want PENDING, BUILD, ACTIVE, DOWN, ERROR or DELETED)", s)
	}
	return nsv1.Phase(v), nil
}

// StatusSink publishes an agent's status events and heartbeats. Status is last-value-wins
// with a single writer per host, so it is published without concurrency control.
type StatusSink struct {
	js   jetstream.JetStream
	host string
}

// NewStatusSink returns a sink for host's status subjects.
func NewStatusSink(js jetstream.JetStream, host string) (*StatusSink, error) {
	if err := CheckToken("host", host); err != nil {
		return nil, err
	}
	return &StatusSink{js: js, host: host}, nil
}

// Publish stores one status event (its host is set to the sink's host) and waits for the
// acknowledgement.
func (s *StatusSink) Publish(ctx context.Context, ev *nsv1.StatusEvent) (uint64, error) {
	ev.Host = s.host
	subject, err := StatusSubject(s.host, Kind(ev.GetKind()), ev.GetId())
	if err != nil {
		return 0, err
	}
	return s.publish(ctx, subject, ev)
}

// Heartbeat stores one heartbeat.
func (s *StatusSink) Heartbeat(ctx context.Context, hb *nsv1.AgentHeartbeat) error {
	hb.Host = s.host
	subject, err := AgentSubject(s.host)
	if err != nil {
		return err
	}
	_, err = s.publish(ctx, subject, hb)
	return err
}

func (s *StatusSink) publish(ctx context.Context, subject string, m proto.Message) (uint64, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("marshal status for %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(StatusStream))
	if err != nil {
		return 0, fmt.Errorf("publish status %s: %w", subject, err)
	}
	return ack.Sequence, nil
}

// DecodeStatus parses a status event body.
func DecodeStatus(data []byte) (*nsv1.StatusEvent, error) {
	ev := &nsv1.StatusEvent{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("undecodable status event: %w", err)
	}
	return ev, nil
}

// DecodeHeartbeat parses a heartbeat body.
func DecodeHeartbeat(data []byte) (*nsv1.AgentHeartbeat, error) {
	hb := &nsv1.AgentHeartbeat{}
	if err := proto.Unmarshal(data, hb); err != nil {
		return nil, fmt.Errorf("undecodable heartbeat: %w", err)
	}
	return hb, nil
}

// LoadStatus returns the latest status of every object matching host and kind (empty
// means any), ordered by host, kind and id.
func LoadStatus(ctx context.Context, js jetstream.JetStream, host string, kind Kind) ([]*nsv1.StatusEvent, error) {
	msgs, err := LoadLast(ctx, js, StatusStream, StatusFilter(host, kind))
	if err != nil {
		return nil, fmt.Errorf("load status: %w", err)
	}
	out := make([]*nsv1.StatusEvent, 0, len(msgs))
	for _, m := range msgs {
		ev, err := DecodeStatus(m.Data)
		if err != nil {
			continue // a foreign or corrupt message on a status subject is not a status
		}
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Id < b.Id
	})
	return out, nil
}

// LoadHeartbeats returns the latest heartbeat of every agent.
func LoadHeartbeats(ctx context.Context, js jetstream.JetStream) ([]*nsv1.AgentHeartbeat, error) {
	msgs, err := LoadLast(ctx, js, StatusStream, AgentFilter)
	if err != nil {
		return nil, fmt.Errorf("load heartbeats: %w", err)
	}
	var out []*nsv1.AgentHeartbeat
	for _, m := range msgs {
		if hb, err := DecodeHeartbeat(m.Data); err == nil {
			out = append(out, hb)
		}
	}
	return out, nil
}

// WaitOptions configures Wait.
type WaitOptions struct {
	Kind  Kind
	ID    string
	Phase nsv1.Phase
	// Host restricts to one agent; empty accepts any host.
	Host string
	// MinDesiredSeq: only a status converged to at least this desired sequence counts (0:
	// any). Wait fills it with the object's current desired sequence when left 0.
	MinDesiredSeq uint64
	// AnyVersion accepts a status for an older desired version too.
	AnyVersion bool
}

// ErrWaitTimeout is returned by Wait when ctx ends first; the last status seen is wrapped.
var ErrWaitTimeout = errors.New("timed out")

// Wait blocks until a status of the object reaches the phase for its current desired
// version (so a wait right after apply does not return on the previous version's status).
// It returns that status event.
func Wait(ctx context.Context, js jetstream.JetStream, o WaitOptions) (*nsv1.StatusEvent, error) {
	if o.MinDesiredSeq == 0 && !o.AnyVersion {
		filter, err := ObjectFilter(o.Kind, o.ID)
		if err != nil {
			return nil, err
		}
		state, err := LoadState(ctx, js, filter)
		if err != nil {
			return nil, err
		}
		for _, r := range state.Find(o.Kind, o.ID) {
			o.MinDesiredSeq = max(o.MinDesiredSeq, r.Seq)
		}
	}
	if err := CheckToken(string(o.Kind)+" id", o.ID); err != nil {
		return nil, err
	}
	host := "*"
	if o.Host != "" {
		host = o.Host
	}
	filter := StatusRoot + "." + host + "." + string(o.Kind) + "." + o.ID
	waitCtx, found := context.WithCancel(ctx)
	defer found()
	var match, last *nsv1.StatusEvent
	err := Follow(waitCtx, js, StatusStream, FollowOptions{Filters: []string{filter}}, func(m Msg) {
		ev, err := DecodeStatus(m.Data)
		if err != nil || match != nil {
			return
		}
		last = ev
		if ev.GetPhase() == o.Phase && ev.GetDesiredSeq() >= o.MinDesiredSeq {
			match = ev
			found()
		}
	})
	if match != nil {
		return match, nil
	}
	if err != nil {
		return nil, err
	}
	if last != nil {
		return last, fmt.Errorf("%s %s did not reach %s (last: %s %q on %s): %w", o.Kind, o.ID, PhaseName(o.Phase),
			PhaseName(last.GetPhase()), last.GetReason(), last.GetHost(), ErrWaitTimeout)
	}
	return nil, fmt.Errorf("%s %s did not reach %s (no status yet): %w", o.Kind, o.ID, PhaseName(o.Phase), ErrWaitTimeout)
}

// Age is how long ago a status or heartbeat time was, for display.
func Age(t time.Time, now time.Time) time.Duration { return now.Sub(t).Round(time.Second) }
