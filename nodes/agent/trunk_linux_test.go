package agent_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/ovs"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

const (
	trunkNetB    = "7b1f5c9f-2d8e-4b66-8c40-3a2a5d2f1b02"
	trunkSubnetB = "1d6e2f30-4b5c-4d6e-9f70-8b9cad0e1f30"
	trunkNetC    = "8c2f6daf-3e9f-4c77-9d51-4b3b6e3f2c03"
	trunkSubnetC = "2e7f3041-5c6d-4e7f-a081-9cadbe1f2041"
	trunkTestID  = "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a01"
	sub101ID     = "4e5f6101-0000-4000-8000-000000000101"
	sub102ID     = "4e5f6102-0000-4000-8000-000000000102"
	peerBID      = "4e5f60b2-0000-4000-8000-0000000000b2"
	peerCID      = "4e5f60c3-0000-4000-8000-0000000000c3"
)

// trunkTopology: vm1 on hostA has a trunk whose parent (portA) is on network A (blue,
// 192.0.2.0/24); network B (198.51.100.0/24) and C (203.0.113.0/24) have a VM each on hostB;
// sub-port 101 on B is on the trunk from the start, sub-port 102 on C comes later.
func trunkTopology(prefix string, subs ...*nsv1.SubPort) *nsv1.Topology {
	topo := vxlanTopology("hostA", "hostB", prefix)
	net := func(id, subnet string, vni uint32, cidr string) *nsv1.Network {
		return &nsv1.Network{Id: id, NetworkType: "vxlan", SegmentationId: vni, Mtu: 1450,
			Subnets: []*nsv1.Subnet{{Id: subnet, Cidr: cidr, IpVersion: 4}}}
	}
	port := func(id, netID, subnet, host, mac, ip string, vm string) *nsv1.Port {
		p := &nsv1.Port{Id: id, NetworkId: netID, Host: host, MacAddress: mac, FixedIps: []*nsv1.FixedIP{{SubnetId: subnet, IpAddress: ip}}}
		if vm != "" {
			p.Binding = &nsv1.Binding{Type: "veth", Netns: prefix + "-" + vm}
		}
		return p
	}
	topo.Networks = append(topo.Networks, net(trunkNetB, trunkSubnetB, 1002, "198.51.100.0/24"), net(trunkNetC, trunkSubnetC, 1003, "203.0.113.0/24"))
	topo.Ports = append(topo.Ports,
		port(sub101ID, trunkNetB, trunkSubnetB, "hostA", "fa:16:3e:00:01:01", "198.51.100.10", ""),
		port(sub102ID, trunkNetC, trunkSubnetC, "hostA", "fa:16:3e:00:01:02", "203.0.113.10", ""),
		port(peerBID, trunkNetB, trunkSubnetB, "hostB", "fa:16:3e:00:00:b2", "198.51.100.11", "vmb"),
		port(peerCID, trunkNetC, trunkSubnetC, "hostB", "fa:16:3e:00:00:c3", "203.0.113.11", "vmc"))
	topo.Trunks = []*nsv1.Trunk{{Id: trunkTestID, Name: "vm1-trunk", PortId: portAID, Host: "hostA", SubPorts: subs}}
	return topo
}

func vlanSub(id string, vid uint32) *nsv1.SubPort {
	return &nsv1.SubPort{PortId: id, SegmentationType: "vlan", SegmentationId: vid}
}

// waitTrunk waits for the trunk's status at its current desired version.
func waitTrunk(t *testing.T, ctx context.Context, js jetstream.JetStream, phase nsv1.Phase) *nsv1.StatusEvent {
	t.Helper()
	ev, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindTrunk, ID: trunkTestID, Phase: phase})
	if err != nil {
		t.Fatalf("trunk %s: %v", streams.PhaseName(phase), err)
	}
	return ev
}

// brIntPorts lists br-int's ports, sorted.
func brIntPorts(t *testing.T, h *ovsHost) []string {
	t.Helper()
	out := strings.Fields(h.ovs.MustVsctl("list-ports", "br-int"))
	return out
}

// TestPrivilegedOVSTrunk: a VM with a trunk port on the openvswitch mechanism. Untagged
// frames of the parent reach network A and frames the VM tags with VLAN 101 network B (the
// tag is really on the parent's device); VMs on the other host answer. A sub-port added
// while the parent carries a ping works within a second and the ping loses nothing;
// removing it takes its flows, patch ports and VLAN interface away and leaves the rest. A
// restarted agent changes no flow, port or device.
func TestPrivilegedOVSTrunk(t *testing.T) {
	prefix, a, b := ovsHosts(t, false)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	agentA := a.start(t, srv.NS.ClientURL())
	b.start(t, srv.NS.ClientURL())
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Apply(ctx, trunkTopology(prefix, vlanSub(sub101ID, 101))); err != nil {
		t.Fatal(err)
	}
	ev := waitTrunk(t, ctx, js, nsv1.Phase_PHASE_ACTIVE)
	t.Logf("trunk: %s %s %v", streams.PhaseName(ev.GetPhase()), ev.GetReason(), ev.GetDetails())
	for _, id := range []string{portBID, peerBID, peerCID} {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	vm1 := prefix + "-vm1"
	parentTap := links.TapName(portAID)

	// Untagged on the parent: network A. VLAN 101: network B, with the tag on the wire.
	eventually(t, 20*time.Second, "vm1 (parent, untagged) -> vm2 on network A", func() error { return ping(vm1, "192.0.2.11") })
	onParent := capture(t, a.netns, parentTap)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("diagnostics of hostA and vm1:\n%s", trunkDiagnostics(a, vm1))
		}
	})
	eventually(t, 20*time.Second, "vm1 (VLAN 101) -> vmb on network B", func() error { return ping(vm1, "198.51.100.11") })
	pingN(t, vm1, "198.51.100.11", 3)
	tagged := 0
	for _, p := range onParent() {
		if p.Src == "198.51.100.10" && p.Dst == "198.51.100.11" {
			if p.VLAN != 101 {
				t.Fatalf("echo request from the sub-port left the VM with VLAN %d, want 101", p.VLAN)
			}
			tagged++
		}
	}
	if tagged < 3 {
		t.Fatalf("%d echo requests tagged 101 on the parent's device %s, want at least 3", tagged, parentTap)
	}
	t.Logf("parent device %s carried %d echo requests tagged with VLAN 101", parentTap, tagged)
	if ping(prefix+"-vm2", "198.51.100.10") == nil {
		t.Fatal("vm2 on network A reaches the sub-port on network B")
	}
	if ping(vm1, "203.0.113.11") == nil {
		t.Fatal("network C reachable before its sub-port exists")
	}

	// Add VLAN 102 while the parent carries a ping.
	flowsBefore := a.netsourceFlows(t)
	parentPing := exec.Command("ip", "netns", "exec", vm1, "ping", "-c", "60", "-i", "0.05", "-W", "1", "192.0.2.11")
	pingOut := &strings.Builder{}
	parentPing.Stdout, parentPing.Stderr = pingOut, pingOut
	if err := parentPing.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parentPing.Process.Kill() })
	time.Sleep(500 * time.Millisecond)
	added := time.Now()
	if _, err := pub.Apply(ctx, trunkTopology(prefix, vlanSub(sub101ID, 101), vlanSub(sub102ID, 102))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "vm1 (VLAN 102) -> vmc on network C", func() error {
		return exec.Command("ip", "netns", "exec", vm1, "ping", "-c", "1", "-W", "0.2", "203.0.113.11").Run()
	})
	working := time.Since(added)
	t.Logf("new VLAN 102 answers pings %s after the trunk update was applied", working.Round(time.Millisecond))
	if working > time.Second {
		t.Errorf("VLAN 102 took %s to work, want within 1 s", working)
	}
	if err := parentPing.Wait(); err != nil {
		t.Fatalf("ping on the parent while VLAN 102 was added: %v\n%s", err, pingOut)
	}
	if m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(pingOut.String()); m == nil || m[1] != m[2] {
		t.Fatalf("the parent lost packets while a sub-port was added:\n%s", pingOut)
	} else {
		t.Logf("parent ping while VLAN 102 was added: %s sent, %s received", m[1], m[2])
	}
	var added102 []string
	for _, f := range a.netsourceFlows(t) {
		if !slices.Contains(flowsBefore, f) {
			added102 = append(added102, f)
		}
	}
	for _, f := range flowsBefore {
		if !slices.Contains(a.netsourceFlows(t), f) {
			t.Errorf("adding VLAN 102 removed or changed the flow %s", f)
		}
	}
	t.Logf("adding VLAN 102 added %d flows:\n%s", len(added102), strings.Join(added102, "\n"))

	// Remove VLAN 102: its flows, patch ports and VLAN interface go; the rest stays.
	if _, err := pub.Apply(ctx, trunkTopology(prefix, vlanSub(sub101ID, 101))); err != nil {
		t.Fatal(err)
	}
	waitTrunk(t, ctx, js, nsv1.Phase_PHASE_ACTIVE)
	eventually(t, 10*time.Second, "VLAN 102 plumbing removed", func() error {
		ports := brIntPorts(t, a)
		if slices.Contains(ports, links.TapName(sub102ID)) || slices.Contains(ports, ovs.TwinName(sub102ID)) {
			return fmt.Errorf("br-int ports %v", ports)
		}
		if got := strings.Join(ipLinks(t, vm1), " "); strings.Contains(got, links.PeerName(sub102ID)) {
			return fmt.Errorf("vm1 links %s", got)
		}
		return nil
	})
	if after := a.netsourceFlows(t); strings.Join(after, "\n") != strings.Join(flowsBefore, "\n") {
		t.Errorf("flows after removing VLAN 102 differ from before adding it:\nbefore:\n%s\nafter:\n%s",
			strings.Join(flowsBefore, "\n"), strings.Join(after, "\n"))
	}
	if ping(vm1, "203.0.113.11") == nil {
		t.Fatal("network C still reachable after its sub-port was removed")
	}
	pingN(t, vm1, "198.51.100.11", 2)
	pingN(t, vm1, "192.0.2.11", 2)

	// Restart with a converged trunk: no flow, port or device changes, no status.
	flows, ports, vmLinks := a.netsourceFlows(t), brIntPorts(t, a), ipLinks(t, vm1)
	agentA.signal(syscall.SIGTERM)
	restarted := time.Now()
	a.start(t, srv.NS.ClientURL())
	isSyncedBeat := func(ev *nsv1.StatusEvent) bool {
		return ev.GetHost() == "hostA" && ev.GetKind() == "agent" && ev.GetDetails()["synced"] == "true"
	}
	var beat timedStatus
	for beat.at.Before(restarted) {
		beat = statuses.waitFor(t, beat.at.Add(time.Nanosecond), 20*time.Second, "hostA heartbeat after restart", isSyncedBeat)
	}
	beat = statuses.waitFor(t, beat.at.Add(time.Nanosecond), 10*time.Second, "second hostA heartbeat after restart", isSyncedBeat)
	if m := beat.ev.GetDetails()["kernel_mutations"]; m != "0" {
		t.Errorf("restarted agent with a converged trunk made %s changes", m)
	}
	objectStatus := func(ev *nsv1.StatusEvent) bool { return ev.GetHost() == "hostA" && ev.GetKind() != "agent" }
	if n := statuses.count(restarted, objectStatus); n != 0 {
		first, _ := statuses.first(restarted, objectStatus)
		t.Errorf("restarted agent published %d object statuses, first %v", n, first.ev)
		statuses.mu.Lock()
		for _, s := range statuses.events {
			if s.ev.GetId() == first.ev.GetId() {
				t.Logf("%s %s %s seq %d", s.at.Format("15:04:05.000"), streams.PhaseName(s.ev.GetPhase()), s.ev.GetReason(), s.ev.GetDesiredSeq())
			}
		}
		statuses.mu.Unlock()
	}
	if got := a.netsourceFlows(t); strings.Join(got, "\n") != strings.Join(flows, "\n") {
		t.Errorf("flows changed across restart")
	}
	if got := brIntPorts(t, a); strings.Join(got, " ") != strings.Join(ports, " ") {
		t.Errorf("br-int ports changed across restart: %v -> %v", ports, got)
	}
	if got := ipLinks(t, vm1); strings.Join(got, " ") != strings.Join(vmLinks, " ") {
		t.Errorf("vm1 links changed across restart: %v -> %v", vmLinks, got)
	}
	pingN(t, vm1, "198.51.100.11", 2)
}

// TestPrivilegedLinuxBridgeTrunk: on the Linux bridge mechanism each sub-port's device is
// an 802.1Q sub-interface of the parent's tap device in the bridge of the sub-port's
// network, as Neutron's Linux bridge trunk driver makes it. On a kernel without 802.1Q
// devices the test checks that the agent says so (sub-port ERROR, trunk DEGRADED, the
// parent still forwarding) and skips; elsewhere it pings through the trunk.
func TestPrivilegedLinuxBridgeTrunk(t *testing.T) {
	prefix, hostA, hostB := twoHosts(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	startFirewallAgent(t, srv.NS.ClientURL(), "hostA", hostA, "198.18.0.1")
	startFirewallAgent(t, srv.NS.ClientURL(), "hostB", hostB, "198.18.0.2")
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The sub-port has a security group of its own (TCP 8080 in, no ICMP); the parent has
	// none; vm2 and vmb, which the parent and the sub-port ping, let ICMP in.
	topo := trunkTopology(prefix, vlanSub(sub101ID, 101))
	topo.SecurityGroups = []*nsv1.SecurityGroup{
		{Id: fwWebID, Name: "web", Rules: []*nsv1.SecurityGroupRule{
			fwRule(1, "ingress", "tcp", 8080, 8080, "198.51.100.0/24", ""), fwRule(3, "egress", "", -1, -1, "", "")}},
		{Id: fwClientsID, Name: "ping", Rules: []*nsv1.SecurityGroupRule{
			fwRule(4, "ingress", "icmp", -1, -1, "", ""), fwRule(5, "egress", "", -1, -1, "", "")}},
	}
	for _, p := range topo.Ports {
		switch p.GetId() {
		case sub101ID:
			p.SecurityGroups = []string{fwWebID}
		case portBID, peerBID:
			p.SecurityGroups = []string{fwClientsID}
		}
	}
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	// The firewall treats the sub-port as any port: its device (the 802.1Q sub-interface
	// tap<sub-port id>) gets its own group and anti-spoofing in the kernel's ruleset.
	if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindSecGroup, ID: fwWebID, Phase: nsv1.Phase_PHASE_ACTIVE, Host: "hostA"}); err != nil {
		t.Fatal(err)
	}
	ruleset := nftRuleset(t, hostA)
	subDev, parentDev, group := links.TapName(sub101ID), links.TapName(portAID), "sg-"+fwWebID
	for chain, want := range map[string][]string{
		"from-" + subDev:    {"ether saddr != fa:16:3e:00:01:01 drop", "ip saddr != 198.51.100.10 drop"},
		"ingress-" + subDev: {"jump " + group + "-ingress"},
		"egress-" + subDev:  {"jump " + group + "-egress"},
	} {
		body := nftChain(ruleset, chain)
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Fatalf("chain %s lacks %q:\n%s\nruleset:\n%s", chain, w, body, ruleset)
			}
		}
	}
	if body := nftChain(ruleset, "ingress-"+parentDev) + nftChain(ruleset, "egress-"+parentDev); strings.Contains(body, group) {
		t.Fatalf("the parent %s got the sub-port's group:\n%s", parentDev, body)
	}
	vm1 := prefix + "-vm1"
	if err := exec.Command("ip", "-n", hostA, "link", "add", "link", "eth1", "name", "vlantest", "type", "vlan", "id", "99").Run(); err != nil {
		sub, werr := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: sub101ID, Phase: nsv1.Phase_PHASE_ERROR})
		if werr != nil || !strings.Contains(sub.GetReason(), "802.1Q") {
			t.Fatalf("sub-port status on a kernel without 802.1Q: %v %v", sub, werr)
		}
		tr := waitTrunk(t, ctx, js, nsv1.Phase_PHASE_DEGRADED)
		eventually(t, 20*time.Second, "the parent forwards untagged traffic", func() error { return ping(vm1, "192.0.2.11") })
		t.Skipf("kernel has no 802.1Q VLAN devices (ip link add type vlan: %v); sub-port reports %q, trunk %q", err, sub.GetReason(), tr.GetReason())
	}
	waitTrunk(t, ctx, js, nsv1.Phase_PHASE_ACTIVE)
	out := run(t, "ip", "-n", hostA, "-d", "link", "show", links.TapName(sub101ID))
	if !strings.Contains(out, "vlan protocol 802.1Q id 101") || !strings.Contains(out, "master "+links.BridgeName(trunkNetB)) {
		t.Fatalf("sub-port device is not VLAN 101 of the parent in network B's bridge:\n%s", out)
	}
	eventually(t, 20*time.Second, "vm1 (parent) -> vm2 on network A", func() error { return ping(vm1, "192.0.2.11") })
	eventually(t, 20*time.Second, "vm1 (VLAN 101) -> vmb on network B", func() error { return ping(vm1, "198.51.100.11") })
	if ping(prefix+"-vmb", "198.51.100.10") == nil {
		t.Fatal("the sub-port's security group lets ICMP in")
	}
}

// trunkDiagnostics is what an operator would look at when a trunk VLAN does not pass:
// the VM's links and tc filters, br-int's flows with counters and its MAC table.
func trunkDiagnostics(h *ovsHost, vm string) string {
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-n", vm, "-d", "link"},
		{"ip", "-n", vm, "addr"},
		{"ip", "netns", "exec", vm, "tc", "filter", "show", "dev", links.PeerName(portAID), "ingress"},
		{"ip", "netns", "exec", vm, "tc", "filter", "show", "dev", "vt-" + strings.TrimPrefix(links.PeerName(sub101ID), "ns-"), "ingress"},
		{"ip", "-n", h.netns, "-s", "link", "show", links.TapName(portAID)},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s (%v)\n%s\n", strings.Join(args, " "), err, out)
	}
	flows, err := h.ovs.Ofctl("-O", "OpenFlow14", "dump-flows", "br-int")
	fmt.Fprintf(&b, "br-int flows (%v):\n%s\n", err, flows)
	ports, err := h.ovs.Ofctl("show", "br-int")
	fmt.Fprintf(&b, "br-int ports (%v):\n%s\n", err, ports)
	return b.String()
}

// nftChain is the body of one chain of an `nft list ruleset` listing ("" when missing).
func nftChain(ruleset, name string) string {
	_, rest, ok := strings.Cut(ruleset, "chain "+name+" {\n")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "\n\t}")
	return body
}
