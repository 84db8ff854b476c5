package links

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Fake is an in-memory Dataplane with the semantics of the netlink implementation: the
// same validation, the same sentinel errors, one counted mutation per simulated kernel
// write, and link events for watchers. Dump prints the state as sorted text for tests.
//
// Devices that someone else creates (a hypervisor's tap, the host's NIC, a mapped bridge)
// are added with AddTapDevice and AddDevice; RemoveDevice simulates an operator deleting a
// device by hand.
type Fake struct {
	// FailOn, if set, is called before every simulated kernel write with the operation
	// (one of the Op* constants) and the device, FDB device or namespace name. A non-nil
	// error is returned from that write as if the kernel had refused it; the write is
	// still counted. It runs with the Fake's lock held and must not call the Fake.
	FailOn func(op, name string) error
	// NoVLAN makes UplinkVLAN fail with ErrNotSupported, like a kernel without 802.1Q.
	NoVLAN bool

	mu        sync.Mutex
	links     map[string]*fakeLink
	netns     map[string]bool // named namespaces; true when netsource created it
	watchers  map[chan LinkEvent]struct{}
	nextIndex int
	mutations atomic.Uint64
}

var _ Dataplane = (*Fake)(nil)

// fakeWatchBuffer is how many events a watcher may lag behind. Like a netlink socket whose
// receive buffer overflows (ENOBUFS), a watcher that falls further behind is closed and
// must relist.
const fakeWatchBuffer = 256

type fakeLink struct {
	name, kind string
	index      int
	mtu        int
	up         bool
	master     string
	vxlan      VXLAN     // kind vxlan
	vlanParent string    // kind vlan
	vlanID     int       // kind vlan
	peer       *fakePeer // kind veth
	fdb        map[fdbKey]FDBEntry
}

type fakePeer struct {
	netns, name string
	mac         net.HardwareAddr
	mtu         int
	up          bool
	addrs       map[string]bool   // prefixKey
	routes      map[string]string // routeKey -> routeText
}

// NewFake returns an empty Fake (the zero value is ready to use too).
func NewFake() *Fake { return &Fake{} }

// lock takes the Fake's lock, initialising the zero value on first use.
func (f *Fake) lock() {
	f.mu.Lock()
	if f.links == nil {
		f.links = map[string]*fakeLink{}
		f.netns = map[string]bool{}
		f.watchers = map[chan LinkEvent]struct{}{}
		f.nextIndex = 1 // index 1 is lo
	}
}

// AddTapDevice simulates a hypervisor creating tap device name (down, MTU 1500, no master).
func (f *Fake) AddTapDevice(name string) { f.AddDevice(name, "tun") }

// AddDevice simulates a device netsource does not create: a physical interface ("device"),
// a mapped bridge ("bridge") or any other kind. It starts up with MTU 1500, except taps
// ("tun"), which start down. An existing device of that name is left as is.
func (f *Fake) AddDevice(name, kind string) {
	f.lock()
	defer f.mu.Unlock()
	if f.links[name] != nil {
		return
	}
	l := f.newLink(name, kind, 1500)
	l.up = kind != "tun"
	f.notify(l, false)
}

// AddNetns simulates a named namespace that netsource did not create; DeletePort leaves it.
func (f *Fake) AddNetns(name string) {
	f.lock()
	defer f.mu.Unlock()
	if _, ok := f.netns[name]; !ok {
		f.netns[name] = false
	}
}

// RemoveDevice simulates someone deleting a device by hand: it disappears with what the
// kernel removes along with it (a veth peer, FDB entries, bridge membership of ports),
// watchers get a Deleted event, and no mutation is counted.
func (f *Fake) RemoveDevice(name string) {
	f.lock()
	defer f.mu.Unlock()
	if l := f.links[name]; l != nil {
		f.unlink(l)
	}
}

// Mutations counts the simulated kernel writes so far.
func (f *Fake) Mutations() uint64 { return f.mutations.Load() }

// EnsureNetwork implements Dataplane.
func (f *Fake) EnsureNetwork(ctx context.Context, spec NetworkSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	f.lock()
	defer f.mu.Unlock()
	br, err := f.ensureBridge(spec)
	if err == nil {
		err = f.ensureUplink(spec, br)
	}
	if err != nil {
		return fmt.Errorf("ensure network %s: %w", spec.ID, err)
	}
	return nil
}

func (f *Fake) ensureBridge(spec NetworkSpec) (*fakeLink, error) {
	br := f.links[spec.Bridge]
	switch {
	case br == nil && spec.External:
		return nil, fmt.Errorf("mapped bridge %s: %w", spec.Bridge, ErrDeviceMissing)
	case br == nil:
		if err := f.write(OpCreate, spec.Bridge); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", spec.Bridge, err)
		}
		br = f.newLink(spec.Bridge, "bridge", cmpOr(spec.MTU, 1500))
		f.notify(br, false)
	case br.kind != "bridge":
		return nil, fmt.Errorf("bridge %s: exists as a %s device", spec.Bridge, br.kind)
	}
	if spec.External {
		return br, nil
	}
	if err := f.ensureLink(br, fakeWant{mtu: spec.MTU, up: true}); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", spec.Bridge, err)
	}
	return br, nil
}

func (f *Fake) ensureUplink(spec NetworkSpec, br *fakeLink) error {
	name := spec.UplinkDevice()
	up, mtu, err := f.uplinkDevice(spec, name)
	if err != nil || up == nil {
		return err
	}
	if err := f.ensureLink(up, fakeWant{mtu: mtu, master: br, up: true}); err != nil {
		return fmt.Errorf("plug uplink %s into %s: %w", name, br.name, err)
	}
	return nil
}

// uplinkDevice finds or creates the uplink and returns the MTU it should have.
func (f *Fake) uplinkDevice(spec NetworkSpec, name string) (*fakeLink, int, error) {
	switch spec.Uplink.Kind {
	case UplinkPhysical:
		l := f.links[name]
		if l == nil {
			return nil, 0, fmt.Errorf("physical interface %s: %w", name, ErrDeviceMissing)
		}
		return l, 0, nil // the NIC's MTU belongs to the host
	case UplinkVLAN:
		l, err := f.ensureVLAN(spec, name)
		return l, spec.MTU, err
	case UplinkVXLAN:
		l, err := f.ensureVXLAN(spec, name)
		return l, spec.MTU, err
	}
	return nil, 0, nil
}

func (f *Fake) ensureVLAN(spec NetworkSpec, name string) (*fakeLink, error) {
	if f.NoVLAN {
		return nil, fmt.Errorf("vlan uplink %s: 802.1Q sub-interfaces: %w", name, ErrNotSupported)
	}
	parent := f.links[spec.Uplink.Device]
	if parent == nil {
		return nil, fmt.Errorf("vlan parent %s: %w", spec.Uplink.Device, ErrDeviceMissing)
	}
	l := f.links[name]
	if l != nil && l.kind == "vlan" && l.vlanParent == parent.name && l.vlanID == spec.Uplink.VLANID {
		return l, nil
	}
	if err := f.replace(l, name, "vlan"); err != nil {
		return nil, err
	}
	l = f.newLink(name, "vlan", cmpOr(spec.MTU, parent.mtu))
	l.vlanParent, l.vlanID = parent.name, spec.Uplink.VLANID
	f.notify(l, false)
	return l, nil
}

func (f *Fake) ensureVXLAN(spec NetworkSpec, name string) (*fakeLink, error) {
	want := spec.Uplink.VXLAN
	mtu, maxMTU := 1500, 65535
	if want.Dev != "" {
		dev := f.links[want.Dev]
		if dev == nil {
			return nil, fmt.Errorf("vxlan %s underlay %s: %w", name, want.Dev, ErrDeviceMissing)
		}
		// As the kernel: the underlay bounds the MTU and sets the default.
		mtu, maxMTU = dev.mtu-vxlanHeadroom(want), dev.mtu-vxlanHeadroom(want)
	}
	if spec.MTU > maxMTU {
		return nil, fmt.Errorf("vxlan %s: MTU %d exceeds what underlay %q allows (%d)", name, spec.MTU, want.Dev, maxMTU)
	}
	l := f.links[name]
	if l != nil && l.kind == "vxlan" && vxlanSame(l.vxlan, want) {
		return l, nil
	}
	if err := f.replace(l, name, "vxlan"); err != nil {
		return nil, err
	}
	l = f.newLink(name, "vxlan", cmpOr(spec.MTU, mtu))
	l.vxlan = want
	f.notify(l, false)
	return l, nil
}

// vxlanHeadroom is the encapsulation overhead: outer Ethernet, IP, UDP and VXLAN headers.
func vxlanHeadroom(v VXLAN) int {
	if (v.Local != nil && v.Local.To4() == nil) || (v.Group != nil && v.Group.To4() == nil) {
		return 70
	}
	return 50
}

// vxlanSame compares what the kernel cannot change in place; zero wanted Dev and Port mean
// "whatever the device has".
func vxlanSame(have, want VXLAN) bool {
	return have.VNI == want.VNI && ipEqual(have.Local, want.Local) && ipEqual(have.Group, want.Group) &&
		(want.Dev == "" || have.Dev == want.Dev) && (want.Port == 0 || have.Port == want.Port) &&
		have.TTL == want.TTL && have.TOS == want.TOS && have.Learning == want.Learning
}

// replace deletes l (if any) and records the creation of its successor.
func (f *Fake) replace(l *fakeLink, name, kind string) error {
	if l != nil {
		if err := f.write(OpDelete, name); err != nil {
			return fmt.Errorf("delete outdated %s %s: %w", kind, name, err)
		}
		f.unlink(l)
	}
	if err := f.write(OpCreate, name); err != nil {
		return fmt.Errorf("create %s %s: %w", kind, name, err)
	}
	return nil
}

// DeleteNetwork implements Dataplane.
func (f *Fake) DeleteNetwork(ctx context.Context, spec NetworkSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	f.lock()
	defer f.mu.Unlock()
	var errs []error
	switch name := spec.UplinkDevice(); spec.Uplink.Kind {
	case UplinkVLAN, UplinkVXLAN:
		errs = append(errs, f.deleteLink(name))
	case UplinkPhysical:
		if l := f.links[name]; l != nil && l.master == spec.Bridge {
			errs = append(errs, f.release(l))
		}
	}
	if !spec.External {
		errs = append(errs, f.deleteLink(spec.Bridge))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete network %s: %w", spec.ID, err)
	}
	return nil
}

// EnsurePort implements Dataplane.
func (f *Fake) EnsurePort(ctx context.Context, spec PortSpec) (PortState, error) {
	if err := ctx.Err(); err != nil {
		return PortState{}, err
	}
	if err := spec.validate(); err != nil {
		return PortState{}, err
	}
	f.lock()
	defer f.mu.Unlock()
	l, err := f.ensurePort(spec)
	if err != nil {
		return PortState{}, fmt.Errorf("plug port %s (%s) into %s: %w", spec.ID, spec.Device, spec.Bridge, err)
	}
	operUp := l.up && (l.peer == nil || l.peer.up)
	return PortState{Ifindex: l.index, OperUp: operUp}, nil
}

func (f *Fake) ensurePort(spec PortSpec) (*fakeLink, error) {
	br := f.links[spec.Bridge]
	switch {
	case br == nil:
		return nil, fmt.Errorf("bridge %s: %w", spec.Bridge, ErrDeviceMissing)
	case br.kind != "bridge":
		return nil, fmt.Errorf("bridge %s: exists as a %s device", spec.Bridge, br.kind)
	}
	l := f.links[spec.Device]
	switch {
	case l == nil && spec.Binding == BindingTap:
		return nil, fmt.Errorf("tap %s: %w", spec.Device, ErrDeviceMissing)
	case l == nil || l.master != br.name:
		if err := f.roomFor(br, spec.Device); err != nil {
			return nil, err
		}
	}
	var err error
	switch spec.Binding {
	case BindingVeth:
		if l, err = f.ensureVeth(spec, l); err != nil {
			return nil, err
		}
	case BindingSubPort:
		if l, err = f.ensureSubPort(spec, l); err != nil {
			return nil, err
		}
	}
	if err := f.ensureLink(l, fakeWant{mtu: spec.MTU, master: br, up: spec.AdminUp}); err != nil {
		return nil, err
	}
	if spec.Binding == BindingSubPort && spec.Peer.Netns != "" {
		return l, f.ensureGuestVLAN(spec, l)
	}
	return l, nil
}

// ensureSubPort makes the sub-port's 802.1Q device on its parent's device.
func (f *Fake) ensureSubPort(spec PortSpec, l *fakeLink) (*fakeLink, error) {
	sp := spec.SubPort
	if f.NoVLAN {
		return nil, fmt.Errorf("sub-port %s: 802.1Q sub-interfaces: %w", spec.Device, ErrNotSupported)
	}
	parent := f.links[sp.ParentDevice]
	if parent == nil {
		return nil, fmt.Errorf("sub-port %s: parent %s: %w", spec.Device, sp.ParentDevice, ErrDeviceMissing)
	}
	if l != nil && l.kind == "vlan" && l.vlanParent == parent.name && l.vlanID == sp.VLANID {
		return l, nil
	}
	if err := f.replace(l, spec.Device, "vlan"); err != nil {
		return nil, err
	}
	l = f.newLink(spec.Device, "vlan", cmpOr(spec.MTU, parent.mtu))
	l.vlanParent, l.vlanID = parent.name, sp.VLANID
	f.notify(l, false)
	return l, nil
}

// ensureGuestVLAN models the VM-side VLAN interface as the sub-port device's peer: it
// needs the parent's veth peer in the namespace.
func (f *Fake) ensureGuestVLAN(spec PortSpec, l *fakeLink) error {
	parent := f.links[spec.SubPort.ParentDevice]
	if parent == nil || parent.peer == nil || parent.peer.netns != spec.Peer.Netns || parent.peer.name != spec.SubPort.ParentPeer {
		return fmt.Errorf("VLAN interface %s@%s: parent %s: %w", spec.Peer.Name, spec.Peer.Netns, spec.SubPort.ParentPeer, ErrDeviceMissing)
	}
	if l.peer == nil || l.peer.netns != spec.Peer.Netns || l.peer.name != spec.Peer.Name {
		if err := f.write(OpCreate, spec.Peer.Name); err != nil {
			return fmt.Errorf("create VLAN interface %s@%s: %w", spec.Peer.Name, spec.Peer.Netns, err)
		}
		l.peer = &fakePeer{netns: spec.Peer.Netns, name: spec.Peer.Name, mac: fakeMAC(l.index),
			mtu: cmpOr(spec.MTU, 1500), addrs: map[string]bool{}, routes: map[string]string{}}
	}
	if err := f.configurePeer(l.peer, spec); err != nil {
		return fmt.Errorf("configure VLAN interface %s@%s: %w", spec.Peer.Name, spec.Peer.Netns, err)
	}
	return nil
}

func (f *Fake) ensureVeth(spec PortSpec, l *fakeLink) (*fakeLink, error) {
	if l != nil && l.kind != "veth" {
		return nil, fmt.Errorf("%s exists as a %s device, not a veth", l.name, l.kind)
	}
	if l == nil || l.peer == nil || l.peer.netns != spec.Peer.Netns || l.peer.name != spec.Peer.Name {
		if l != nil {
			if err := f.write(OpDelete, l.name); err != nil {
				return nil, fmt.Errorf("delete mismatched %s: %w", l.name, err)
			}
			f.unlink(l)
		}
		if _, ok := f.netns[spec.Peer.Netns]; !ok {
			if err := f.write(OpNetnsAdd, spec.Peer.Netns); err != nil {
				return nil, fmt.Errorf("create netns %s: %w", spec.Peer.Netns, err)
			}
			f.netns[spec.Peer.Netns] = true
		}
		if err := f.write(OpCreate, spec.Device); err != nil {
			return nil, fmt.Errorf("create veth %s peer %s@%s: %w", spec.Device, spec.Peer.Name, spec.Peer.Netns, err)
		}
		l = f.newLink(spec.Device, "veth", cmpOr(spec.MTU, 1500))
		l.peer = &fakePeer{netns: spec.Peer.Netns, name: spec.Peer.Name, mac: fakeMAC(l.index),
			mtu: cmpOr(spec.MTU, 1500), addrs: map[string]bool{}, routes: map[string]string{}}
		f.notify(l, false)
	}
	if err := f.configurePeer(l.peer, spec); err != nil {
		return nil, fmt.Errorf("configure peer %s@%s: %w", spec.Peer.Name, spec.Peer.Netns, err)
	}
	return l, nil
}

func (f *Fake) configurePeer(p *fakePeer, spec PortSpec) error {
	set := func(op string, apply func()) error {
		if err := f.write(op, p.name); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		apply()
		return nil
	}
	var errs []error
	if spec.Peer.MAC != nil && !bytes.Equal(p.mac, spec.Peer.MAC) {
		errs = append(errs, set(OpSetMAC, func() { p.mac = slices.Clone(spec.Peer.MAC) }))
	}
	if spec.MTU != 0 && p.mtu != spec.MTU {
		errs = append(errs, set(OpSetMTU, func() { p.mtu = spec.MTU }))
	}
	wantAddrs := map[string]bool{}
	for _, a := range spec.Peer.Addresses {
		wantAddrs[prefixKey(a)] = true
	}
	errs = append(errs, syncSet(p.addrs, wantAddrs, func(k string, add bool) error {
		return set(opFor(add, OpAddrAdd, OpAddrDel), func() { setOrDelete(p.addrs, k, true, add) })
	}))
	if p.up != spec.AdminUp {
		errs = append(errs, set(opFor(spec.AdminUp, OpSetUp, OpSetDown), func() { p.up = spec.AdminUp }))
	}
	if !p.up {
		// The kernel flushes a downed link's routes; they come back when it is up again.
		clear(p.routes)
		return errors.Join(errs...)
	}
	wantRoutes := map[string]string{}
	for _, r := range spec.Peer.Routes {
		wantRoutes[routeKey(routeDst(r.Dst, r.Via))] = routeText(r)
	}
	errs = append(errs, syncSet(p.routes, wantRoutes, func(k string, add bool) error {
		return set(opFor(add, OpRouteReplace, OpRouteDel), func() { setOrDelete(p.routes, k, wantRoutes[k], add) })
	}))
	return errors.Join(errs...)
}

// DeletePort implements Dataplane.
func (f *Fake) DeletePort(ctx context.Context, spec PortSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	f.lock()
	defer f.mu.Unlock()
	l := f.links[spec.Device]
	var err error
	switch spec.Binding {
	case BindingTap:
		if l != nil && l.master != "" && l.master == spec.Bridge {
			err = f.release(l)
		}
	case BindingVeth:
		if l != nil && l.kind == "veth" {
			err = f.deleteLink(l.name)
		}
		if err == nil {
			err = f.deleteNetnsIfEmpty(spec.Peer.Netns)
		}
	case BindingSubPort:
		if l != nil && l.kind == "vlan" {
			err = f.deleteLink(l.name)
		}
		if err == nil && spec.Peer.Netns != "" {
			err = f.deleteNetnsIfEmpty(spec.Peer.Netns)
		}
	}
	if err != nil {
		return fmt.Errorf("delete port %s (%s): %w", spec.ID, spec.Device, err)
	}
	return nil
}

func (f *Fake) deleteNetnsIfEmpty(name string) error {
	if !f.netns[name] {
		return nil // missing, or not ours
	}
	for _, l := range f.links {
		if l.peer != nil && l.peer.netns == name {
			return nil
		}
	}
	if err := f.write(OpNetnsDel, name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	delete(f.netns, name)
	return nil
}

// SetFDB implements Dataplane.
func (f *Fake) SetFDB(ctx context.Context, vxlanDevice string, entries []FDBEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want, _, err := wantedFDB(entries)
	if err != nil {
		return fmt.Errorf("set fdb of %s: %w", vxlanDevice, err)
	}
	f.lock()
	defer f.mu.Unlock()
	l := f.links[vxlanDevice]
	switch {
	case l == nil:
		return fmt.Errorf("set fdb of %s: %w", vxlanDevice, ErrDeviceMissing)
	case l.kind != "vxlan":
		return fmt.Errorf("set fdb of %s: a %s device has no vxlan forwarding table", vxlanDevice, l.kind)
	}
	if l.fdb == nil {
		l.fdb = map[fdbKey]FDBEntry{}
	}
	have := map[fdbKey]bool{}
	for k := range l.fdb {
		have[k] = true
	}
	wantSet := map[fdbKey]bool{}
	for k := range want {
		wantSet[k] = true
	}
	err = syncSet(have, wantSet, func(k fdbKey, add bool) error {
		if err := f.write(opFor(add, OpFDBAdd, OpFDBDel), vxlanDevice); err != nil {
			return fmt.Errorf("%s %s dst %s: %w", opFor(add, OpFDBAdd, OpFDBDel), k.mac, k.dst, err)
		}
		if add {
			l.fdb[k] = want[k]
		} else {
			delete(l.fdb, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set fdb of %s: %w", vxlanDevice, err)
	}
	return nil
}

// Inventory implements Dataplane.
func (f *Fake) Inventory(ctx context.Context) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.lock()
	defer f.mu.Unlock()
	var out []Device
	for _, l := range f.links {
		if IsOwnedName(l.name) {
			out = append(out, Device{Name: l.name, Kind: l.kind, Master: l.master, Ifindex: l.index})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteDevice implements Dataplane.
func (f *Fake) DeleteDevice(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.lock()
	defer f.mu.Unlock()
	l := f.links[name]
	if l == nil {
		return nil
	}
	if !deletable(name, l.kind) {
		return fmt.Errorf("delete device %s: a %s device netsource does not own", name, l.kind)
	}
	return f.deleteLink(name)
}

// Watch implements Dataplane. Events come for every link change in the agent namespace.
func (f *Fake) Watch(ctx context.Context) (<-chan LinkEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan LinkEvent, fakeWatchBuffer)
	f.lock()
	f.watchers[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.lock()
		defer f.mu.Unlock()
		f.dropWatcher(ch)
	}()
	return ch, nil
}

// Dump prints the state as sorted lines, one per device, forwarding entry and namespace:
//
//	bridge brq6a0e4b8e-1c mtu 1450 up
//	fdb vxlan-1001 00:00:00:00:00:00 dst 198.18.0.2
//	netns vm1
//	veth tap3d4e0000-11 master brq6a0e4b8e-1c mtu 1450 up peer ns-3d4e0000-11@vm1 mac fa:16:3e:00:00:01 mtu 1450 up addrs 192.0.2.11/24 routes default via 192.0.2.1
//	vxlan vxlan-1001 vni 1001 local 198.18.0.1 group 239.1.1.1 learning master brq6a0e4b8e-1c mtu 1450 up
func (f *Fake) Dump() string {
	f.lock()
	defer f.mu.Unlock()
	var lines []string
	for _, l := range f.links {
		lines = append(lines, l.String())
		for k := range l.fdb {
			lines = append(lines, fdbLine(l.name, k))
		}
	}
	for name, ours := range f.netns {
		lines = append(lines, netnsLine(name, ours))
	}
	return dumpText(lines)
}

func fdbLine(device string, k fdbKey) string {
	return fmt.Sprintf("fdb %s %s dst %s", device, k.mac, k.dst)
}

func netnsLine(name string, ours bool) string {
	if ours {
		return "netns " + name
	}
	return "netns " + name + " foreign"
}

func dumpText(lines []string) string {
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func (l *fakeLink) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", l.kind, l.name)
	switch l.kind {
	case "vxlan":
		v := l.vxlan
		fmt.Fprintf(&b, " vni %d", v.VNI)
		optional(&b, "local", v.Local != nil, v.Local)
		optional(&b, "group", v.Group != nil, v.Group)
		optional(&b, "dev", v.Dev != "", v.Dev)
		optional(&b, "port", v.Port != 0, v.Port)
		optional(&b, "ttl", v.TTL != 0, v.TTL)
		optional(&b, "tos", v.TOS != 0, v.TOS)
		b.WriteString(map[bool]string{true: " learning", false: " nolearning"}[v.Learning])
	case "vlan":
		fmt.Fprintf(&b, " link %s id %d", l.vlanParent, l.vlanID)
	}
	optional(&b, "master", l.master != "", l.master)
	fmt.Fprintf(&b, " mtu %d %s", l.mtu, upDown(l.up))
	if p := l.peer; p != nil {
		fmt.Fprintf(&b, " peer %s@%s mac %s mtu %d %s", p.name, p.netns, p.mac, p.mtu, upDown(p.up))
		optional(&b, "addrs", len(p.addrs) > 0, strings.Join(slices.Sorted(maps.Keys(p.addrs)), ","))
		optional(&b, "routes", len(p.routes) > 0, strings.Join(slices.Sorted(maps.Values(p.routes)), ","))
	}
	return b.String()
}

func optional(b *strings.Builder, key string, show bool, v any) {
	if show {
		fmt.Fprintf(b, " %s %v", key, v)
	}
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// fakeWant is the wanted state of a device's generic attributes.
type fakeWant struct {
	mtu    int       // 0: leave
	master *fakeLink // nil: leave
	up     bool
}

// ensureLink converges MTU, bridge membership and admin state, in that order (a port is
// enslaved at its final MTU, then brought up).
func (f *Fake) ensureLink(l *fakeLink, w fakeWant) error {
	if w.mtu != 0 && l.mtu != w.mtu {
		if err := f.write(OpSetMTU, l.name); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", w.mtu, l.name, err)
		}
		l.mtu = w.mtu
		f.notify(l, false)
	}
	if w.master != nil && l.master != w.master.name {
		if err := f.roomFor(w.master, l.name); err != nil {
			return err
		}
		if err := f.write(OpSetMaster, l.name); err != nil {
			return fmt.Errorf("enslave %s to %s: %w", l.name, w.master.name, err)
		}
		l.master = w.master.name
		f.notify(l, false)
	}
	if l.up != w.up {
		if err := f.write(opFor(w.up, OpSetUp, OpSetDown), l.name); err != nil {
			return fmt.Errorf("set %s %s: %w", l.name, upDown(w.up), err)
		}
		l.up = w.up
		f.notify(l, false)
	}
	return nil
}

// release takes a device out of its bridge.
func (f *Fake) release(l *fakeLink) error {
	if err := f.write(OpNoMaster, l.name); err != nil {
		return fmt.Errorf("release %s from %s: %w", l.name, l.master, err)
	}
	l.master = ""
	f.notify(l, false)
	return nil
}

// roomFor fails with ErrBridgeFull when br holds MaxBridgePorts ports, device not among them.
func (f *Fake) roomFor(br *fakeLink, device string) error {
	ports := 0
	for _, l := range f.links {
		if l.master == br.name && l.name != device {
			ports++
		}
	}
	if ports >= MaxBridgePorts {
		return fmt.Errorf("plug %s into %s (%d ports): %w", device, br.name, ports, ErrBridgeFull)
	}
	return nil
}

// deleteLink deletes a device if it exists (a counted write).
func (f *Fake) deleteLink(name string) error {
	l := f.links[name]
	if l == nil {
		return nil
	}
	if err := f.write(OpDelete, name); err != nil {
		return fmt.Errorf("delete %s %s: %w", l.kind, name, err)
	}
	f.unlink(l)
	return nil
}

// unlink removes a device with what the kernel removes along with it.
func (f *Fake) unlink(l *fakeLink) {
	delete(f.links, l.name)
	f.notify(l, true)
	for _, upper := range f.links {
		if upper.kind == "vlan" && upper.vlanParent == l.name {
			f.unlink(upper) // the kernel deletes a device's 802.1Q sub-interfaces with it
		}
	}
	if l.kind != "bridge" {
		return
	}
	for _, port := range f.links {
		if port.master == l.name {
			port.master = ""
			f.notify(port, false)
		}
	}
}

func (f *Fake) newLink(name, kind string, mtu int) *fakeLink {
	f.nextIndex++
	l := &fakeLink{name: name, kind: kind, index: f.nextIndex, mtu: mtu}
	f.links[name] = l
	return l
}

func (f *Fake) write(op, name string) error {
	f.mutations.Add(1)
	if f.FailOn != nil {
		return f.FailOn(op, name)
	}
	return nil
}

// notify sends a link event to every watcher; a watcher whose buffer is full is closed.
func (f *Fake) notify(l *fakeLink, deleted bool) {
	ev := LinkEvent{Name: l.name, Ifindex: l.index, Deleted: deleted, Up: l.up, Master: l.master}
	for ch := range f.watchers {
		select {
		case ch <- ev:
		default:
			f.dropWatcher(ch)
		}
	}
}

func (f *Fake) dropWatcher(ch chan LinkEvent) {
	if _, ok := f.watchers[ch]; ok {
		delete(f.watchers, ch)
		close(ch)
	}
}

// fakeMAC is the deterministic "random" MAC of a new veth peer.
func fakeMAC(index int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(index >> 8), byte(index)}
}

// syncSet converges have to want: apply(k, true) for missing or different entries first,
// then apply(k, false) for stale ones, each in sorted key order; errors are collected.
func syncSet[K comparable, V comparable](have map[K]V, want map[K]V, apply func(k K, add bool) error) error {
	var errs []error
	for _, k := range sortedKeys(want) {
		if v, ok := have[k]; !ok || v != want[k] {
			errs = append(errs, apply(k, true))
		}
	}
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; !ok {
			errs = append(errs, apply(k, false))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[K comparable, V any](m map[K]V) []K {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}

func setOrDelete[V any](m map[string]V, k string, v V, add bool) {
	if add {
		m[k] = v
	} else {
		delete(m, k)
	}
}

func opFor(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

func cmpOr(v, fallback int) int {
	if v != 0 {
		return v
	}
	return fallback
}
