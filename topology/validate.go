package topology

import (
	"fmt"
	"net/netip"
	"slices"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Validate checks the topology as a whole: every object on its own (the Validate* functions)
// and the references between objects. known holds the objects already in the desired stream
// (may be nil): references to them resolve, and their addresses, MACs and trunk roles count
// when looking for conflicts; they are not checked themselves. An object in t replaces the
// known object with the same id.
//
// Validate fills the `host` of tap services, tap flows and trunks that leave it out from the
// referenced port (tap service: port_id, tap flow: source_port, trunk: port_id), in t first,
// then in known. It returns nil or an *Errors listing every problem found.
func Validate(t, known *netsourcev1.Topology) error {
	var errs Errors
	v := newValidator(&errs, t, known)
	each(v, "networks", "network", t.GetNetworks(), validateNetwork)
	each(v, "security_groups", "secgroup", t.GetSecurityGroups(), v.securityGroup)
	each(v, "ports", "port", t.GetPorts(), v.port)
	each(v, "tap_services", "tapservice", t.GetTapServices(), v.tapService)
	each(v, "tap_flows", "tapflow", t.GetTapFlows(), v.tapFlow)
	each(v, "trunks", "trunk", t.GetTrunks(), v.trunk)
	v.trunkRoles(t.GetTrunks())
	each(v, "loadbalancers", "loadbalancer", t.GetLoadbalancers(), v.loadBalancer)
	return errs.err()
}

// validator resolves references between the objects of a file and the known ones.
type validator struct {
	errs        *Errors
	networks    map[string]*netsourcev1.Network
	secgroups   map[string]*netsourcev1.SecurityGroup
	ports       map[string]*netsourcev1.Port
	tapServices map[string]*netsourcev1.TapService
	subnets     map[string]*netsourcev1.Subnet
	macs, ips   claims // "<network id>/<value>": which port uses a MAC or an address
	parents     claims // port id: the trunk the port is the parent of
	subPorts    claims // port id: the trunk the port is a sub-port of
}

func newValidator(errs *Errors, t, known *netsourcev1.Topology) *validator {
	v := &validator{
		errs:        errs,
		networks:    index(t.GetNetworks(), known.GetNetworks()),
		secgroups:   index(t.GetSecurityGroups(), known.GetSecurityGroups()),
		ports:       index(t.GetPorts(), known.GetPorts()),
		tapServices: index(t.GetTapServices(), known.GetTapServices()),
		subnets:     map[string]*netsourcev1.Subnet{},
		macs:        claims{},
		ips:         claims{},
		parents:     claims{},
		subPorts:    claims{},
	}
	for _, n := range slices.Concat(t.GetNetworks(), live(t.GetNetworks(), known.GetNetworks())) {
		for _, sn := range n.GetSubnets() {
			if _, ok := v.subnets[sn.GetId()]; !ok {
				v.subnets[sn.GetId()] = sn
			}
		}
	}
	for _, p := range live(t.GetPorts(), known.GetPorts()) {
		v.claimAddresses(p)
	}
	for _, tr := range live(t.GetTrunks(), known.GetTrunks()) {
		at := fmt.Sprintf("trunk %s in the stream", quote(tr.GetId()))
		v.parents.take(tr.GetPortId(), "", at)
		for _, sp := range tr.GetSubPorts() {
			v.subPorts.take(sp.GetPortId(), "", at)
		}
	}
	return v
}

// index maps ids to objects: the first of the file, then the known ones.
func index[T object](file, known []T) map[string]T {
	m := map[string]T{}
	for _, o := range slices.Concat(file, known) {
		if _, ok := m[o.GetId()]; !ok && o.ProtoReflect().IsValid() && o.GetId() != "" {
			m[o.GetId()] = o
		}
	}
	return m
}

// live returns the known objects that the file does not replace.
func live[T object](file, known []T) []T {
	inFile := map[string]bool{}
	for _, o := range file {
		inFile[o.GetId()] = true
	}
	var out []T
	for _, o := range known {
		if o.ProtoReflect().IsValid() && !inFile[o.GetId()] {
			out = append(out, o)
		}
	}
	return out
}

// each checks every object of one top-level list: presence, duplicate ids, then check.
func each[T object](v *validator, plural, kind string, list []T, check func(scope, T)) {
	ids := firstSeen{}
	for i, o := range list {
		s := newScope(v.errs, fmt.Sprintf("%s[%d]", plural, i), kind, o.GetId())
		if !s.present(o) {
			continue
		}
		ids.add(s, "id", o.GetId(), "")
		check(s, o)
	}
}

// lookup resolves a reference to an object of the file or the stream and reports a dangling
// one. Empty and malformed ids are reported by the per-object checks, not here.
func lookup[T any](s scope, field, what, id string, m map[string]T) (T, bool) {
	o, ok := m[id]
	if !ok && CheckID(id) == nil {
		s.errorf(field, "%s %s is not in this file or the stream", what, quote(id))
	}
	return o, ok
}

// claim says which object holds a value that must be unique.
type claim struct {
	owner string // path of the holding object in the file; empty for a known object
	at    string // where the value is held, for messages
}

// claims maps unique values to their holders.
type claims map[string]claim

// take claims key for owner. It returns the earlier holder when another object holds key;
// values repeated within one object are the per-object checks' business.
func (m claims) take(key, owner, at string) (string, bool) {
	c, ok := m[key]
	if !ok {
		m[key] = claim{owner: owner, at: at}
		return "", false
	}
	return c.at, c.owner != owner
}

// claimAddresses records the MAC and fixed IPs of a known port.
func (v *validator) claimAddresses(p *netsourcev1.Port) {
	at := fmt.Sprintf("port %s in the stream", quote(p.GetId()))
	net := p.GetNetworkId()
	if checkMAC(p.GetMacAddress()) == nil {
		v.macs.take(net+"/"+normMAC(p.GetMacAddress()), "", at)
	}
	for _, f := range p.GetFixedIps() {
		if a, err := parseIP(f.GetIpAddress()); err == nil {
			v.ips.take(net+"/"+a.String(), "", at)
		}
	}
}

func (v *validator) securityGroup(s scope, g *netsourcev1.SecurityGroup) {
	validateSecurityGroup(s, g)
	for i, r := range g.GetRules() {
		lookup(s.item("rules", i), "remote_group_id", "security group", r.GetRemoteGroupId(), v.secgroups)
	}
}

func (v *validator) port(s scope, p *netsourcev1.Port) {
	validatePort(s, p)
	for i, id := range p.GetSecurityGroups() {
		lookup(s.item("security_groups", i), "", "security group", id, v.secgroups)
	}
	n, ok := lookup(s, "network_id", "network", p.GetNetworkId(), v.networks)
	if !ok {
		return
	}
	net := p.GetNetworkId()
	if mac := p.GetMacAddress(); checkMAC(mac) == nil {
		if prev, dup := v.macs.take(net+"/"+normMAC(mac), s.root, s.root); dup {
			s.errorf("mac_address", "MAC %s is already used by %s on network %s", quote(mac), prev, quote(net))
		}
	}
	for i, f := range p.GetFixedIps() {
		fs := s.item("fixed_ips", i)
		sn := subnetOf(n, f.GetSubnetId())
		if sn == nil && CheckID(f.GetSubnetId()) == nil {
			fs.errorf("subnet_id", "subnet %s is not a subnet of network %s", quote(f.GetSubnetId()), quote(net))
		}
		a, err := parseIP(f.GetIpAddress())
		if err != nil {
			continue
		}
		if sn != nil {
			fs.check("ip_address", addrInSubnet(a, sn))
		}
		if prev, dup := v.ips.take(net+"/"+a.String(), s.root, fs.path); dup {
			fs.errorf("ip_address", "%s is already used by %s on network %s", a, prev, quote(net))
		}
	}
}

// subnetOf returns the subnet of n with the given id, or nil.
func subnetOf(n *netsourcev1.Network, id string) *netsourcev1.Subnet {
	for _, sn := range n.GetSubnets() {
		if sn.GetId() == id {
			return sn
		}
	}
	return nil
}

// addrInSubnet accepts an address a host may use in sn: inside its CIDR, not its network,
// broadcast or gateway address. A subnet with an invalid CIDR is reported elsewhere.
func addrInSubnet(a netip.Addr, sn *netsourcev1.Subnet) error {
	p, err := parseCIDR(sn.GetCidr())
	if err != nil {
		return nil
	}
	if err := checkHostAddr(a, p); err != nil {
		return err
	}
	if gw, err := parseIP(sn.GetGatewayIp()); err == nil && gw == a {
		return fmt.Errorf("%s is the gateway address of %s", a, p)
	}
	return nil
}

// host fills a left-out host from the referenced port, or checks that a given one matches it.
// A dangling port reference is reported at the reference, not here.
func (v *validator) host(s scope, host *string, portID string) {
	p, ok := v.ports[portID]
	switch {
	case *host != "":
		if s.check("host", CheckHost(*host)) && ok && CheckHost(p.GetHost()) == nil && *host != p.GetHost() {
			s.errorf("host", "%s is not the host of port %s (%s)", quote(*host), quote(portID), quote(p.GetHost()))
		}
	case !ok:
	case CheckHost(p.GetHost()) != nil:
		s.errorf("host", "left out, and port %s has no valid host to take it from", quote(portID))
	default:
		*host = p.GetHost()
	}
}

func (v *validator) tapService(s scope, ts *netsourcev1.TapService) {
	v.host(s, &ts.Host, ts.GetPortId())
	validateTapService(s, ts)
	lookup(s, "port_id", "port", ts.GetPortId(), v.ports)
}

func (v *validator) tapFlow(s scope, f *netsourcev1.TapFlow) {
	v.host(s, &f.Host, f.GetSourcePort())
	validateTapFlow(s, f)
	lookup(s, "tap_service_id", "tap service", f.GetTapServiceId(), v.tapServices)
	lookup(s, "source_port", "port", f.GetSourcePort(), v.ports)
}

func (v *validator) trunk(s scope, tr *netsourcev1.Trunk) {
	v.host(s, &tr.Host, tr.GetPortId())
	validateTrunk(s, tr)
	parent := tr.GetPortId()
	lookup(s, "port_id", "port", parent, v.ports)
	if CheckID(parent) == nil {
		if prev, dup := v.parents.take(parent, s.root, s.root); dup {
			s.errorf("port_id", "port %s is already the parent port of %s", quote(parent), prev)
		}
	}
	for i, sp := range tr.GetSubPorts() {
		ss := s.item("sub_ports", i)
		id := sp.GetPortId()
		port, ok := lookup(ss, "port_id", "port", id, v.ports)
		if CheckID(id) != nil || id == parent {
			continue
		}
		if prev, dup := v.subPorts.take(id, s.root, s.root); dup {
			ss.errorf("port_id", "port %s is already a sub-port of %s", quote(id), prev)
		}
		if ok && CheckHost(tr.GetHost()) == nil && port.GetHost() != tr.GetHost() {
			ss.errorf("port_id", "port %s is on host %s, not on the trunk's host %s", quote(id), quote(port.GetHost()), quote(tr.GetHost()))
		}
	}
}

// trunkRoles reports ports that are the parent of one trunk and a sub-port of another, once
// every trunk has claimed its ports: at the sub-port, or at the parent when the sub-port
// belongs to a known trunk.
func (v *validator) trunkRoles(trunks []*netsourcev1.Trunk) {
	for i, tr := range trunks {
		s := newScope(v.errs, fmt.Sprintf("trunks[%d]", i), "trunk", tr.GetId())
		if c, ok := v.subPorts[tr.GetPortId()]; ok && c.owner == "" {
			s.errorf("port_id", "port %s is a sub-port of %s", quote(tr.GetPortId()), c.at)
		}
		for j, sp := range tr.GetSubPorts() {
			if c, ok := v.parents[sp.GetPortId()]; ok && c.owner != s.root {
				s.item("sub_ports", j).errorf("port_id", "port %s is the parent port of %s", quote(sp.GetPortId()), c.at)
			}
		}
	}
}

func (v *validator) loadBalancer(s scope, lb *netsourcev1.LoadBalancer) {
	validateLoadBalancer(s, lb)
	if n, ok := lookup(s, "vip_network_id", "network", lb.GetVipNetworkId(), v.networks); ok {
		sn := subnetOf(n, lb.GetVipSubnetId())
		switch {
		case sn == nil && CheckID(lb.GetVipSubnetId()) == nil:
			s.errorf("vip_subnet_id", "subnet %s is not a subnet of network %s", quote(lb.GetVipSubnetId()), quote(lb.GetVipNetworkId()))
		case sn != nil:
			if a, err := parseIP(lb.GetVipAddress()); err == nil {
				s.check("vip_address", addrInSubnet(a, sn))
			}
		}
	}
	for i, p := range lb.GetPools() {
		for j, m := range p.GetMembers() {
			ms := s.item("pools", i).item("members", j)
			sn, ok := lookup(ms, "subnet_id", "subnet", m.GetSubnetId(), v.subnets)
			if !ok {
				continue
			}
			cidr, errC := parseCIDR(sn.GetCidr())
			if a, errA := parseIP(m.GetAddress()); errA == nil && errC == nil && !cidr.Contains(a) {
				ms.errorf("address", "%s is outside subnet %s (%s)", a, quote(m.GetSubnetId()), cidr)
			}
		}
	}
}
