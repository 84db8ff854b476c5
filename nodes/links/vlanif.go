package links

import "net"

// VLANInterface is a VLAN interface inside a "VM" namespace, on the namespace side of a
// veth-bound port: what the guest of a trunk port configures for each sub-port.
type VLANInterface struct {
	Netns     string // named namespace (/run/netns/<Netns>) holding Parent
	Parent    string // the parent's device in Netns (ns-<parent id[:11]>)
	Name      string // the VLAN interface (ns-<sub-port id[:11]>)
	VLANID    int    // 1-4094
	MAC       net.HardwareAddr
	Addresses []*net.IPNet
	Routes    []Route
	MTU       int // 0: leave as is
	Up        bool
}

// VLAN interface implementations, as EnsureVLANInterface reports them.
const (
	// VLANMode8021Q is a kernel 802.1Q device on Parent.
	VLANMode8021Q = "802.1q"
	// VLANModeTCBPF emulates one where the kernel has no 802.1Q devices: Name is a veth
	// whose twin in the same namespace is joined to Parent by tc BPF programs that push the
	// tag on the way out and pop it on the way in. The twin is VLANTwinName(Name)
	// ("vt-" + Name after "ns-"); Parent gets one ingress filter per VLAN, at tc priority
	// and handle VLANID.
	VLANModeTCBPF = "tc-bpf"
)
