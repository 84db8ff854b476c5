package demo

import (
	"strings"
	"testing"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/topology"
)

func TestSampleTopologyIsValid(t *testing.T) {
	s := SampleTopology("nsdemo")
	if err := topology.Validate(s.Topology, nil); err != nil {
		t.Fatalf("sample topology: %v", err)
	}
	other := SampleTopology("nsdemo2")
	if s.Topology.Networks[0].Id == other.Topology.Networks[0].Id || s.VIPPortID == other.VIPPortID {
		t.Fatal("two prefixes share ids")
	}
	if again := SampleTopology("nsdemo"); again.Topology.Loadbalancers[0].Id != s.Topology.Loadbalancers[0].Id {
		t.Fatal("ids are not stable for a prefix")
	}
	for _, vm := range s.VMs {
		if !strings.HasPrefix(vm.Netns, "nsdemo-") {
			t.Errorf("VM %s namespace %q lacks the prefix: the cleanup would miss it", vm.Name, vm.Netns)
		}
	}
}

// fixture is the sample topology "published" at sequences 1..n, with its tracker.
type fixture struct {
	s  Sample
	tr *Tracker
	sq map[string]uint64
}

func newFixture() *fixture {
	s := SampleTopology("nsdemo")
	var plan []*streams.Change
	sq := map[string]uint64{}
	for i, spec := range streams.Specs(s.Topology) {
		addr := streams.DesiredAddress{Kind: streams.KindOfSpec(spec), ID: spec.GetId(), Host: streams.HostOfSpec(spec)}
		plan = append(plan, &streams.Change{Address: addr, Seq: uint64(i + 1)})
		sq[spec.GetId()] = uint64(i + 1)
	}
	return &fixture{s: s, tr: NewTracker(s.Topology, plan), sq: sq}
}

func (f *fixture) status(kind streams.Kind, id, host string, phase nsv1.Phase, reason string) *Target {
	return f.tr.Observe(&nsv1.StatusEvent{Kind: string(kind), Id: id, Host: host, Phase: phase, Reason: reason, DesiredSeq: f.sq[id]})
}

const lbNotBuilt = "loadbalancer objects are " + NotBuiltReason

// converge reports every object the way today's agent does: ports and networks ACTIVE, the
// VIP port waiting for its device, taps ACTIVE, the load balancer not built.
func (f *fixture) converge() {
	for _, p := range f.s.Topology.Ports {
		if p.Id == f.s.VIPPortID {
			f.status(streams.KindPort, p.Id, p.Host, nsv1.Phase_PHASE_BUILD, "waiting for device tapxxxx")
			continue
		}
		f.status(streams.KindPort, p.Id, p.Host, nsv1.Phase_PHASE_ACTIVE, "plugged")
	}
	for _, h := range []string{HostA, HostB} {
		f.status(streams.KindNetwork, f.s.Topology.Networks[0].Id, h, nsv1.Phase_PHASE_ACTIVE, "bridge ready")
	}
	lb := f.s.Topology.Loadbalancers[0]
	f.status(streams.KindLoadBalancer, lb.Id, lb.Host, nsv1.Phase_PHASE_PENDING, lbNotBuilt)
	ts, tf := f.s.Topology.TapServices[0], f.s.Topology.TapFlows[0]
	f.status(streams.KindTapService, ts.Id, ts.Host, nsv1.Phase_PHASE_ACTIVE, "receiving")
	f.status(streams.KindTapFlow, tf.Id, tf.Host, nsv1.Phase_PHASE_ACTIVE, "mirroring")
}

func TestTrackerSettlesBuiltAndNotBuiltKinds(t *testing.T) {
	f := newFixture()
	if f.tr.Done() {
		t.Fatal("done before any status")
	}
	f.converge()
	if !f.tr.Done() {
		for _, tg := range f.tr.Targets() {
			ok, why := f.tr.Settled(tg)
			t.Logf("%s %s %s: %v %s", tg.Kind, tg.Name, tg.Host, ok, why)
		}
		t.Fatal("not done after everything converged")
	}
	settled, notBuilt, total := f.tr.Counts()
	// 5 ports, the network on 2 hosts, the load balancer and 2 taps; the LB and its VIP port
	// are settled without being ACTIVE.
	if settled != 10 || notBuilt != 2 || total != 10 {
		t.Fatalf("counts %d settled, %d not built, %d in all; want 10, 2, 10", settled, notBuilt, total)
	}
}

func TestTrackerWaitsForBuiltKinds(t *testing.T) {
	f := newFixture()
	f.converge()
	tf := f.s.Topology.TapFlows[0]
	// A kind that is built is waited for until ACTIVE.
	f.status(streams.KindTapFlow, tf.Id, tf.Host, nsv1.Phase_PHASE_BUILD, "waiting for tap service")
	if f.tr.Done() {
		t.Fatal("done while a built kind is in BUILD")
	}
	f.status(streams.KindTapFlow, tf.Id, tf.Host, nsv1.Phase_PHASE_ACTIVE, "mirroring")
	if !f.tr.Done() {
		t.Fatal("not done after the tap flow turned ACTIVE")
	}
	// Once load balancers are built, the VIP port must be plugged too.
	lb := f.s.Topology.Loadbalancers[0]
	f.status(streams.KindLoadBalancer, lb.Id, lb.Host, nsv1.Phase_PHASE_ACTIVE, "haproxy running")
	if f.tr.Done() {
		t.Fatal("done while the VIP port of a built load balancer waits for its device")
	}
	// A status that appears for another of the topology's objects becomes a target.
	sg := f.s.Topology.SecurityGroups[0]
	f.status(streams.KindPort, f.s.VIPPortID, HostA, nsv1.Phase_PHASE_ACTIVE, "plugged")
	if !f.tr.Done() {
		t.Fatal("not done with everything ACTIVE")
	}
	if f.status(streams.KindSecGroup, sg.Id, HostB, nsv1.Phase_PHASE_ERROR, "nft failed") == nil || f.tr.Done() {
		t.Fatal("an ERROR status of the security group does not hold the demo")
	}
	if f.tr.Observe(&nsv1.StatusEvent{Kind: "port", Id: "00000000-0000-4000-8000-000000000000", Host: HostA}) != nil {
		t.Fatal("a status of an object outside the topology became a target")
	}
}

func TestTrackerIgnoresOlderVersions(t *testing.T) {
	f := newFixture()
	web1 := f.s.VMs[0]
	tg := f.tr.Observe(&nsv1.StatusEvent{Kind: "port", Id: web1.PortID, Host: web1.Host, Phase: nsv1.Phase_PHASE_ACTIVE,
		DesiredSeq: f.sq[web1.PortID] - 1})
	if ok, why := f.tr.Settled(tg); ok || !strings.Contains(why, "older version") {
		t.Fatalf("ACTIVE for an older version: settled %v (%s)", ok, why)
	}
	if f.status(streams.KindPort, web1.PortID, web1.Host, nsv1.Phase_PHASE_ACTIVE, "plugged") == nil {
		t.Fatal("the current version's status changed nothing")
	}
	if f.status(streams.KindPort, web1.PortID, web1.Host, nsv1.Phase_PHASE_ACTIVE, "plugged") != nil {
		t.Fatal("a repeated status counts as a change")
	}
}
