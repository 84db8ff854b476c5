package firewall

import "net/netip"

func i32(v int32) *int32 { return &v }

type namedRuleset struct {
	name string
	rs   *Ruleset
}

// rulesets are the shapes the tests load: every rule form netsource writes.
func rulesets() []namedRuleset {
	out := []namedRuleset{{"empty", &Ruleset{}}, {"web", webRuleset()}, {"edge cases", edgeRuleset()}}
	return append(out, steps()...)
}

func webRuleset() *Ruleset {
	return &Ruleset{
		Ports: []Port{
			{ID: "p1", Device: "tap3d4e5f60-00", MACs: []string{"fa:16:3e:00:00:01"}, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("198.51.100.0/24")}, Groups: []string{"web"}},
			{ID: "p2", Device: "tap3d4e5f60-01", MACs: []string{"fa:16:3e:00:00:02", "fa:16:3e:00:00:03"}, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/32"), netip.MustParsePrefix("2001:db8::11/128")}},
		},
		Open: []string{"tap3d4e5f60-02"},
		Groups: map[string]Group{"web": {ID: "web", Rules: []Rule{
			{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(8080), PortMax: i32(8080), RemoteIPPrefix: "192.0.2.0/24"},
			{ID: "r2", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(8000), PortMax: i32(8100)},
			{ID: "r3", Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp", PortMin: i32(8), PortMax: i32(0)},
			{ID: "r4", Direction: "ingress", Ethertype: "IPv6", Protocol: "icmpv6", PortMin: i32(128)},
			{ID: "r5", Direction: "ingress", Ethertype: "IPv4", RemoteGroupID: "web"},
			{ID: "r6", Direction: "egress", Ethertype: "IPv4"},
			{ID: "r7", Direction: "egress", Ethertype: "IPv6", Protocol: "47"},
			{ID: "r8", Direction: "ingress", Ethertype: "IPv4", Protocol: "udp", RemoteIPPrefix: "198.51.100.128/25"},
		}}},
		Members: map[string][]netip.Addr{"web": {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.99")}},
	}
}

// edgeRuleset has the rarer shapes: a v6-only port, a /0 pair (no source check for that
// family), adjacent and overlapping pairs, a non-byte-aligned IPv6 prefix, several MACs.
func edgeRuleset() *Ruleset {
	return &Ruleset{
		Ports: []Port{
			{ID: "v6", Device: "tapv6", MACs: []string{"fa:16:3e:00:01:01"}, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}, Groups: []string{"g"}},
			{ID: "any4", Device: "tapany4", MACs: []string{"fa:16:3e:00:01:02", "fa:16:3e:00:01:03"},
				Addrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("2001:db8::5/128")}},
			{ID: "adj", Device: "tapadj", MACs: []string{"fa:16:3e:00:01:04"},
				Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("192.0.2.11/32"), netip.MustParsePrefix("192.0.2.12/31"), netip.MustParsePrefix("255.255.255.255/32")}},
		},
		Groups: map[string]Group{"g": {ID: "g", Rules: []Rule{
			{ID: "a", Direction: "ingress", Ethertype: "IPv6", Protocol: "tcp", PortMin: i32(1), PortMax: i32(65535), RemoteIPPrefix: "2001:db8:8000::/33"},
			{ID: "b", Direction: "egress", Ethertype: "IPv6", Protocol: "icmpv6", PortMin: i32(1), PortMax: i32(3), RemoteGroupID: "g"},
			{ID: "c", Direction: "egress", Ethertype: "IPv4", Protocol: "udp", PortMin: i32(53), PortMax: i32(53), RemoteIPPrefix: "203.0.113.0/24"},
			{ID: "d", Direction: "ingress", Ethertype: "IPv4", Protocol: "sctp"},
		}}},
		Members: map[string][]netip.Addr{"g": {netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}},
	}
}
