package firewall

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPrivilegedNetlinkMatchesText loads the same rulesets once through netlink and once as
// the canonical text through `nft -f`, and compares what nft lists for both: the netlink
// encoder writes exactly what nft compiles from the text the fake prints.
func TestPrivilegedNetlinkMatchesText(t *testing.T) {
	for _, tc := range rulesets() {
		t.Run(tc.name, func(t *testing.T) {
			ns := testNetns(t, "nl", "txt")
			fw, err := New(ns[0])
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Close()
			ctx := context.Background()
			if _, err := fw.Apply(ctx, tc.rs); err != nil {
				t.Fatal(err)
			}
			m, _ := compile(tc.rs, nil)
			if out, err := nftIn(ns[1], m.dump(), "-f", "-"); err != nil {
				t.Fatalf("nft -f of the canonical text: %v\n%s", err, out)
			}
			if diff := cmp.Diff(normalize(listRuleset(t, ns[1])), normalize(listRuleset(t, ns[0]))); diff != "" {
				t.Errorf("nft list after netlink (+) differs from after nft -f of the text (-):\n%s", diff)
			}
		})
	}
}

// TestPrivilegedNetlinkConvergence applies the steps in order and then in random orders to
// one namespace. After every Apply the kernel holds exactly what a full load of the same
// ruleset gives, and applying again sends nothing.
func TestPrivilegedNetlinkConvergence(t *testing.T) {
	ns := testNetns(t, "nl", "ref")
	fw, err := New(ns[0])
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	ctx := context.Background()
	check := func(s namedRuleset) {
		t.Helper()
		if _, err := fw.Apply(ctx, s.rs); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		m, _ := compile(s.rs, fw.applied.marks)
		if out, err := nftIn(ns[1], script(fullOps(m)), "-f", "-"); err != nil {
			t.Fatalf("%s: nft -f: %v\n%s", s.name, err, out)
		}
		if diff := cmp.Diff(normalize(listRuleset(t, ns[1])), normalize(listRuleset(t, ns[0]))); diff != "" {
			t.Fatalf("%s: kernel after the incremental apply (+) differs from a full load (-):\n%s", s.name, diff)
		}
		if ch, err := fw.Apply(ctx, s.rs); err != nil || ch.Ops != 0 {
			t.Fatalf("%s: second Apply: %v\n%s", s.name, err, ch.Script)
		}
	}
	all := steps()
	for _, s := range all {
		check(s)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 30 {
		check(all[r.IntN(len(all))])
	}
}

// TestPrivilegedNetlinkRestartAndDrift: a new instance over the same namespace keeps the
// marks and rebuilds identical tables; deleting a table by hand is drift that Verify reports
// and the next Apply repairs; turning the br_netfilter sysctl off is drift too; Flush
// removes netsource's tables and leaves another table alone.
func TestPrivilegedNetlinkRestartAndDrift(t *testing.T) {
	ns := testNetns(t, "nl")[0]
	ctx := context.Background()
	if out, err := nftIn(ns, "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	fw, err := New(ns)
	if err != nil {
		t.Fatal(err)
	}
	s := steps()
	// Two steps so that the marks are not the ones a fresh allocation would give.
	for _, i := range []int{6, 9} {
		if _, err := fw.Apply(ctx, s[i].rs); err != nil {
			t.Fatal(err)
		}
	}
	running := listRuleset(t, ns)
	fw.Close() // saves the state hash
	before := listRuleset(t, ns)
	if diff := cmp.Diff(normalize(running), normalize(before)); diff != "" {
		t.Fatalf("Close changed the tables (-running +closed):\n%s", diff)
	}

	fw, err = New(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	ch, err := fw.Apply(ctx, s[9].rs)
	if err != nil || ch.Ops != 0 {
		t.Fatalf("first apply of a new instance over its own tables changed something: %v\n%s", err, ch.Script)
	}
	if diff := cmp.Diff(before, listRuleset(t, ns)); diff != "" {
		t.Fatalf("tables after a restart differ (-before +after):\n%s", diff)
	}
	// A new instance with a different ruleset replaces the tables whole.
	fw2, err := New(ns)
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := fw2.Apply(ctx, s[8].rs); err != nil || !ch.Full {
		t.Fatalf("first apply of a changed ruleset: full=%v %v", ch.Full, err)
	}
	fw2.Close()
	if _, err := fw.Apply(ctx, s[9].rs); err == nil {
		// fw's idea of the kernel is stale now; its Apply sent a diff from s[9] to s[9]: none.
		if err := fw.Verify(ctx); err == nil {
			t.Fatal("Verify missed tables changed by another instance")
		}
	}
	if _, err := fw.Apply(ctx, s[9].rs); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(normalize(before), normalize(listRuleset(t, ns))); diff != "" {
		t.Fatalf("tables after repair differ (-before +after):\n%s", diff)
	}
	if err := fw.Verify(ctx); err != nil {
		t.Fatalf("Verify of untouched tables: %v", err)
	}

	run(t, "ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", TableName, chainForwardIngress)
	if err := fw.Verify(ctx); !errors.Is(err, ErrDrift) {
		t.Fatalf("Verify after a flushed chain: %v", err)
	}
	if _, err := fw.Apply(ctx, s[9].rs); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(normalize(before), normalize(listRuleset(t, ns))); diff != "" {
		t.Fatalf("tables after repair differ (-before +after):\n%s", diff)
	}

	run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
	if err := fw.Verify(ctx); !errors.Is(err, ErrDrift) {
		t.Fatalf("Verify with bridge-nf-call-iptables=0: %v", err)
	}
	if got := strings.TrimSpace(run(t, "ip", "netns", "exec", ns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables")); got != "1" {
		t.Fatalf("bridge-nf-call-iptables = %s after Verify, want 1", got)
	}

	if err := fw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fw.Flush(ctx); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	if got := listRuleset(t, ns); strings.Contains(got, TableName) || !strings.Contains(got, "table inet other") {
		t.Fatalf("after Flush:\n%s", got)
	}
}

// TestPrivilegedRemoveTables: what an agent with the noop driver does at start.
func TestPrivilegedRemoveTables(t *testing.T) {
	ns := testNetns(t, "nl")[0]
	if removed, err := RemoveTables(ns); err != nil || removed {
		t.Fatalf("RemoveTables without tables: %v %v", removed, err)
	}
	if out, err := nftIn(ns, "table inet other {\n}\n", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	fw, err := New(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if _, err := fw.Apply(context.Background(), webRuleset()); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveTables(ns); err != nil || !removed {
		t.Fatalf("RemoveTables: %v %v", removed, err)
	}
	if got := listRuleset(t, ns); strings.Contains(got, TableName) || !strings.Contains(got, "table inet other") {
		t.Fatalf("after RemoveTables:\n%s", got)
	}
}

// TestPrivilegedNetlinkFailedBatchChangesNothing: when the kernel refuses one message of a
// transaction (here: the inet table was deleted by hand, so its changes find nothing), the
// whole batch is aborted; the bridge table's part of it is not applied either. The error
// is reported, and the next Apply replaces both tables.
func TestPrivilegedNetlinkFailedBatchChangesNothing(t *testing.T) {
	ns := testNetns(t, "nl")[0]
	fw, err := New(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	ctx := context.Background()
	s := steps()
	if _, err := fw.Apply(ctx, s[5].rs); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", TableName)
	before := listRuleset(t, ns)
	ch, err := fw.Apply(ctx, s[6].rs) // a port added: changes in both tables
	if err == nil || ch.Full {
		t.Fatalf("apply over a deleted table: full=%v err=%v", ch.Full, err)
	}
	t.Logf("kernel refused: %v", err)
	if diff := cmp.Diff(before, listRuleset(t, ns)); diff != "" {
		t.Fatalf("a refused batch changed the kernel (-before +after):\n%s", diff)
	}
	if ch, err := fw.Apply(ctx, s[6].rs); err != nil || !ch.Full {
		t.Fatalf("apply after a refused batch: full=%v %v", ch.Full, err)
	}
	m, _ := compile(s[6].rs, fw.applied.marks)
	ref := testNetns(t, "ref")[0]
	if out, err := nftIn(ref, script(fullOps(m)), "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if diff := cmp.Diff(normalize(listRuleset(t, ref)), normalize(listRuleset(t, ns))); diff != "" {
		t.Fatalf("after repair (-want +got):\n%s", diff)
	}
}
