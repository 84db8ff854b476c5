package links

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Privileged tests: each runs in network namespaces of its own, named nstest-<random>-*,
// which are deleted at the end (also on failure). The root namespace is never touched.

// testHost is one simulated host: a namespace with the Netlink under test inside it and a
// separate handle for setting up and checking the kernel state.
type testHost struct {
	t      *testing.T
	prefix string // shared by every namespace the test makes
	ns     string
	nl     *Netlink
	h      *netlink.Handle
}

// testNetns skips unless root, creates the test's first namespace and registers the
// deletion of every namespace with the test's prefix (hosts and VM namespaces).
func testNetns(t *testing.T) *testHost {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	prefix := fmt.Sprintf("nstest-%06x", rand.Uint32()>>8)
	t.Cleanup(func() { deleteNamespaces(t, prefix) })
	return newTestHost(t, prefix, prefix)
}

// peer adds another host namespace to the test.
func (th *testHost) peer(name string) *testHost {
	return newTestHost(th.t, th.prefix, th.prefix+"-"+name)
}

// vm is the name of a VM namespace of this test (created by EnsurePort).
func (th *testHost) vm(name string) string { return th.prefix + "-" + name }

func newTestHost(t *testing.T, prefix, name string) *testHost {
	t.Helper()
	if err := CreateNamedNetns(name); err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	n, err := New(name, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	n.markerDir = filepath.Join(t.TempDir(), "netns")
	h := nsHandle(t, name)
	t.Cleanup(n.Close) // runs before the namespaces are deleted
	return &testHost{t: t, prefix: prefix, ns: name, nl: n, h: h}
}

// nsHandle opens a checking handle inside a namespace, closed at cleanup.
func nsHandle(t *testing.T, name string) *netlink.Handle {
	t.Helper()
	h, err := openNetnsHandle(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func deleteNamespaces(t *testing.T, prefix string) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := netns.DeleteNamed(e.Name()); err != nil {
				t.Errorf("cleanup: delete netns %s: %v", e.Name(), err)
			}
		}
	}
}

// link returns a device of the host namespace, failing the test when it is missing.
func (th *testHost) link(name string) netlink.Link {
	th.t.Helper()
	return mustLink(th.t, th.h, name)
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := lookup(h, name)
	if err != nil || l == nil {
		t.Fatalf("device %s: %v (missing: %t)", name, err, l == nil)
	}
	return l
}

func (th *testHost) gone(name string) {
	th.t.Helper()
	if l, err := lookup(th.h, name); err != nil || l != nil {
		th.t.Errorf("device %s still exists (err %v)", name, err)
	}
}

// veth creates a veth pair inside the host namespace, both ends up (an "underlay" or a
// stand-in for a physical NIC, as this kernel has no dummy devices).
func (th *testHost) veth(name, peer string, addr string) netlink.Link {
	th.t.Helper()
	v := netlink.NewVeth(newAttrs(name, 1500))
	v.PeerName = peer
	if err := th.h.LinkAdd(v); err != nil {
		th.t.Fatalf("add veth %s: %v", name, err)
	}
	for _, n := range []string{name, peer} {
		if err := th.h.LinkSetUp(th.link(n)); err != nil {
			th.t.Fatal(err)
		}
	}
	if addr != "" {
		th.addAddr(name, addr)
	}
	return th.link(name)
}

func (th *testHost) addAddr(dev, addr string) {
	th.t.Helper()
	if err := th.h.AddrAdd(th.link(dev), &netlink.Addr{IPNet: mustPrefix(addr)}); err != nil {
		th.t.Fatalf("add %s to %s: %v", addr, dev, err)
	}
}

// ip runs iproute2 inside the host namespace.
func (th *testHost) ip(args ...string) error {
	out, err := exec.CommandContext(th.t.Context(), "ip", append([]string{"-n", th.ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ping sends a few echo requests from a VM namespace; success is one reply.
func ping(t *testing.T, vm, dst string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", vm,
		"ping", "-n", "-c", "3", "-i", "0.2", "-w", "5", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, vm, err, out)
	}
}

func pingFails(t *testing.T, vm, dst string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ip", "netns", "exec", vm,
		"ping", "-n", "-c", "1", "-w", "1", dst).CombinedOutput()
	if err == nil {
		t.Fatalf("ping %s from %s succeeded, want no path:\n%s", dst, vm, out)
	}
}

// inNetns runs fn on an OS thread switched into a namespace (for APIs that act on the
// calling thread's namespace, like opening /dev/net/tun).
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer origin.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return // the thread may be in either namespace: exit locked, discard it
		}
		err = fn()
		if rerr := netns.Set(origin); rerr != nil {
			errc <- errors.Join(err, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// AddTapDevice creates a persistent tap device as a hypervisor would, unless it exists.
// /dev/net/tun makes the device in the namespace of the thread that opens it, so this runs
// on a thread inside the host namespace.
func (th *testHost) AddTapDevice(name string) {
	th.t.Helper()
	if l, _ := lookup(th.h, name); l != nil {
		return
	}
	err := inNetns(th.ns, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: newAttrs(name, 0), Mode: netlink.TUNTAP_MODE_TAP})
	})
	if err != nil {
		th.t.Fatalf("create tap %s: %v", name, err)
	}
}

// dump prints the kernel state of the host namespace and of the VM namespaces netsource
// created, in the format of Fake.Dump.
func (th *testHost) dump() string {
	th.t.Helper()
	links, err := th.h.LinkList()
	if err != nil {
		th.t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	vms := th.vmNamespaces()
	var out []string
	for _, vm := range vms {
		out = append(out, netnsLine(vm, true))
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		fl := &fakeLink{name: a.Name, kind: kindOf(l), mtu: a.MTU, up: a.Flags&net.FlagUp != 0, master: names[a.MasterIndex]}
		switch v := l.(type) {
		case *netlink.Vxlan:
			fl.vxlan = VXLAN{VNI: uint32(v.VxlanId), Local: v.SrcAddr, Group: v.Group, Dev: names[v.VtepDevIndex],
				Port: v.Port, TTL: v.TTL, TOS: v.TOS, Learning: v.Learning}
			fdb, err := th.nl.permanentFDB(v)
			if err != nil {
				th.t.Fatal(err)
			}
			for k := range fdb {
				out = append(out, fdbLine(a.Name, k))
			}
		case *netlink.Vlan:
			fl.vlanParent, fl.vlanID = names[v.ParentIndex], v.VlanId
		case *netlink.Veth:
			fl.peer = th.peerOf(l, vms)
		}
		out = append(out, fl.String())
	}
	return dumpText(out)
}

// vmNamespaces lists the namespaces netsource created for this host's ports.
func (th *testHost) vmNamespaces() []string {
	entries, _ := os.ReadDir(th.nl.markerDir)
	var out []string
	for _, e := range entries {
		if ok, _ := netnsExists(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}

// peerOf finds the namespace side of a veth among the VM namespaces.
func (th *testHost) peerOf(host netlink.Link, vms []string) *fakePeer {
	for _, vm := range vms {
		h := nsHandle(th.t, vm)
		links, err := h.LinkList()
		if err != nil {
			th.t.Fatal(err)
		}
		for _, l := range links {
			if ok, _ := isPairOf(host, h, l.Attrs().Name); !ok {
				continue
			}
			addrs, err := globalAddrs(h, l)
			if err != nil {
				th.t.Fatal(err)
			}
			routes, err := staticRoutes(h, l)
			if err != nil {
				th.t.Fatal(err)
			}
			p := &fakePeer{netns: vm, name: l.Attrs().Name, mac: l.Attrs().HardwareAddr, mtu: l.Attrs().MTU,
				up: l.Attrs().Flags&net.FlagUp != 0, addrs: keySet(addrs), routes: map[string]string{}}
			for k, r := range routes {
				p.routes[k] = routeText(Route{Dst: r.Dst, Via: r.Gw})
			}
			return p
		}
	}
	return nil
}

func keySet[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func (th *testHost) inventory() []Device {
	th.t.Helper()
	inv, err := th.nl.Inventory(th.t.Context())
	if err != nil {
		th.t.Fatal(err)
	}
	return inv
}

func (th *testHost) ensureNetwork(spec NetworkSpec) {
	th.t.Helper()
	if err := th.nl.EnsureNetwork(th.t.Context(), spec); err != nil {
		th.t.Fatal(err)
	}
}

// ensureNetworkTwice applies a network and checks that applying it again changes nothing,
// neither in the kernel nor in the inventory.
func (th *testHost) ensureNetworkTwice(spec NetworkSpec) {
	th.t.Helper()
	th.ensureNetwork(spec)
	inv := th.inventory()
	unchanged(th.t, th.nl, "EnsureNetwork", func() error { return th.nl.EnsureNetwork(th.t.Context(), spec) })
	if diff := cmp.Diff(th.inventory(), inv); diff != "" {
		th.t.Errorf("inventory changed by a repeated EnsureNetwork (-got +want):\n%s", diff)
	}
}

func (th *testHost) ensurePort(spec PortSpec) PortState {
	th.t.Helper()
	st, err := th.nl.EnsurePort(th.t.Context(), spec)
	if err != nil {
		th.t.Fatal(err)
	}
	return st
}

func (th *testHost) ensurePortTwice(spec PortSpec) PortState {
	th.t.Helper()
	st := th.ensurePort(spec)
	unchanged(th.t, th.nl, "EnsurePort", func() error { _, err := th.nl.EnsurePort(th.t.Context(), spec); return err })
	return st
}

// checkLink compares the generic attributes of a device.
func checkLink(t *testing.T, h *netlink.Handle, name, master string, mtu int, up bool) {
	t.Helper()
	l := mustLink(t, h, name)
	got := fmt.Sprintf("master %s mtu %d up %t", masterOf(t, h, l), l.Attrs().MTU, l.Attrs().Flags&net.FlagUp != 0)
	want := fmt.Sprintf("master %s mtu %d up %t", master, mtu, up)
	if got != want {
		t.Errorf("%s: %s, want %s", name, got, want)
	}
}

func masterOf(t *testing.T, h *netlink.Handle, l netlink.Link) string {
	if l.Attrs().MasterIndex == 0 {
		return ""
	}
	m, err := h.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		t.Fatal(err)
	}
	return m.Attrs().Name
}

// TestPrivilegedFakeMatchesKernel runs the shared scenario against the kernel and the Fake
// side by side: after every step both print the same state, and repeating a step changes
// nothing in either. This is what lets actor tests trust the Fake.
func TestPrivilegedFakeMatchesKernel(t *testing.T) {
	th := testNetns(t)
	fake := NewFake()
	for _, dev := range []string{"eth1", "eth2"} {
		th.veth(dev, dev+"p", "")
		fake.AddDevice(dev, "veth")
		fake.AddDevice(dev+"p", "veth")
	}
	th.addAddr("eth1", "198.18.0.1/15")
	ctx := t.Context()
	for _, s := range scenario(th.vm("vm1")) {
		errKernel, errFake := s.apply(ctx, th.nl, th), s.apply(ctx, fake, fake)
		if errKernel != nil || errFake != nil {
			t.Fatalf("%s: kernel: %v; fake: %v", s.name, errKernel, errFake)
		}
		if diff := cmp.Diff(th.dump(), fake.Dump()); diff != "" {
			t.Fatalf("%s: kernel and Fake differ (-kernel +fake):\n%s", s.name, diff)
		}
		unchanged(t, th.nl, s.name, func() error { return s.apply(ctx, th.nl, th) })
		unchanged(t, fake, s.name, func() error { return s.apply(ctx, fake, fake) })
	}
}

func TestPrivilegedLocalNetwork(t *testing.T) {
	th := testNetns(t)
	spec := localNet(netBlue)
	th.ensureNetworkTwice(spec)
	br := th.link(spec.Bridge)
	checkLink(t, th.h, spec.Bridge, "", 1450, true)
	if fd, stp, err := th.nl.bridgeSTP(br.Attrs().Index); err != nil || fd != 0 || stp != 0 {
		t.Errorf("forward delay %d, stp %d, err %v; want 0, 0", fd, stp, err)
	}

	// Someone changes the bridge by hand: the next EnsureNetwork repairs it.
	if err := th.ip("link", "set", spec.Bridge, "down", "mtu", "1400", "type", "bridge", "stp_state", "1", "forward_delay", "400"); err != nil {
		t.Fatal(err)
	}
	th.ensureNetworkTwice(spec)
	checkLink(t, th.h, spec.Bridge, "", 1450, true)
	if fd, stp, err := th.nl.bridgeSTP(br.Attrs().Index); err != nil || fd != 0 || stp != 0 {
		t.Errorf("after repair: forward delay %d, stp %d, err %v; want 0, 0", fd, stp, err)
	}

	if err := th.nl.DeleteNetwork(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	th.gone(spec.Bridge)
	unchanged(t, th.nl, "DeleteNetwork", func() error { return th.nl.DeleteNetwork(t.Context(), spec) })
}

func TestPrivilegedVXLANMulticastNetwork(t *testing.T) {
	th := testNetns(t)
	th.veth("u0", "u1", "198.18.0.1/15")
	spec := vxlanNet(netBlue, 1001, underlayA, mcastGrp, "u0")
	th.ensureNetworkTwice(spec)

	vx, ok := th.link("vxlan-1001").(*netlink.Vxlan)
	if !ok {
		t.Fatalf("vxlan-1001 is a %s", th.link("vxlan-1001").Type())
	}
	got := fmt.Sprintf("vni %d local %s group %s dev %d port %d learning %t", vx.VxlanId, vx.SrcAddr, vx.Group, vx.VtepDevIndex, vx.Port, vx.Learning)
	want := fmt.Sprintf("vni 1001 local 198.18.0.1 group 239.1.1.1 dev %d port 4789 learning true", th.link("u0").Attrs().Index)
	if got != want {
		t.Errorf("vxlan: %s, want %s", got, want)
	}
	checkLink(t, th.h, "vxlan-1001", spec.Bridge, 1450, true)
	wantInv := []Device{
		{Name: spec.Bridge, Kind: "bridge", Ifindex: th.link(spec.Bridge).Attrs().Index},
		{Name: "vxlan-1001", Kind: "vxlan", Master: spec.Bridge, Ifindex: vx.Index},
	}
	if diff := cmp.Diff(th.inventory(), wantInv); diff != "" {
		t.Errorf("inventory (-got +want):\n%s", diff)
	}

	// A changed UDP port cannot be changed in place: the device is recreated and plugged.
	spec.Uplink.VXLAN.Port = 4790
	th.ensureNetworkTwice(spec)
	if again := th.link("vxlan-1001"); again.Attrs().Index == vx.Index || again.(*netlink.Vxlan).Port != 4790 {
		t.Errorf("vxlan not recreated: ifindex %d (was %d) port %d", again.Attrs().Index, vx.Index, again.(*netlink.Vxlan).Port)
	}
	checkLink(t, th.h, "vxlan-1001", spec.Bridge, 1450, true)

	if err := th.nl.DeleteNetwork(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	th.gone(spec.Bridge)
	th.gone("vxlan-1001")
}

// The kernel bounds a vxlan device's MTU by its underlay (lower device MTU - 50 for IPv4):
// the create request carries the MTU, so a too-large one fails as a whole.
func TestPrivilegedVXLANMTUAboveUnderlay(t *testing.T) {
	th := testNetns(t)
	th.veth("u0", "u1", "198.18.0.1/15")
	spec := vxlanNet(netBlue, 1001, underlayA, mcastGrp, "u0")
	spec.MTU = 1500
	err := th.nl.EnsureNetwork(t.Context(), spec)
	if err == nil {
		t.Fatal("vxlan with MTU 1500 over a 1500 underlay was accepted")
	}
	t.Logf("kernel answer: %v", err)
	th.gone("vxlan-1001")
}

func TestPrivilegedFlatNetwork(t *testing.T) {
	th := testNetns(t)
	spec := flatNet(netGreen, "eth1")
	if err := th.nl.EnsureNetwork(t.Context(), spec); !errors.Is(err, ErrDeviceMissing) {
		t.Fatalf("missing physical interface: got %v, want ErrDeviceMissing", err)
	}
	th.veth("eth1", "eth1p", "")
	if err := th.h.LinkSetDown(th.link("eth1")); err != nil {
		t.Fatal(err)
	}
	th.ensureNetworkTwice(spec)
	checkLink(t, th.h, "eth1", spec.Bridge, 1500, true)

	if err := th.nl.DeleteNetwork(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	th.gone(spec.Bridge)
	checkLink(t, th.h, "eth1", "", 1500, true) // released, never deleted
}

func TestPrivilegedVLANUplink(t *testing.T) {
	th := testNetns(t)
	th.veth("eth1", "eth1p", "")
	spec := vlanNet(netBlue, "eth1", 100)
	if probe := th.ip("link", "add", "link", "eth1", "name", "eth1.7", "type", "vlan", "id", "7"); probe != nil {
		err := th.nl.EnsureNetwork(t.Context(), spec)
		if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "802.1Q") {
			t.Fatalf("kernel without vlan: got %v, want ErrNotSupported naming 802.1Q", err)
		}
		th.gone("eth1.100")
		t.Logf("our error: %v", err)
		t.Skipf("kernel has no 802.1Q sub-interfaces (%v); checked that netsource reports ErrNotSupported", probe)
	}
	th.ensureNetworkTwice(spec)
	vl, ok := th.link("eth1.100").(*netlink.Vlan)
	if !ok || vl.VlanId != 100 || vl.ParentIndex != th.link("eth1").Attrs().Index {
		t.Errorf("eth1.100: %+v", th.link("eth1.100"))
	}
	checkLink(t, th.h, "eth1.100", spec.Bridge, 1450, true)
	if err := th.nl.DeleteNetwork(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	th.gone("eth1.100")
}

func TestPrivilegedVethPorts(t *testing.T) {
	th := testNetns(t)
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	a := vethPort(portA, blue, th.vm("vm1"), "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	b := vethPort(portB, blue, th.vm("vm2"), "fa:16:3e:00:00:02", "192.0.2.12/24", "192.0.2.1")
	stA := th.ensurePortTwice(a)
	th.ensurePortTwice(b)

	if stA.Ifindex != th.link(a.Device).Attrs().Index {
		t.Errorf("PortState ifindex %d, device has %d", stA.Ifindex, th.link(a.Device).Attrs().Index)
	}
	checkLink(t, th.h, a.Device, blue.Bridge, 1450, true)
	vm1 := nsHandle(t, a.Peer.Netns)
	checkPeer(t, vm1, a)
	ping(t, a.Peer.Netns, "192.0.2.12")

	// Drift inside the VM and on the host side is repaired.
	peer := mustLink(t, vm1, a.Peer.Name)
	if err := vm1.AddrAdd(peer, &netlink.Addr{IPNet: mustPrefix("203.0.113.9/24")}); err != nil {
		t.Fatal(err)
	}
	if err := th.h.LinkSetNoMaster(th.link(a.Device)); err != nil {
		t.Fatal(err)
	}
	th.ensurePortTwice(a)
	checkPeer(t, vm1, a)
	checkLink(t, th.h, a.Device, blue.Bridge, 1450, true)

	// Admin down: both ends down, and the peer keeps its address.
	down := a
	down.AdminUp = false
	st := th.ensurePortTwice(down)
	if st.OperUp {
		t.Error("admin-down port reports OperUp")
	}
	checkLink(t, th.h, a.Device, blue.Bridge, 1450, false)
	checkLink(t, vm1, a.Peer.Name, "", 1450, false)
	th.ensurePortTwice(a)
	checkPeer(t, vm1, a)

	// Delete: the pair and the now empty VM namespace go; a second delete is a no-op.
	vm1.Close()
	for _, p := range []PortSpec{a, b} {
		if err := th.nl.DeletePort(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		th.gone(p.Device)
		if ok, _ := netnsExists(p.Peer.Netns); ok {
			t.Errorf("netns %s still exists", p.Peer.Netns)
		}
		unchanged(t, th.nl, "DeletePort", func() error { return th.nl.DeletePort(t.Context(), p) })
	}
}

// checkPeer compares the VM side of a veth port with its spec.
func checkPeer(t *testing.T, h *netlink.Handle, spec PortSpec) {
	t.Helper()
	l := mustLink(t, h, spec.Peer.Name)
	if !slices.Equal(l.Attrs().HardwareAddr, spec.Peer.MAC) {
		t.Errorf("peer mac %s, want %s", l.Attrs().HardwareAddr, spec.Peer.MAC)
	}
	checkLink(t, h, spec.Peer.Name, "", spec.MTU, spec.AdminUp)
	checkLink(t, h, "lo", "", 65536, true)
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			got = append(got, prefixKey(a.IPNet))
		}
	}
	for _, a := range spec.Peer.Addresses {
		want = append(want, prefixKey(a))
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("peer addresses (-got +want):\n%s", diff)
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var defaults []string
	for _, r := range routes {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			defaults = append(defaults, r.Gw.String())
		}
	}
	if diff := cmp.Diff(defaults, []string{spec.Peer.Routes[0].Via.String()}); diff != "" {
		t.Errorf("default routes (-got +want):\n%s", diff)
	}
}

func TestPrivilegedTapPort(t *testing.T) {
	th := testNetns(t)
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	tap := tapPort(portTap, blue)
	if _, err := th.nl.EnsurePort(t.Context(), tap); !errors.Is(err, ErrDeviceMissing) {
		t.Fatalf("tap not created yet: got %v, want ErrDeviceMissing", err)
	}

	th.AddTapDevice(tap.Device)
	st := th.ensurePortTwice(tap)
	if st.OperUp {
		t.Error("a tap nobody reads has no carrier, yet OperUp")
	}
	checkLink(t, th.h, tap.Device, blue.Bridge, 1450, true)
	if kinds := th.inventory(); len(kinds) != 2 || kinds[1].Kind != "tun" || kinds[1].Master != blue.Bridge {
		t.Errorf("inventory: %+v", kinds)
	}

	if err := th.nl.DeletePort(t.Context(), tap); err != nil {
		t.Fatal(err)
	}
	checkLink(t, th.h, tap.Device, "", 1450, true) // unplugged; the device is the hypervisor's
}

func TestPrivilegedSetFDB(t *testing.T) {
	th := testNetns(t)
	th.veth("u0", "u1", "198.18.0.1/15")
	spec := vxlanNet(netBlue, 1001, underlayA, nil, "u0")
	th.ensureNetwork(spec)
	flood := mustMAC("00:00:00:00:00:00")
	vm := mustMAC("fa:16:3e:00:00:02")
	third := mustIP("198.18.0.3")

	steps := []struct {
		name    string
		entries []FDBEntry
		want    []string
	}{
		{"two flood destinations and a unicast MAC", []FDBEntry{{flood, underlayB}, {flood, third}, {vm, underlayB}},
			[]string{"00:00:00:00:00:00 dst 198.18.0.2", "00:00:00:00:00:00 dst 198.18.0.3", "fa:16:3e:00:00:02 dst 198.18.0.2"}},
		{"MAC moves, one flood destination goes", []FDBEntry{{flood, third}, {vm, third}},
			[]string{"00:00:00:00:00:00 dst 198.18.0.3", "fa:16:3e:00:00:02 dst 198.18.0.3"}},
		{"empty", nil, nil},
	}
	for _, s := range steps {
		if err := th.nl.SetFDB(t.Context(), "vxlan-1001", s.entries); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(kernelFDB(t, th.h, "vxlan-1001"), s.want); diff != "" {
			t.Errorf("%s: fdb (-got +want):\n%s", s.name, diff)
		}
		unchanged(t, th.nl, "SetFDB", func() error { return th.nl.SetFDB(t.Context(), "vxlan-1001", s.entries) })
	}
	if err := th.nl.SetFDB(t.Context(), "vxlan-9", nil); !errors.Is(err, ErrDeviceMissing) {
		t.Errorf("missing device: got %v, want ErrDeviceMissing", err)
	}
}

// kernelFDB lists a vxlan device's own permanent entries as "mac dst ip", sorted.
func kernelFDB(t *testing.T, h *netlink.Handle, dev string) []string {
	t.Helper()
	list, err := h.NeighList(mustLink(t, h, dev).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list {
		if e.Flags&netlink.NTF_SELF != 0 && e.State&netlink.NUD_PERMANENT != 0 {
			out = append(out, fmt.Sprintf("%s dst %s", e.HardwareAddr, e.IP))
		}
	}
	slices.Sort(out)
	return out
}

func TestPrivilegedWatch(t *testing.T) {
	th := testNetns(t)
	ctx, cancel := context.WithCancel(t.Context())
	events, err := th.nl.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	th.veth("eth1", "eth1p", "")
	if err := th.h.LinkSetMaster(th.link("eth1"), th.link(blue.Bridge)); err != nil {
		t.Fatal(err)
	}
	index := th.link("eth1").Attrs().Index
	if err := th.h.LinkDel(th.link("eth1")); err != nil { // by hand, behind the agent's back
		t.Fatal(err)
	}
	deadline := time.After(time.Second)
	var sawMaster bool
wait:
	for {
		select {
		case ev := <-events:
			if ev.Name == "eth1" && ev.Master == blue.Bridge {
				sawMaster = true
			}
			if ev.Name == "eth1" && ev.Deleted {
				if ev.Ifindex != index {
					t.Errorf("deleted event ifindex %d, want %d", ev.Ifindex, index)
				}
				break wait
			}
		case <-deadline:
			t.Fatal("no Deleted event for eth1 within 1s")
		}
	}
	if !sawMaster {
		t.Error("no event showed eth1 enslaved to the bridge")
	}
	cancel()
	for range events { // closed once ctx ends
	}
}

func TestPrivilegedInventoryAndDeleteDevice(t *testing.T) {
	th := testNetns(t)
	th.veth("eth1", "eth1p", "")
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	a := vethPort(portA, blue, th.vm("vm1"), "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	th.ensurePort(a)
	want := []Device{
		{Name: blue.Bridge, Kind: "bridge", Ifindex: th.link(blue.Bridge).Attrs().Index},
		{Name: a.Device, Kind: "veth", Master: blue.Bridge, Ifindex: th.link(a.Device).Attrs().Index},
	}
	if diff := cmp.Diff(th.inventory(), want); diff != "" {
		t.Errorf("inventory (-got +want):\n%s", diff)
	}
	if err := th.nl.DeleteDevice(t.Context(), "eth1"); err == nil {
		t.Error("DeleteDevice removed a device netsource does not own")
	}
	for _, name := range []string{a.Device, blue.Bridge, "brqgone"} {
		if err := th.nl.DeleteDevice(t.Context(), name); err != nil {
			t.Errorf("delete %s: %v", name, err)
		}
	}
	if inv := th.inventory(); len(inv) != 0 {
		t.Errorf("inventory after pruning: %+v", inv)
	}
	th.link("eth1")
}

// TestPrivilegedBridgeFull fills a bridge with MaxBridgePorts ports behind netsource's back,
// then checks that EnsurePort reports ErrBridgeFull instead of the kernel's EXFULL.
func TestPrivilegedBridgeFull(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1024 veth pairs")
	}
	th := testNetns(t)
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	br := th.link(blue.Bridge)
	for i := range MaxBridgePorts {
		v := netlink.NewVeth(newAttrs(fmt.Sprintf("f%d", i), 0))
		v.PeerName = fmt.Sprintf("g%d", i)
		v.MasterIndex = br.Attrs().Index
		if err := th.h.LinkAdd(v); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	v := netlink.NewVeth(newAttrs("extra", 0))
	v.PeerName = "extrap"
	if err := th.h.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	t.Logf("the kernel's own answer to a 1024th port: %v", th.h.LinkSetMaster(th.link("extra"), br))

	p := vethPort(portA, blue, th.vm("vm1"), "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	if _, err := th.nl.EnsurePort(t.Context(), p); !errors.Is(err, ErrBridgeFull) {
		t.Fatalf("got %v, want ErrBridgeFull", err)
	}
	th.gone(p.Device) // refused before anything was made for it
	if ok, _ := netnsExists(p.Peer.Netns); ok {
		t.Errorf("netns %s was created for a port that cannot be plugged", p.Peer.Netns)
	}
}

// TestPrivilegedConcurrentPorts plugs ports from several goroutines at once, two per VM
// namespace, through one Netlink (run with -race).
func TestPrivilegedConcurrentPorts(t *testing.T) {
	th := testNetns(t)
	blue := localNet(netBlue)
	th.ensureNetwork(blue)
	var ports []PortSpec
	for i := range 6 {
		id := fmt.Sprintf("%08x-0000", i)
		ports = append(ports, vethPort(id, blue, th.vm(fmt.Sprintf("vm%d", i/2)),
			fmt.Sprintf("fa:16:3e:00:01:%02x", i), fmt.Sprintf("192.0.2.%d/24", 20+i), "192.0.2.1"))
	}
	run := func(f func(PortSpec) error) {
		errs := make(chan error, len(ports))
		for _, p := range ports {
			go func() { errs <- f(p) }()
		}
		for range ports {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	run(func(p PortSpec) error { _, err := th.nl.EnsurePort(t.Context(), p); return err })
	for _, p := range ports {
		checkLink(t, th.h, p.Device, blue.Bridge, 1450, true)
	}
	ping(t, ports[0].Peer.Netns, "192.0.2.25")
	run(func(p PortSpec) error { return th.nl.DeletePort(t.Context(), p) })
	for _, p := range ports {
		th.gone(p.Device)
		if ok, _ := netnsExists(p.Peer.Netns); ok {
			t.Errorf("netns %s left behind", p.Peer.Netns)
		}
	}
}

// TestPrivilegedTwoHostVXLAN joins two host namespaces by a veth underlay and pings between
// VMs on either side: the kernel path the agent relies on, in multicast mode and in unicast
// (l2population) mode with static forwarding entries.
func TestPrivilegedTwoHostVXLAN(t *testing.T) {
	for _, mode := range []string{"multicast", "unicast"} {
		t.Run(mode, func(t *testing.T) {
			a := testNetns(t)
			b := a.peer("b")
			underlay(t, a, b)
			var group net.IP
			if mode == "multicast" {
				group = mcastGrp
			}
			netA := vxlanNet(netBlue, 1001, underlayA, group, "ul")
			netB := vxlanNet(netBlue, 1001, underlayB, group, "ul")
			a.ensureNetworkTwice(netA)
			b.ensureNetworkTwice(netB)
			vmA := vethPort(portA, netA, a.vm("vm1"), "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
			vmB := vethPort(portB, netB, b.vm("vm2"), "fa:16:3e:00:00:02", "192.0.2.12/24", "192.0.2.1")
			a.ensurePortTwice(vmA)
			b.ensurePortTwice(vmB)
			if mode == "unicast" {
				// Without learning and forwarding entries nothing crosses the tunnel.
				pingFails(t, vmA.Peer.Netns, "192.0.2.12")
				flood := mustMAC("00:00:00:00:00:00")
				setFDB(t, a, []FDBEntry{{flood, underlayB}, {vmB.Peer.MAC, underlayB}})
				setFDB(t, b, []FDBEntry{{flood, underlayA}, {vmA.Peer.MAC, underlayA}})
			}
			ping(t, vmA.Peer.Netns, "192.0.2.12")
			ping(t, vmB.Peer.Netns, "192.0.2.11")
		})
	}
}

// underlay connects two hosts with a veth pair "ul" carrying 198.18.0.1/15 and 198.18.0.2/15.
func underlay(t *testing.T, a, b *testHost) {
	t.Helper()
	nsB, err := netns.GetFromName(b.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	v := netlink.NewVeth(newAttrs("ul", 1500))
	v.PeerName = "ul"
	v.PeerNamespace = netlink.NsFd(nsB)
	if err := a.h.LinkAdd(v); err != nil {
		t.Fatalf("underlay: %v", err)
	}
	for _, h := range []struct {
		th   *testHost
		addr string
	}{{a, "198.18.0.1/15"}, {b, "198.18.0.2/15"}} {
		h.th.addAddr("ul", h.addr)
		if err := h.th.h.LinkSetUp(h.th.link("ul")); err != nil {
			t.Fatal(err)
		}
	}
}

func setFDB(t *testing.T, th *testHost, entries []FDBEntry) {
	t.Helper()
	if err := th.nl.SetFDB(t.Context(), "vxlan-1001", entries); err != nil {
		t.Fatal(err)
	}
	unchanged(t, th.nl, "SetFDB", func() error { return th.nl.SetFDB(t.Context(), "vxlan-1001", entries) })
}
