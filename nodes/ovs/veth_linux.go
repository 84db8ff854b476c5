package ovs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/links"
)

// Veth-bound ports: the same devices as the links dataplane makes (host side tap<id>, peer
// ns-<id> in the VM namespace with the port's MAC, addresses and routes), plugged into
// br-int instead of a Linux bridge. This is a minimal copy of links' veth logic (which is
// unexported there); namespaces netsource creates are recorded in the same marker
// directory, so either dataplane deletes only what netsource made.

// lookup returns the named link of h's namespace, or nil when there is none.
func lookup(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	return l, nil
}

// netlinkWrite issues one kernel change, counted as a mutation.
func (d *Dataplane) netlinkWrite(what string, fn func() error) error {
	d.mutations.Add(1)
	d.log.Debug().Str("op", what).Msg("netlink write")
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ensureVeth makes sure the pair exists with its peer configured, and returns the host side.
func (d *Dataplane) ensureVeth(spec links.PortSpec) (netlink.Link, error) {
	d.nsMu.Lock()
	defer d.nsMu.Unlock()
	if err := d.ensurePeerNetns(spec.Peer.Netns); err != nil {
		return nil, err
	}
	ns, err := netns.GetFromName(spec.Peer.Netns)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", spec.Peer.Netns, err)
	}
	defer ns.Close()
	ph, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", spec.Peer.Netns, err)
	}
	defer ph.Close()
	host, err := d.vethPair(spec, ns, ph)
	if err != nil {
		return nil, err
	}
	if err := d.configurePeer(ph, ns, spec); err != nil {
		return nil, fmt.Errorf("configure peer %s in netns %s: %w", spec.Peer.Name, spec.Peer.Netns, err)
	}
	return host, nil
}

func (d *Dataplane) vethPair(spec links.PortSpec, ns netns.NsHandle, ph *netlink.Handle) (netlink.Link, error) {
	host, err := lookup(d.h, spec.Device)
	switch {
	case err != nil:
		return nil, err
	case host == nil:
	case host.Type() != "veth":
		return nil, fmt.Errorf("%s exists as a %s device, not a veth", spec.Device, host.Type())
	default:
		peer, err := lookup(ph, spec.Peer.Name)
		if err != nil {
			return nil, err
		}
		if peer != nil && peer.Attrs().ParentIndex == host.Attrs().Index && host.Attrs().ParentIndex == peer.Attrs().Index {
			return host, nil
		}
		if err := d.netlinkWrite("delete "+spec.Device, func() error { return d.h.LinkDel(host) }); err != nil {
			return nil, err
		}
	}
	if stale, err := lookup(ph, spec.Peer.Name); err != nil {
		return nil, err
	} else if stale != nil {
		if err := d.netlinkWrite("delete stale "+spec.Peer.Name, func() error { return ph.LinkDel(stale) }); err != nil {
			return nil, err
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = spec.Device, spec.MTU
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: spec.Peer.Name, PeerHardwareAddr: spec.Peer.MAC,
		PeerMTU: uint32(spec.MTU), PeerNamespace: netlink.NsFd(ns)}
	if err := d.netlinkWrite("create veth "+spec.Device, func() error { return d.h.LinkAdd(veth) }); err != nil {
		return nil, err
	}
	host, err = lookup(d.h, spec.Device)
	if err == nil && host == nil {
		err = fmt.Errorf("%s vanished right after creation", spec.Device)
	}
	return host, err
}

// ensureLink converges MTU and admin state.
func (d *Dataplane) ensureLink(h *netlink.Handle, l netlink.Link, mtu int, up bool) error {
	a := l.Attrs()
	if mtu != 0 && a.MTU != mtu {
		if err := d.netlinkWrite(fmt.Sprintf("set mtu %d on %s", mtu, a.Name), func() error { return h.LinkSetMTU(l, mtu) }); err != nil {
			return err
		}
	}
	if isUp := a.Flags&net.FlagUp != 0; isUp != up {
		set, what := h.LinkSetDown, "set down "
		if up {
			set, what = h.LinkSetUp, "set up "
		}
		if err := d.netlinkWrite(what+a.Name, func() error { return set(l) }); err != nil {
			return err
		}
	}
	return nil
}

// configurePeer converges the VM side: loopback up, MAC, addresses, MTU, admin state,
// checksum offload off, routes.
func (d *Dataplane) configurePeer(h *netlink.Handle, ns netns.NsHandle, spec links.PortSpec) error {
	p := spec.Peer
	if lo, err := lookup(h, "lo"); err == nil && lo != nil {
		if err := d.ensureLink(h, lo, 0, true); err != nil {
			return err
		}
	}
	l, err := lookup(h, p.Name)
	if err == nil && l == nil {
		err = fmt.Errorf("%s: %w", p.Name, links.ErrDeviceMissing)
	}
	if err != nil {
		return err
	}
	if p.MAC != nil && !bytes.Equal(l.Attrs().HardwareAddr, p.MAC) {
		if err := d.netlinkWrite("set mac on "+p.Name, func() error { return h.LinkSetHardwareAddr(l, p.MAC) }); err != nil {
			return err
		}
	}
	if err := d.syncAddrs(h, l, p.Addresses); err != nil {
		return err
	}
	if err := d.ensureLink(h, l, spec.MTU, spec.AdminUp); err != nil {
		return err
	}
	// The userspace datapath reads frames from the host side with a packet socket, which
	// gets them before the kernel has filled in offloaded checksums: a VM's TCP and UDP
	// would leave with bad checksums. Checksums are computed in the VM instead.
	if d.cfg.DatapathType == "netdev" {
		offload := func(dev string, change func() error) error {
			return d.netlinkWrite("tx checksum offload off on "+dev, change)
		}
		if err := links.TxChecksumOff(ns, offload, p.Name); err != nil {
			return err
		}
	}
	if !spec.AdminUp {
		return nil // routes via a down link are refused; they come with the link
	}
	return d.syncRoutes(h, l, p.Routes)
}

func prefixKey(n *net.IPNet) string {
	ones, _ := n.Mask.Size()
	ip := n.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return fmt.Sprintf("%s/%d", ip, ones)
}

func (d *Dataplane) syncAddrs(h *netlink.Handle, l netlink.Link, want []*net.IPNet) error {
	wanted := map[string]*net.IPNet{}
	for _, w := range want {
		wanted[prefixKey(w)] = w
	}
	list, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	have := map[string]netlink.Addr{}
	for _, a := range list {
		if a.Scope == unix.RT_SCOPE_UNIVERSE {
			have[prefixKey(a.IPNet)] = a
		}
	}
	var errs []error
	for _, k := range sortedKeys(have) {
		if wanted[k] == nil {
			a := have[k]
			errs = append(errs, d.netlinkWrite("delete address "+k, func() error { return h.AddrDel(l, &a) }))
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
		errs = append(errs, d.netlinkWrite("add address "+k, func() error { return h.AddrAdd(l, a) }))
	}
	return errors.Join(errs...)
}

func routeDst(r links.Route) *net.IPNet {
	if r.Dst != nil {
		ip := r.Dst.IP.Mask(r.Dst.Mask)
		if v4 := ip.To4(); v4 != nil {
			ip = v4
			if len(r.Dst.Mask) == net.IPv6len {
				return &net.IPNet{IP: ip, Mask: r.Dst.Mask[12:]}
			}
		}
		return &net.IPNet{IP: ip, Mask: r.Dst.Mask}
	}
	if r.Via != nil && r.Via.To4() == nil {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// syncRoutes makes the static routes through l exactly want (protocol static marks ours).
func (d *Dataplane) syncRoutes(h *netlink.Handle, l netlink.Link, want []links.Route) error {
	list, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", l.Attrs().Name, err)
	}
	have := map[string]netlink.Route{}
	for _, r := range list {
		if r.Protocol == unix.RTPROT_STATIC && r.Dst != nil {
			have[prefixKey(r.Dst)] = r
		} else if r.Protocol == unix.RTPROT_STATIC {
			have[prefixKey(routeDst(links.Route{Via: r.Gw}))] = r
		}
	}
	wanted := map[string]*netlink.Route{}
	for _, r := range want {
		dst := routeDst(r)
		kr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: r.Via, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN}
		if r.Via == nil {
			kr.Scope = netlink.SCOPE_LINK
		}
		wanted[prefixKey(dst)] = kr
	}
	var errs []error
	for _, k := range sortedKeys(have) {
		if wanted[k] == nil {
			r := have[k]
			errs = append(errs, d.netlinkWrite("delete route "+k, func() error { return h.RouteDel(&r) }))
		}
	}
	for _, k := range sortedKeys(wanted) {
		w := wanted[k]
		if r, ok := have[k]; ok && r.Gw.Equal(w.Gw) {
			continue
		}
		errs = append(errs, d.netlinkWrite("replace route "+k, func() error { return h.RouteReplace(w) }))
	}
	return errors.Join(errs...)
}

// socketIn opens a datagram socket inside ns.
func socketIn(ns netns.NsHandle) (int, error) {
	return links.SocketIn(ns, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}

// deleteVeth deletes the pair and the peer's namespace if netsource created it and it is
// empty now.
func (d *Dataplane) deleteVeth(spec links.PortSpec) error {
	l, err := lookup(d.h, spec.Device)
	if err != nil {
		return err
	}
	if l != nil && l.Type() == "veth" {
		if err := d.netlinkWrite("delete "+spec.Device, func() error { return d.h.LinkDel(l) }); err != nil {
			return err
		}
	}
	d.nsMu.Lock()
	defer d.nsMu.Unlock()
	return d.deletePeerNetnsIfEmpty(spec.Peer.Netns)
}

// Peer namespaces: created when missing and recorded in links.DefaultMarkerDir; deleted
// only when recorded there and empty.

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

func (d *Dataplane) markerPath(name string) string { return filepath.Join(d.markerDir, name) }

func (d *Dataplane) ensurePeerNetns(name string) error {
	if _, err := os.Stat(netnsPath(name)); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := d.netlinkWrite("create netns "+name, func() error { return links.CreateNamedNetns(name) }); err != nil {
		return err
	}
	if err := os.MkdirAll(d.markerDir, 0o755); err != nil {
		return fmt.Errorf("record netns %s as ours: %w", name, err)
	}
	if err := os.WriteFile(d.markerPath(name), nil, 0o644); err != nil {
		return fmt.Errorf("record netns %s as ours: %w", name, err)
	}
	return nil
}

func (d *Dataplane) deletePeerNetnsIfEmpty(name string) error {
	if name == "" {
		return nil
	}
	if _, err := os.Stat(d.markerPath(name)); errors.Is(err, fs.ErrNotExist) {
		return nil // not ours
	}
	if _, err := os.Stat(netnsPath(name)); err == nil {
		ns, err := netns.GetFromName(name)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", name, err)
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			return fmt.Errorf("open netlink in netns %s: %w", name, err)
		}
		list, err := h.LinkList()
		h.Close()
		if err != nil {
			return fmt.Errorf("list links of netns %s: %w", name, err)
		}
		for _, l := range list {
			switch l.Attrs().Name {
			case "lo", "tunl0", "sit0", "ip6tnl0", "ip6gre0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0":
			default:
				return nil // still used
			}
		}
		if err := d.netlinkWrite("delete netns "+name, func() error { return netns.DeleteNamed(name) }); err != nil {
			return err
		}
	}
	if err := os.Remove(d.markerPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget netns %s: %w", name, err)
	}
	return nil
}
