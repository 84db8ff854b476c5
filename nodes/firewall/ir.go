package firewall

import (
	"fmt"
	"strings"
)

// The rules netsource generates are kept in a small intermediate form (stmt) that two
// renderers share: text() writes nft syntax (the Fake's dump, transaction scripts, the
// `nft -f` baseline of the benchmark) and the netlink encoder (netlink_linux.go) writes the
// kernel expressions nft itself would compile that text to, including the protocol
// dependencies nft adds implicitly. A privileged test loads both into two namespaces and
// compares `nft list` of each, so the two renderers cannot drift apart.

// stmt is one statement of a rule: a match, a mark update, a verdict-map lookup or a verdict.
type stmt interface{ text() string }

// base is where a payload field lives.
type base int

const (
	baseLink base = iota
	baseNetwork
	baseTransport
)

// l3 is a network-layer protocol a field depends on.
type l3 int

const (
	l3None l3 = iota
	l3ARP
	l3IPv4
	l3IPv6
)

// keyType names the nft datatype of a field, for anonymous sets.
type keyType string

const (
	keyEther   keyType = "ether_addr"
	keyIPv4    keyType = "ipv4_addr"
	keyIPv6    keyType = "ipv6_addr"
	keyService keyType = "inet_service"
	keyICMP    keyType = "icmp_type"
	keyICMPv6  keyType = "icmpv6_type"
	keyICMPCd  keyType = "icmp_code"
	keyICMP6Cd keyType = "icmpv6_code"
	keyIfname  keyType = "ifname"
	keyMark    keyType = "mark"
)

// field is a packet header field at a fixed offset.
type field struct {
	name   string
	base   base
	offset uint32
	length uint32
	l3     l3    // network protocol the field needs (a dependency nft adds)
	l4     uint8 // transport protocol the field needs (0: none)
	key    keyType
}

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

var (
	fEtherSaddr    = &field{"ether saddr", baseLink, 6, 6, l3None, 0, keyEther}
	fARPSaddrEther = &field{"arp saddr ether", baseNetwork, 8, 6, l3ARP, 0, keyEther}
	fARPSaddrIP    = &field{"arp saddr ip", baseNetwork, 14, 4, l3ARP, 0, keyIPv4}
	fIPSaddr       = &field{"ip saddr", baseNetwork, 12, 4, l3IPv4, 0, keyIPv4}
	fIPDaddr       = &field{"ip daddr", baseNetwork, 16, 4, l3IPv4, 0, keyIPv4}
	fIP6Saddr      = &field{"ip6 saddr", baseNetwork, 8, 16, l3IPv6, 0, keyIPv6}
	fIP6Daddr      = &field{"ip6 daddr", baseNetwork, 24, 16, l3IPv6, 0, keyIPv6}
	fICMPType      = &field{"icmp type", baseTransport, 0, 1, l3IPv4, protoICMP, keyICMP}
	fICMPCode      = &field{"icmp code", baseTransport, 1, 1, l3IPv4, protoICMP, keyICMPCd}
	fICMPv6Type    = &field{"icmpv6 type", baseTransport, 0, 1, l3IPv6, protoICMPv6, keyICMPv6}
	fICMPv6Code    = &field{"icmpv6 code", baseTransport, 1, 1, l3IPv6, protoICMPv6, keyICMP6Cd}
)

// portField is the source or destination port of tcp, udp or sctp.
func portField(proto uint8, dst bool) *field {
	name := map[uint8]string{protoTCP: "tcp", protoUDP: "udp", protoSCTP: "sctp"}[proto]
	f := &field{name: name + " sport", base: baseTransport, offset: 0, length: 2, l4: proto, key: keyService}
	if dst {
		f.name, f.offset = name+" dport", 2
	}
	return f
}

// value is one value of a match: a single value (lo == hi), a prefix or a range.
type value struct {
	lo, hi []byte // big-endian, inclusive
	prefix int    // prefix length in bits when the value is a prefix, else -1
	text   string
}

func (v value) single() bool { return string(v.lo) == string(v.hi) }

// match compares a field with values: one value is a comparison, several an anonymous
// set, set a named set (@name).
type match struct {
	f    *field
	neg  bool
	vals []value
	set  string
}

func (m match) text() string {
	var b strings.Builder
	b.WriteString(m.f.name)
	b.WriteByte(' ')
	if m.neg {
		b.WriteString("!= ")
	}
	switch {
	case m.set != "":
		b.WriteString("@" + m.set)
	case len(m.vals) == 1:
		b.WriteString(m.vals[0].text)
	default:
		b.WriteString("{ ")
		for i, v := range m.vals {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v.text)
		}
		b.WriteString(" }")
	}
	return b.String()
}

// metaKey is a meta expression netsource matches or sets.
type metaKey int

const (
	metaNFProto metaKey = iota
	metaL4Proto
	metaProtocol
	metaIIFName
	metaOIFName
	metaMark
)

var metaNames = map[metaKey]string{metaNFProto: "meta nfproto", metaL4Proto: "meta l4proto", metaProtocol: "meta protocol",
	metaIIFName: "iifname", metaOIFName: "oifname", metaMark: "meta mark"}

// metaMatch is `meta nfproto ipv4`, `meta l4proto 47` or `iifname "tap*"`.
type metaMatch struct {
	key     metaKey
	val     []byte
	valText string // the value as nft reads it
}

func (m metaMatch) text() string { return metaNames[m.key] + " " + m.valText }

// ifnameWildcard matches interface names that start with prefix (`iifname "tap*"`).
func ifnameWildcard(key metaKey, prefix string) metaMatch {
	return metaMatch{key: key, val: []byte(prefix), valText: fmt.Sprintf("%q", prefix+"*")}
}

// ctState matches conntrack states (bits of NF_CT_STATE_BIT).
type ctState struct{ bits uint32 }

// Conntrack state bits as the kernel's ct state register holds them.
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
)

func (c ctState) text() string {
	var names []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}} {
		if c.bits&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	return "ct state " + strings.Join(names, ",")
}

// markSet sets the packet mark: to val, or with mask != 0 to (mark & mask) | val.
type markSet struct{ mask, val uint32 }

func (m markSet) text() string {
	if m.mask == 0 {
		return fmt.Sprintf("meta mark set 0x%08x", m.val)
	}
	return fmt.Sprintf("meta mark set meta mark & 0x%08x | 0x%08x", m.mask, m.val)
}

// vmap looks a meta key (a mark masked with mask) up in a named verdict map.
type vmap struct {
	key  metaKey
	mask uint32
	set  string
}

func (v vmap) text() string {
	if v.key == metaMark && v.mask != 0 {
		return fmt.Sprintf("meta mark & 0x%08x vmap @%s", v.mask, v.set)
	}
	return fmt.Sprintf("%s vmap @%s", metaNames[v.key], v.set)
}

// verdict ends a rule: accept, drop, return, or jump to a chain.
type verdict struct {
	kind  string // accept | drop | return | jump
	chain string
}

func (v verdict) text() string {
	if v.kind == "jump" {
		return "jump " + v.chain
	}
	return v.kind
}

var (
	accept    = verdict{kind: "accept"}
	drop      = verdict{kind: "drop"}
	jump      = func(chain string) verdict { return verdict{kind: "jump", chain: chain} }
	nfprotoV4 = metaMatch{key: metaNFProto, val: []byte{2}, valText: "ipv4"}
	nfprotoV6 = metaMatch{key: metaNFProto, val: []byte{10}, valText: "ipv6"}
	// protoIPv4 is `meta protocol ip` (the bridge family's network protocol).
	protoIPv4 = metaMatch{key: metaProtocol, val: []byte{0x08, 0x00}, valText: "ip"}
)

// l4Match is `meta l4proto N`.
func l4Match(proto uint8) metaMatch {
	return metaMatch{key: metaL4Proto, val: []byte{proto}, valText: fmt.Sprint(proto)}
}

// rule is one nft rule: statements in order.
type rule []stmt

func (r rule) text() string {
	parts := make([]string, len(r))
	for i, s := range r {
		parts[i] = s.text()
	}
	return strings.Join(parts, " ")
}
