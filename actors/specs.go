package actors

import (
	"fmt"
	"net"

	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// NetworkSpec translates a network into the plumbing this host needs for it, using the
// agent's mappings: flat and vlan networks need their physical network mapped, vxlan needs
// VXLAN enabled. The error says which option is missing.
func NetworkSpec(cfg *config.Config, n *nsv1.Network) (links.NetworkSpec, error) {
	spec := links.NetworkSpec{ID: n.GetId(), Bridge: links.BridgeName(n.GetId()), MTU: int(n.GetMtu())}
	physnet := n.GetPhysicalNetwork()
	if cfg.Mechanism == config.MechanismOpenVSwitch && (n.GetNetworkType() == "flat" || n.GetNetworkType() == "vlan") {
		// Open vSwitch: every port plugs into br-int, so Bridge stays the network's own name
		// (brq<id>: the key of its local VLAN, not a device) and the physical network's OVS
		// bridge from bridge_mappings is the uplink, as in the OVS agent.
		br, ok := cfg.BridgeMappings[physnet]
		if !ok {
			return spec, fmt.Errorf("physical_network %q is not in bridge_mappings of host %s (the openvswitch mechanism needs an OVS bridge per physical network)",
				physnet, cfg.Host)
		}
		spec.Uplink = links.Uplink{Kind: links.UplinkPhysical, Device: br}
		if n.GetNetworkType() == "vlan" {
			spec.Uplink = links.Uplink{Kind: links.UplinkVLAN, Device: br, VLANID: int(n.GetSegmentationId())}
		}
		return spec, nil
	}
	mapped := func() (string, bool, error) {
		if br, ok := cfg.BridgeMappings[physnet]; ok {
			return br, true, nil
		}
		if dev, ok := cfg.PhysicalInterfaceMappings[physnet]; ok {
			return dev, false, nil
		}
		return "", false, fmt.Errorf("physical_network %q is in neither physical_interface_mappings nor bridge_mappings of host %s",
			physnet, cfg.Host)
	}
	switch n.GetNetworkType() {
	case "local":
	case "flat":
		dev, external, err := mapped()
		if err != nil {
			return spec, err
		}
		if external {
			spec.Bridge, spec.External = dev, true
		} else {
			spec.Uplink = links.Uplink{Kind: links.UplinkPhysical, Device: dev}
		}
	case "vlan":
		dev, external, err := mapped()
		if err != nil {
			return spec, err
		}
		if external {
			// As Neutron: a mapped bridge's VLAN networks still need the sub-interface,
			// made on the bridge itself.
			spec.Bridge, spec.External = dev, true
		}
		spec.Uplink = links.Uplink{Kind: links.UplinkVLAN, Device: dev, VLANID: int(n.GetSegmentationId())}
	case "vxlan":
		if !cfg.VXLAN.Enabled() {
			return spec, fmt.Errorf("vxlan network on host %s, whose enable_vxlan is false", cfg.Host)
		}
		vni := n.GetSegmentationId()
		spec.Uplink = links.Uplink{Kind: links.UplinkVXLAN, VXLAN: links.VXLAN{
			VNI:      vni,
			Local:    net.ParseIP(cfg.VXLAN.LocalIP),
			Dev:      cfg.VXLAN.Device,
			Group:    cfg.VXLAN.GroupFor(vni),
			Port:     cfg.VXLAN.UDPPort,
			TTL:      cfg.VXLAN.TTL,
			TOS:      cfg.VXLAN.TOS,
			Learning: !cfg.VXLAN.L2Population,
		}}
		if cfg.VXLAN.L2Population {
			spec.Uplink.VXLAN.Group = nil
		}
	default:
		return spec, fmt.Errorf("network_type %q is not supported by the %s mechanism", n.GetNetworkType(), cfg.Mechanism)
	}
	return spec, nil
}

// PortSpec translates a port on its (ready) network into the wanted devices. A sub-port of
// a trunk on this host (att not nil) is carried on its parent port (SubPortSpec).
func PortSpec(p *nsv1.Port, n *nsv1.Network, plumbing links.NetworkSpec, att *TrunkAttachment) (links.PortSpec, error) {
	spec := links.PortSpec{
		ID: p.GetId(), Device: links.TapName(p.GetId()), Bridge: plumbing.Bridge, MTU: int(n.GetMtu()),
		AdminUp: p.IsAdminStateUp() && n.IsAdminStateUp(),
	}
	if att != nil {
		return subPortSpec(spec, p, n, att)
	}
	if p.GetBinding().GetType() != "veth" {
		spec.Binding = links.BindingTap
		return spec, nil
	}
	peer, err := vethPeer(p, n, p.GetBinding().GetNetns(), true)
	if err != nil {
		return spec, err
	}
	spec.Binding, spec.Peer = links.BindingVeth, peer
	return spec, nil
}

// subPortSpec: a sub-port's device is carried as its VLAN on the parent's. Its own binding
// does not matter while it is on a trunk: a veth-bound parent's VM also gets the sub-port's
// VLAN interface (MAC, addresses, host routes; the default route stays the parent's).
func subPortSpec(spec links.PortSpec, p *nsv1.Port, n *nsv1.Network, att *TrunkAttachment) (links.PortSpec, error) {
	spec.Binding = links.BindingSubPort
	spec.SubPort = links.SubPortOf{TrunkID: att.TrunkID, ParentID: att.Parent.GetId(),
		ParentDevice: links.TapName(att.Parent.GetId()), VLANID: att.VLANID}
	if b := att.Parent.GetBinding(); b.GetType() == "veth" {
		peer, err := vethPeer(p, n, b.GetNetns(), false)
		if err != nil {
			return spec, err
		}
		spec.Peer, spec.SubPort.ParentPeer = peer, links.PeerName(att.Parent.GetId())
	}
	return spec, nil
}

// vethPeer is the VM side of a port in netns: MAC, fixed IPs with their subnets' prefix,
// host routes and (withGateway) the default route via the gateway.
func vethPeer(p *nsv1.Port, n *nsv1.Network, netns string, withGateway bool) (links.VethPeer, error) {
	mac, err := parseMAC(p.GetMacAddress())
	if err != nil {
		return links.VethPeer{}, err
	}
	peer := links.VethPeer{Netns: netns, Name: links.PeerName(p.GetId()), MAC: mac}
	subnets := map[string]*nsv1.Subnet{}
	for _, s := range n.GetSubnets() {
		subnets[s.GetId()] = s
	}
	var gateway string
	for _, ip := range p.GetFixedIps() {
		s, ok := subnets[ip.GetSubnetId()]
		if !ok {
			return peer, fmt.Errorf("fixed_ips: subnet %s is not a subnet of network %s", ip.GetSubnetId(), n.GetId())
		}
		_, cidr, err := parseCIDR(s.GetCidr())
		if err != nil {
			return peer, err
		}
		addr := parseIP(ip.GetIpAddress())
		if addr == nil {
			return peer, fmt.Errorf("fixed_ips: %q is not an IP address", ip.GetIpAddress())
		}
		peer.Addresses = append(peer.Addresses, &net.IPNet{IP: addr, Mask: cidr.Mask})
		for _, r := range s.GetHostRoutes() {
			_, dst, err := parseCIDR(r.GetDestination())
			if err != nil {
				continue
			}
			if ones, _ := dst.Mask.Size(); ones == 0 {
				gateway = r.GetNexthop() // a 0.0.0.0/0 host route replaces the gateway
				continue
			}
			peer.Routes = append(peer.Routes, links.Route{Dst: dst, Via: parseIP(r.GetNexthop())})
		}
		if gateway == "" {
			gateway = s.GetGatewayIp()
		}
	}
	if gw := parseIP(gateway); gw != nil && withGateway {
		peer.Routes = append(peer.Routes, links.Route{Via: gw})
	}
	return peer, nil
}
