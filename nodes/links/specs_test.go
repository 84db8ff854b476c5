package links

import (
	"context"
	"errors"
	"net"
	"testing"
)

// Fixtures shared by the Fake and the privileged tests. Addresses come from the ranges
// DESIGN.md reserves for tests: underlay 198.18.0.0/15, tenant 192.0.2.0/24.

const (
	netBlue  = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	netGreen = "7b1f5c9f-2d8e-4b66-8c40-3a2a5d2f1b02"
	portA    = "3d4e0000-1111-4222-8333-444455556666"
	portB    = "4e5f0000-1111-4222-8333-444455556666"
	portTap  = "5f600000-1111-4222-8333-444455556666"
)

var (
	underlayA = mustIP("198.18.0.1")
	underlayB = mustIP("198.18.0.2")
	mcastGrp  = mustIP("239.1.1.1")
)

func mustIP(s string) net.IP {
	ip := net.ParseIP(s)
	if ip == nil {
		panic("bad ip " + s)
	}
	return ip
}

// mustPrefix parses an interface address, keeping the host part: 192.0.2.11/24.
func mustPrefix(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

func localNet(id string) NetworkSpec {
	return NetworkSpec{ID: id, Bridge: BridgeName(id), MTU: 1450}
}

func flatNet(id, dev string) NetworkSpec {
	s := localNet(id)
	s.MTU = 1500
	s.Uplink = Uplink{Kind: UplinkPhysical, Device: dev}
	return s
}

func vlanNet(id, dev string, vid int) NetworkSpec {
	s := localNet(id)
	s.Uplink = Uplink{Kind: UplinkVLAN, Device: dev, VLANID: vid}
	return s
}

// vxlanNet is a VXLAN network; group nil means unicast (l2population) mode.
func vxlanNet(id string, vni uint32, local, group net.IP, dev string) NetworkSpec {
	s := localNet(id)
	s.Uplink = Uplink{Kind: UplinkVXLAN, VXLAN: VXLAN{
		VNI: vni, Local: local, Group: group, Dev: dev, Port: 4789, Learning: group != nil,
	}}
	return s
}

func vethPort(id string, network NetworkSpec, netns, mac, addr, gw string) PortSpec {
	return PortSpec{
		ID: id, Device: TapName(id), Bridge: network.Bridge, MTU: network.MTU, AdminUp: true,
		Binding: BindingVeth,
		Peer: VethPeer{
			Netns: netns, Name: PeerName(id), MAC: mustMAC(mac),
			Addresses: []*net.IPNet{mustPrefix(addr)},
			Routes:    []Route{{Via: mustIP(gw)}},
		},
	}
}

func tapPort(id string, network NetworkSpec) PortSpec {
	return PortSpec{ID: id, Device: TapName(id), Bridge: network.Bridge, MTU: network.MTU, AdminUp: true}
}

// lines joins dump lines as Fake.Dump prints them.
func lines(ls ...string) string {
	out := ""
	for _, l := range ls {
		out += l + "\n"
	}
	return out
}

// unchanged runs f and fails when it made a kernel change.
func unchanged(t *testing.T, dp Dataplane, what string, f func() error) {
	t.Helper()
	before := dp.Mutations()
	if err := f(); err != nil {
		t.Fatalf("%s again: %v", what, err)
	}
	if d := dp.Mutations() - before; d != 0 {
		t.Errorf("%s again made %d kernel changes, want 0", what, d)
	}
}

// tapMaker creates tap devices the way a hypervisor would (Fake.AddTapDevice, or a real
// tuntap device in a test namespace).
type tapMaker interface{ AddTapDevice(name string) }

// scenarioStep is one desired-state change of the shared scenario.
type scenarioStep struct {
	name  string
	apply func(ctx context.Context, dp Dataplane, taps tapMaker) error
}

// scenario walks a host through networks of every kind that works on the test kernel, a
// veth and a tap port, admin state, address and route changes, a vxlan recreation, FDB
// changes and deletions. TestFakeConvergence checks the Fake's dump after each step, and
// TestPrivilegedFakeMatchesKernel checks that the kernel ends up in the same state.
// Underlay eth1 and physical interface eth2 must exist; vm is the VM namespace's name.
func scenario(vm string) []scenarioStep {
	blue := vxlanNet(netBlue, 1001, underlayA, mcastGrp, "eth1")
	blueUnicast := vxlanNet(netBlue, 1001, underlayA, nil, "eth1")
	green := flatNet(netGreen, "eth2")
	a := vethPort(portA, blue, vm, "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	aDown := a
	aDown.AdminUp = false
	aMoved := a
	aMoved.Peer.Addresses = []*net.IPNet{mustPrefix("192.0.2.12/24"), mustPrefix("203.0.113.12/24")}
	aMoved.Peer.Routes = []Route{{Via: mustIP("192.0.2.254")}, {Dst: mustPrefix("198.51.100.0/24"), Via: mustIP("192.0.2.1")}}
	tap := tapPort(portTap, green)
	flood, vmMAC, third := mustMAC("00:00:00:00:00:00"), mustMAC("fa:16:3e:00:00:02"), mustIP("198.18.0.3")

	network := func(s NetworkSpec) func(context.Context, Dataplane, tapMaker) error {
		return func(ctx context.Context, dp Dataplane, _ tapMaker) error { return dp.EnsureNetwork(ctx, s) }
	}
	port := func(s PortSpec) func(context.Context, Dataplane, tapMaker) error {
		return func(ctx context.Context, dp Dataplane, _ tapMaker) error { _, err := dp.EnsurePort(ctx, s); return err }
	}
	fdb := func(entries ...FDBEntry) func(context.Context, Dataplane, tapMaker) error {
		return func(ctx context.Context, dp Dataplane, _ tapMaker) error {
			return dp.SetFDB(ctx, "vxlan-1001", entries)
		}
	}
	return []scenarioStep{
		{"local bridge", network(localNet(netBlue))},
		{"vxlan multicast uplink", network(blue)},
		{"flat network", network(green)},
		{"veth port", port(a)},
		{"tap port", func(ctx context.Context, dp Dataplane, taps tapMaker) error {
			taps.AddTapDevice(tap.Device) // the hypervisor's part; a no-op the second time
			return port(tap)(ctx, dp, taps)
		}},
		{"veth admin down drops routes", port(aDown)},
		{"veth new addresses and routes", port(aMoved)},
		{"vxlan to unicast mode recreates it", network(blueUnicast)},
		{"fdb flood list and unicast", fdb(FDBEntry{flood, underlayB}, FDBEntry{flood, third}, FDBEntry{vmMAC, underlayB})},
		{"fdb shrinks and moves", fdb(FDBEntry{flood, third}, FDBEntry{vmMAC, third})},
		{"delete veth port removes its namespace", func(ctx context.Context, dp Dataplane, _ tapMaker) error {
			return dp.DeletePort(ctx, aMoved)
		}},
		{"delete tap port unplugs it", func(ctx context.Context, dp Dataplane, _ tapMaker) error {
			return dp.DeletePort(ctx, tap)
		}},
		{"delete networks", func(ctx context.Context, dp Dataplane, _ tapMaker) error {
			return errors.Join(dp.DeleteNetwork(ctx, blueUnicast), dp.DeleteNetwork(ctx, green))
		}},
	}
}
