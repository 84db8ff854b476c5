package links

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VLAN interfaces inside a VM namespace, for trunk ports whose parent is veth-bound (see
// VLANInterface). EnsureVLANInterface prefers a kernel 802.1Q device (VLANMode8021Q); when
// the kernel refuses to create one (built without CONFIG_VLAN_8021Q: EOPNOTSUPP) it falls
// back to VLANModeTCBPF for the rest of the process, and emulates the device with a veth
// pair and tc BPF programs (vlanbpf_linux.go):
//
//	VM stack ── Name ══veth══ twin ──[ingress: push tag, redirect]──> Parent egress
//	VM stack <─ Name ══veth══ twin <─[Parent ingress: tag == vid? pop, redirect]── Parent
//
// An existing device is recognised in either mode whatever the process found out.

// Kernel writes of the tc half, logged and counted like the Op constants.
const (
	opQdiscAdd      = "qdisc-add"      // add a clsact qdisc
	opFilterReplace = "filter-replace" // attach or replace a tc bpf filter
	opFilterDel     = "filter-del"     // detach a tc bpf filter
	opSetOffload    = "set-offload"    // turn transmit checksum offload off
	opSetAddrGen    = "set-addrgen"    // IPv6 address generation off on a twin
)

// VLANTwinPrefix starts the name of the twin of a VLANModeTCBPF interface: "vt-" and the
// interface's name after its "ns-" (PeerPrefix), so ns-0123456789a has twin vt-0123456789a.
// A name without that prefix gets "vt-" and its first 12 characters.
const VLANTwinPrefix = "vt-"

// VLANTwinName is the twin device of the VLANModeTCBPF interface name (VLANTwinPrefix).
func VLANTwinName(name string) string {
	if rest, ok := strings.CutPrefix(name, PeerPrefix); ok {
		return VLANTwinPrefix + rest
	}
	return VLANTwinPrefix + name[:min(len(name), maxNameLen-len(VLANTwinPrefix))]
}

// dot1qUnsupported is set once the kernel refused an 802.1Q device: later interfaces go
// straight to VLANModeTCBPF.
var dot1qUnsupported atomic.Bool

// vlanWriter is a Netlink used only for its write helpers (ensureLink, syncAddrs,
// syncRoutes, ...) on handles of other namespaces; its mutation count tells whether a call
// changed anything.
func vlanWriter() *Netlink { return &Netlink{log: zerolog.Nop()} }

// EnsureVLANInterface creates or repairs v (idempotent; changed reports a kernel write)
// and returns the mode used, VLANMode8021Q or VLANModeTCBPF. Parent missing in the
// namespace, or the namespace missing, is an error wrapping ErrDeviceMissing.
func EnsureVLANInterface(v VLANInterface) (mode string, changed bool, err error) {
	n := vlanWriter()
	mode, err = n.ensureVLANInterface(v)
	if errors.Is(err, unix.ENODEV) && !errors.Is(err, ErrDeviceMissing) {
		err = fmt.Errorf("%w: %w", ErrDeviceMissing, err) // a device vanished meanwhile
	}
	if err != nil {
		return "", n.Mutations() > 0, fmt.Errorf("vlan interface %s (vlan %d on %s) in netns %s: %w",
			v.Name, v.VLANID, v.Parent, v.Netns, err)
	}
	return mode, n.Mutations() > 0, nil
}

func (v VLANInterface) validate() error {
	// Name in Netns with MAC and addresses is what a veth port's peer is.
	errs := []error{VethPeer{Netns: v.Netns, Name: v.Name, MAC: v.MAC, Addresses: v.Addresses}.validate(),
		validName("vlan parent", v.Parent)}
	if v.Name == v.Parent {
		errs = append(errs, fmt.Errorf("vlan interface and parent are both %s", v.Name))
	}
	if v.VLANID < 1 || v.VLANID > 4094 {
		errs = append(errs, fmt.Errorf("vlan id %d outside 1-4094", v.VLANID))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid spec: %w", err)
	}
	return nil
}

// vlanNetns opens a handle in the named namespace; a missing namespace wraps
// ErrDeviceMissing (it goes with the port that made it).
func vlanNetns(name string) (*netlink.Handle, error) {
	h, err := openNetnsHandle(name)
	if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("%w: %w", ErrDeviceMissing, err)
	}
	return h, err
}

func (n *Netlink) ensureVLANInterface(v VLANInterface) (string, error) {
	if err := v.validate(); err != nil {
		return "", err
	}
	h, err := vlanNetns(v.Netns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	parent, err := lookup(h, v.Parent)
	if err == nil && parent == nil {
		err = fmt.Errorf("parent %s: %w", v.Parent, ErrDeviceMissing)
	}
	if err != nil {
		return "", err
	}
	mode, l, err := n.vlanDevice(h, v, parent)
	if err != nil {
		return "", err
	}
	devices := []string{v.Name}
	if mode == VLANModeTCBPF {
		twin, err := n.ensureTwin(h, v, parent)
		if err != nil {
			return "", err
		}
		devices = append(devices, twin.Attrs().Name)
	} else if err := n.deleteVLANFilters(h, parent, func(vid int, _ string) bool { return vid == v.VLANID }); err != nil {
		// A pop filter left from VLANModeTCBPF would take the VLAN's frames first.
		return "", err
	}
	// The userspace OVS datapath reads frames with a packet socket before the kernel fills
	// offloaded checksums in: the VM computes them.
	if err := n.txChecksumOff(v.Netns, devices...); err != nil {
		return "", err
	}
	spec := PortSpec{MTU: v.MTU, AdminUp: v.Up, Peer: VethPeer{
		Netns: v.Netns, Name: l.Attrs().Name, MAC: v.MAC, Addresses: v.Addresses, Routes: v.Routes,
	}}
	if err := n.configurePeer(h, spec); err != nil {
		return "", err
	}
	return mode, nil
}

// vlanDevice returns the interface Name, created when missing (802.1Q first unless the
// kernel refused it before) and replaced when it is not a VLAN interface for v.
func (n *Netlink) vlanDevice(h *netlink.Handle, v VLANInterface, parent netlink.Link) (string, netlink.Link, error) {
	l, err := lookup(h, v.Name)
	if err != nil {
		return "", nil, err
	}
	if l != nil {
		mode, err := existingMode(h, l, v, parent)
		if err != nil || mode != "" {
			return mode, l, err
		}
		if err := n.deleteIn(h, l, v.Netns); err != nil {
			return "", nil, err
		}
	}
	if !dot1qUnsupported.Load() {
		vl := &netlink.Vlan{LinkAttrs: newAttrs(v.Name, v.MTU), VlanId: v.VLANID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
		vl.ParentIndex, vl.HardwareAddr = parent.Attrs().Index, v.MAC
		err := n.write(OpCreate, v.Name, func() error { return h.LinkAdd(vl) })
		switch {
		case err == nil:
			l, err := mustLookup(h, v.Name)
			return VLANMode8021Q, l, err
		case !errors.Is(err, unix.EOPNOTSUPP):
			return "", nil, fmt.Errorf("create vlan %s on %s: %w", v.Name, v.Parent, err)
		}
		dot1qUnsupported.Store(true) // unknown link kind "vlan"
	}
	twin := VLANTwinName(v.Name)
	stale, err := lookup(h, twin)
	if err != nil {
		return "", nil, err
	}
	if stale != nil {
		if err := n.deleteIn(h, stale, v.Netns); err != nil {
			return "", nil, err
		}
	}
	veth := netlink.NewVeth(newAttrs(v.Name, v.MTU))
	veth.HardwareAddr, veth.PeerName, veth.PeerMTU = v.MAC, twin, uint32(v.MTU)
	if err := n.write(OpCreate, v.Name, func() error { return h.LinkAdd(veth) }); err != nil {
		return "", nil, fmt.Errorf("create veth %s/%s: %w", v.Name, twin, err)
	}
	if l, err = mustLookup(h, v.Name); err != nil {
		return "", nil, err
	}
	// The twin only forwards: no IPv6 link-local address, hence no DAD or router
	// solicitation of its own reaching the VM.
	t, err := mustLookup(h, twin)
	if err == nil {
		err = n.write(opSetAddrGen, twin, func() error { return h.LinkSetIP6AddrGenMode(t, 1) }) // IN6_ADDR_GEN_MODE_NONE
	}
	if err != nil {
		return "", nil, fmt.Errorf("ipv6 address generation off on %s: %w", twin, err)
	}
	return VLANModeTCBPF, l, nil
}

// existingMode says what an existing Name is: VLANMode8021Q for an 802.1Q device with
// v's VLAN on parent, VLANModeTCBPF for a veth whose peer is its twin, "" for anything
// else (to be replaced).
func existingMode(h *netlink.Handle, l netlink.Link, v VLANInterface, parent netlink.Link) (string, error) {
	switch d := l.(type) {
	case *netlink.Vlan:
		if d.ParentIndex == parent.Attrs().Index && d.VlanId == v.VLANID &&
			(d.VlanProtocol == netlink.VLAN_PROTOCOL_8021Q || d.VlanProtocol == netlink.VLAN_PROTOCOL_UNKNOWN) {
			return VLANMode8021Q, nil
		}
	case *netlink.Veth:
		twin, err := lookup(h, VLANTwinName(v.Name))
		if err != nil {
			return "", err
		}
		if twin != nil && twin.Attrs().ParentIndex == l.Attrs().Index && l.Attrs().ParentIndex == twin.Attrs().Index {
			return VLANModeTCBPF, nil
		}
	}
	return "", nil
}

// ensureTwin converges the twin (MTU, no addresses, up) and both tc filters of v.
func (n *Netlink) ensureTwin(h *netlink.Handle, v VLANInterface, parent netlink.Link) (netlink.Link, error) {
	twin, err := mustLookup(h, VLANTwinName(v.Name))
	if err != nil {
		return nil, err
	}
	if err := n.syncAddrs(h, twin, nil); err != nil {
		return nil, err
	}
	if err := n.ensureLink(h, twin, linkWant{mtu: v.MTU, up: true}); err != nil {
		return nil, err
	}
	tn := twin.Attrs().Name
	filters := []tcFilter{{
		link: twin, prio: twinFilterPrio, handle: twinFilterHandle,
		name: vlanFilterName(v.VLANID, v.Parent), prog: fmt.Sprintf("vlan_push_%d", v.VLANID),
		insns: pushProgram(v.VLANID, parent.Attrs().Index),
	}, {
		link: parent, prio: uint16(v.VLANID), handle: uint32(v.VLANID),
		name: vlanFilterName(v.VLANID, tn), prog: fmt.Sprintf("vlan_pop_%d", v.VLANID),
		insns: popProgram(v.VLANID, twin.Attrs().Index),
	}}
	for _, f := range filters {
		if err := n.ensureFilter(h, f); err != nil {
			return nil, err
		}
	}
	// The interface's VLAN changed: its filter for the old one goes.
	err = n.deleteVLANFilters(h, parent, func(vid int, target string) bool { return target == tn && vid != v.VLANID })
	return twin, err
}

// DeleteVLANInterface removes what EnsureVLANInterface made for (netnsName, parent, name,
// vid): the interface, its twin and its filter on parent. Whatever is missing (the
// namespace too) is skipped. A device name of another kind is left in place and reported.
func DeleteVLANInterface(netnsName, parent, name string, vid int) error {
	if err := vlanWriter().deleteVLANInterface(netnsName, parent, name, vid); err != nil {
		return fmt.Errorf("delete vlan interface %s (vlan %d on %s) in netns %s: %w", name, vid, parent, netnsName, err)
	}
	return nil
}

func (n *Netlink) deleteVLANInterface(netnsName, parent, name string, vid int) error {
	h, err := vlanNetns(netnsName)
	if errors.Is(err, ErrDeviceMissing) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	twin := VLANTwinName(name)
	for _, dev := range []string{name, twin} {
		l, err := lookup(h, dev)
		switch {
		case err != nil:
			return err
		case l == nil:
		case l.Type() != "vlan" && l.Type() != "veth":
			return fmt.Errorf("%s is a %s device, not a vlan interface or its twin; left in place", dev, kindOf(l))
		default:
			if err := n.deleteIn(h, l, netnsName); err != nil {
				return err
			}
		}
	}
	p, err := lookup(h, parent)
	if err != nil || p == nil {
		return err
	}
	// The vid's filter goes when it leads to this interface's twin or to no device at all
	// (another interface may have taken the VLAN over); any other filter to the twin too.
	return n.deleteVLANFilters(h, p, func(fvid int, target string) bool {
		if target == twin {
			return true
		}
		if fvid != vid {
			return false
		}
		l, err := lookup(h, target)
		return err == nil && l == nil
	})
}

// deleteIn deletes l from h's namespace; gone meanwhile is fine.
func (n *Netlink) deleteIn(h *netlink.Handle, l netlink.Link, netnsName string) error {
	name := l.Attrs().Name
	err := n.write(OpDelete, name, func() error { return h.LinkDel(l) })
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s %s in netns %s: %w", kindOf(l), name, netnsName, err)
	}
	return nil
}

// VLANInterfaceExists reports whether the device name exists in the named namespace (a
// missing namespace is false).
func VLANInterfaceExists(netnsName, name string) (bool, error) {
	h, err := vlanNetns(netnsName)
	if errors.Is(err, ErrDeviceMissing) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := lookup(h, name)
	if err != nil {
		return false, fmt.Errorf("netns %s: %w", netnsName, err)
	}
	return l != nil, nil
}

// ethtool commands on a struct ethtool_value (include/uapi/linux/ethtool.h).
const (
	ethtoolGetTxCsum = 0x16 // ETHTOOL_GTXCSUM
	ethtoolSetTxCsum = 0x17 // ETHTOOL_STXCSUM
)

// txChecksumOff turns transmit checksum offload off on devices of the named namespace,
// where it is on.
func (n *Netlink) txChecksumOff(netnsName string, devices ...string) error {
	ns, err := netns.GetFromName(netnsName)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsName, err)
	}
	defer ns.Close()
	return TxChecksumOff(ns, func(dev string, change func() error) error { return n.write(opSetOffload, dev, change) }, devices...)
}

// TxChecksumOff turns transmit checksum offload off on devices of namespace ns where it is
// on; write runs each change (the caller counts and logs it). Frames that leave a device
// without a kernel path filling in offloaded checksums (the userspace OVS datapath reads
// them with a packet socket, the tc-bpf VLAN emulation redirects them) must carry complete
// ones. The ioctl acts in the namespace of its socket, opened there.
func TxChecksumOff(ns netns.NsHandle, write func(device string, change func() error) error, devices ...string) error {
	fd, err := SocketIn(ns, unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for ethtool: %w", err)
	}
	defer unix.Close(fd)
	for _, dev := range devices {
		on, err := ethtoolValue(fd, dev, ethtoolGetTxCsum, 0)
		if err != nil {
			return fmt.Errorf("read tx checksum offload of %s: %w", dev, err)
		}
		if on == 0 {
			continue
		}
		err = write(dev, func() error {
			_, err := ethtoolValue(fd, dev, ethtoolSetTxCsum, 0)
			return err
		})
		if err != nil {
			return fmt.Errorf("tx checksum offload off on %s: %w", dev, err)
		}
	}
	return nil
}

// ethtoolValue issues SIOCETHTOOL with a struct ethtool_value {cmd, data} for dev and
// returns the data the kernel put back.
func ethtoolValue(fd int, dev string, cmd, data uint32) (uint32, error) {
	value := [2]uint32{cmd, data}
	var ifr struct { // struct ifreq with ifr_data
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&value)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&value)
	if errno != 0 {
		return 0, errno
	}
	return value[1], nil
}
