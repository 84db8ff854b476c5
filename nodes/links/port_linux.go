package links

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// EnsurePort implements Dataplane.
func (n *Netlink) EnsurePort(ctx context.Context, spec PortSpec) (PortState, error) {
	if err := ctx.Err(); err != nil {
		return PortState{}, err
	}
	if err := spec.validate(); err != nil {
		return PortState{}, err
	}
	state, err := n.ensurePort(spec)
	if errors.Is(err, unix.ENODEV) && !errors.Is(err, ErrDeviceMissing) {
		// The device vanished between two calls (a tap the hypervisor removed): report it
		// as missing, not as a failure (Neutron bug 1542972).
		err = fmt.Errorf("%w: %w", ErrDeviceMissing, err)
	}
	if err != nil {
		return PortState{}, fmt.Errorf("plug port %s (%s) into %s: %w", spec.ID, spec.Device, spec.Bridge, err)
	}
	return state, nil
}

func (n *Netlink) ensurePort(spec PortSpec) (PortState, error) {
	br, err := lookup(n.h, spec.Bridge)
	switch {
	case err != nil:
		return PortState{}, err
	case br == nil:
		return PortState{}, fmt.Errorf("bridge %s: %w", spec.Bridge, ErrDeviceMissing)
	case br.Type() != "bridge":
		return PortState{}, fmt.Errorf("bridge %s: exists as a %s device", spec.Bridge, br.Type())
	}
	l, err := lookup(n.h, spec.Device)
	switch {
	case err != nil:
		return PortState{}, err
	case l == nil && spec.Binding == BindingTap:
		return PortState{}, fmt.Errorf("tap %s: %w", spec.Device, ErrDeviceMissing)
	}
	created := l == nil
	switch spec.Binding {
	case BindingVeth:
		if l, err = n.ensureVeth(spec); err != nil {
			return PortState{}, err
		}
	case BindingSubPort:
		// As Neutron's Linux bridge trunk driver: the sub-port's device is an 802.1Q
		// sub-interface of the parent's, plugged like any port.
		sp := spec.SubPort
		if l, err = n.ensureVLANDevice("sub-port", spec.Device, sp.ParentDevice, sp.VLANID, spec.MTU); err != nil {
			return PortState{}, err
		}
	}
	if err := n.ensureLink(n.h, l, linkWant{mtu: spec.MTU, master: br, up: spec.AdminUp}); err != nil {
		if created && errors.Is(err, ErrBridgeFull) {
			// A port that cannot be plugged leaves nothing behind.
			err = errors.Join(err, n.DeletePort(context.Background(), spec))
		}
		return PortState{}, err
	}
	if spec.Binding == BindingSubPort && spec.Peer.Netns != "" {
		if err := n.ensureGuestVLAN(spec); err != nil {
			return PortState{}, err
		}
	}
	return n.portState(spec.Device)
}

// ensureGuestVLAN makes a sub-port's VLAN interface on its veth-bound parent inside the VM
// namespace (what a guest of a trunk port configures itself).
func (n *Netlink) ensureGuestVLAN(spec PortSpec) error {
	_, changed, err := EnsureVLANInterface(GuestVLAN(spec))
	if changed {
		n.mutations.Add(1)
	}
	return err
}

// GuestVLAN is the VM-side VLAN interface of a sub-port whose parent is veth-bound.
func GuestVLAN(spec PortSpec) VLANInterface {
	return VLANInterface{Netns: spec.Peer.Netns, Parent: spec.SubPort.ParentPeer, Name: spec.Peer.Name,
		VLANID: spec.SubPort.VLANID, MAC: spec.Peer.MAC, Addresses: spec.Peer.Addresses, Routes: spec.Peer.Routes,
		MTU: spec.MTU, Up: spec.AdminUp}
}

// portState reads back what the port reached.
func (n *Netlink) portState(device string) (PortState, error) {
	l, err := lookup(n.h, device)
	if err == nil && l == nil {
		err = fmt.Errorf("%s: %w", device, ErrDeviceMissing)
	}
	if err != nil {
		return PortState{}, err
	}
	return PortState{Ifindex: l.Attrs().Index, OperUp: l.Attrs().OperState == netlink.OperUp}, nil
}

// EnsureVeth creates or repairs a veth-bound port's pair and configures its namespace
// side, and returns the host side without plugging it anywhere: for a dataplane that plugs
// it itself (Open vSwitch).
func (n *Netlink) EnsureVeth(spec PortSpec) (netlink.Link, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	return n.ensureVeth(spec)
}

// DeleteVeth deletes a veth-bound port's pair, and its namespace when netsource made it
// and nothing else is left in it.
func (n *Netlink) DeleteVeth(spec PortSpec) error { return n.deleteVeth(spec) }

// DeletePeerNetnsIfEmpty deletes a VM namespace netsource made once only loopback is left
// in it; a namespace it did not make is never deleted.
func (n *Netlink) DeletePeerNetnsIfEmpty(name string) error {
	n.nsMu.Lock()
	defer n.nsMu.Unlock()
	return n.deletePeerNetnsIfEmpty(name)
}

// ensureVeth makes sure the veth pair exists and configures its namespace side.
func (n *Netlink) ensureVeth(spec PortSpec) (netlink.Link, error) {
	host, ph, err := n.ensureVethPair(spec)
	if err != nil {
		return nil, err
	}
	defer ph.Close()
	if err := n.configurePeer(ph, spec); err != nil {
		return nil, fmt.Errorf("configure peer %s in netns %s: %w", spec.Peer.Name, spec.Peer.Netns, err)
	}
	return host, nil
}

// ensureVethPair returns the host side of the pair and a handle inside the peer's
// namespace (the caller closes it), creating the namespace and the pair when missing. A
// veth whose peer is not spec.Peer.Name in spec.Peer.Netns is replaced.
func (n *Netlink) ensureVethPair(spec PortSpec) (host netlink.Link, ph *netlink.Handle, err error) {
	n.nsMu.Lock()
	defer n.nsMu.Unlock()
	if err := n.ensurePeerNetns(spec.Peer.Netns); err != nil {
		return nil, nil, err
	}
	ns, err := netns.GetFromName(spec.Peer.Netns)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", spec.Peer.Netns, err)
	}
	defer ns.Close()
	if ph, err = newHandle(ns); err != nil {
		return nil, nil, fmt.Errorf("open netlink in netns %s: %w", spec.Peer.Netns, err)
	}
	if host, err = n.vethPair(spec, ns, ph); err != nil {
		ph.Close()
		return nil, nil, err
	}
	return host, ph, nil
}

func (n *Netlink) vethPair(spec PortSpec, ns netns.NsHandle, ph *netlink.Handle) (netlink.Link, error) {
	host, err := lookup(n.h, spec.Device)
	switch {
	case err != nil:
		return nil, err
	case host == nil:
	case host.Type() != "veth":
		// Not ours to replace (a hypervisor's tap, say): the port's binding is wrong.
		return nil, fmt.Errorf("%s exists as a %s device, not a veth", spec.Device, kindOf(host))
	default:
		ok, err := isPairOf(host, ph, spec.Peer.Name)
		if err != nil || ok {
			return host, err
		}
		n.log.Info().Str("device", spec.Device).Str("port", spec.ID).Msg("replacing veth whose peer is not the wanted one")
		if err := n.deleteFound(host); err != nil {
			return nil, err
		}
	}
	// A peer left behind in the namespace (say, by a crash between two steps) would make
	// the creation fail with EEXIST.
	stale, err := lookup(ph, spec.Peer.Name)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		if err := n.write(OpDelete, spec.Peer.Name, func() error { return ph.LinkDel(stale) }); err != nil {
			return nil, fmt.Errorf("delete stale %s in netns %s: %w", spec.Peer.Name, spec.Peer.Netns, err)
		}
	}
	veth := netlink.NewVeth(newAttrs(spec.Device, spec.MTU))
	veth.PeerName = spec.Peer.Name
	veth.PeerHardwareAddr = spec.Peer.MAC
	veth.PeerMTU = uint32(spec.MTU)
	veth.PeerNamespace = netlink.NsFd(ns) // created directly in place, never visible here
	return n.createLink(veth)
}

// isPairOf reports whether the peer of veth host is the device peerName of ph's namespace.
// A veth's IFLA_LINK is its peer's ifindex, also across namespaces.
func isPairOf(host netlink.Link, ph *netlink.Handle, peerName string) (bool, error) {
	peer, err := lookup(ph, peerName)
	if err != nil || peer == nil {
		return false, err
	}
	return peer.Type() == "veth" && peer.Attrs().ParentIndex == host.Attrs().Index &&
		host.Attrs().ParentIndex == peer.Attrs().Index, nil
}

// newAttrs are link attributes for a create request; NewLinkAttrs keeps the kernel's
// default queue length (a zero TxQLen would be sent as 0).
func newAttrs(name string, mtu int) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name, a.MTU = name, mtu
	return a
}

// configurePeer converges the namespace side: loopback up, MAC, addresses, MTU, admin
// state, then routes (a gateway must be reachable through an address of an up link).
func (n *Netlink) configurePeer(h *netlink.Handle, spec PortSpec) error {
	p := spec.Peer
	if err := n.ensureLoopback(h); err != nil {
		return err
	}
	l, err := lookup(h, p.Name)
	if err == nil && l == nil {
		err = fmt.Errorf("%s: %w", p.Name, ErrDeviceMissing)
	}
	if err != nil {
		return err
	}
	if p.MAC != nil && !bytes.Equal(l.Attrs().HardwareAddr, p.MAC) {
		if err := n.write(OpSetMAC, p.Name, func() error { return h.LinkSetHardwareAddr(l, p.MAC) }); err != nil {
			return fmt.Errorf("set mac %s on %s: %w", p.MAC, p.Name, err)
		}
	}
	if err := n.syncAddrs(h, l, p.Addresses); err != nil {
		return err
	}
	if err := n.ensureLink(h, l, linkWant{mtu: spec.MTU, up: spec.AdminUp}); err != nil {
		return err
	}
	if p.TxChecksumOff {
		if err := n.txChecksumOff(p.Netns, p.Name); err != nil {
			return err
		}
	}
	if !spec.AdminUp {
		// Setting a link down makes the kernel flush its routes (fib_sync_down_dev), and a
		// route via a down link is refused (ENETDOWN); they are set when it comes up.
		return nil
	}
	return n.syncRoutes(h, l, p.Routes)
}

func (n *Netlink) ensureLoopback(h *netlink.Handle) error {
	lo, err := lookup(h, "lo")
	if err != nil || lo == nil {
		return err
	}
	return n.ensureLink(h, lo, linkWant{up: true})
}

// syncAddrs makes the global-scope addresses of l exactly want (link-local ones are the
// kernel's). IPv6 addresses skip duplicate address detection, so they are usable at once.
//
// Stale addresses go first, and the list is read again before adding: deleting a primary
// IPv4 address also deletes the secondary addresses of its subnet (unless the namespace
// sets net.ipv4.conf.*.promote_secondaries), so 192.0.2.11/24 -> 192.0.2.12/24 done as
// "add .12, delete .11" would end with neither.
func (n *Netlink) syncAddrs(h *netlink.Handle, l netlink.Link, want []*net.IPNet) error {
	wanted := map[string]*net.IPNet{}
	for _, w := range want {
		wanted[prefixKey(w)] = w
	}
	have, err := globalAddrs(h, l)
	if err != nil {
		return err
	}
	var errs []error
	deleted := false
	for _, k := range sortedKeys(have) {
		if wanted[k] == nil {
			a := have[k]
			errs = append(errs, n.wrapWrite(OpAddrDel, l, k, func() error { return h.AddrDel(l, &a) }))
			deleted = true
		}
	}
	if deleted {
		if have, err = globalAddrs(h, l); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	for _, k := range sortedKeys(wanted) {
		if _, ok := have[k]; ok {
			continue
		}
		a := &netlink.Addr{IPNet: wanted[k]}
		if wanted[k].IP.To4() == nil {
			a.Flags = unix.IFA_F_NODAD
		}
		errs = append(errs, n.wrapWrite(OpAddrAdd, l, k, func() error { return h.AddrAdd(l, a) }))
	}
	return errors.Join(errs...)
}

// globalAddrs lists the global-scope addresses of l by prefixKey.
func globalAddrs(h *netlink.Handle, l netlink.Link) (map[string]netlink.Addr, error) {
	list, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	out := map[string]netlink.Addr{}
	for _, a := range list {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			out[prefixKey(a.IPNet)] = a
		}
	}
	return out, nil
}

// syncRoutes makes the static routes through l exactly want. netsource marks its routes
// with protocol "static"; kernel routes (connected subnets) are not touched.
func (n *Netlink) syncRoutes(h *netlink.Handle, l netlink.Link, want []Route) error {
	have, err := staticRoutes(h, l)
	if err != nil {
		return err
	}
	haveText := map[string]string{}
	for k, r := range have {
		haveText[k] = routeText(Route{Dst: r.Dst, Via: r.Gw})
	}
	wanted := map[string]*netlink.Route{}
	wantText := map[string]string{}
	for _, r := range want {
		k := routeKey(routeDst(r.Dst, r.Via))
		wanted[k], wantText[k] = kernelRoute(l.Attrs().Index, r), routeText(r)
	}
	return syncSet(haveText, wantText, func(k string, add bool) error {
		if !add {
			r := have[k]
			return n.wrapWrite(OpRouteDel, l, haveText[k], func() error { return h.RouteDel(&r) })
		}
		return n.wrapWrite(OpRouteReplace, l, wantText[k], func() error { return h.RouteReplace(wanted[k]) })
	})
}

// staticRoutes lists the main-table routes with protocol static through l, by routeKey.
func staticRoutes(h *netlink.Handle, l netlink.Link) (map[string]netlink.Route, error) {
	list, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", l.Attrs().Name, err)
	}
	out := map[string]netlink.Route{}
	for _, r := range list {
		if r.Protocol == unix.RTPROT_STATIC && (r.Table == unix.RT_TABLE_MAIN || r.Table == 0) {
			out[routeKey(routeDst(r.Dst, r.Gw))] = r
		}
	}
	return out, nil
}

func kernelRoute(index int, r Route) *netlink.Route {
	kr := &netlink.Route{
		LinkIndex: index,
		Dst:       routeDst(r.Dst, r.Via),
		Gw:        r.Via,
		Protocol:  unix.RTPROT_STATIC,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.Via == nil {
		kr.Scope = netlink.SCOPE_LINK
	}
	return kr
}

// wrapWrite is write with the error naming the operation, the object and the device.
func (n *Netlink) wrapWrite(op string, l netlink.Link, what string, fn func() error) error {
	if err := n.write(op, l.Attrs().Name, fn); err != nil {
		return fmt.Errorf("%s %s on %s: %w", op, what, l.Attrs().Name, err)
	}
	return nil
}

// DeletePort implements Dataplane.
func (n *Netlink) DeletePort(ctx context.Context, spec PortSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	var err error
	switch spec.Binding {
	case BindingTap:
		err = n.releaseFrom(spec.Device, spec.Bridge) // the tap is the hypervisor's
	case BindingVeth:
		err = n.deleteVeth(spec)
	case BindingSubPort:
		err = n.deleteSubPort(spec)
	}
	if err != nil {
		return fmt.Errorf("delete port %s (%s): %w", spec.ID, spec.Device, err)
	}
	return nil
}

// deleteSubPort deletes the sub-port's 802.1Q device and its VLAN interface in the VM.
func (n *Netlink) deleteSubPort(spec PortSpec) error {
	l, err := lookup(n.h, spec.Device)
	if err != nil {
		return err
	}
	if l != nil && l.Type() == "vlan" {
		if err := n.deleteFound(l); err != nil {
			return err
		}
	}
	if spec.Peer.Netns == "" {
		return nil
	}
	if err := DeleteVLANInterface(spec.Peer.Netns, spec.SubPort.ParentPeer, spec.Peer.Name, spec.SubPort.VLANID); err != nil {
		return err
	}
	n.nsMu.Lock()
	defer n.nsMu.Unlock()
	return n.deletePeerNetnsIfEmpty(spec.Peer.Netns)
}

// deleteVeth deletes the pair (the peer goes with the host side) and then the peer's
// namespace if netsource created it and it is empty now.
func (n *Netlink) deleteVeth(spec PortSpec) error {
	l, err := lookup(n.h, spec.Device)
	if err != nil {
		return err
	}
	switch {
	case l == nil:
	case l.Type() != "veth":
		n.log.Warn().Str("device", spec.Device).Str("port", spec.ID).Str("kind", l.Type()).
			Msg("veth port's device is not a veth; left in place")
	default:
		if err := n.deleteFound(l); err != nil {
			return err
		}
	}
	n.nsMu.Lock()
	defer n.nsMu.Unlock()
	return n.deletePeerNetnsIfEmpty(spec.Peer.Netns)
}
