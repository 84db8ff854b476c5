package links

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureNetwork implements Dataplane: bridge (forward delay 0, STP off, MTU, up) and the
// uplink enslaved to it, as neutron-linuxbridge-agent's ensure_bridge and ensure_vxlan /
// ensure_vlan do.
func (n *Netlink) EnsureNetwork(ctx context.Context, spec NetworkSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	br, err := n.ensureBridge(spec)
	if err == nil {
		err = n.ensureUplink(spec, br)
	}
	if err != nil {
		return fmt.Errorf("ensure network %s: %w", spec.ID, err)
	}
	return nil
}

func (n *Netlink) ensureBridge(spec NetworkSpec) (netlink.Link, error) {
	br, err := lookup(n.h, spec.Bridge)
	switch {
	case err != nil:
		return nil, err
	case br == nil && spec.External:
		return nil, fmt.Errorf("mapped bridge %s: %w", spec.Bridge, ErrDeviceMissing)
	case br == nil:
		br, err = n.createLink(&netlink.Bridge{LinkAttrs: newAttrs(spec.Bridge, spec.MTU)})
		if err != nil {
			return nil, err
		}
	case br.Type() != "bridge":
		return nil, fmt.Errorf("bridge %s: exists as a %s device", spec.Bridge, br.Type())
	}
	if spec.External {
		return br, nil // the operator's bridge: used, never changed
	}
	if err := n.ensureNoSTP(br); err != nil {
		return nil, err
	}
	if err := n.ensureLink(n.h, br, linkWant{mtu: spec.MTU, up: true}); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", spec.Bridge, err)
	}
	return br, nil
}

func (n *Netlink) ensureUplink(spec NetworkSpec, br netlink.Link) error {
	name := spec.UplinkDevice()
	up, mtu, err := n.uplinkDevice(spec, name)
	if err != nil || up == nil {
		return err
	}
	if err := n.ensureLink(n.h, up, linkWant{mtu: mtu, master: br, up: true}); err != nil {
		return fmt.Errorf("plug uplink %s into %s: %w", name, spec.Bridge, err)
	}
	return nil
}

// uplinkDevice finds or creates the uplink and returns the MTU it should have.
func (n *Netlink) uplinkDevice(spec NetworkSpec, name string) (netlink.Link, int, error) {
	switch spec.Uplink.Kind {
	case UplinkPhysical:
		l, err := lookup(n.h, name)
		if err == nil && l == nil {
			err = fmt.Errorf("physical interface %s: %w", name, ErrDeviceMissing)
		}
		return l, 0, err // the NIC's MTU belongs to the host
	case UplinkVLAN:
		l, err := n.ensureVLAN(spec, name)
		return l, spec.MTU, err
	case UplinkVXLAN:
		l, err := n.ensureVXLAN(spec, name)
		return l, spec.MTU, err
	}
	return nil, 0, nil
}

// ensureVXLAN returns vxlan-<vni> with the wanted tunnel parameters. The kernel cannot
// change VNI, group, local address or port of a vxlan device in place, so a device that
// differs is deleted and created again (it is re-enslaved by the caller).
func (n *Netlink) ensureVXLAN(spec NetworkSpec, name string) (netlink.Link, error) {
	want, err := n.vxlanLink(spec, name)
	if err != nil {
		return nil, err
	}
	have, err := lookup(n.h, name)
	if err != nil {
		return nil, err
	}
	if vx, ok := have.(*netlink.Vxlan); ok && vxlanMatches(vx, want) {
		return have, nil
	}
	if have != nil {
		n.log.Info().Str("device", name).Str("network", spec.ID).Msg("recreating vxlan device with changed parameters")
		if err := n.deleteFound(have); err != nil {
			return nil, err
		}
	}
	l, err := n.createLink(want)
	if err != nil {
		return nil, err
	}
	if spec.MTU != 0 && l.Attrs().MTU != spec.MTU {
		// Asked for an MTU above what the underlay allows (lower device MTU - 50 for IPv4,
		// - 70 for IPv6), the kernel does not refuse the create request: it silently clamps
		// the MTU (vxlan_config_apply), and only a later change is refused with EINVAL. A
		// network whose tunnel carries less than its MTU breaks, so the device is deleted
		// again and the plug fails, as Neutron does since bug 1744101.
		err := fmt.Errorf("vxlan %s: MTU %d exceeds what underlay %q allows (the kernel clamped it to %d)",
			name, spec.MTU, spec.Uplink.VXLAN.Dev, l.Attrs().MTU)
		return nil, errors.Join(err, n.deleteFound(l))
	}
	return l, nil
}

func (n *Netlink) vxlanLink(spec NetworkSpec, name string) (*netlink.Vxlan, error) {
	v := spec.Uplink.VXLAN
	vx := &netlink.Vxlan{
		LinkAttrs: newAttrs(name, spec.MTU),
		VxlanId:   int(v.VNI),
		SrcAddr:   v.Local,
		Group:     v.Group,
		Port:      v.Port,
		TTL:       v.TTL,
		TOS:       v.TOS,
		Learning:  v.Learning,
	}
	if v.Dev != "" {
		dev, err := lookup(n.h, v.Dev)
		if err == nil && dev == nil {
			err = fmt.Errorf("vxlan %s underlay %s: %w", name, v.Dev, ErrDeviceMissing)
		}
		if err != nil {
			return nil, err
		}
		vx.VtepDevIndex = dev.Attrs().Index
	}
	return vx, nil
}

// vxlanMatches compares an existing device with the wanted one; a zero wanted underlay or
// port means "whatever the device has" (the kernel default port is 8472).
func vxlanMatches(have, want *netlink.Vxlan) bool {
	return have.VxlanId == want.VxlanId && ipEqual(have.SrcAddr, want.SrcAddr) && ipEqual(have.Group, want.Group) &&
		(want.VtepDevIndex == 0 || have.VtepDevIndex == want.VtepDevIndex) &&
		(want.Port == 0 || have.Port == want.Port) &&
		have.TTL == want.TTL && have.TOS == want.TOS && have.Learning == want.Learning
}

// ensureVLAN returns the 802.1Q sub-interface <dev>.<vid>, recreating one with another
// parent or VLAN id.
func (n *Netlink) ensureVLAN(spec NetworkSpec, name string) (netlink.Link, error) {
	return n.ensureVLANDevice("vlan uplink", name, spec.Uplink.Device, spec.Uplink.VLANID, spec.MTU)
}

// ensureVLANDevice returns the 802.1Q device name on parent with VLAN vid, recreating one
// with another parent or VLAN id. what names the device's role in errors.
func (n *Netlink) ensureVLANDevice(what, name, parentName string, vid, mtu int) (netlink.Link, error) {
	parent, err := lookup(n.h, parentName)
	if err == nil && parent == nil {
		err = fmt.Errorf("%s %s: parent %s: %w", what, name, parentName, ErrDeviceMissing)
	}
	if err != nil {
		return nil, err
	}
	have, err := lookup(n.h, name)
	if err != nil {
		return nil, err
	}
	if v, ok := have.(*netlink.Vlan); ok && v.VlanId == vid && v.ParentIndex == parent.Attrs().Index {
		return have, nil
	}
	if have != nil {
		if err := n.deleteFound(have); err != nil {
			return nil, err
		}
	}
	vlan := &netlink.Vlan{LinkAttrs: newAttrs(name, mtu), VlanId: vid}
	vlan.ParentIndex = parent.Attrs().Index
	l, err := n.createLink(vlan)
	if isNotSupported(err) {
		// A kernel without the 8021q module answers RTM_NEWLINK of kind "vlan" with
		// EOPNOTSUPP ("Error: Unknown device type." in iproute2).
		return nil, fmt.Errorf("%s %s: 802.1Q sub-interfaces: %w (%w)", what, name, ErrNotSupported, err)
	}
	return l, err
}

// isNotSupported reports the kernel's answers for a link kind it does not know.
func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT)
}

// createLink creates l in the agent namespace and returns it as the kernel reports it.
func (n *Netlink) createLink(l netlink.Link) (netlink.Link, error) {
	name := l.Attrs().Name
	if err := n.write(OpCreate, name, func() error { return n.h.LinkAdd(l) }); err != nil {
		return nil, fmt.Errorf("create %s %s: %w", l.Type(), name, err)
	}
	return mustLookup(n.h, name)
}

// DeleteNetwork implements Dataplane. Every step is attempted; the errors are joined.
func (n *Netlink) DeleteNetwork(ctx context.Context, spec NetworkSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	var errs []error
	switch name := spec.UplinkDevice(); spec.Uplink.Kind {
	case UplinkVLAN, UplinkVXLAN:
		errs = append(errs, n.deleteLink(name))
	case UplinkPhysical:
		errs = append(errs, n.releaseFrom(name, spec.Bridge))
	}
	if !spec.External {
		errs = append(errs, n.deleteLink(spec.Bridge))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete network %s: %w", spec.ID, err)
	}
	return nil
}

// releaseFrom takes device out of bridge if it is a port of that bridge.
func (n *Netlink) releaseFrom(device, bridge string) error {
	l, err := lookup(n.h, device)
	if err != nil || l == nil || l.Attrs().MasterIndex == 0 {
		return err
	}
	br, err := lookup(n.h, bridge)
	if err != nil || br == nil || br.Attrs().Index != l.Attrs().MasterIndex {
		return err
	}
	return n.release(l)
}
