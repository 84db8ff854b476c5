package actors

import (
	"fmt"
	"net"
)

func parseIP(s string) net.IP {
	ip := net.ParseIP(s)
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func parseCIDR(s string) (net.IP, *net.IPNet, error) {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, nil, fmt.Errorf("%q is not a CIDR", s)
	}
	return ip, n, nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("mac_address %q is not a MAC address", s)
	}
	return mac, nil
}
