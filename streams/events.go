package streams

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Message headers netsource sets besides JetStream's own.
const (
	HeaderChange = "Ns-Change" // created | updated | deleted
	HeaderKind   = "Ns-Kind"   // the aggregate kind
)

// Spec is the union of the aggregate messages a DesiredEvent can carry.
type Spec interface {
	proto.Message
	GetId() string
}

// NewEvent wraps spec into a DesiredEvent with a fresh event id and the current time.
func NewEvent(change nsv1.ChangeKind, spec Spec, publisher string) *nsv1.DesiredEvent {
	ev := &nsv1.DesiredEvent{
		EventId:   uuid.NewString(),
		Change:    change,
		Time:      timestamppb.Now(),
		Publisher: publisher,
	}
	switch s := spec.(type) {
	case *nsv1.Network:
		ev.Spec = &nsv1.DesiredEvent_Network{Network: s}
	case *nsv1.SecurityGroup:
		ev.Spec = &nsv1.DesiredEvent_SecurityGroup{SecurityGroup: s}
	case *nsv1.Port:
		ev.Spec = &nsv1.DesiredEvent_Port{Port: s}
	case *nsv1.TapService:
		ev.Spec = &nsv1.DesiredEvent_TapService{TapService: s}
	case *nsv1.TapFlow:
		ev.Spec = &nsv1.DesiredEvent_TapFlow{TapFlow: s}
	case *nsv1.Trunk:
		ev.Spec = &nsv1.DesiredEvent_Trunk{Trunk: s}
	case *nsv1.LoadBalancer:
		ev.Spec = &nsv1.DesiredEvent_Loadbalancer{Loadbalancer: s}
	default:
		panic(fmt.Sprintf("streams.NewEvent: %T is not an aggregate", spec))
	}
	return ev
}

// SpecOf returns the aggregate an event carries, or nil.
func SpecOf(ev *nsv1.DesiredEvent) Spec {
	switch s := ev.GetSpec().(type) {
	case *nsv1.DesiredEvent_Network:
		return s.Network
	case *nsv1.DesiredEvent_SecurityGroup:
		return s.SecurityGroup
	case *nsv1.DesiredEvent_Port:
		return s.Port
	case *nsv1.DesiredEvent_TapService:
		return s.TapService
	case *nsv1.DesiredEvent_TapFlow:
		return s.TapFlow
	case *nsv1.DesiredEvent_Trunk:
		return s.Trunk
	case *nsv1.DesiredEvent_Loadbalancer:
		return s.Loadbalancer
	}
	return nil
}

// KindOfSpec returns the kind of an aggregate message.
func KindOfSpec(spec Spec) Kind {
	switch spec.(type) {
	case *nsv1.Network:
		return KindNetwork
	case *nsv1.SecurityGroup:
		return KindSecGroup
	case *nsv1.Port:
		return KindPort
	case *nsv1.TapService:
		return KindTapService
	case *nsv1.TapFlow:
		return KindTapFlow
	case *nsv1.Trunk:
		return KindTrunk
	case *nsv1.LoadBalancer:
		return KindLoadBalancer
	}
	return ""
}

// HostOfSpec returns the host an aggregate is bound to ("" for shared kinds).
func HostOfSpec(spec Spec) string {
	if h, ok := spec.(interface{ GetHost() string }); ok {
		return h.GetHost()
	}
	return ""
}

// AddressOf returns the kind, host and id an event is about.
func AddressOf(ev *nsv1.DesiredEvent) (DesiredAddress, error) {
	spec := SpecOf(ev)
	if spec == nil {
		return DesiredAddress{}, errors.New("event carries no aggregate")
	}
	kind := KindOfSpec(spec)
	addr := DesiredAddress{Kind: kind, ID: spec.GetId()}
	if kind.HostScoped() {
		addr.Host = HostOfSpec(spec)
	}
	return addr, nil
}

// SubjectOf returns the subject an event belongs on.
func SubjectOf(ev *nsv1.DesiredEvent) (string, error) {
	a, err := AddressOf(ev)
	if err != nil {
		return "", err
	}
	return DesiredSubject(a.Kind, a.Host, a.ID)
}

// ChangeName is the lower-case name of a change kind (header value, CLI output).
func ChangeName(c nsv1.ChangeKind) string {
	switch c {
	case nsv1.ChangeKind_CHANGE_KIND_CREATED:
		return "created"
	case nsv1.ChangeKind_CHANGE_KIND_UPDATED:
		return "updated"
	case nsv1.ChangeKind_CHANGE_KIND_DELETED:
		return "deleted"
	}
	return "unspecified"
}

// EncodeDesired turns an event into a message for its subject, with the dedup id and the
// informational headers set.
func EncodeDesired(ev *nsv1.DesiredEvent) (*nats.Msg, error) {
	subject, err := SubjectOf(ev)
	if err != nil {
		return nil, err
	}
	if ev.GetEventId() == "" {
		return nil, errors.New("event has no event_id")
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", ev.GetEventId(), err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(nats.MsgIdHdr, ev.GetEventId())
	msg.Header.Set(HeaderChange, ChangeName(ev.GetChange()))
	msg.Header.Set(HeaderKind, string(KindOfSpec(SpecOf(ev))))
	return msg, nil
}

// DecodeDesired parses a desired message body and checks that it is whole: one aggregate,
// a change kind, an event id.
func DecodeDesired(data []byte) (*nsv1.DesiredEvent, error) {
	ev := &nsv1.DesiredEvent{}
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("undecodable desired event: %w", err)
	}
	if SpecOf(ev) == nil {
		return nil, errors.New("desired event carries no aggregate")
	}
	if ev.GetChange() == nsv1.ChangeKind_CHANGE_KIND_UNSPECIFIED {
		return nil, errors.New("desired event has no change kind")
	}
	return ev, nil
}

// EventTime returns the event's time, or zero.
func EventTime(ev *nsv1.DesiredEvent) time.Time {
	if ev.GetTime() == nil {
		return time.Time{}
	}
	return ev.GetTime().AsTime()
}
