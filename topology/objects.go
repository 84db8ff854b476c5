package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// ValidateNetwork checks one network on its own (references to other objects are not resolved).
func ValidateNetwork(path string, n *netsourcev1.Network) error {
	return validateOne(path, "network", n, validateNetwork)
}

// networkTypes are the segmentation types a network may have.
var networkTypes = []string{"flat", "vlan", "vxlan", "local"}

// minIPv6MTU is the smallest MTU an IPv6 link may have (RFC 8200).
const minIPv6MTU = 1280

func validateNetwork(s scope, n *netsourcev1.Network) {
	s.meta(n.GetId(), n.GetName())
	checkSegment(s, n)
	checkMTU(s, n.GetMtu(), checkSubnets(s, n.GetSubnets()))
}

// subnetCIDR is the valid CIDR of subnets[i].
type subnetCIDR struct {
	i int
	p netip.Prefix
}

// checkSubnets checks the subnets of a network and returns their valid CIDRs.
func checkSubnets(s scope, subnets []*netsourcev1.Subnet) []subnetCIDR {
	ids := firstSeen{}
	var cidrs []subnetCIDR
	for i, sn := range subnets {
		ss := s.item("subnets", i)
		ids.add(ss, "id", sn.GetId(), "")
		p, ok := validateSubnet(ss, sn)
		if !ok {
			continue
		}
		if j := slices.IndexFunc(cidrs, func(c subnetCIDR) bool { return c.p.Overlaps(p) }); j >= 0 {
			ss.errorf("cidr", "%s overlaps subnets[%d] (%s)", p, cidrs[j].i, cidrs[j].p)
		}
		cidrs = append(cidrs, subnetCIDR{i, p})
	}
	return cidrs
}

// checkMTU accepts 0 (the agent's default) or 68-65535, and at least 1280 with IPv6 subnets.
func checkMTU(s scope, mtu uint32, cidrs []subnetCIDR) {
	switch {
	case mtu == 0:
	case mtu < 68 || mtu > 65535:
		s.errorf("mtu", "MTU %d is out of range (want 68-65535, or 0 for the agent's default)", mtu)
	case mtu < minIPv6MTU:
		if j := slices.IndexFunc(cidrs, func(c subnetCIDR) bool { return c.p.Addr().Is6() }); j >= 0 {
			s.errorf("mtu", "MTU %d is too small for IPv6 subnet subnets[%d] (want at least %d)", mtu, cidrs[j].i, minIPv6MTU)
		}
	}
}

// checkSegment checks network_type with the physical network and segmentation id it needs.
func checkSegment(s scope, n *netsourcev1.Network) {
	typ, physnet, seg := n.GetNetworkType(), n.GetPhysicalNetwork(), n.GetSegmentationId()
	typeOK := s.check("network_type", oneOf("network_type", typ, networkTypes...))
	needPhysnet := typ == "flat" || typ == "vlan"
	switch {
	case typeOK && needPhysnet && physnet == "":
		s.errorf("physical_network", "required for a %s network", typ)
	case typeOK && !needPhysnet && physnet != "":
		s.errorf("physical_network", "must be empty for a %s network, got %s", typ, quote(physnet))
	case physnet != "":
		s.check("physical_network", checkToken("physical network name", physnet, 64, "_-"))
	}
	switch {
	case !typeOK:
	case typ == "vlan":
		s.check("segmentation_id", inRange("VLAN", seg, 1, 4094))
	case typ == "vxlan":
		s.check("segmentation_id", inRange("VNI", seg, 1, 1<<24-1))
	case seg != 0:
		s.errorf("segmentation_id", "must be 0 for a %s network, got %d", typ, seg)
	}
}

// validateSubnet checks a subnet and returns its CIDR when that is valid.
func validateSubnet(s scope, sn *netsourcev1.Subnet) (netip.Prefix, bool) {
	s.meta(sn.GetId(), sn.GetName())
	if sn.GetCidr() == "" {
		s.errorf("cidr", "required (e.g. 192.0.2.0/24)")
		return netip.Prefix{}, false
	}
	p, err := parseCIDR(sn.GetCidr())
	if !s.check("cidr", err) {
		return netip.Prefix{}, false
	}
	switch v := sn.GetIpVersion(); {
	case v == 0:
	case v != 4 && v != 6:
		s.errorf("ip_version", "%d is not 4 or 6", v)
	case v != ipVersion(p.Addr()):
		s.errorf("ip_version", "%d does not match cidr %s", v, p)
	}
	if gw := sn.GetGatewayIp(); gw != "" {
		a, err := parseIP(gw)
		if s.check("gateway_ip", err) {
			s.check("gateway_ip", checkHostAddr(a, p))
		}
	}
	fam := family(p.Addr())
	for i, r := range sn.GetHostRoutes() {
		rs := s.item("host_routes", i)
		if d, err := parseCIDR(r.GetDestination()); rs.check("destination", err) {
			rs.check("destination", wantFamily(r.GetDestination(), d.Addr(), fam, "the subnet"))
		}
		if a, ok := rs.requireIP("nexthop", r.GetNexthop()); ok {
			rs.check("nexthop", wantFamily(r.GetNexthop(), a, fam, "the subnet"))
		}
	}
	return p, true
}

// ValidateSecurityGroup checks one security group on its own.
func ValidateSecurityGroup(path string, g *netsourcev1.SecurityGroup) error {
	return validateOne(path, "secgroup", g, validateSecurityGroup)
}

func validateSecurityGroup(s scope, g *netsourcev1.SecurityGroup) {
	s.meta(g.GetId(), g.GetName())
	s.check("description", checkName(g.GetDescription()))
	ids := firstSeen{}
	for i, r := range g.GetRules() {
		rs := s.item("rules", i)
		ids.add(rs, "id", r.GetId(), "")
		validateRule(rs, r)
	}
}

func validateRule(s scope, r *netsourcev1.SecurityGroupRule) {
	s.requireID("id", r.GetId())
	s.check("direction", oneOf("direction", r.GetDirection(), "ingress", "egress"))
	eth := r.GetEthertype()
	ethOK := s.check("ethertype", oneOf("ethertype", eth, "IPv4", "IPv6"))
	class, err := protocolClass(r.GetProtocol())
	if s.check("protocol", err) {
		if ethOK {
			s.check("protocol", class.fits(r.GetProtocol(), eth))
		}
		checkPortRange(s, class, r)
	}
	if pfx := r.GetRemoteIpPrefix(); pfx != "" {
		if p, err := parseCIDR(pfx); s.check("remote_ip_prefix", err) && ethOK {
			s.check("remote_ip_prefix", wantFamily(pfx, p.Addr(), eth, "the rule's ethertype"))
		}
		if r.GetRemoteGroupId() != "" {
			s.errorf("remote_group_id", "remote_ip_prefix and remote_group_id are exclusive")
		}
	}
	s.optionalID("remote_group_id", r.GetRemoteGroupId())
}

// protoClass groups protocols by what port_range_min and port_range_max mean for them.
type protoClass int

const (
	protoOther  protoClass = iota // no port range
	protoPorts                    // tcp, udp, sctp: ports
	protoICMP                     // icmp: type and code
	protoICMPv6                   // icmpv6: type and code
)

// protocolClass parses a rule's protocol: a name or a number 0-255.
func protocolClass(p string) (protoClass, error) {
	switch p {
	case "", "any":
		return protoOther, nil
	case "tcp", "udp", "sctp":
		return protoPorts, nil
	case "icmp":
		return protoICMP, nil
	case "icmpv6":
		return protoICMPv6, nil
	}
	n, err := strconv.ParseUint(p, 10, 8)
	if err != nil || strconv.FormatUint(n, 10) != p {
		return 0, fmt.Errorf("unknown protocol %s (want tcp, udp, sctp, icmp, icmpv6, any or a number 0-255)", quote(p))
	}
	switch n {
	case 6, 17, 132:
		return protoPorts, nil
	case 1:
		return protoICMP, nil
	case 58:
		return protoICMPv6, nil
	}
	return protoOther, nil
}

// fits rejects ICMP of the other address family than ethertype.
func (c protoClass) fits(p, ethertype string) error {
	switch {
	case c == protoICMP && ethertype == "IPv6":
		return fmt.Errorf("protocol %s is for IPv4; use icmpv6 with ethertype IPv6", quote(p))
	case c == protoICMPv6 && ethertype == "IPv4":
		return fmt.Errorf("protocol %s is for IPv6; use icmp with ethertype IPv4", quote(p))
	}
	return nil
}

// checkPortRange checks port_range_min/max: ports for tcp, udp and sctp, type and code for ICMP.
func checkPortRange(s scope, class protoClass, r *netsourcev1.SecurityGroupRule) {
	lo, hi := r.PortRangeMin, r.PortRangeMax
	switch class {
	case protoPorts:
		switch {
		case lo == nil && hi != nil:
			s.errorf("port_range_min", "required when port_range_max is set")
		case lo != nil && hi == nil:
			s.errorf("port_range_max", "required when port_range_min is set")
		case lo != nil:
			okLo := s.check("port_range_min", inRange("port", *lo, 1, 65535))
			okHi := s.check("port_range_max", inRange("port", *hi, 1, 65535))
			if okLo && okHi && *lo > *hi {
				s.errorf("port_range_min", "port_range_min %d is greater than port_range_max %d", *lo, *hi)
			}
		}
	case protoICMP, protoICMPv6:
		if lo != nil {
			s.check("port_range_min", inRange("ICMP type", *lo, 0, 255))
		}
		switch {
		case hi != nil && lo == nil:
			s.errorf("port_range_max", "an ICMP code needs an ICMP type in port_range_min")
		case hi != nil:
			s.check("port_range_max", inRange("ICMP code", *hi, 0, 255))
		}
	default:
		for i, v := range []*int32{lo, hi} {
			if v != nil {
				field := [...]string{"port_range_min", "port_range_max"}[i]
				s.errorf(field, "only for tcp, udp, sctp, icmp or icmpv6, not protocol %s", quote(r.GetProtocol()))
			}
		}
	}
}

// ValidatePort checks one port on its own.
func ValidatePort(path string, p *netsourcev1.Port) error {
	return validateOne(path, "port", p, validatePort)
}

func validatePort(s scope, p *netsourcev1.Port) {
	s.meta(p.GetId(), p.GetName())
	s.requireID("network_id", p.GetNetworkId())
	s.requireHost("host", p.GetHost())
	if p.GetMacAddress() == "" {
		s.errorf("mac_address", "required (e.g. fa:16:3e:00:00:01)")
	} else {
		s.check("mac_address", checkMAC(p.GetMacAddress()))
	}
	ips := firstSeen{}
	for i, f := range p.GetFixedIps() {
		fs := s.item("fixed_ips", i)
		fs.requireID("subnet_id", f.GetSubnetId())
		if a, ok := fs.requireIP("ip_address", f.GetIpAddress()); ok {
			ips.add(fs, "ip_address", a.String(), a.String())
		}
	}
	groups := firstSeen{}
	for i, id := range p.GetSecurityGroups() {
		gs := s.item("security_groups", i)
		if gs.requireID("", id) {
			groups.add(gs, "", id, "")
		}
	}
	for i, pair := range p.GetAllowedAddressPairs() {
		ps := s.item("allowed_address_pairs", i)
		if pair.GetIpAddress() == "" {
			ps.errorf("ip_address", "required (an IP address or CIDR)")
		} else {
			_, err := parseIPOrCIDR(pair.GetIpAddress())
			ps.check("ip_address", err)
		}
		if pair.GetMacAddress() != "" {
			ps.check("mac_address", checkMAC(pair.GetMacAddress()))
		}
	}
	s.check("device_owner", checkName(p.GetDeviceOwner()))
	validateBinding(s.at("binding"), p.GetBinding())
}

// validateBinding checks the binding type and the namespace a veth binding needs.
func validateBinding(s scope, b *netsourcev1.Binding) {
	typ, netns := b.GetType(), b.GetNetns()
	if typ != "" && !s.check("type", oneOf("binding type", typ, "tap", "veth")) {
		return
	}
	switch {
	case typ == "veth" && netns == "":
		s.errorf("netns", "required for a veth binding")
	case typ != "veth" && netns != "":
		s.errorf("netns", "only for a veth binding")
	case netns != "":
		s.check("netns", checkNetns(netns))
	}
}

// ValidateTapService checks one tap service on its own; its host must be filled in.
func ValidateTapService(path string, ts *netsourcev1.TapService) error {
	return validateOne(path, "tapservice", ts, withHost(validateTapService))
}

func validateTapService(s scope, ts *netsourcev1.TapService) {
	s.meta(ts.GetId(), ts.GetName())
	s.requireID("port_id", ts.GetPortId())
}

// ValidateTapFlow checks one tap flow on its own; its host must be filled in.
func ValidateTapFlow(path string, f *netsourcev1.TapFlow) error {
	return validateOne(path, "tapflow", f, withHost(validateTapFlow))
}

func validateTapFlow(s scope, f *netsourcev1.TapFlow) {
	s.meta(f.GetId(), f.GetName())
	s.requireID("tap_service_id", f.GetTapServiceId())
	s.requireID("source_port", f.GetSourcePort())
	s.check("direction", oneOf("direction", f.GetDirection(), "IN", "OUT", "BOTH"))
	if f.GetVlanFilter() != "" {
		s.check("vlan_filter", checkVLANFilter(f.GetVlanFilter()))
	}
}

// ValidateTrunk checks one trunk on its own; its host must be filled in.
func ValidateTrunk(path string, tr *netsourcev1.Trunk) error {
	return validateOne(path, "trunk", tr, withHost(validateTrunk))
}

func validateTrunk(s scope, tr *netsourcev1.Trunk) {
	s.meta(tr.GetId(), tr.GetName())
	s.requireID("port_id", tr.GetPortId())
	ports, vlans := firstSeen{}, firstSeen{}
	for i, sp := range tr.GetSubPorts() {
		ss := s.item("sub_ports", i)
		if id := sp.GetPortId(); ss.requireID("port_id", id) {
			if id == tr.GetPortId() {
				ss.errorf("port_id", "port %s is the trunk's parent port (a sub-port must be another port)", quote(id))
			}
			ports.add(ss, "port_id", id, "")
		}
		ss.check("segmentation_type", oneOf("segmentation_type", sp.GetSegmentationType(), "vlan"))
		vid := sp.GetSegmentationId()
		if ss.check("segmentation_id", inRange("VLAN", vid, 1, 4094)) {
			vlans.add(ss, "segmentation_id", strconv.Itoa(int(vid)), fmt.Sprintf("VLAN %d", vid))
		}
	}
}
