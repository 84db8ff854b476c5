// Package links is netsource's contract with the Linux link layer of one host: bridges,
// VXLAN and VLAN uplinks, veth and tap ports, and VXLAN forwarding entries.
//
// Actors never open netlink themselves. They describe what a network or a port should
// look like (NetworkSpec, PortSpec) and call a Dataplane, which is idempotent:
//
//   - EnsureNetwork and EnsurePort compare the wanted object with the kernel and change only
//     the difference; calling them again with the same spec changes nothing (Mutations does
//     not move).
//   - DeleteNetwork and DeletePort of something already gone return nil.
//   - Inventory lists what netsource owns (by device name: brq*, tap*, vxlan-*, VLAN
//     sub-interfaces of mapped interfaces) so the caller can prune orphans.
//
// Two implementations share this contract: the netlink one (netlink_linux.go) that works
// inside a chosen network namespace, and Fake, an in-memory model whose Dump prints the
// state as sorted text for tests.
package links

import (
	"context"
	"errors"
	"net"
)

// MaxBridgePorts is the number of ports a Linux bridge accepts (BR_MAX_PORTS is 1024 and
// port number 0 is reserved).
const MaxBridgePorts = 1023

// Errors with a meaning for the caller. Implementations wrap them with context.
var (
	// ErrBridgeFull: the bridge already holds MaxBridgePorts ports.
	ErrBridgeFull = errors.New("bridge already holds the Linux maximum of 1023 ports")
	// ErrDeviceMissing: a tap-bound port's device does not exist (yet); the hypervisor creates it.
	ErrDeviceMissing = errors.New("device does not exist")
	// ErrNotSupported: the kernel lacks what the spec needs (e.g. 802.1Q sub-interfaces).
	ErrNotSupported = errors.New("not supported by this kernel")
)

// UplinkKind says how a network's bridge reaches other hosts.
type UplinkKind int

const (
	UplinkNone     UplinkKind = iota // local network: a bridge with no uplink
	UplinkPhysical                   // flat network: the mapped physical interface is enslaved
	UplinkVLAN                       // vlan network: <dev>.<vid> sub-interface is enslaved
	UplinkVXLAN                      // vxlan network: vxlan-<vni> is enslaved
)

// VXLAN describes a vxlan-<vni> device.
type VXLAN struct {
	VNI      uint32
	Local    net.IP // local tunnel endpoint (agent local_ip)
	Group    net.IP // multicast group; nil in unicast (l2population) mode
	Dev      string // underlay device that holds Local; may be empty
	Port     int    // UDP destination port (0: kernel default)
	TTL      int
	TOS      int
	Learning bool // false with l2population (FDB entries come from the control plane)
}

// Uplink is the network's connection to the physical world.
type Uplink struct {
	Kind   UplinkKind
	Device string // physical interface for flat, parent for vlan; unused otherwise
	VLANID int    // vlan only
	VXLAN  VXLAN  // vxlan only
}

// NetworkSpec is the wanted state of one network's plumbing on this host.
type NetworkSpec struct {
	ID     string // network id, for errors and logs
	Bridge string // brq<id[:11]>, or the mapped bridge when External
	// External is true for a bridge from bridge_mappings: it exists already, is never
	// created, changed or deleted by netsource (uplinks may still be enslaved to it).
	External bool
	MTU      int // 0: leave as is
	Uplink   Uplink
}

// UplinkDevice returns the name of the device that Uplink enslaves to the bridge, or "".
func (s NetworkSpec) UplinkDevice() string {
	switch s.Uplink.Kind {
	case UplinkPhysical:
		return s.Uplink.Device
	case UplinkVLAN:
		return VLANDeviceName(s.Uplink.Device, s.Uplink.VLANID)
	case UplinkVXLAN:
		return VXLANDeviceName(s.Uplink.VXLAN.VNI)
	}
	return ""
}

// BindingKind says who creates a port's device.
type BindingKind int

const (
	// BindingTap: someone else (a hypervisor) creates the device; netsource plugs it.
	BindingTap BindingKind = iota
	// BindingVeth: netsource creates a veth pair and moves the peer into a namespace.
	BindingVeth
	// BindingSubPort: the port is a trunk sub-port, carried as VLAN SubPort.VLANID on its
	// trunk's parent port (Neutron's trunk drivers). On a Linux bridge its device is the
	// 802.1Q sub-interface tap<sub-port id[:11]> of the parent's device; on Open vSwitch the
	// parent's br-int port translates the VLAN. When the parent is veth-bound, Peer is the
	// VM-side VLAN interface on the parent's peer (see VLANInterface).
	BindingSubPort
)

// SubPortOf says where a trunk sub-port is carried.
type SubPortOf struct {
	TrunkID      string
	ParentID     string
	ParentDevice string // the parent port's host-side device: tap<parent id[:11]>
	// ParentPeer is the parent's device inside the VM namespace (Peer.Netns) when the parent
	// is veth-bound; "" for a tap-bound parent, whose VM makes its own VLAN interface.
	ParentPeer string
	VLANID     int
}

// Route is a static route inside a veth port's namespace.
type Route struct {
	Dst *net.IPNet // nil or 0.0.0.0/0 means default
	Via net.IP
}

// VethPeer is the namespace side of a veth-bound port (the "VM").
type VethPeer struct {
	Netns     string // named netns (/run/netns/<Netns>), created when missing
	Name      string // device name inside Netns (ns-<port id[:11]>)
	MAC       net.HardwareAddr
	Addresses []*net.IPNet // fixed IPs with the subnet's prefix length
	Routes    []Route      // default route via the gateway, host routes
	// TxChecksumOff turns the peer's transmit checksum offload off: the userspace Open
	// vSwitch datapath reads the host side's frames with a packet socket, before the kernel
	// fills in offloaded checksums, so the VM must compute them.
	TxChecksumOff bool
}

// PortSpec is the wanted state of one port on this host.
type PortSpec struct {
	ID      string // port id, for errors and logs
	Device  string // host-side device: tap<id[:11]>
	Bridge  string // bridge to plug into
	MTU     int    // 0: leave as is
	AdminUp bool   // link state of Device (and of the peer)
	Binding BindingKind
	Peer    VethPeer  // BindingVeth; BindingSubPort with a veth-bound parent (the VM's VLAN interface)
	SubPort SubPortOf // BindingSubPort only
}

// FDBEntry is a forwarding entry on a VXLAN device (l2population): frames for MAC go to
// the remote tunnel endpoint Dst. MAC 00:00:00:00:00:00 is the flooding entry.
type FDBEntry struct {
	MAC net.HardwareAddr
	Dst net.IP
}

// PortState is what EnsurePort found and reached.
type PortState struct {
	Ifindex int
	OperUp  bool
}

// Device is one link netsource owns, as Inventory reports it.
type Device struct {
	Name    string
	Kind    string // "bridge", "veth", "tun", "vxlan", "vlan", ...
	Master  string // bridge it is enslaved to, or ""
	Ifindex int
}

// LinkEvent is a change of a link in the agent's namespace, from the netlink subscription.
type LinkEvent struct {
	Name    string
	Ifindex int
	Deleted bool
	Up      bool   // administratively up
	Master  string // current master bridge, "" if none
}

// Dataplane is the link-layer contract. Every method is safe for concurrent use by several
// actors; calls on different objects run in parallel.
type Dataplane interface {
	// EnsureNetwork creates or repairs the bridge (unless External) and its uplink, sets MTU
	// and brings them up. Idempotent.
	EnsureNetwork(ctx context.Context, spec NetworkSpec) error
	// DeleteNetwork removes the uplink device it created (vxlan, vlan) and the bridge
	// (unless External). Physical interfaces are released, never deleted.
	DeleteNetwork(ctx context.Context, spec NetworkSpec) error
	// EnsurePort creates (veth) or finds (tap) the device, sets MTU, enslaves it to
	// spec.Bridge and sets its admin state. A tap-bound port whose device does not exist
	// returns an error wrapping ErrDeviceMissing; a full bridge returns ErrBridgeFull.
	EnsurePort(ctx context.Context, spec PortSpec) (PortState, error)
	// DeletePort removes a veth pair (and the peer namespace if netsource created it and it
	// is now empty) or unplugs a tap device from its bridge (the device stays: it is not ours).
	DeletePort(ctx context.Context, spec PortSpec) error
	// SetFDB makes the forwarding entries of a VXLAN device exactly entries (adds missing,
	// removes stale permanent entries). Used in l2population mode.
	SetFDB(ctx context.Context, vxlanDevice string, entries []FDBEntry) error
	// Inventory lists the devices netsource owns in the namespace.
	Inventory(ctx context.Context) ([]Device, error)
	// DeleteDevice removes one owned device by name (orphan pruning). Missing is nil.
	DeleteDevice(ctx context.Context, name string) error
	// Watch streams link events until ctx ends. The channel is closed when ctx ends or the
	// subscription fails (the caller then relists and resubscribes).
	Watch(ctx context.Context) (<-chan LinkEvent, error)
	// Mutations counts the kernel changes made so far (every netlink write).
	Mutations() uint64
}
