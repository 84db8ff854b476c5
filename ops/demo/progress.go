package demo

import (
	"fmt"
	"sort"
	"strings"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// NotBuiltReason is what an agent says of a kind it does not build yet (the supervisor's
// PENDING reason). The demo waits for everything else, so when a kind lands it waits for
// that kind too, with no change here.
const NotBuiltReason = "not built by this agent version yet"

// Target is one status the demo waits for: an object on a host.
type Target struct {
	Kind streams.Kind
	ID   string
	Host string
	Name string
	// Seq is the desired sequence the demo published; older statuses do not count.
	Seq  uint64
	Last *nsv1.StatusEvent
}

func (t *Target) key() string { return t.Host + "/" + string(t.Kind) + "/" + t.ID }

// Tracker folds status events into the demo's targets and says when all are settled.
//
// Expected up front: each host-scoped object on its host, each network on every host with
// ports on it. Any other status about an object of the topology (a security group, once an
// agent reports them) becomes a target when it arrives. A target is settled when it is
// ACTIVE for the published version, or PENDING because its kind is not built by the agent
// yet; a load balancer's VIP port is settled while it waits for a device that a load
// balancer not built yet would create.
type Tracker struct {
	targets map[string]*Target
	objects map[string]objectInfo // kind/id -> what the topology says
	vipLB   map[string]string     // VIP port id -> load balancer id
}

type objectInfo struct {
	name string
	seq  uint64
}

// NewTracker expects the statuses of topology t, published at the sequences of plan.
func NewTracker(t *nsv1.Topology, plan []*streams.Change) *Tracker {
	tr := &Tracker{targets: map[string]*Target{}, objects: map[string]objectInfo{}, vipLB: map[string]string{}}
	seqs := map[string]uint64{}
	for _, c := range plan {
		k := string(c.Address.Kind) + "/" + c.Address.ID
		seqs[k] = max(seqs[k], c.Seq)
	}
	portHosts := map[string]map[string]bool{} // network -> hosts with ports
	for _, spec := range streams.Specs(t) {
		kind := streams.KindOfSpec(spec)
		k := string(kind) + "/" + spec.GetId()
		name := ""
		if n, ok := spec.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		tr.objects[k] = objectInfo{name: name, seq: seqs[k]}
		if kind.HostScoped() {
			tr.add(kind, spec.GetId(), streams.HostOfSpec(spec))
		}
		if p, ok := spec.(*nsv1.Port); ok {
			if portHosts[p.GetNetworkId()] == nil {
				portHosts[p.GetNetworkId()] = map[string]bool{}
			}
			portHosts[p.GetNetworkId()][p.GetHost()] = true
		}
		if lb, ok := spec.(*nsv1.LoadBalancer); ok && lb.GetVipPortId() != "" {
			tr.vipLB[lb.GetVipPortId()] = lb.GetId()
		}
	}
	for netID, hosts := range portHosts {
		for h := range hosts {
			tr.add(streams.KindNetwork, netID, h)
		}
	}
	return tr
}

func (tr *Tracker) add(kind streams.Kind, id, host string) *Target {
	info := tr.objects[string(kind)+"/"+id]
	t := &Target{Kind: kind, ID: id, Host: host, Name: info.name, Seq: info.seq}
	tr.targets[t.key()] = t
	return t
}

// Observe takes one status event; it returns the target it changed, or nil when the event
// is about something else or changes nothing.
func (tr *Tracker) Observe(ev *nsv1.StatusEvent) *Target {
	key := ev.GetHost() + "/" + ev.GetKind() + "/" + ev.GetId()
	t := tr.targets[key]
	if t == nil {
		if _, ours := tr.objects[ev.GetKind()+"/"+ev.GetId()]; !ours {
			return nil
		}
		t = tr.add(streams.Kind(ev.GetKind()), ev.GetId(), ev.GetHost())
	}
	if t.Last != nil && t.Last.GetPhase() == ev.GetPhase() && t.Last.GetReason() == ev.GetReason() &&
		t.Last.GetDesiredSeq() == ev.GetDesiredSeq() {
		return nil
	}
	t.Last = ev
	return t
}

// Settled says whether t needs no more waiting, and in words why or why not.
func (tr *Tracker) Settled(t *Target) (bool, string) {
	ev := t.Last
	switch {
	case ev == nil:
		return false, "no status yet"
	case ev.GetDesiredSeq() < t.Seq:
		return false, fmt.Sprintf("%s for an older version", streams.PhaseName(ev.GetPhase()))
	case ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE:
		return true, "ACTIVE"
	case notBuilt(ev):
		return true, "not built by this agent version yet"
	}
	if lbID, ok := tr.vipLB[t.ID]; ok && t.Kind == streams.KindPort && ev.GetPhase() == nsv1.Phase_PHASE_BUILD {
		lb := tr.targets[t.Host+"/"+string(streams.KindLoadBalancer)+"/"+lbID]
		if lb != nil && lb.Last != nil && notBuilt(lb.Last) {
			return true, "VIP port: waits for its load balancer's device, and load balancers are not built yet"
		}
	}
	return false, streams.PhaseName(ev.GetPhase())
}

func notBuilt(ev *nsv1.StatusEvent) bool {
	return ev.GetPhase() == nsv1.Phase_PHASE_PENDING && strings.Contains(ev.GetReason(), NotBuiltReason)
}

// Done reports whether every target is settled.
func (tr *Tracker) Done() bool {
	for _, t := range tr.targets {
		if ok, _ := tr.Settled(t); !ok {
			return false
		}
	}
	return true
}

// Targets returns the targets ordered by kind (in publishing order), host and name.
func (tr *Tracker) Targets() []*Target {
	rank := map[streams.Kind]int{}
	for i, k := range streams.Kinds {
		rank[k] = i
	}
	out := make([]*Target, 0, len(tr.targets))
	for _, t := range tr.targets {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if rank[a.Kind] != rank[b.Kind] {
			return rank[a.Kind] < rank[b.Kind]
		}
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		return a.Name+a.ID < b.Name+b.ID
	})
	return out
}

// Counts returns how many targets are settled, and of those how many are not built yet.
func (tr *Tracker) Counts() (settled, notBuiltYet, total int) {
	for _, t := range tr.targets {
		if ok, why := tr.Settled(t); ok {
			settled++
			if why != "ACTIVE" {
				notBuiltYet++
			}
		}
	}
	return settled, notBuiltYet, len(tr.targets)
}
