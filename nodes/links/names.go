package links

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
)

// Device names follow Neutron's linuxbridge agent so operators recognise them. Linux allows
// at most 15 visible characters (IFNAMSIZ 16).
const (
	BridgePrefix = "brq"
	TapPrefix    = "tap"
	VXLANPrefix  = "vxlan-"
	PeerPrefix   = "ns-"
	maxNameLen   = 15
	idPrefixLen  = 11
)

func idPrefix(id string) string {
	if len(id) > idPrefixLen {
		return id[:idPrefixLen]
	}
	return id
}

// BridgeName is the bridge of a network: brq + network id[:11].
func BridgeName(networkID string) string { return BridgePrefix + idPrefix(networkID) }

// TapName is the host-side device of a port: tap + port id[:11].
func TapName(portID string) string { return TapPrefix + idPrefix(portID) }

// PeerName is the namespace-side device of a veth-bound port: ns- + port id[:11].
func PeerName(portID string) string { return PeerPrefix + idPrefix(portID) }

// VXLANDeviceName is the VXLAN device of a VNI: vxlan-<vni>.
func VXLANDeviceName(vni uint32) string { return fmt.Sprintf("%s%d", VXLANPrefix, vni) }

// VLANDeviceName is the 802.1Q sub-interface <dev>.<vid>. When that is longer than 15
// characters, Neutron replaces dev by its first 4 characters plus the first 6 hex digits
// of SHA-1(dev); netsource does the same so names match on mixed deployments.
func VLANDeviceName(dev string, vid int) string {
	suffix := fmt.Sprintf(".%d", vid)
	if len(dev)+len(suffix) <= maxNameLen {
		return dev + suffix
	}
	sum := sha1.Sum([]byte(dev))
	short := dev
	if len(short) > 4 {
		short = short[:4]
	}
	return short + hex.EncodeToString(sum[:])[:6] + suffix
}

// IsOwnedName reports whether a device name is one netsource manages by prefix.
func IsOwnedName(name string) bool {
	return strings.HasPrefix(name, BridgePrefix) || strings.HasPrefix(name, TapPrefix) ||
		strings.HasPrefix(name, VXLANPrefix)
}
