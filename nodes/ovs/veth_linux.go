package ovs

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/netsource/netsource/nodes/links"
)

// Veth-bound ports: the same devices as the links dataplane makes (host side tap<id>, peer
// ns-<id> in the VM namespace with the port's MAC, addresses and routes), made by links
// itself (links.Netlink.EnsureVeth) and plugged into br-int instead of a Linux bridge.
// Namespaces netsource creates are recorded in the same marker directory, so either
// dataplane deletes only what netsource made.

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

// ensureVeth makes sure the pair exists with its peer configured, and returns the host
// side. With the userspace datapath the VM computes its checksums (links.VethPeer.TxChecksumOff):
// without that, TCP between two VMs failed while ping worked.
func (d *Dataplane) ensureVeth(spec links.PortSpec) (netlink.Link, error) {
	spec.Peer.TxChecksumOff = d.cfg.DatapathType == "netdev"
	return d.nl.EnsureVeth(spec)
}

// deleteVeth deletes the pair and the peer's namespace if netsource created it and it is
// empty now.
func (d *Dataplane) deleteVeth(spec links.PortSpec) error { return d.nl.DeleteVeth(spec) }

// ensureLink converges the MTU and admin state of the host side.
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
