package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"
)

// The firewall benchmarks that chose the nftables library (docs/benchmarks.md, "Firewall"):
// the same ruleset (ports × 5 security group rules + anti-spoofing, one group per port, a
// remote group with every port as member) loaded as one atomic transaction, and one
// security group rule changed at that size, by
//
//   - netlink:   this package's Netlink (github.com/google/nftables), compile and diff included;
//   - knftables: sigs.k8s.io/knftables, which pipes a script to `nft -f -`;
//   - nft-f:     the baseline, `nft -f -` of the same script.
//
// Run: sudo go test -run '^$' -bench PrivilegedFirewall -benchtime 5x ./nodes/firewall/

// benchRuleset has n ports; each port has its own group of five rules (tcp/22 from a
// prefix, a tcp port range, ICMP echo, anything from the members of a shared group, egress
// IPv4), and every port is a member of the shared group.
func benchRuleset(n int, variant int32) *Ruleset {
	rs := &Ruleset{Groups: map[string]Group{}, Members: map[string][]netip.Addr{}}
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("tap%08x-%02x", i, i%256)[:14]
		addr := netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)})
		gid := fmt.Sprintf("g%04d", i)
		rs.Ports = append(rs.Ports, Port{ID: fmt.Sprintf("p%04d", i), Device: dev,
			MACs:  []string{fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256)},
			Addrs: []netip.Prefix{netip.PrefixFrom(addr, 32)}, Groups: []string{gid}})
		rs.Members["shared"] = append(rs.Members["shared"], addr)
		hi := int32(8100)
		if i == n/2 {
			hi += variant // the rule the change benchmark edits
		}
		rs.Groups[gid] = Group{ID: gid, Rules: []Rule{
			{ID: "r1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(22), PortMax: i32(22), RemoteIPPrefix: "192.0.2.0/24"},
			{ID: "r2", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortMin: i32(8000), PortMax: &hi},
			{ID: "r3", Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp", PortMin: i32(8)},
			{ID: "r4", Direction: "ingress", Ethertype: "IPv4", RemoteGroupID: "shared"},
			{ID: "r5", Direction: "egress", Ethertype: "IPv4"},
		}}
	}
	return rs
}

var benchSizes = []int{100, 1000}

func BenchmarkPrivilegedFirewallLoad(b *testing.B) {
	for _, n := range benchSizes {
		rs := benchRuleset(n, 0)
		m, _ := compile(rs, nil)
		ops := fullOps(m)
		// Each iteration is a new Netlink (a fresh compiler, marks read back from the kernel)
		// loading a ruleset that differs from the kernel's by one rule: a full replace of both
		// tables in one batch, as after a restart with changes, or after drift.
		other := benchRuleset(n, 1)
		b.Run(fmt.Sprintf("ports=%d/netlink", n), func(b *testing.B) {
			ns := testNetns(b, "nl")[0]
			i := 0
			for b.Loop() {
				i++
				fw, err := New(ns)
				if err != nil {
					b.Fatal(err)
				}
				next := rs
				if i%2 == 0 {
					next = other
				}
				if ch, err := fw.Apply(context.Background(), next); err != nil || !ch.Full {
					b.Fatalf("full=%v %v", ch.Full, err)
				}
				fw.Close()
			}
			b.ReportMetric(float64(len(ops)), "ops")
		})
		b.Run(fmt.Sprintf("ports=%d/knftables", n), func(b *testing.B) {
			ns := testNetns(b, "kn")[0]
			nft := newKnftables(b, ns)
			for b.Loop() {
				runKnftables(b, ns, nft, ops)
			}
		})
		b.Run(fmt.Sprintf("ports=%d/nft-f", n), func(b *testing.B) {
			ns := testNetns(b, "nf")[0]
			text := script(ops)
			for b.Loop() {
				if out, err := nftIn(ns, text, "-f", "-"); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
		})
	}
}

// BenchmarkPrivilegedFirewallLoadInterleaved alternates a netlink load and an `nft -f`
// load of the same 1000-port ruleset into two namespaces, so that both see the same
// machine load (on these shared VMs it drifts by 2x within minutes). Each replaces the
// previous tables whole. It reports the median of each and their ratio.
func BenchmarkPrivilegedFirewallLoadInterleaved(b *testing.B) {
	ns := testNetns(b, "nl", "nf")
	rulesets := [2]*Ruleset{benchRuleset(1000, 0), benchRuleset(1000, 1)}
	var texts [2]string
	for i, rs := range rulesets {
		m, _ := compile(rs, nil)
		texts[i] = script(fullOps(m))
	}
	var nl, nf []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		fw, err := New(ns[0])
		if err != nil {
			b.Fatal(err)
		}
		if ch, err := fw.Apply(context.Background(), rulesets[i%2]); err != nil || !ch.Full {
			b.Fatalf("full=%v %v", ch.Full, err)
		}
		fw.Close()
		nl = append(nl, time.Since(start))
		start = time.Now()
		if out, err := nftIn(ns[1], texts[i%2], "-f", "-"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		nf = append(nf, time.Since(start))
	}
	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mnl, mnf := median(nl), median(nf)
	b.ReportMetric(float64(mnl.Milliseconds()), "netlink-ms")
	b.ReportMetric(float64(mnf.Milliseconds()), "nft-f-ms")
	b.ReportMetric(float64(mnl)/float64(mnf), "ratio")
}

func BenchmarkPrivilegedFirewallRuleChange(b *testing.B) {
	for _, n := range benchSizes {
		rulesets := [2]*Ruleset{benchRuleset(n, 0), benchRuleset(n, 1)}
		m0, _ := compile(rulesets[0], nil)
		m1, _ := compile(rulesets[1], nil)
		forward, _ := diff(m0, m1)
		back, _ := diff(m1, m0)
		changes := [2][]op{back, forward}
		b.Run(fmt.Sprintf("ports=%d/netlink", n), func(b *testing.B) {
			ns := testNetns(b, "nl")[0]
			fw, err := New(ns)
			if err != nil {
				b.Fatal(err)
			}
			defer fw.Close()
			if _, err := fw.Apply(context.Background(), rulesets[0]); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				i++
				ch, err := fw.Apply(context.Background(), rulesets[i%2])
				if err != nil || ch.Full || ch.Ops == 0 {
					b.Fatalf("change %d: %+v %v", i, ch, err)
				}
			}
			b.ReportMetric(float64(len(forward)), "ops")
		})
		b.Run(fmt.Sprintf("ports=%d/knftables", n), func(b *testing.B) {
			ns := testNetns(b, "kn")[0]
			nft := newKnftables(b, ns)
			runKnftables(b, ns, nft, fullOps(m0))
			i := 0
			for b.Loop() {
				i++
				runKnftables(b, ns, nft, changes[i%2])
			}
		})
		b.Run(fmt.Sprintf("ports=%d/nft-f", n), func(b *testing.B) {
			ns := testNetns(b, "nf")[0]
			if out, err := nftIn(ns, script(fullOps(m0)), "-f", "-"); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
			texts := [2]string{script(back), script(forward)}
			i := 0
			for b.Loop() {
				i++
				if out, err := nftIn(ns, texts[i%2], "-f", "-"); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
		})
	}
}

// BenchmarkPrivilegedFirewallMember is a remote group member joining and leaving at 1000
// ports: one set element added or deleted.
func BenchmarkPrivilegedFirewallMember(b *testing.B) {
	rs := benchRuleset(1000, 0)
	joined := *rs
	joined.Members = map[string][]netip.Addr{"shared": append(append([]netip.Addr(nil), rs.Members["shared"]...), netip.MustParseAddr("203.0.113.7"))}
	ns := testNetns(b, "nl")[0]
	fw, err := New(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	if _, err := fw.Apply(context.Background(), rs); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		next := rs
		if i%2 == 1 {
			next = &joined
		}
		if ch, err := fw.Apply(context.Background(), next); err != nil || ch.Ops != 1 {
			b.Fatalf("member change: %+v %v", ch, err)
		}
	}
}

// newKnftables opens knftables inside the namespace (it runs nft there at construction).
func newKnftables(b *testing.B, ns string) knftables.Interface {
	var nft knftables.Interface
	if err := InNetns(ns, func() (err error) { nft, err = knftables.New("", ""); return err }); err != nil {
		b.Fatal(err)
	}
	return nft
}

// runKnftables runs ops as one knftables transaction; nft is executed from a thread in the
// namespace, which its child process inherits.
func runKnftables(b *testing.B, ns string, nft knftables.Interface, ops []op) {
	tx := nft.NewTransaction()
	for _, o := range ops {
		knftablesOp(tx, o)
	}
	if err := InNetns(ns, func() error { return nft.Run(context.Background(), tx) }); err != nil {
		b.Fatal(err)
	}
}

func knftablesOp(tx *knftables.Transaction, o op) {
	fam := knftables.Family(o.family)
	switch o.kind {
	case opAddTable:
		tx.Add(&knftables.Table{Family: fam, Name: TableName})
	case opDelTable:
		tx.Delete(&knftables.Table{Family: fam, Name: TableName})
	case opAddSet, opDelSet:
		var obj knftables.Object = &knftables.Set{Family: fam, Table: TableName, Name: o.set.name, Type: string(o.set.key)}
		if o.set.verdict {
			obj = &knftables.Map{Family: fam, Table: TableName, Name: o.set.name, Type: string(o.set.key) + " : verdict"}
		}
		if o.kind == opAddSet {
			tx.Add(obj)
		} else {
			tx.Delete(obj)
		}
	case opAddChain:
		c := &knftables.Chain{Family: fam, Table: TableName, Name: o.chain.name}
		if h := o.chain.hook; h != nil {
			c.Type = knftables.PtrTo(knftables.FilterType)
			c.Hook = knftables.PtrTo(knftables.BaseChainHook(h.name))
			c.Priority = knftables.PtrTo(knftables.BaseChainPriority(fmt.Sprint(h.priority)))
			c.Policy = knftables.PtrTo(knftables.AcceptPolicy)
		}
		tx.Add(c)
	case opFlushChain:
		tx.Flush(&knftables.Chain{Family: fam, Table: TableName, Name: o.chain.name})
	case opDelChain:
		tx.Delete(&knftables.Chain{Family: fam, Table: TableName, Name: o.chain.name})
	case opAddRule:
		tx.Add(&knftables.Rule{Family: fam, Table: TableName, Chain: o.chain.name, Rule: o.rule.text()})
	case opAddElems, opDelElems:
		for _, e := range o.elems {
			el := &knftables.Element{Family: fam, Table: TableName, Key: []string{e.text}}
			if o.set.verdict {
				el.Map = o.set.name
				el.Value = []string{e.verdict.text()}
			} else {
				el.Set = o.set.name
			}
			if o.kind == opAddElems {
				tx.Add(el)
			} else {
				el.Value = nil
				tx.Delete(el)
			}
		}
	}
}

// TestPrivilegedKnftablesLoadsTheSameRuleset keeps the benchmark honest: knftables,
// fed the ops, produces the tables netlink does.
func TestPrivilegedKnftablesLoadsTheSameRuleset(t *testing.T) {
	ns := testNetns(t, "nl", "kn")
	rs := benchRuleset(20, 0)
	fw, err := New(ns[0])
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if _, err := fw.Apply(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	var nft knftables.Interface
	if err := InNetns(ns[1], func() (err error) { nft, err = knftables.New("", ""); return err }); err != nil {
		t.Fatal(err)
	}
	m, _ := compile(rs, nil)
	tx := nft.NewTransaction()
	for _, o := range fullOps(m) {
		knftablesOp(tx, o)
	}
	if err := InNetns(ns[1], func() error { return nft.Run(context.Background(), tx) }); err != nil {
		t.Fatal(err)
	}
	if a, b := normalize(listRuleset(t, ns[0])), normalize(listRuleset(t, ns[1])); a != b {
		t.Fatalf("knftables and netlink tables differ:\n%s", firstDiff(a, b))
	}
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(la), len(lb))
}
