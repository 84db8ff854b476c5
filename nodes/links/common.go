package links

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Kernel writes, as Netlink logs them and as Fake reports them to its FailOn hook. Both
// implementations count one mutation per write.
const (
	OpCreate       = "create"        // create a device (bridge, vxlan, vlan, veth pair)
	OpDelete       = "delete"        // delete a device
	OpSetMTU       = "set-mtu"       // change a device's MTU
	OpSetMaster    = "set-master"    // enslave a device to a bridge
	OpNoMaster     = "nomaster"      // release a device from its bridge
	OpSetUp        = "set-up"        // administratively up
	OpSetDown      = "set-down"      // administratively down
	OpSetMAC       = "set-mac"       // change a veth peer's MAC address
	OpSetSTP       = "set-stp"       // bridge STP off / forward delay 0
	OpAddrAdd      = "addr-add"      // add an address inside a veth peer's namespace
	OpAddrDel      = "addr-del"      // remove an address there
	OpRouteReplace = "route-replace" // add or change a route there
	OpRouteDel     = "route-del"     // remove a route there
	OpFDBAdd       = "fdb-add"       // add (append or replace) a VXLAN forwarding entry
	OpFDBDel       = "fdb-del"       // remove a VXLAN forwarding entry
	OpNetnsAdd     = "netns-add"     // create a named network namespace
	OpNetnsDel     = "netns-del"     // delete a named network namespace
)

// validate rejects specs no kernel could satisfy, before anything is changed.
func (s NetworkSpec) validate() error {
	errs := []error{validName("bridge", s.Bridge)}
	u := s.Uplink
	switch u.Kind {
	case UplinkNone:
	case UplinkPhysical:
		errs = append(errs, validName("physical interface", u.Device))
	case UplinkVLAN:
		errs = append(errs, validName("vlan parent", u.Device))
		if u.VLANID < 1 || u.VLANID > 4094 {
			errs = append(errs, fmt.Errorf("vlan id %d outside 1-4094", u.VLANID))
		}
	case UplinkVXLAN:
		if u.VXLAN.VNI < 1 || u.VXLAN.VNI > 1<<24-1 {
			errs = append(errs, fmt.Errorf("vni %d outside 1-16777215", u.VXLAN.VNI))
		}
		if u.VXLAN.Group != nil && !u.VXLAN.Group.IsMulticast() {
			errs = append(errs, fmt.Errorf("vxlan group %s is not a multicast address", u.VXLAN.Group))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown uplink kind %d", u.Kind))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network %s: invalid spec: %w", s.ID, err)
	}
	return nil
}

func (s PortSpec) validate() error {
	errs := []error{validName("port device", s.Device), validName("bridge", s.Bridge)}
	switch s.Binding {
	case BindingTap:
	case BindingVeth:
		errs = append(errs, s.Peer.validate())
	case BindingSubPort:
		errs = append(errs, validName("parent device", s.SubPort.ParentDevice))
		if s.SubPort.VLANID < 1 || s.SubPort.VLANID > 4094 {
			errs = append(errs, fmt.Errorf("sub-port VLAN %d is outside 1-4094", s.SubPort.VLANID))
		}
		if s.Peer.Netns != "" {
			errs = append(errs, s.Peer.validate(), validName("parent's peer device", s.SubPort.ParentPeer))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown binding kind %d", s.Binding))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("port %s: invalid spec: %w", s.ID, err)
	}
	return nil
}

// validate checks the namespace side of a veth-bound port (or of a sub-port's VLAN interface).
func (p VethPeer) validate() error {
	errs := []error{validName("peer device", p.Name), validNetns(p.Netns)}
	if p.MAC != nil && len(p.MAC) != 6 {
		errs = append(errs, fmt.Errorf("peer mac %s is not an ethernet address", p.MAC))
	}
	for _, a := range p.Addresses {
		if a == nil || a.IP == nil {
			errs = append(errs, errors.New("peer address is empty"))
		}
	}
	return errors.Join(errs...)
}

// validNetns checks the name of a named namespace (/run/netns/<name>).
func validNetns(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("netns %q is not a valid name", name)
	}
	return nil
}

// validName checks a Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace.
func validName(what, name string) error {
	if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "/: \t\n\x00") {
		return fmt.Errorf("%s name %q is not a valid interface name", what, name)
	}
	return nil
}

// deletable reports whether DeleteDevice may remove a device: netsource's own names, plus
// VLAN sub-interfaces (whose names derive from the operator's interfaces). Anything else
// is refused so an orphan-pruning mistake can never take down a host interface.
func deletable(name, kind string) bool {
	return IsOwnedName(name) || kind == "vlan"
}

// prefixKey is the canonical text of an interface address: "192.0.2.11/24".
func prefixKey(n *net.IPNet) string {
	ip, mask := n.IP, n.Mask
	if v4 := ip.To4(); v4 != nil {
		ip = v4
		if len(mask) == net.IPv6len {
			mask = mask[12:]
		}
	}
	ones, _ := mask.Size()
	return fmt.Sprintf("%s/%d", ip, ones)
}

// routeDst is the canonical destination of a route: the masked network, with nil meaning
// the default route of the gateway's family.
func routeDst(dst *net.IPNet, via net.IP) *net.IPNet {
	if dst == nil {
		if via != nil && via.To4() == nil {
			return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	ip := dst.IP.Mask(dst.Mask)
	mask := dst.Mask
	if v4 := ip.To4(); v4 != nil {
		ip = v4
		if len(mask) == net.IPv6len {
			mask = mask[12:]
		}
	}
	return &net.IPNet{IP: ip, Mask: mask}
}

// routeKey is the canonical text of a route's destination, "default" for 0.0.0.0/0 and ::/0.
func routeKey(dst *net.IPNet) string {
	if ones, _ := dst.Mask.Size(); ones == 0 {
		if dst.IP.To4() != nil {
			return "default"
		}
		return "default6"
	}
	return prefixKey(dst)
}

// routeText is a route as Dump prints it: "default via 192.0.2.1".
func routeText(r Route) string {
	dst := routeDst(r.Dst, r.Via)
	s := prefixKey(dst)
	if ones, _ := dst.Mask.Size(); ones == 0 {
		s = "default"
	}
	if r.Via != nil {
		s += " via " + r.Via.String()
	}
	return s
}

// ipEqual treats nil and the unspecified address as equal (the kernel omits both).
func ipEqual(a, b net.IP) bool {
	if len(a) == 0 || a.IsUnspecified() {
		return len(b) == 0 || b.IsUnspecified()
	}
	return a.Equal(b)
}

// fdbKey identifies one VXLAN forwarding entry: a MAC and one remote endpoint.
type fdbKey struct{ mac, dst string }

func keyOf(mac net.HardwareAddr, dst net.IP) fdbKey {
	return fdbKey{mac: mac.String(), dst: dst.String()}
}

// wantedFDB checks entries and returns them keyed, duplicates merged, in a stable order.
func wantedFDB(entries []FDBEntry) (map[fdbKey]FDBEntry, []fdbKey, error) {
	want := make(map[fdbKey]FDBEntry, len(entries))
	var errs []error
	for _, e := range entries {
		if len(e.MAC) != 6 || e.Dst == nil || e.Dst.IsUnspecified() {
			errs = append(errs, fmt.Errorf("fdb entry %s dst %s: need an ethernet MAC and a remote IP", e.MAC, e.Dst))
			continue
		}
		want[keyOf(e.MAC, e.Dst)] = e
	}
	keys := make([]fdbKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b fdbKey) int {
		return strings.Compare(a.mac+" "+a.dst, b.mac+" "+b.dst)
	})
	return want, keys, errors.Join(errs...)
}

// appendsFDB reports whether a MAC's entries form a list (head-end replication): the
// all-zero flooding MAC and multicast MACs take several destinations with "append"; the
// kernel refuses "replace" for them (EOPNOTSUPP in vxlan_fdb_update_existing).
func appendsFDB(mac net.HardwareAddr) bool {
	return bytes.Equal(mac, make(net.HardwareAddr, 6)) || mac[0]&1 == 1
}

// isFallbackTunnel reports devices that kernels with ip tunnel modules put in every new
// namespace (net.core.fb_tunnels_only_for_init_net=0); they do not make a namespace "used".
func isFallbackTunnel(name string) bool {
	switch name {
	case "tunl0", "sit0", "ip6tnl0", "ip6gre0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0":
		return true
	}
	return false
}
