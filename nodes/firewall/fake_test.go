package firewall

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// steps are desired states applied in order by the convergence tests: ports come and go,
// groups and rules change, members join and leave, port security turns off and on.
func steps() []namedRuleset {
	web := webRuleset()
	var out []namedRuleset
	add := func(name string, edit func(rs *Ruleset)) {
		rs := cloneRuleset(web)
		edit(rs)
		out = append(out, namedRuleset{name, rs})
		web = rs
	}
	out = append(out, namedRuleset{"empty", &Ruleset{}})
	add("web", func(*Ruleset) {})
	add("rule changed", func(rs *Ruleset) {
		g := rs.Groups["web"]
		g.Rules[0].PortMin, g.Rules[0].PortMax = i32(8081), i32(8081)
		rs.Groups["web"] = g
	})
	add("icmp allowed", func(rs *Ruleset) {
		g := rs.Groups["web"]
		g.Rules = append(g.Rules, Rule{ID: "r9", Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp"})
		rs.Groups["web"] = g
	})
	add("member joins", func(rs *Ruleset) {
		rs.Members["web"] = append(rs.Members["web"], netip.MustParseAddr("203.0.113.5"))
	})
	add("member leaves", func(rs *Ruleset) {
		rs.Members["web"] = rs.Members["web"][:1]
	})
	add("port added", func(rs *Ruleset) {
		rs.Ports = append(rs.Ports, Port{ID: "p3", Device: "tap3d4e5f60-03", MACs: []string{"fa:16:3e:00:00:04"},
			Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.13/32")}, Groups: []string{"web", "db"}})
		rs.Groups["db"] = Group{ID: "db", Rules: []Rule{{ID: "d1", Direction: "ingress", Ethertype: "IPv6", Protocol: "tcp", PortMin: i32(5432), PortMax: i32(5432), RemoteGroupID: "web"}}}
		rs.Members["web"] = append(rs.Members["web"], netip.MustParseAddr("2001:db8::13"))
	})
	add("port security off", func(rs *Ruleset) {
		rs.Ports = slices.DeleteFunc(rs.Ports, func(p Port) bool { return p.ID == "p2" })
		rs.Open = append(rs.Open, "tap3d4e5f60-01")
	})
	add("first port removed", func(rs *Ruleset) {
		rs.Ports = slices.DeleteFunc(rs.Ports, func(p Port) bool { return p.ID == "p1" })
	})
	add("group removed", func(rs *Ruleset) {
		rs.Ports[0].Groups = []string{"web"}
		delete(rs.Groups, "db")
	})
	out = append(out, namedRuleset{"empty again", &Ruleset{}})
	return out
}

func cloneRuleset(rs *Ruleset) *Ruleset {
	out := &Ruleset{Open: slices.Clone(rs.Open), Groups: map[string]Group{}, Members: map[string][]netip.Addr{}}
	for _, p := range rs.Ports {
		out.Ports = append(out.Ports, clonePort(p))
	}
	for id, g := range rs.Groups {
		out.Groups[id] = cloneGroup(g)
	}
	for id, m := range rs.Members {
		out.Members[id] = slices.Clone(m)
	}
	return out
}

// TestFakeConvergence applies the steps in order and then in random orders. After every
// Apply the tables are exactly those of the ruleset compiled from scratch (with the port
// indexes in use), and applying again sends nothing.
func TestFakeConvergence(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, f *Fake, s namedRuleset) {
		t.Helper()
		before := len(f.Scripts())
		if _, err := f.Apply(ctx, s.rs); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, _ := f.Dump(ctx)
		want, _ := compile(s.rs, f.applied.marks)
		if diff := cmp.Diff(want.dump(), got); diff != "" {
			t.Fatalf("%s: tables after an incremental apply differ from a full one (-want +got):\n%s", s.name, diff)
		}
		if n := len(f.Scripts()); n > before+1 {
			t.Fatalf("%s: %d transactions for one Apply", s.name, n-before)
		}
		ch, err := f.Apply(ctx, s.rs)
		if err != nil || ch.Ops != 0 {
			t.Fatalf("%s: second Apply changed something: %v\n%s", s.name, err, ch.Script)
		}
	}
	t.Run("in order", func(t *testing.T) {
		f := NewFake()
		for _, s := range steps() {
			check(t, f, s)
		}
	})
	t.Run("random orders", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		f := NewFake()
		all := steps()
		for range 200 {
			check(t, f, all[r.IntN(len(all))])
		}
	})
}

// TestFakeTransactions pins what one change sends: a rule change touches one chain, a
// member one set element, and nothing leaves a port unfiltered in between (each is one
// transaction; the chain is flushed and refilled in it).
func TestFakeTransactions(t *testing.T) {
	ctx := context.Background()
	s := steps()
	tests := []struct {
		from, to int
		want     string
	}{
		{1, 2, `flush chain inet netsource sg-web-ingress
add rule inet netsource sg-web-ingress ip saddr 192.0.2.0/24 tcp dport 8081 accept
add rule inet netsource sg-web-ingress meta nfproto ipv4 tcp dport 8000-8100 accept
add rule inet netsource sg-web-ingress meta nfproto ipv4 icmp type 8 icmp code 0 accept
add rule inet netsource sg-web-ingress meta nfproto ipv6 icmpv6 type 128 accept
add rule inet netsource sg-web-ingress ip saddr @rg-web-v4 accept
add rule inet netsource sg-web-ingress ip saddr 198.51.100.128/25 meta l4proto 17 accept
`},
		{3, 4, "add element inet netsource rg-web-v4 { 203.0.113.5 }\n"},
		{4, 5, "delete element inet netsource rg-web-v4 { 192.0.2.99, 203.0.113.5 }\n"},
		{6, 7, `delete element bridge netsource from-ports { "tap3d4e5f60-01" }
add element bridge netsource from-ports { "tap3d4e5f60-01" : accept }
delete element bridge netsource to-ports { "tap3d4e5f60-01" }
add element bridge netsource to-ports { "tap3d4e5f60-01" : accept }
flush chain bridge netsource from-tap3d4e5f60-01
flush chain bridge netsource to-tap3d4e5f60-01
delete chain bridge netsource from-tap3d4e5f60-01
delete chain bridge netsource to-tap3d4e5f60-01
delete element inet netsource egress-ports { 0x00000002 }
delete element inet netsource ingress-ports { 0x00020000 }
flush chain inet netsource egress-tap3d4e5f60-01
flush chain inet netsource ingress-tap3d4e5f60-01
delete chain inet netsource egress-tap3d4e5f60-01
delete chain inet netsource ingress-tap3d4e5f60-01
`},
	}
	for _, tt := range tests {
		t.Run(s[tt.to].name, func(t *testing.T) {
			f := NewFake()
			if _, err := f.Apply(ctx, s[tt.from].rs); err != nil {
				t.Fatal(err)
			}
			ch, err := f.Apply(ctx, s[tt.to].rs)
			if err != nil {
				t.Fatal(err)
			}
			if ch.Full {
				t.Fatal("a change replaced the tables whole")
			}
			if diff := cmp.Diff(tt.want, ch.Script); diff != "" {
				t.Errorf("transaction (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFakeDump pins the canonical text of a small host.
func TestFakeDump(t *testing.T) {
	rs := &Ruleset{
		Ports: []Port{{ID: "p1", Device: "tap3d4e5f60-00", MACs: []string{"fa:16:3e:00:00:01"},
			Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, Groups: []string{"web"}}},
		Groups: map[string]Group{"web": {ID: "web", Rules: []Rule{
			{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(8080), PortMax: i32(8080), RemoteIPPrefix: "192.0.2.0/24"},
		}}},
	}
	f := NewFake()
	if _, err := f.Apply(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Dump(context.Background())
	want := `table bridge netsource {
	map from-ports {
		type ifname : verdict
		elements = {
			"tap3d4e5f60-00" : jump from-tap3d4e5f60-00,
		}
	}
	map to-ports {
		type ifname : verdict
		elements = {
			"tap3d4e5f60-00" : jump to-tap3d4e5f60-00,
		}
	}
	chain forward-ports {
		type filter hook forward priority -300; policy accept;
		oifname vmap @to-ports
		oifname "tap*" drop
	}
	chain from-tap3d4e5f60-00 {
		meta mark set 0x00000001
		ether saddr != fa:16:3e:00:00:01 drop
		arp saddr ether != fa:16:3e:00:00:01 drop
		arp saddr ip != { 0.0.0.0, 192.0.2.10 } drop
		udp sport 67 udp dport 68 drop
		udp sport 547 udp dport 546 drop
		icmpv6 type nd-router-advert drop
		ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
		ip saddr != 192.0.2.10 drop
		ip6 saddr :: ip6 daddr ff02::/16 icmpv6 type { mld-listener-report, nd-neighbor-solicit, mld2-listener-report } accept
		ip6 saddr != fe80::f816:3eff:fe00:1 drop
		accept
	}
	chain prerouting-ports {
		type filter hook prerouting priority -300; policy accept;
		iifname vmap @from-ports
		iifname "tap*" drop
	}
	chain to-tap3d4e5f60-00 {
		meta mark set meta mark & 0x0000ffff | 0x00010000
		accept
	}
}
table inet netsource {
	map egress-ports {
		type mark : verdict
		elements = {
			0x00000001 : jump egress-tap3d4e5f60-00,
		}
	}
	map ingress-ports {
		type mark : verdict
		elements = {
			0x00010000 : jump ingress-tap3d4e5f60-00,
		}
	}
	chain egress-common {
		meta nfproto ipv4 udp sport 68 udp dport 67 accept
		meta nfproto ipv6 udp sport 546 udp dport 547 accept
		meta nfproto ipv6 meta l4proto 58 accept
	}
	chain egress-tap3d4e5f60-00 {
		ct state invalid drop
		jump egress-common
		jump sg-web-egress
		drop
	}
	chain forward-egress {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		meta mark & 0x0000ffff vmap @egress-ports
	}
	chain forward-ingress {
		type filter hook forward priority 1; policy accept;
		ct state established,related accept
		meta mark & 0xffff0000 vmap @ingress-ports
	}
	chain ingress-common {
		meta nfproto ipv4 udp sport 67 udp dport 68 accept
		meta nfproto ipv6 udp sport 547 udp dport 546 accept
		icmpv6 type { mld-listener-query, nd-neighbor-solicit, nd-neighbor-advert } accept
		ip6 saddr fe80::/10 icmpv6 type nd-router-advert accept
	}
	chain ingress-tap3d4e5f60-00 {
		ct state invalid drop
		jump ingress-common
		jump sg-web-ingress
		drop
	}
	chain input-egress {
		type filter hook input priority 0; policy accept;
		ct state established,related accept
		meta mark & 0x0000ffff vmap @egress-ports
	}
	chain sg-web-egress {
	}
	chain sg-web-ingress {
		ip saddr 192.0.2.0/24 tcp dport 8080 accept
	}
}
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dump (-want +got):\n%s", diff)
	}
}

// TestCompileProblems: a bad port fails closed (its device maps to drop), a bad rule is left
// out, an unknown group is reported and its ports get none of its rules; the rest is applied.
func TestCompileProblems(t *testing.T) {
	rs := &Ruleset{
		Ports: []Port{
			{ID: "bad", Device: "tapbad", MACs: []string{"zz"}},
			{ID: "good", Device: "tapgood", MACs: []string{"fa:16:3e:00:00:01"}, Groups: []string{"g", "missing"}},
		},
		Groups: map[string]Group{"g": {ID: "g", Rules: []Rule{
			{ID: "ok", Direction: "ingress", Ethertype: "IPv4", Protocol: "udp"},
			{ID: "wrong", Direction: "ingress", Ethertype: "IPv6", RemoteIPPrefix: "192.0.2.0/24"},
		}}},
	}
	m, problems := compile(rs, nil)
	var got []string
	for _, p := range problems {
		got = append(got, p.Error())
	}
	want := []string{
		`port bad: bad MAC address "zz"`,
		"security group g rule wrong: remote_ip_prefix 192.0.2.0/24 is not an IPv6 prefix",
		"security group missing: unknown security group: its ports get none of its rules",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	dump := m.dump()
	for _, s := range []string{`"tapbad" : drop,`, "chain from-tapgood", "meta nfproto ipv4 meta l4proto 17 accept"} {
		if !strings.Contains(dump, s) {
			t.Errorf("dump lacks %q:\n%s", s, dump)
		}
	}
	if strings.Contains(dump, "from-tapbad") {
		t.Errorf("dump has chains of a bad port:\n%s", dump)
	}
	// An unknown group's chains exist, empty: when it arrives only they change.
	if !strings.Contains(dump, "chain sg-missing-ingress {\n\t}") {
		t.Errorf("dump lacks the empty chains of an unknown group:\n%s", dump)
	}
}

// TestRuleForms renders every rule shape netsource accepts.
func TestRuleForms(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{Direction: "ingress", Ethertype: "IPv4"}, "meta nfproto ipv4 accept"},
		{Rule{Direction: "egress", Ethertype: "IPv6", Protocol: "any"}, "meta nfproto ipv6 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv4", Protocol: "0", RemoteIPPrefix: "0.0.0.0/0"}, "meta nfproto ipv4 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp"}, "meta nfproto ipv4 meta l4proto 6 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv4", Protocol: "6", PortMin: i32(22), PortMax: i32(22)}, "meta nfproto ipv4 tcp dport 22 accept"},
		{Rule{Direction: "egress", Ethertype: "IPv4", Protocol: "udp", PortMin: i32(53), PortMax: i32(54), RemoteIPPrefix: "198.51.100.1"}, "ip daddr 198.51.100.1 udp dport 53-54 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv6", Protocol: "sctp", PortMin: i32(9), PortMax: i32(9), RemoteIPPrefix: "2001:db8::/33"}, "ip6 saddr 2001:db8::/33 sctp dport 9 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp", PortMin: i32(3)}, "meta nfproto ipv4 icmp type 3 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv6", Protocol: "icmp", PortMin: i32(1), PortMax: i32(4)}, "meta nfproto ipv6 icmpv6 type 1 icmpv6 code 4 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv6", Protocol: "58"}, "meta nfproto ipv6 meta l4proto 58 accept"},
		{Rule{Direction: "egress", Ethertype: "IPv6", RemoteGroupID: "g"}, "ip6 daddr @rg-g-v6 accept"},
		{Rule{Direction: "ingress", Ethertype: "IPv4", Protocol: "112"}, "meta nfproto ipv4 meta l4proto 112 accept"},
	}
	for _, tt := range tests {
		stmts, err := ruleStmts(tt.rule)
		if err != nil {
			t.Errorf("%+v: %v", tt.rule, err)
			continue
		}
		if got := rule(stmts).text(); got != tt.want {
			t.Errorf("%+v:\n got %s\nwant %s", tt.rule, got, tt.want)
		}
	}
	for _, bad := range []Rule{
		{Direction: "sideways", Ethertype: "IPv4"},
		{Direction: "ingress", Ethertype: "IPX"},
		{Direction: "ingress", Ethertype: "IPv4", Protocol: "gopher"},
		{Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(90), PortMax: i32(80)},
		{Direction: "ingress", Ethertype: "IPv4", Protocol: "47", PortMin: i32(1)},
		{Direction: "ingress", Ethertype: "IPv4", RemoteIPPrefix: "192.0.2.0/24", RemoteGroupID: "g"},
	} {
		if _, err := ruleStmts(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestFakeFailureAndRestart: a refused transaction leaves the kernel as it was and makes the
// next Apply a full one; a restarted instance keeps every port's mark and rebuilds the same
// tables; Tamper is drift.
func TestFakeFailureAndRestart(t *testing.T) {
	ctx := context.Background()
	s := steps()
	f := NewFake()
	if _, err := f.Apply(ctx, s[1].rs); err != nil {
		t.Fatal(err)
	}
	before, _ := f.Dump(ctx)
	f.FailOn = func(string) error { return errors.New("EPERM") }
	if _, err := f.Apply(ctx, s[2].rs); err == nil {
		t.Fatal("a refused transaction reported success")
	}
	if after, _ := f.Dump(ctx); after != before {
		t.Fatal("a refused transaction changed the tables")
	}
	f.FailOn = nil
	if ch, err := f.Apply(ctx, s[2].rs); err != nil || !ch.Full {
		t.Fatalf("apply after a failure: full=%v %v", ch.Full, err)
	}

	want, _ := f.Dump(ctx)
	f.Restart()
	ch, err := f.Apply(ctx, s[2].rs)
	if err != nil || !ch.Full {
		t.Fatalf("first apply after restart: full=%v %v", ch.Full, err)
	}
	if got, _ := f.Dump(ctx); got != want {
		t.Errorf("tables after restart differ:\n%s", cmp.Diff(want, got))
	}

	f.Tamper()
	if err := f.Verify(ctx); !errors.Is(err, ErrDrift) {
		t.Fatalf("Verify after tampering: %v", err)
	}
	if ch, err := f.Apply(ctx, s[2].rs); err != nil || !ch.Full {
		t.Fatalf("apply after drift: full=%v %v", ch.Full, err)
	}
}
