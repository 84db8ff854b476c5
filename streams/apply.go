package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/topology"
)

// Action is what applying a topology does to one object.
type Action string

// Actions of a plan.
const (
	ActionCreate    Action = "created"
	ActionUpdate    Action = "updated"
	ActionUnchanged Action = "unchanged"
	ActionDelete    Action = "deleted"
)

// Change is one step of a plan, and after publishing its outcome.
type Change struct {
	Address  DesiredAddress
	Subject  string
	Action   Action
	Event    *nsv1.DesiredEvent // nil when unchanged
	Expected uint64             // last sequence the change was planned against
	Seq      uint64             // sequence stored (or the current one when unchanged)
	Err      error
}

// Plan validates a whole topology against the current desired state and returns the
// changes that would make the stream say what t says. Nothing is published. An invalid
// topology returns topology.Errors listing every problem.
func (p *Publisher) Plan(ctx context.Context, t *nsv1.Topology) ([]*Change, error) {
	state, err := LoadState(ctx, p.js)
	if err != nil {
		return nil, err
	}
	return p.PlanAgainst(state, t)
}

// PlanAgainst is Plan with an already loaded state.
func (p *Publisher) PlanAgainst(state *State, t *nsv1.Topology) ([]*Change, error) {
	if err := topology.Validate(t, state.Topology()); err != nil {
		return nil, err
	}
	if err := checkDeviceNames(state, t); err != nil {
		return nil, err
	}
	var plan []*Change
	for _, spec := range Specs(t) {
		kind := KindOfSpec(spec)
		addr := DesiredAddress{Kind: kind, ID: spec.GetId()}
		if kind.HostScoped() {
			addr.Host = HostOfSpec(spec)
		}
		subject, err := DesiredSubject(addr.Kind, addr.Host, addr.ID)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, addr.ID, err)
		}
		// An object that moved hosts: a tombstone on the old host's subject first.
		for _, r := range state.Find(kind, addr.ID) {
			if r.Live() && r.Subject != subject {
				plan = append(plan, &Change{Address: r.Address, Subject: r.Subject, Action: ActionDelete,
					Expected: r.Seq, Event: NewEvent(nsv1.ChangeKind_CHANGE_KIND_DELETED, SpecOf(r.Event), p.name)})
			}
		}
		c := &Change{Address: addr, Subject: subject}
		existing := state.Get(subject)
		switch {
		case existing == nil:
			c.Action = ActionCreate
		case !existing.Live():
			c.Action, c.Expected = ActionCreate, existing.Seq
		case proto.Equal(SpecOf(existing.Event), spec):
			c.Action, c.Expected, c.Seq = ActionUnchanged, existing.Seq, existing.Seq
		default:
			c.Action, c.Expected = ActionUpdate, existing.Seq
		}
		if c.Action != ActionUnchanged {
			change := nsv1.ChangeKind_CHANGE_KIND_CREATED
			if c.Action == ActionUpdate {
				change = nsv1.ChangeKind_CHANGE_KIND_UPDATED
			}
			c.Event = NewEvent(change, spec, p.name)
		}
		plan = append(plan, c)
	}
	return plan, nil
}

// Publish executes a plan: stage by stage in Kinds order (tombstones of moved objects
// before the objects' new subjects), each stage with up to Concurrency writers on disjoint
// subjects. Every change records its outcome; the joined errors are returned.
func (p *Publisher) Publish(ctx context.Context, plan []*Change) error {
	for _, kind := range Kinds {
		for _, deletes := range []bool{true, false} {
			var stage []*Change
			for _, c := range plan {
				if c.Address.Kind == kind && (c.Action == ActionDelete) == deletes && c.Event != nil {
					stage = append(stage, c)
				}
			}
			p.publishStage(ctx, stage)
		}
	}
	var errs []error
	for _, c := range plan {
		if c.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", c.Address.Kind, c.Address.ID, c.Err))
		}
	}
	return errors.Join(errs...)
}

// Concurrency is how many publishes apply keeps in flight (on distinct subjects).
const Concurrency = 16

func (p *Publisher) publishStage(ctx context.Context, stage []*Change) {
	work := make(chan *Change)
	var wg sync.WaitGroup
	for range min(Concurrency, len(stage)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				ack, err := p.AppendDurable(ctx, c.Event, c.Expected)
				c.Seq, c.Err = ack.Seq, err
			}
		}()
	}
	for _, c := range stage {
		work <- c
	}
	close(work)
	wg.Wait()
}

// Apply validates t whole and publishes what changed. Nothing is published when t is
// invalid. The returned plan says what happened to each object.
func (p *Publisher) Apply(ctx context.Context, t *nsv1.Topology) ([]*Change, error) {
	plan, err := p.Plan(ctx, t)
	if err != nil {
		return nil, err
	}
	return plan, p.Publish(ctx, plan)
}

// ErrNotFound is returned when an object to delete has no live record.
var ErrNotFound = errors.New("not found")

// ErrInUse is returned when deleting an object others still refer to.
var ErrInUse = errors.New("in use")

// Delete publishes the tombstone of one object (on every host it is live on). It refuses
// to delete a network, security group or port that live objects still refer to.
func (p *Publisher) Delete(ctx context.Context, kind Kind, id string) ([]*Change, error) {
	state, err := LoadState(ctx, p.js)
	if err != nil {
		return nil, err
	}
	var plan []*Change
	for _, r := range state.Find(kind, id) {
		if r.Live() {
			plan = append(plan, &Change{Address: r.Address, Subject: r.Subject, Action: ActionDelete, Expected: r.Seq,
				Event: NewEvent(nsv1.ChangeKind_CHANGE_KIND_DELETED, SpecOf(r.Event), p.name)})
		}
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("delete %s %s: %w", kind, id, ErrNotFound)
	}
	if users := Users(state.Topology(), kind, id); len(users) > 0 {
		return nil, fmt.Errorf("delete %s %s: %w by %v; delete those first", kind, id, ErrInUse, users)
	}
	return plan, p.Publish(ctx, plan)
}

// Users lists the live objects of t that refer to the object (kind, id), as "kind id".
func Users(t *nsv1.Topology, kind Kind, id string) []string {
	var users []string
	add := func(k Kind, uid string) { users = append(users, string(k)+" "+uid) }
	switch kind {
	case KindNetwork:
		for _, p := range t.GetPorts() {
			if p.GetNetworkId() == id {
				add(KindPort, p.GetId())
			}
		}
		for _, lb := range t.GetLoadbalancers() {
			if lb.GetVipNetworkId() == id {
				add(KindLoadBalancer, lb.GetId())
			}
		}
	case KindSecGroup:
		for _, p := range t.GetPorts() {
			for _, g := range p.GetSecurityGroups() {
				if g == id {
					add(KindPort, p.GetId())
				}
			}
		}
		for _, g := range t.GetSecurityGroups() {
			for _, r := range g.GetRules() {
				if r.GetRemoteGroupId() == id && g.GetId() != id {
					add(KindSecGroup, g.GetId())
					break
				}
			}
		}
	case KindPort:
		for _, s := range t.GetTapServices() {
			if s.GetPortId() == id {
				add(KindTapService, s.GetId())
			}
		}
		for _, f := range t.GetTapFlows() {
			if f.GetSourcePort() == id {
				add(KindTapFlow, f.GetId())
			}
		}
		for _, tr := range t.GetTrunks() {
			if tr.GetPortId() == id {
				add(KindTrunk, tr.GetId())
			}
			for _, sp := range tr.GetSubPorts() {
				if sp.GetPortId() == id {
					add(KindTrunk, tr.GetId())
				}
			}
		}
	case KindTapService:
		for _, f := range t.GetTapFlows() {
			if f.GetTapServiceId() == id {
				add(KindTapFlow, f.GetId())
			}
		}
	}
	return users
}

// checkDeviceNames rejects two ports on one host whose ids share their first 11 characters:
// their devices (tap + id[:11], as Neutron names them) would be the same Linux interface.
func checkDeviceNames(state *State, t *nsv1.Topology) error {
	type owner struct{ id, where string }
	byHost := map[string]map[string]owner{}
	add := func(p *nsv1.Port, where string) *topology.FieldError {
		names := byHost[p.GetHost()]
		if names == nil {
			names = map[string]owner{}
			byHost[p.GetHost()] = names
		}
		dev := links.TapName(p.GetId())
		if o, ok := names[dev]; ok && o.id != p.GetId() {
			return &topology.FieldError{Path: where, Kind: string(KindPort), ID: p.GetId(),
				Msg: fmt.Sprintf("device name %s on host %s is also port %s's (%s); Linux device names keep only the first 11 characters of the id",
					dev, p.GetHost(), o.id, o.where)}
		}
		names[dev] = owner{id: p.GetId(), where: where}
		return nil
	}
	inFile := map[string]bool{}
	for _, p := range t.GetPorts() {
		inFile[p.GetId()] = true
	}
	for _, r := range state.Live(KindPort) {
		if p := SpecOf(r.Event).(*nsv1.Port); !inFile[p.GetId()] {
			add(p, "the stream") // collisions already stored are not this file's fault
		}
	}
	var errs topology.Errors
	for i, p := range t.GetPorts() {
		if fe := add(p, fmt.Sprintf("ports[%d].id", i)); fe != nil {
			errs = append(errs, fe)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &errs
}
