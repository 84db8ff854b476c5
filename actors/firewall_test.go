package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/firewall"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

const (
	fwNet    = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	fwSubnet = "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
	fwWeb    = "1b2c3d4e-0000-4000-8000-000000000001"
)

// fwHarness runs a host supervisor with the firewall observer over a fake links dataplane
// and a fake firewall.
type fwHarness struct {
	t     *testing.T
	root  *actor.RootContext
	host  *actor.PID
	fw    *firewall.Fake
	rep   *actors.RecordingReporter
	seq   uint64
	stop  func()
	apply atomic.Int32
}

func newFWHarness(t *testing.T, fw *firewall.Fake, last map[string]*nsv1.StatusEvent) *fwHarness {
	t.Helper()
	cfg := &config.Config{Host: "hostA"}
	cfg.VXLAN.LocalIP = "198.18.0.1"
	cfg.ApplyDefaults()
	rep := actors.NewRecordingReporter()
	env := &actors.Env{Config: cfg, Dataplane: links.NewFake(), Reporter: rep, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OpTimeout: 5 * time.Second, Backoff: actors.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}, LastStatus: last,
		Observers: []actors.ObserverProducer{actors.FirewallObserver(fw)}}
	system := actor.NewActorSystem()
	host, err := system.Root.SpawnNamed(actors.HostProps(env), fmt.Sprintf("host-%p", fw))
	if err != nil {
		t.Fatal(err)
	}
	h := &fwHarness{t: t, root: system.Root, host: host, fw: fw, rep: rep}
	h.stop = func() { _ = system.Root.PoisonFuture(host).Wait() }
	t.Cleanup(h.stop)
	return h
}

func (h *fwHarness) publish(change nsv1.ChangeKind, spec streams.Spec) uint64 {
	h.t.Helper()
	msg, err := streams.EncodeDesired(streams.NewEvent(change, spec, "test"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.seq++
	h.root.Send(h.host, &actors.DesiredMsg{Msg: streams.Msg{Subject: msg.Subject, Seq: h.seq, Data: msg.Data}})
	return h.seq
}

// caughtUp delivers both facts the firewall waits for: the desired state and the remote
// port statuses stored at start are in.
func (h *fwHarness) caughtUp() {
	h.root.Send(h.host, &actors.CaughtUp{})
	h.root.Send(h.host, &actors.RemotePortStatus{})
}

// waitStatus waits until the group's latest status on this host matches.
func (h *fwHarness) waitStatus(id string, phase nsv1.Phase, seq uint64, reason string) *nsv1.StatusEvent {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := h.rep.Latest(streams.KindSecGroup, id)
		if ev != nil && ev.GetPhase() == phase && ev.GetDesiredSeq() == seq && strings.Contains(ev.GetReason(), reason) {
			return ev
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("secgroup %s: want %s at seq %d with %q, last status %v", id, streams.PhaseName(phase), seq, reason, ev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle waits until the firewall has handled everything sent so far (a status is
// reported after every apply; a round trip through the supervisor orders the rest).
func (h *fwHarness) settle() {
	h.t.Helper()
	if _, err := h.root.RequestFuture(h.host, &actors.GetCounts{}, 5*time.Second).Result(); err != nil {
		h.t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
}

func (h *fwHarness) dump() string {
	d, _ := h.fw.Dump(context.Background())
	return d
}

func fwNetwork() *nsv1.Network {
	return &nsv1.Network{Id: fwNet, NetworkType: "vxlan", SegmentationId: 1001, Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: fwSubnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1"}}}
}

func fwPort(n int, groups ...string) *nsv1.Port {
	return &nsv1.Port{Id: fmt.Sprintf("%08x-0000-4000-8000-00000000000a", 0x3d4e5f60+n), NetworkId: fwNet, Host: "hostA",
		MacAddress: fmt.Sprintf("fa:16:3e:00:00:%02x", n), SecurityGroups: groups,
		FixedIps: []*nsv1.FixedIP{{SubnetId: fwSubnet, IpAddress: fmt.Sprintf("192.0.2.%d", 10+n)}},
		Binding:  &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("vm%d", n)}}
}

func i32(v int32) *int32 { return &v }

func webGroup(port int32, extra ...*nsv1.SecurityGroupRule) *nsv1.SecurityGroup {
	return &nsv1.SecurityGroup{Id: fwWeb, Name: "web", Rules: append([]*nsv1.SecurityGroupRule{
		{Id: "1b2c3d4e-0000-4000-8000-0000000000a1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp",
			PortRangeMin: i32(port), PortRangeMax: i32(port), RemoteIpPrefix: "192.0.2.0/24"},
		{Id: "1b2c3d4e-0000-4000-8000-0000000000a2", Direction: "ingress", Ethertype: "IPv4", RemoteGroupId: fwWeb},
		{Id: "1b2c3d4e-0000-4000-8000-0000000000a3", Direction: "egress", Ethertype: "IPv4"},
	}, extra...)}
}

const (
	created = nsv1.ChangeKind_CHANGE_KIND_CREATED
	updated = nsv1.ChangeKind_CHANGE_KIND_UPDATED
	deleted = nsv1.ChangeKind_CHANGE_KIND_DELETED
)

// TestFirewallOneTransactionPerBurstAndIdempotent: the whole desired state known at start
// becomes one transaction; a resync and a republished identical port change nothing; the
// group's status names its ports.
func TestFirewallOneTransactionPerBurstAndIdempotent(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	gseq := h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	for i := 1; i <= 20; i++ {
		h.publish(created, fwPort(i, fwWeb))
	}
	open := fwPort(21)
	open.PortSecurityEnabled = new(bool)
	h.publish(created, open)
	h.settle()
	if n := len(fw.Scripts()); n != 0 {
		t.Fatalf("%d transactions before the desired state was caught up", n)
	}
	h.caughtUp()
	ev := h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, gseq, "applied to 20 ports")
	if ev.GetDetails()["ports"] != "20" || !strings.Contains(ev.GetDetails()["port_ids"], fwPort(7).Id) {
		t.Fatalf("status details: %v", ev.GetDetails())
	}
	if n := len(fw.Scripts()); n != 1 {
		t.Fatalf("%d transactions for one burst, want 1", n)
	}
	dump := h.dump()
	for _, want := range []string{
		`"` + links.TapName(open.Id) + `" : accept`, // port security off: unfiltered
		"chain from-" + links.TapName(fwPort(20).Id),
		"ip saddr 192.0.2.0/24 tcp dport 8080 accept",
		"192.0.2.30,", // member of the remote group (a local port)
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("tables lack %q", want)
		}
	}

	h.root.Send(h.host, &actors.Resync{})
	h.publish(updated, fwPort(3, fwWeb))
	h.settle()
	if n := len(fw.Scripts()); n != 1 {
		t.Fatalf("resync or an unchanged port sent %d more transactions:\n%s", n-1, fw.Scripts()[n-1])
	}
}

// TestFirewallRuleChangeReconvergesPorts: a rule change is one transaction that refills the
// group's chain (every port using it sees it at once), and the group's new status says
// which ports it reached.
func TestFirewallRuleChangeReconvergesPorts(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	h.publish(created, fwPort(1, fwWeb))
	h.publish(created, fwPort(2, fwWeb))
	h.caughtUp()
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 1, "applied to 2 ports")

	icmp := &nsv1.SecurityGroupRule{Id: "1b2c3d4e-0000-4000-8000-0000000000a4", Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp"}
	seq := h.publish(updated, webGroup(8080, icmp))
	ev := h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, seq, "applied to 2 ports: "+fwPort(1).Id+", "+fwPort(2).Id)
	if ev.GetConvergence() == nil {
		t.Error("status without convergence time")
	}
	scripts := fw.Scripts()
	want := `flush chain inet netsource sg-` + fwWeb + `-ingress
add rule inet netsource sg-` + fwWeb + `-ingress ip saddr 192.0.2.0/24 tcp dport 8080 accept
add rule inet netsource sg-` + fwWeb + `-ingress ip saddr @rg-` + fwWeb + `-v4 accept
add rule inet netsource sg-` + fwWeb + `-ingress meta nfproto ipv4 meta l4proto 1 accept
`
	if diff := cmp.Diff(want, scripts[len(scripts)-1]); diff != "" {
		t.Errorf("rule change transaction (-want +got):\n%s", diff)
	}

	// A port leaving the group is re-converged too, and the status says so.
	h.publish(updated, fwPort(2))
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, seq, "applied to port "+fwPort(1).Id)
}

// TestFirewallRemoteMembers: a port on another host joins the group (its agent's ACTIVE
// status names the group) and its address enters the group's set in one small transaction;
// BUILD keeps it, leaving the group or DELETED removes it; our own host's statuses are
// ignored.
func TestFirewallRemoteMembers(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	h.publish(created, fwPort(1, fwWeb))
	h.caughtUp()
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 1, "applied to port")

	remote := func(phase nsv1.Phase, host string, groups ...string) {
		ev := &nsv1.StatusEvent{Host: host, Kind: "port", Id: "9d4e5f60-0000-4000-8000-00000000000b", Phase: phase}
		if phase == nsv1.Phase_PHASE_ACTIVE {
			ev.PortL2 = &nsv1.PortL2{NetworkId: fwNet, MacAddress: "fa:16:3e:00:00:bb", IpAddresses: []string{"192.0.2.77"}, SecurityGroups: groups}
		}
		h.root.Send(h.host, &actors.RemotePortStatus{Status: ev})
	}
	last := func() string { s := fw.Scripts(); return s[len(s)-1] }
	waitScripts := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(fw.Scripts()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d transactions, want %d", len(fw.Scripts()), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	setName := "rg-" + fwWeb + "-v4"

	remote(nsv1.Phase_PHASE_ACTIVE, "hostB", fwWeb)
	waitScripts(2)
	if want := "add element inet netsource " + setName + " { 192.0.2.77 }\n"; last() != want {
		t.Fatalf("member joined: %q, want %q", last(), want)
	}
	remote(nsv1.Phase_PHASE_BUILD, "hostB")
	remote(nsv1.Phase_PHASE_ACTIVE, "hostA", fwWeb) // our own host: ignored
	h.settle()
	if n := len(fw.Scripts()); n != 2 {
		t.Fatalf("BUILD or an own-host status changed the tables: %s", last())
	}
	remote(nsv1.Phase_PHASE_ACTIVE, "hostB") // left the group
	waitScripts(3)
	if want := "delete element inet netsource " + setName + " { 192.0.2.77 }\n"; last() != want {
		t.Fatalf("member left: %q, want %q", last(), want)
	}
	remote(nsv1.Phase_PHASE_ACTIVE, "hostB", fwWeb)
	waitScripts(4)
	remote(nsv1.Phase_PHASE_DELETED, "hostB")
	waitScripts(5)
	if want := "delete element inet netsource " + setName + " { 192.0.2.77 }\n"; last() != want {
		t.Fatalf("member deleted: %q, want %q", last(), want)
	}
}

// TestFirewallFailureRetriesAndReportsError: a refused transaction reports ERROR on the
// groups and is retried with backoff until it goes through.
func TestFirewallFailureRetriesAndReportsError(t *testing.T) {
	fw := firewall.NewFake()
	var failures atomic.Int32
	failures.Store(3)
	fw.FailOn = func(string) error {
		if failures.Add(-1) >= 0 {
			return errors.New("netlink: operation not permitted")
		}
		return nil
	}
	h := newFWHarness(t, fw, nil)
	h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	h.publish(created, fwPort(1, fwWeb))
	h.caughtUp()
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ERROR, 1, "operation not permitted")
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 1, "applied to port")
}

// TestFirewallRestartChangesNothing: a new agent over the same kernel (the fake's
// simulated one) with the statuses it published rebuilds identical tables and publishes no
// status again.
func TestFirewallRestartChangesNothing(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	h.publish(created, fwPort(1, fwWeb))
	h.publish(created, fwPort(2, fwWeb))
	h.caughtUp()
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 1, "applied to 2 ports")
	before := h.dump()
	last := map[string]*nsv1.StatusEvent{"secgroup/" + fwWeb: h.rep.Latest(streams.KindSecGroup, fwWeb)}
	h.stop()

	fw.Restart()
	h2 := newFWHarness(t, fw, last)
	h2.publish(created, webGroup(8080))
	h2.publish(created, fwNetwork())
	h2.publish(created, fwPort(1, fwWeb))
	h2.publish(created, fwPort(2, fwWeb))
	h2.caughtUp()
	h2.settle()
	if diff := cmp.Diff(before, h2.dump()); diff != "" {
		t.Fatalf("tables after restart (-before +after):\n%s", diff)
	}
	if ev := h2.rep.Latest(streams.KindSecGroup, fwWeb); ev != nil {
		t.Fatalf("restart republished %v", ev)
	}
}

// TestFirewallGroupDeleted: a deleted group reports DELETED; its ports keep filtering
// (a port still naming it gets none of its rules).
func TestFirewallGroupDeleted(t *testing.T) {
	fw := firewall.NewFake()
	h := newFWHarness(t, fw, nil)
	h.publish(created, webGroup(8080))
	h.publish(created, fwNetwork())
	h.caughtUp()
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_ACTIVE, 1, "no port on this host uses it")
	seq := h.publish(deleted, webGroup(8080))
	h.waitStatus(fwWeb, nsv1.Phase_PHASE_DELETED, seq, "deleted")
}
