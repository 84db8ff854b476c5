package streams

import (
	"context"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Record is the last message of one desired subject.
type Record struct {
	Msg
	Address DesiredAddress
	Event   *nsv1.DesiredEvent // nil when the body could not be decoded (see Err)
	Err     error
}

// Live reports whether the record holds an existing object (not a tombstone, decodable).
func (r *Record) Live() bool {
	return r.Event != nil && r.Event.GetChange() != nsv1.ChangeKind_CHANGE_KIND_DELETED
}

// State is the desired state: the last message of each desired subject.
type State struct {
	// LastSeq is the highest sequence among the records.
	LastSeq uint64
	records map[string]*Record // by subject
}

// NewState builds a state from last-per-subject messages.
func NewState(msgs []Msg) *State {
	s := &State{records: make(map[string]*Record, len(msgs))}
	for _, m := range msgs {
		s.Add(m)
	}
	return s
}

// Add folds one message into the state (a later message replaces an earlier one).
func (s *State) Add(m Msg) *Record {
	r := &Record{Msg: m}
	r.Address, r.Err = ParseDesiredSubject(m.Subject)
	if r.Err == nil {
		r.Event, r.Err = DecodeDesired(m.Data)
	}
	if old, ok := s.records[m.Subject]; !ok || old.Seq < m.Seq {
		s.records[m.Subject] = r
	}
	if m.Seq > s.LastSeq {
		s.LastSeq = m.Seq
	}
	return r
}

// LoadState reads the desired state of the subjects matching filters (all when none).
func LoadState(ctx context.Context, js jetstream.JetStream, filters ...string) (*State, error) {
	if len(filters) == 0 {
		filters = []string{DesiredRoot + ".>"}
	}
	msgs, err := LoadLast(ctx, js, DesiredStream, filters...)
	if err != nil {
		return nil, fmt.Errorf("load desired state: %w", err)
	}
	return NewState(msgs), nil
}

// Get returns the record of a subject, or nil.
func (s *State) Get(subject string) *Record { return s.records[subject] }

// Records returns every record in subject order.
func (s *State) Records() []*Record {
	out := make([]*Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Subject < out[j].Subject })
	return out
}

// Live returns the live records of one kind ("" for all), in subject order.
func (s *State) Live(kind Kind) []*Record {
	var out []*Record
	for _, r := range s.Records() {
		if r.Live() && (kind == "" || r.Address.Kind == kind) {
			out = append(out, r)
		}
	}
	return out
}

// Find returns the records of one object on any host (a host move leaves a tombstone on the
// old host's subject), live ones first.
func (s *State) Find(kind Kind, id string) []*Record {
	var live, dead []*Record
	for _, r := range s.Records() {
		if r.Address.Kind != kind || r.Address.ID != id {
			continue
		}
		if r.Live() {
			live = append(live, r)
		} else {
			dead = append(dead, r)
		}
	}
	return append(live, dead...)
}

// Topology returns the live objects as a topology (what `netsource get` and apply's
// reference checks see).
func (s *State) Topology() *nsv1.Topology {
	t := &nsv1.Topology{}
	for _, r := range s.Live("") {
		AddToTopology(t, SpecOf(r.Event))
	}
	return t
}

// AddToTopology appends an aggregate to the matching list of t.
func AddToTopology(t *nsv1.Topology, spec Spec) {
	switch v := spec.(type) {
	case *nsv1.Network:
		t.Networks = append(t.Networks, v)
	case *nsv1.SecurityGroup:
		t.SecurityGroups = append(t.SecurityGroups, v)
	case *nsv1.Port:
		t.Ports = append(t.Ports, v)
	case *nsv1.TapService:
		t.TapServices = append(t.TapServices, v)
	case *nsv1.TapFlow:
		t.TapFlows = append(t.TapFlows, v)
	case *nsv1.Trunk:
		t.Trunks = append(t.Trunks, v)
	case *nsv1.LoadBalancer:
		t.Loadbalancers = append(t.Loadbalancers, v)
	}
}

// Specs lists the aggregates of a topology with their kinds, in publishing order.
func Specs(t *nsv1.Topology) []Spec {
	var out []Spec
	for _, n := range t.GetNetworks() {
		out = append(out, n)
	}
	for _, g := range t.GetSecurityGroups() {
		out = append(out, g)
	}
	for _, p := range t.GetPorts() {
		out = append(out, p)
	}
	for _, tr := range t.GetTrunks() {
		out = append(out, tr)
	}
	for _, s := range t.GetTapServices() {
		out = append(out, s)
	}
	for _, f := range t.GetTapFlows() {
		out = append(out, f)
	}
	for _, lb := range t.GetLoadbalancers() {
		out = append(out, lb)
	}
	return out
}
