package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/netsource/netsource/nodes/links"
)

// Names of netsource's chains, maps and sets. Base chains are named after their hook and
// role; `fwd`, `ingress`, `input` and friends are nft keywords and are never a whole name.
const (
	chainBridgePrerouting = "prerouting-ports" // bridge prerouting -300: anti-spoofing, egress mark
	chainBridgeForward    = "forward-ports"    // bridge forward -300: ingress mark
	mapFromPorts          = "from-ports"       // ifname -> from-<dev> (or accept / drop)
	mapToPorts            = "to-ports"         // ifname -> to-<dev> (or accept / drop)
	chainForwardEgress    = "forward-egress"   // inet forward 0: egress of the sending port
	chainForwardIngress   = "forward-ingress"  // inet forward 1: ingress of the receiving port
	chainInputEgress      = "input-egress"     // inet input 0: a port's traffic to the host itself
	mapEgressPorts        = "egress-ports"     // mark & 0xffff -> egress-<dev>
	mapIngressPorts       = "ingress-ports"    // mark & 0xffff0000 -> ingress-<dev>
	chainEgressCommon     = "egress-common"    // what every filtered port may send (DHCP, ICMPv6)
	chainIngressCommon    = "ingress-common"   // what every filtered port may receive (DHCP replies, ND)

	bridgePriority = -300

	markEgressMask  = 0x0000ffff
	markIngressMask = 0xffff0000
)

func fromChain(dev string) string    { return "from-" + dev }
func toChain(dev string) string      { return "to-" + dev }
func egressChain(dev string) string  { return "egress-" + dev }
func ingressChain(dev string) string { return "ingress-" + dev }

// sgChain is the chain of one direction of a security group's rules, shared by its ports.
func sgChain(id, direction string) string { return "sg-" + id + "-" + direction }

// remoteSet holds the addresses of a group's members (one set per address family).
func remoteSet(id string, v6 bool) string {
	if v6 {
		return "rg-" + id + "-v6"
	}
	return "rg-" + id + "-v4"
}

// compile turns a Ruleset into netsource's tables with a fresh compiler.
func compile(rs *Ruleset, marks map[string]uint32) (*model, []Problem) {
	return newCompiler().compile(rs, marks)
}

// compiler turns Rulesets into netsource's tables. It remembers the chains it built for
// each port and group and reuses them (the same pointers) while their input is unchanged,
// so that compiling and diffing a host with a thousand ports after one change costs about
// as much as that change.
type compiler struct {
	ports   map[string]*portEntry   // by device
	groups  map[string]*groupEntry  // by id
	members map[string]*memberEntry // by set name
	fixed   []*chain                // base and common chains of the inet and bridge tables
	// The port maps' elements of the last compile and what they were made of: reused as
	// they are when no port and no open device changed.
	lastEntries []*portEntry
	lastOpen    []string
	lastElems   [4]map[string]elem
}

type portEntry struct {
	port   Port
	idx    uint32
	err    error
	chains [4]*chain // from, to (bridge), egress, ingress (inet)
	elems  [4]elem   // from-ports, to-ports, egress-ports, ingress-ports
}

type groupEntry struct {
	group    Group
	known    bool
	chains   [2]*chain // ingress, egress
	problems []Problem
	remote   map[string]map[bool]bool // remote group id -> address families its rules need
}

type memberEntry struct {
	addrs []netip.Addr
	elems map[string]elem
}

func newCompiler() *compiler {
	return &compiler{ports: map[string]*portEntry{}, groups: map[string]*groupEntry{}, members: map[string]*memberEntry{}}
}

// compile builds the model of rs. marks are the port indexes in use (from the kernel or the
// last Apply): a device keeps its index, new devices take the lowest free one, so an
// unrelated port never changes. Problems are collected, never fatal.
func (c *compiler) compile(rs *Ruleset, marks map[string]uint32) (*model, []Problem) {
	m := newModel(len(rs.Ports), len(rs.Groups))
	var problems []Problem
	br, in := m.tables[familyBridge], m.tables[familyInet]
	if c.fixed == nil {
		c.fixed = fixedChains()
	}
	for i, ch := range c.fixed {
		if i < 2 {
			br.chains[ch.name] = ch
		} else {
			in.chains[ch.name] = ch
		}
	}
	portMaps := [4]*set{br.set(mapFromPorts, keyIfname, true), br.set(mapToPorts, keyIfname, true),
		in.set(mapEgressPorts, keyMark, true), in.set(mapIngressPorts, keyMark, true)}
	elems := [4]map[string]elem{}
	for i := range elems {
		elems[i] = make(map[string]elem, len(rs.Ports)+len(rs.Open))
	}
	for _, dev := range rs.Open {
		elems[0][strconv.Quote(dev)] = ifElem(dev, accept)
		elems[1][strconv.Quote(dev)] = ifElem(dev, accept)
	}

	ports := slices.Clone(rs.Ports)
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.Device, b.Device) })
	idx, overflow := allocate(ports, marks)
	used := map[string]bool{}
	seenDev := make(map[string]bool, len(ports))
	entries := make([]*portEntry, 0, len(ports))
	failed := false
	for _, p := range ports {
		if seenDev[p.Device] {
			continue // a second port with the same device: the first one wins
		}
		seenDev[p.Device] = true
		if overflow[p.Device] {
			problems = append(problems, Problem{Port: p.ID, Err: fmt.Errorf("more than %d filtered ports on this host", MaxPorts)})
			failClosed(elems, p.Device)
			failed = true
			continue
		}
		e := c.port(p, idx[p.Device])
		entries = append(entries, e)
		if e.err != nil {
			problems = append(problems, Problem{Port: p.ID, Err: e.err})
			failClosed(elems, p.Device)
			continue
		}
		m.marks[p.Device] = e.idx
		br.chains[e.chains[0].name], br.chains[e.chains[1].name] = e.chains[0], e.chains[1]
		in.chains[e.chains[2].name], in.chains[e.chains[3].name] = e.chains[2], e.chains[3]
		for i, el := range e.elems {
			elems[i][el.text] = el
		}
		for _, g := range p.Groups {
			used[g] = true
		}
	}
	if !failed && slices.Equal(entries, c.lastEntries) && slices.Equal(rs.Open, c.lastOpen) {
		elems = c.lastElems // the very same maps: diff skips them at once
	}
	c.lastEntries, c.lastOpen, c.lastElems = entries, slices.Clone(rs.Open), elems
	for i, s := range portMaps {
		s.elems = elems[i]
	}
	for dev := range c.ports {
		if !seenDev[dev] {
			delete(c.ports, dev)
		}
	}

	remote := map[string]map[bool]bool{}
	for _, id := range slices.Sorted(maps.Keys(used)) {
		g, known := rs.Groups[id]
		e := c.group(id, g, known)
		problems = append(problems, e.problems...)
		in.chains[e.chains[0].name], in.chains[e.chains[1].name] = e.chains[0], e.chains[1]
		for rid, fams := range e.remote {
			if remote[rid] == nil {
				remote[rid] = map[bool]bool{}
			}
			for v6 := range fams {
				remote[rid][v6] = true
			}
		}
	}
	for id := range c.groups {
		if !used[id] {
			delete(c.groups, id)
		}
	}

	sets := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(remote)) {
		for _, v6 := range []bool{false, true} {
			if !remote[id][v6] {
				continue
			}
			key := keyIPv4
			if v6 {
				key = keyIPv6
			}
			name := remoteSet(id, v6)
			sets[name] = true
			s := in.set(name, key, false)
			s.elems = c.memberElems(name, rs.Members[id], v6)
		}
	}
	for name := range c.members {
		if !sets[name] {
			delete(c.members, name)
		}
	}
	return m, problems
}

// port returns the chains and map elements of one port, rebuilt only when the port or its
// index changed.
func (c *compiler) port(p Port, idx uint32) *portEntry {
	if e := c.ports[p.Device]; e != nil && e.idx == idx && samePort(e.port, p) {
		return e
	}
	e := &portEntry{port: clonePort(p), idx: idx}
	c.ports[p.Device] = e
	chains, err := portChains(p, idx)
	if err != nil {
		e.err = err
		return e
	}
	e.chains = chains
	e.elems = [4]elem{
		ifElem(p.Device, jump(fromChain(p.Device))),
		ifElem(p.Device, jump(toChain(p.Device))),
		markElem(idx, jump(egressChain(p.Device))),
		markElem(idx<<16, jump(ingressChain(p.Device))),
	}
	return e
}

// group returns the two chains of a group's rules, rebuilt only when its rules changed.
func (c *compiler) group(id string, g Group, known bool) *groupEntry {
	if e := c.groups[id]; e != nil && e.known == known && sameGroup(e.group, g) {
		return e
	}
	e := &groupEntry{group: cloneGroup(g), known: known, remote: map[string]map[bool]bool{}}
	c.groups[id] = e
	if !known {
		e.problems = append(e.problems, Problem{Group: id, Err: errors.New("unknown security group: its ports get none of its rules")})
	}
	e.chains = [2]*chain{{name: sgChain(id, "ingress")}, {name: sgChain(id, "egress")}}
	seen := map[string]bool{}
	for _, r := range g.Rules {
		stmts, err := ruleStmts(r)
		if err != nil {
			e.problems = append(e.problems, Problem{Group: id, Rule: r.ID, Err: err})
			continue
		}
		ch := e.chains[0]
		if r.Direction == "egress" {
			ch = e.chains[1]
		}
		text := rule(stmts).text()
		if seen[r.Direction+text] {
			continue
		}
		seen[r.Direction+text] = true
		ch.add(stmts...)
		if r.RemoteGroupID != "" {
			if e.remote[r.RemoteGroupID] == nil {
				e.remote[r.RemoteGroupID] = map[bool]bool{}
			}
			e.remote[r.RemoteGroupID][r.Ethertype == "IPv6"] = true
		}
	}
	return e
}

// memberElems returns the elements of a remote group's set, rebuilt only when its members
// changed.
func (c *compiler) memberElems(name string, addrs []netip.Addr, v6 bool) map[string]elem {
	if e := c.members[name]; e != nil && slices.Equal(e.addrs, addrs) {
		return e.elems
	}
	elems := map[string]elem{}
	for _, a := range addrs {
		if a.Is6() == v6 && !a.Is4In6() {
			elems[a.String()] = elem{key: a.AsSlice(), text: a.String()}
		}
	}
	c.members[name] = &memberEntry{addrs: slices.Clone(addrs), elems: elems}
	return elems
}

func samePort(a, b Port) bool {
	return a.ID == b.ID && a.Device == b.Device && slices.Equal(a.MACs, b.MACs) && slices.Equal(a.Addrs, b.Addrs) && slices.Equal(a.Groups, b.Groups)
}

func clonePort(p Port) Port {
	p.MACs, p.Addrs, p.Groups = slices.Clone(p.MACs), slices.Clone(p.Addrs), slices.Clone(p.Groups)
	return p
}

func sameGroup(a, b Group) bool {
	return a.ID == b.ID && slices.EqualFunc(a.Rules, b.Rules, func(x, y Rule) bool {
		return x.ID == y.ID && x.Direction == y.Direction && x.Ethertype == y.Ethertype && x.Protocol == y.Protocol &&
			sameInt(x.PortMin, y.PortMin) && sameInt(x.PortMax, y.PortMax) && x.RemoteIPPrefix == y.RemoteIPPrefix && x.RemoteGroupID == y.RemoteGroupID
	})
}

func sameInt(a, b *int32) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func cloneGroup(g Group) Group {
	rules := make([]Rule, len(g.Rules))
	for i, r := range g.Rules {
		if r.PortMin != nil {
			v := *r.PortMin
			r.PortMin = &v
		}
		if r.PortMax != nil {
			v := *r.PortMax
			r.PortMax = &v
		}
		rules[i] = r
	}
	g.Rules = rules
	return g
}

// fixedChains are the chains every host has: the base chains (bridge first) and the common
// chains. Frames of tap devices the firewall does not know (yet) are dropped, so a port
// plugged before its rules exist is closed, not open.
func fixedChains() []*chain {
	pre := &chain{name: chainBridgePrerouting, hook: &hook{"prerouting", bridgePriority}}
	pre.add(vmap{key: metaIIFName, set: mapFromPorts})
	pre.add(ifnameWildcard(metaIIFName, links.TapPrefix), drop)
	fwd := &chain{name: chainBridgeForward, hook: &hook{"forward", bridgePriority}}
	fwd.add(vmap{key: metaOIFName, set: mapToPorts})
	fwd.add(ifnameWildcard(metaOIFName, links.TapPrefix), drop)

	established := ctState{ctEstablished | ctRelated}
	fe := &chain{name: chainForwardEgress, hook: &hook{"forward", 0}}
	fe.add(established, accept)
	fe.add(vmap{key: metaMark, mask: markEgressMask, set: mapEgressPorts})
	fi := &chain{name: chainForwardIngress, hook: &hook{"forward", 1}}
	fi.add(established, accept)
	fi.add(vmap{key: metaMark, mask: markIngressMask, set: mapIngressPorts})
	ie := &chain{name: chainInputEgress, hook: &hook{"input", 0}}
	ie.add(established, accept)
	ie.add(vmap{key: metaMark, mask: markEgressMask, set: mapEgressPorts})
	e, i := commonChains()
	return []*chain{pre, fwd, fe, fi, ie, e, i}
}

// allocate gives every device a port index: the one it had if still free, else the lowest
// unused one. Devices beyond MaxPorts get none and are reported in overflow.
func allocate(ports []Port, marks map[string]uint32) (map[string]uint32, map[string]bool) {
	idx := map[string]uint32{}
	taken := map[uint32]bool{}
	seen := map[string]bool{}
	for _, p := range ports {
		if seen[p.Device] {
			continue
		}
		seen[p.Device] = true
		if i, ok := marks[p.Device]; ok && i >= 1 && i <= MaxPorts && !taken[i] {
			idx[p.Device], taken[i] = i, true
		}
	}
	next := uint32(1)
	overflow := map[string]bool{}
	for _, p := range ports {
		if _, ok := idx[p.Device]; ok {
			continue
		}
		for next <= MaxPorts && taken[next] {
			next++
		}
		if next > MaxPorts {
			overflow[p.Device] = true
			continue
		}
		idx[p.Device], taken[next] = next, true
	}
	return idx, overflow
}

// failClosed maps a port's device to drop in both bridge maps.
func failClosed(elems [4]map[string]elem, dev string) {
	for i := range 2 {
		e := ifElem(dev, drop)
		elems[i][e.text] = e
	}
}

func ifElem(dev string, v verdict) elem {
	key := make([]byte, 16)
	copy(key, dev)
	return elem{key: key, text: strconv.Quote(dev), verdict: v}
}

func markElem(mark uint32, v verdict) elem {
	key := make([]byte, 4)
	binary.NativeEndian.PutUint32(key, mark)
	return elem{key: key, text: fmt.Sprintf("0x%08x", mark), verdict: v}
}

// commonChains are what every filtered port may send and receive whatever its groups say,
// as Neutron's port chains allow: DHCP and DHCPv6 as a client, all ICMPv6 out (router
// advertisements were dropped by anti-spoofing already), and in: DHCP replies, MLD queries,
// neighbour solicitations and advertisements, and router advertisements from link-local
// addresses.
func commonChains() (e, i *chain) {
	e = &chain{name: chainEgressCommon}
	e.add(nfprotoV4, portMatch(protoUDP, false, 68), portMatch(protoUDP, true, 67), accept)
	e.add(nfprotoV6, portMatch(protoUDP, false, 546), portMatch(protoUDP, true, 547), accept)
	e.add(nfprotoV6, l4Match(protoICMPv6), accept)
	i = &chain{name: chainIngressCommon}
	i.add(nfprotoV4, portMatch(protoUDP, false, 67), portMatch(protoUDP, true, 68), accept)
	i.add(nfprotoV6, portMatch(protoUDP, false, 547), portMatch(protoUDP, true, 546), accept)
	i.add(match{f: fICMPv6Type, vals: []value{icmp6Value(130), icmp6Value(135), icmp6Value(136)}}, accept)
	i.add(match{f: fIP6Saddr, vals: []value{prefixValue(netip.MustParsePrefix("fe80::/10"))}}, match{f: fICMPv6Type, vals: []value{icmp6Value(134)}}, accept)
	return e, i
}

// portChains builds one port's chains: anti-spoofing and the marks for the bridge table
// (from-<dev>, to-<dev>), the security group jumps for the inet table (egress-<dev>,
// ingress-<dev>).
func portChains(p Port, idx uint32) ([4]*chain, error) {
	var none [4]*chain
	if len(p.MACs) == 0 {
		return none, errors.New("no MAC address")
	}
	var macs []value
	var lls []netip.Prefix
	for _, s := range p.MACs {
		hw, err := net.ParseMAC(s)
		if err != nil || len(hw) != 6 {
			return none, fmt.Errorf("bad MAC address %q", s)
		}
		macs = append(macs, value{lo: hw, hi: hw, prefix: -1, text: hw.String()})
		lls = append(lls, netip.PrefixFrom(linkLocal(hw), 128))
	}
	macs = uniqueValues(macs)
	var v4, v6 []netip.Prefix
	any4, any6 := false, false
	for _, a := range p.Addrs {
		if !a.IsValid() {
			return none, fmt.Errorf("bad address %v", a)
		}
		a = a.Masked()
		switch {
		case a.Addr().Is4() && a.Bits() == 0:
			any4 = true
		case a.Addr().Is4():
			v4 = append(v4, a)
		case a.Bits() == 0:
			any6 = true
		default:
			v6 = append(v6, a)
		}
	}

	f := &chain{name: fromChain(p.Device)}
	f.add(markSet{val: idx})
	f.add(match{f: fEtherSaddr, neg: true, vals: macs}, drop)
	f.add(match{f: fARPSaddrEther, neg: true, vals: macs}, drop)
	if !any4 {
		arp := append([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/32")}, v4...)
		f.add(match{f: fARPSaddrIP, neg: true, vals: prefixValues(arp)}, drop)
	}
	f.add(portMatch(protoUDP, false, 67), portMatch(protoUDP, true, 68), drop)
	f.add(portMatch(protoUDP, false, 547), portMatch(protoUDP, true, 546), drop)
	f.add(match{f: fICMPv6Type, vals: []value{icmp6Value(134)}}, drop)
	f.add(match{f: fIPSaddr, vals: []value{addrValue("0.0.0.0")}}, match{f: fIPDaddr, vals: []value{addrValue("255.255.255.255")}},
		portMatch(protoUDP, false, 68), portMatch(protoUDP, true, 67), accept)
	switch {
	case any4:
	case len(v4) == 0:
		f.add(protoIPv4, drop)
	default:
		f.add(match{f: fIPSaddr, neg: true, vals: prefixValues(v4)}, drop)
	}
	f.add(match{f: fIP6Saddr, vals: []value{addrValue("::")}}, match{f: fIP6Daddr, vals: []value{prefixValue(netip.MustParsePrefix("ff02::/16"))}},
		match{f: fICMPv6Type, vals: []value{icmp6Value(131), icmp6Value(135), icmp6Value(143)}}, accept)
	if !any6 {
		f.add(match{f: fIP6Saddr, neg: true, vals: prefixValues(append(lls, v6...))}, drop)
	}
	// accept ends the bridge chain only (br_netfilter and the inet table still see the
	// packet); it keeps the base chain's catch-all drop of unknown tap devices away.
	f.add(accept)

	t := &chain{name: toChain(p.Device)}
	t.add(markSet{mask: markEgressMask, val: idx << 16})
	t.add(accept)

	invalid := ctState{ctInvalid}
	e := &chain{name: egressChain(p.Device)}
	i := &chain{name: ingressChain(p.Device)}
	chains := [4]*chain{f, t, e, i}
	e.add(invalid, drop)
	i.add(invalid, drop)
	i.add(jump(chainIngressCommon))
	if len(p.Groups) == 0 {
		// Neutron's default for a port without groups: deny ingress, allow egress (its
		// source addresses are the port's own: anti-spoofing checked them).
		e.add(accept)
		i.add(drop)
		return chains, nil
	}
	e.add(jump(chainEgressCommon))
	seen := map[string]bool{}
	for _, g := range p.Groups {
		if seen[g] {
			continue
		}
		seen[g] = true
		e.add(jump(sgChain(g, "egress")))
		i.add(jump(sgChain(g, "ingress")))
	}
	e.add(drop)
	i.add(drop)
	return chains, nil
}

// ruleStmts renders one security group rule. The remote side is the source of ingress
// traffic and the destination of egress traffic; ports are destination ports.
func ruleStmts(r Rule) ([]stmt, error) {
	var v6 bool
	switch r.Ethertype {
	case "IPv4":
	case "IPv6":
		v6 = true
	default:
		return nil, fmt.Errorf("ethertype %q: want IPv4 or IPv6", r.Ethertype)
	}
	var ingress bool
	switch r.Direction {
	case "ingress":
		ingress = true
	case "egress":
	default:
		return nil, fmt.Errorf("direction %q: want ingress or egress", r.Direction)
	}
	addrField := map[[2]bool]*field{{false, true}: fIPSaddr, {false, false}: fIPDaddr, {true, true}: fIP6Saddr, {true, false}: fIP6Daddr}[[2]bool{v6, ingress}]
	var stmts []stmt
	switch {
	case r.RemoteIPPrefix != "" && r.RemoteGroupID != "":
		return nil, errors.New("remote_ip_prefix and remote_group_id are exclusive")
	case r.RemoteIPPrefix != "":
		p, err := parsePrefix(r.RemoteIPPrefix)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is6() != v6 {
			return nil, fmt.Errorf("remote_ip_prefix %s is not an %s prefix", r.RemoteIPPrefix, r.Ethertype)
		}
		if p.Bits() > 0 {
			stmts = append(stmts, match{f: addrField, vals: []value{prefixValue(p)}})
		}
	case r.RemoteGroupID != "":
		stmts = append(stmts, match{f: addrField, set: remoteSet(r.RemoteGroupID, v6)})
	}
	if len(stmts) == 0 {
		stmts = append(stmts, map[bool]metaMatch{false: nfprotoV4, true: nfprotoV6}[v6])
	}
	proto, err := parseProtocol(r.Protocol, v6)
	if err != nil {
		return nil, err
	}
	lo, hi := r.PortMin, r.PortMax
	switch proto {
	case 0:
		if lo != nil || hi != nil {
			return nil, fmt.Errorf("a port range needs protocol tcp, udp, sctp, icmp or icmpv6, not %q", r.Protocol)
		}
	case protoTCP, protoUDP, protoSCTP:
		switch {
		case lo == nil && hi == nil:
			stmts = append(stmts, l4Match(proto))
		case lo == nil || *lo < 1 || *lo > 65535 || hi != nil && (*hi < *lo || *hi > 65535):
			return nil, fmt.Errorf("bad port range %s-%s", intText(lo), intText(hi))
		case hi == nil || *hi == *lo:
			stmts = append(stmts, portMatch(proto, true, uint16(*lo)))
		default:
			f := portField(proto, true)
			stmts = append(stmts, match{f: f, vals: []value{rangeValue(uint16(*lo), uint16(*hi))}})
		}
	case protoICMP, protoICMPv6:
		typ, code := fICMPType, fICMPCode
		if proto == protoICMPv6 {
			typ, code = fICMPv6Type, fICMPv6Code
		}
		switch {
		case lo == nil && hi != nil:
			return nil, errors.New("an ICMP code needs an ICMP type")
		case lo == nil:
			stmts = append(stmts, l4Match(proto))
		case *lo < 0 || *lo > 255 || hi != nil && (*hi < 0 || *hi > 255):
			return nil, fmt.Errorf("bad ICMP type/code %s/%s", intText(lo), intText(hi))
		default:
			stmts = append(stmts, match{f: typ, vals: []value{byteValue(uint8(*lo))}})
			if hi != nil {
				stmts = append(stmts, match{f: code, vals: []value{byteValue(uint8(*hi))}})
			}
		}
	default:
		if lo != nil || hi != nil {
			return nil, fmt.Errorf("a port range needs protocol tcp, udp, sctp, icmp or icmpv6, not %q", r.Protocol)
		}
		stmts = append(stmts, l4Match(proto))
	}
	return append(stmts, accept), nil
}

// parseProtocol maps Neutron's protocol names and numbers to an IP protocol number; 0 is any.
// icmp with ethertype IPv6 means ICMPv6, as Neutron reads it.
func parseProtocol(p string, v6 bool) (uint8, error) {
	switch strings.ToLower(p) {
	case "", "any", "0":
		return 0, nil
	case "tcp":
		return protoTCP, nil
	case "udp":
		return protoUDP, nil
	case "sctp":
		return protoSCTP, nil
	case "icmp":
		if v6 {
			return protoICMPv6, nil
		}
		return protoICMP, nil
	case "icmpv6", "ipv6-icmp":
		return protoICMPv6, nil
	}
	n, err := strconv.ParseUint(p, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", p)
	}
	if n == protoICMP && v6 {
		return protoICMPv6, nil
	}
	return uint8(n), nil
}

func intText(v *int32) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseAddr reads a fixed IP or an allowed address pair ("192.0.2.1", "192.0.2.0/24") as
// a prefix; a bare address is a host prefix.
func ParseAddr(s string) (netip.Prefix, error) {
	p, err := parsePrefix(s)
	if err != nil {
		return p, err
	}
	return netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), p.Addr().Unmap().BitLen())).Masked(), nil
}

// linkLocal is the EUI-64 link-local address of a MAC (fe80::/64), which IPv6 uses for
// neighbour discovery and which anti-spoofing therefore allows.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

func addrValue(s string) value {
	return prefixValue(netip.PrefixFrom(netip.MustParseAddr(s), netip.MustParseAddr(s).BitLen()))
}

// prefixValue is a prefix as a value: a single address for host prefixes.
func prefixValue(p netip.Prefix) value {
	p = p.Masked()
	lo := p.Addr().AsSlice()
	hi := slices.Clone(lo)
	for bit := p.Bits(); bit < len(hi)*8; bit++ {
		hi[bit/8] |= 0x80 >> (bit % 8)
	}
	if p.IsSingleIP() {
		return value{lo: lo, hi: hi, prefix: -1, text: p.Addr().String()}
	}
	return value{lo: lo, hi: hi, prefix: p.Bits(), text: p.String()}
}

// prefixValues sorts prefixes and drops those inside another (nft refuses overlapping
// intervals in one set).
func prefixValues(ps []netip.Prefix) []value {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []value
	var kept []netip.Prefix
	for _, p := range ps {
		inside := false
		for _, k := range kept {
			if k.Bits() <= p.Bits() && k.Contains(p.Addr()) {
				inside = true
				break
			}
		}
		if !inside {
			kept = append(kept, p)
			out = append(out, prefixValue(p))
		}
	}
	return out
}

func uniqueValues(vs []value) []value {
	slices.SortFunc(vs, func(a, b value) int { return strings.Compare(string(a.lo), string(b.lo)) })
	return slices.CompactFunc(vs, func(a, b value) bool { return string(a.lo) == string(b.lo) })
}

func portMatch(proto uint8, dst bool, port uint16) match {
	b := binary.BigEndian.AppendUint16(nil, port)
	return match{f: portField(proto, dst), vals: []value{{lo: b, hi: b, prefix: -1, text: fmt.Sprint(port)}}}
}

func rangeValue(lo, hi uint16) value {
	return value{lo: binary.BigEndian.AppendUint16(nil, lo), hi: binary.BigEndian.AppendUint16(nil, hi), prefix: -1, text: fmt.Sprintf("%d-%d", lo, hi)}
}

func byteValue(b uint8) value {
	return value{lo: []byte{b}, hi: []byte{b}, prefix: -1, text: fmt.Sprint(b)}
}

var icmp6Names = map[uint8]string{130: "mld-listener-query", 131: "mld-listener-report", 134: "nd-router-advert",
	135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 143: "mld2-listener-report"}

func icmp6Value(t uint8) value {
	v := byteValue(t)
	if n, ok := icmp6Names[t]; ok {
		v.text = n
	}
	return v
}
