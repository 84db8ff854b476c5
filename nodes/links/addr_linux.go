package links

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// DeviceWithAddress returns the name of the device in the agent namespace that holds ip:
// the VXLAN underlay `dev` of Neutron's agent, which refuses to start when local_ip is on
// no interface. A multicast VXLAN device needs it to join its group.
func (n *Netlink) DeviceWithAddress(ip net.IP) (string, error) {
	addrs, err := n.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := n.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("device of %s: %w", ip, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no interface has address %s", ip)
}
