package actors_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/firewall"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

const (
	netB    = "7b1f5c9f-2d8e-4b66-8c40-3a2a5d2f1b02"
	subnetB = "1d6e2f30-4b5c-4d6e-9f70-8b9cad0e1f30"
	trunkID = "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a01"
)

func networkB() *nsv1.Network {
	return &nsv1.Network{Id: netB, NetworkType: "vxlan", SegmentationId: 1002, Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: subnetB, Cidr: "198.51.100.0/24", GatewayIp: "198.51.100.1"}}}
}

// subPort n is a port on network B, bound like a VM interface would be on its own; the
// trunk's parent decides where it ends up.
func subPort(n int) *nsv1.Port {
	p := port(n, "tap")
	p.NetworkId = netB
	p.FixedIps = []*nsv1.FixedIP{{SubnetId: subnetB, IpAddress: fmt.Sprintf("198.51.100.%d", 10+n)}}
	return p
}

func trunk(parent *nsv1.Port, subs map[int]*nsv1.Port) *nsv1.Trunk {
	tr := &nsv1.Trunk{Id: trunkID, PortId: parent.GetId(), Host: "hostA"}
	for vid := 100; vid < 4095; vid++ {
		if p, ok := subs[vid]; ok {
			tr.SubPorts = append(tr.SubPorts, &nsv1.SubPort{PortId: p.GetId(), SegmentationType: "vlan", SegmentationId: uint32(vid)})
		}
	}
	return tr
}

// trunkHost publishes two networks, a veth-bound parent on A (in netns vm1) and sub-ports
// 2 (VLAN 101) and 3 (VLAN 102) on B, and the trunk.
func trunkHost(t *testing.T, fake *links.Fake) (*harness, *nsv1.Port, *nsv1.Port, *nsv1.Port) {
	h := newHarness(t, fake, fake)
	parent, s101, s102 := port(1, "veth"), subPort(2), subPort(3)
	for _, spec := range []streams.Spec{network(), networkB(), parent, s101, s102, trunk(parent, map[int]*nsv1.Port{101: s101, 102: s102})} {
		h.publish(created, spec)
	}
	h.root.Send(h.host, &actors.CaughtUp{})
	return h, parent, s101, s102
}

func dumpLine(t *testing.T, fake *links.Fake, device string) string {
	t.Helper()
	for _, l := range strings.Split(fake.Dump(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == device {
			return l
		}
	}
	return ""
}

func TestTrunkCarriesSubPortsOnTheParent(t *testing.T) {
	fake := links.NewFake()
	h, parent, s101, s102 := trunkHost(t, fake)
	ev := h.waitPhase(streams.KindTrunk, trunkID, nsv1.Phase_PHASE_ACTIVE)
	if ev.GetDetails()["vlan.101"] != s101.GetId()+" ACTIVE" || ev.GetDetails()["vlan.102"] != s102.GetId()+" ACTIVE" {
		t.Errorf("trunk details %v", ev.GetDetails())
	}
	sub := h.waitPhase(streams.KindPort, s101.GetId(), nsv1.Phase_PHASE_ACTIVE)
	if d := sub.GetDetails(); d["trunk"] != trunkID || d["vlan"] != "101" || d["parent"] != parent.GetId() {
		t.Errorf("sub-port details %v", d)
	}
	if sub.GetPortL2().GetNetworkId() != netB || sub.GetPortL2().GetMacAddress() != s101.GetMacAddress() {
		t.Errorf("sub-port l2 %v: other agents must learn it like any port", sub.GetPortL2())
	}
	// The sub-port's device is the 802.1Q sub-interface of the parent's device in B's
	// bridge; the VM gets the VLAN interface with the sub-port's MAC and address and no
	// default route of its own.
	want := fmt.Sprintf("vlan %s link %s id 101 master %s mtu 1450 up peer %s@vm1 mac %s mtu 1450 up addrs 198.51.100.12/24",
		links.TapName(s101.GetId()), links.TapName(parent.GetId()), links.BridgeName(netB), links.PeerName(s101.GetId()), s101.GetMacAddress())
	if got := dumpLine(t, fake, links.TapName(s101.GetId())); got != want {
		t.Errorf("sub-port device:\n got %s\nwant %s", got, want)
	}

	// Removing a sub-port touches only that sub-port.
	parentLine, otherLine, before := dumpLine(t, fake, links.TapName(parent.GetId())), dumpLine(t, fake, links.TapName(s101.GetId())), fake.Mutations()
	seq := h.publish(updated, trunk(parent, map[int]*nsv1.Port{101: s101}))
	waitFor(t, func() bool { return dumpLine(t, fake, links.TapName(s102.GetId())) == "" }, "VLAN 102's device removed")
	ev = h.waitTrunk(seq, nsv1.Phase_PHASE_ACTIVE)
	if _, ok := ev.GetDetails()["vlan.102"]; ok {
		t.Errorf("removed sub-port still listed: %v", ev.GetDetails())
	}
	if dumpLine(t, fake, links.TapName(parent.GetId())) != parentLine || dumpLine(t, fake, links.TapName(s101.GetId())) != otherLine {
		t.Errorf("removing VLAN 102 changed the parent or VLAN 101:\n%s", fake.Dump())
	}
	// A detached sub-port is a port of its own again: tap-bound, it waits for its device.
	h.waitPhaseReason(streams.KindPort, s102.GetId(), nsv1.Phase_PHASE_BUILD, "waiting for device")
	t.Logf("removing one sub-port: %d kernel writes", fake.Mutations()-before)

	// Adding it back re-plugs it; the parent is still untouched.
	seq = h.publish(updated, trunk(parent, map[int]*nsv1.Port{101: s101, 102: s102}))
	h.waitTrunk(seq, nsv1.Phase_PHASE_ACTIVE)
	if dumpLine(t, fake, links.TapName(parent.GetId())) != parentLine {
		t.Errorf("adding VLAN 102 changed the parent")
	}

	// Deleting the trunk detaches every sub-port; the parent stays.
	h.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, trunk(parent, map[int]*nsv1.Port{101: s101, 102: s102}))
	h.waitPhase(streams.KindTrunk, trunkID, nsv1.Phase_PHASE_DELETED)
	waitFor(t, func() bool {
		return dumpLine(t, fake, links.TapName(s101.GetId())) == "" && dumpLine(t, fake, links.TapName(s102.GetId())) == ""
	}, "sub-port devices removed with the trunk")
	if dumpLine(t, fake, links.TapName(parent.GetId())) != parentLine {
		t.Errorf("deleting the trunk changed the parent")
	}
}

func TestTrunkStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fake   func(f *links.Fake)
		edit   func(h *harness, parent, s101, s102 *nsv1.Port)
		phase  nsv1.Phase
		reason string
	}{
		{name: "no 802.1Q: every sub-port fails, the parent works", fake: func(f *links.Fake) { f.NoVLAN = true },
			phase: nsv1.Phase_PHASE_DEGRADED, reason: "2 of 2 sub-ports failed: VLAN 101 (port"},
		{name: "one sub-port fails",
			fake: func(f *links.Fake) {
				f.FailOn = func(op, name string) error {
					if name == links.TapName(subPort(3).GetId()) && op == links.OpCreate {
						return errors.New("injected")
					}
					return nil
				}
			},
			phase: nsv1.Phase_PHASE_DEGRADED, reason: "1 of 2 sub-ports failed: VLAN 102 (port " + subPort(3).GetId() + "):"},
		{name: "parent deleted",
			edit: func(h *harness, parent, _, _ *nsv1.Port) {
				h.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, parent)
			},
			phase: nsv1.Phase_PHASE_ERROR, reason: "parent port " + port(1, "veth").GetId() + ": deleted"},
		{name: "parent down",
			edit: func(h *harness, parent, _, _ *nsv1.Port) {
				down := false
				parent.AdminStateUp = &down
				h.publish(updated, parent)
			},
			phase: nsv1.Phase_PHASE_DOWN, reason: "parent port " + port(1, "veth").GetId() + " is down: admin_state_up is false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := links.NewFake()
			if tc.fake != nil {
				tc.fake(fake)
			}
			h, parent, s101, s102 := trunkHost(t, fake)
			if tc.edit != nil {
				h.waitPhase(streams.KindTrunk, trunkID, nsv1.Phase_PHASE_ACTIVE)
				tc.edit(h, parent, s101, s102)
			}
			ev := h.waitPhaseReason(streams.KindTrunk, trunkID, tc.phase, tc.reason)
			t.Logf("%s: %s", streams.PhaseName(ev.GetPhase()), ev.GetReason())
			if tc.fake != nil {
				h.waitPhase(streams.KindPort, parent.GetId(), nsv1.Phase_PHASE_ACTIVE)
			}
		})
	}
}

// A restarted agent whose trunk converged changes nothing and publishes nothing.
func TestTrunkRestartChangesNothing(t *testing.T) {
	fake := links.NewFake()
	h, _, _, _ := trunkHost(t, fake)
	h.waitPhase(streams.KindTrunk, trunkID, nsv1.Phase_PHASE_ACTIVE)
	last := map[string]*nsv1.StatusEvent{}
	for _, ev := range h.rep.Events() {
		last[ev.GetKind()+"/"+ev.GetId()] = ev
	}
	h.root.PoisonFuture(h.host).Wait()

	before := fake.Mutations()
	h2 := newSeededHarness(t, fake, fake, last)
	// The ports converge before the trunk's event arrives (it is last in the stream, and a
	// busy agent gets to it late): they first look like ports of their own.
	for _, m := range h.sent[:len(h.sent)-1] {
		h2.root.Send(h2.host, m)
	}
	time.Sleep(100 * time.Millisecond)
	h2.root.Send(h2.host, h.sent[len(h.sent)-1])
	h2.root.Send(h2.host, &actors.CaughtUp{})
	h2.root.Send(h2.host, &actors.Resync{})
	time.Sleep(300 * time.Millisecond)
	if n := fake.Mutations() - before; n != 0 {
		t.Errorf("restart made %d kernel writes", n)
	}
	if evs := h2.rep.Events(); len(evs) != 0 {
		t.Errorf("restart published %d statuses, first %v", len(evs), evs[0])
	}
}

// latestMatching waits until the latest status of an object satisfies ok.
func (h *harness) latestMatching(kind streams.Kind, id, what string, ok func(*nsv1.StatusEvent) bool) *nsv1.StatusEvent {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := h.rep.Latest(kind, id)
		if ev != nil && ok(ev) {
			return ev
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s %s: want %s, last status %v", kind, id, what, ev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitPhaseReason(kind streams.Kind, id string, phase nsv1.Phase, reasonPrefix string) *nsv1.StatusEvent {
	h.t.Helper()
	return h.latestMatching(kind, id, streams.PhaseName(phase)+" "+reasonPrefix+"...", func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == phase && strings.HasPrefix(ev.GetReason(), reasonPrefix)
	})
}

func (h *harness) waitTrunk(seq uint64, phase nsv1.Phase) *nsv1.StatusEvent {
	h.t.Helper()
	return h.latestMatching(streams.KindTrunk, trunkID, fmt.Sprintf("%s at seq %d", streams.PhaseName(phase), seq), func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == phase && ev.GetDesiredSeq() == seq
	})
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTrunkSubPortsGetSecurityGroups: a sub-port is a port of the host like any other, so
// the firewall marks its device (the 802.1Q sub-interface tap<sub-port id> on Linux
// bridges) and filters it with its own groups and anti-spoofing, not the parent's.
func TestTrunkSubPortsGetSecurityGroups(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	parent, sub := fwPort(1), fwPort(2, fwWeb)
	h.publish(created, fwNetwork())
	h.publish(created, webGroup(8080))
	h.publish(created, parent)
	h.publish(created, sub)
	h.publish(created, &nsv1.Trunk{Id: trunkID, PortId: parent.GetId(), Host: "hostA",
		SubPorts: []*nsv1.SubPort{{PortId: sub.GetId(), SegmentationType: "vlan", SegmentationId: 101}}})
	h.caughtUp()
	ev := h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 2, "")
	if !strings.Contains(ev.GetDetails()["port_ids"], sub.GetId()) || strings.Contains(ev.GetDetails()["port_ids"], parent.GetId()) {
		t.Errorf("group members %q: want the sub-port, not the parent", ev.GetDetails()["port_ids"])
	}
	dump := h.dump()
	for _, want := range []string{links.TapName(sub.GetId()), "fa:16:3e:00:00:02", "192.0.2.12", "tcp dport 8080"} {
		if !strings.Contains(dump, want) {
			t.Errorf("ruleset lacks %q for the sub-port:\n%s", want, dump)
		}
	}
}
