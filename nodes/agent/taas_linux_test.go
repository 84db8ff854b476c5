package agent_test

import (
	"context"
	"fmt"
	"os/exec"
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

// TaaS test topology: one network, source VM A1 pings peer VM A2 (both on hostA); the tap
// service VMs are S (hostA, local mirroring) and R (hostB, remote mirroring over the
// tunnel). Directions as TaaS defines them from the source VM's point of view: A1 pinging
// A2, IN (entering A1) is the echo replies A2 > A1, OUT (leaving A1) the echo requests
// A1 > A2.
const (
	tapNet    = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	tapSubnet = "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
	portA1    = "a1000000-0000-4000-8000-0000000000a1"
	portA2    = "a2000000-0000-4000-8000-0000000000a2"
	portS     = "a5000000-0000-4000-8000-0000000000a5"
	portR     = "b5000000-0000-4000-8000-0000000000b5"
	ipA1      = "192.0.2.10"
	ipA2      = "192.0.2.11"
	svcLocal  = "5e000000-0000-4000-8000-00000000000a"
	svcRemote = "5e000000-0000-4000-8000-00000000000b"
	flowF     = "f1000000-0000-4000-8000-00000000000f"
	flowG     = "f2000000-0000-4000-8000-00000000000f"
)

func tapTopology(prefix, networkType string, remote bool) *nsv1.Topology {
	port := func(id, host, mac, ip, vm string) *nsv1.Port {
		return &nsv1.Port{Id: id, NetworkId: tapNet, Host: host, MacAddress: mac,
			FixedIps: []*nsv1.FixedIP{{SubnetId: tapSubnet, IpAddress: ip}}, Binding: &nsv1.Binding{Type: "veth", Netns: prefix + "-" + vm}}
	}
	n := &nsv1.Network{Id: tapNet, Name: "taas", NetworkType: networkType, Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: tapSubnet, Cidr: "192.0.2.0/24", IpVersion: 4}}}
	if networkType == "vxlan" {
		n.SegmentationId = 1001
	}
	t := &nsv1.Topology{Networks: []*nsv1.Network{n},
		Ports: []*nsv1.Port{
			port(portA1, "hostA", "fa:16:3e:00:00:a1", ipA1, "a1"),
			port(portA2, "hostA", "fa:16:3e:00:00:a2", ipA2, "a2"),
			port(portS, "hostA", "fa:16:3e:00:00:a5", "192.0.2.20", "s"),
		},
		TapServices: []*nsv1.TapService{{Id: svcLocal, Name: "local", PortId: portS, Host: "hostA"}},
	}
	if remote {
		t.Ports = append(t.Ports, port(portR, "hostB", "fa:16:3e:00:00:b5", "192.0.2.21", "r"))
		t.TapServices = append(t.TapServices, &nsv1.TapService{Id: svcRemote, Name: "remote", PortId: portR, Host: "hostB"})
	}
	return t
}

func tapFlowSpec(id, svc, dir string) *nsv1.TapFlow {
	return &nsv1.TapFlow{Id: id, Name: "flow-" + strings.ToLower(dir), TapServiceId: svc, SourcePort: portA1, Direction: dir, Host: "hostA"}
}

func wait(t *testing.T, ctx context.Context, js jetstream.JetStream, kind streams.Kind, id string, phase nsv1.Phase) *nsv1.StatusEvent {
	t.Helper()
	ev, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: kind, ID: id, Phase: phase})
	if err != nil {
		t.Fatalf("%s %s: want %s: %v", kind, id, phase, err)
	}
	return ev
}

func apply(t *testing.T, ctx context.Context, js jetstream.JetStream, topo *nsv1.Topology) {
	t.Helper()
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
}

// mirrored pings A1 -> A2 n times while capturing in the service VMs, and returns what
// each received.
func mirrored(t *testing.T, prefix string, n int, services ...string) map[string][]packet {
	t.Helper()
	return mirroredTo(t, prefix, ipA2, n, services...)
}

// mirroredTo is mirrored with A1 pinging peer.
func mirroredTo(t *testing.T, prefix, peer string, n int, services ...string) map[string][]packet {
	t.Helper()
	stops := map[string]func() []packet{}
	for _, s := range services {
		port := map[string]string{"s": portS, "r": portR}[s]
		stops[s] = capture(t, prefix+"-"+s, links.PeerName(port))
	}
	pingN(t, prefix+"-a1", peer, n)
	out := map[string][]packet{}
	for s, stop := range stops {
		out[s] = stop()
	}
	return out
}

// expectCopies checks a capture holds exactly the wanted echo requests (A1 > A2) and
// replies (A2 > A1), untagged.
func expectCopies(t *testing.T, what string, pkts []packet, requests, replies int) {
	t.Helper()
	expectCopiesWith(t, what, pkts, ipA2, requests, replies)
}

// expectCopiesWith is expectCopies for A1 pinging peer.
func expectCopiesWith(t *testing.T, what string, pkts []packet, peer string, requests, replies int) {
	t.Helper()
	req, rep := countPkts(pkts, ipA1, peer, 8), countPkts(pkts, peer, ipA1, 0)
	for _, p := range pkts {
		if p.VLAN != -1 {
			t.Errorf("%s: mirrored frame carries VLAN %d: %v", what, p.VLAN, p)
		}
	}
	if req != requests || rep != replies {
		t.Fatalf("%s: %d echo requests and %d replies mirrored, want %d and %d: %v", what, req, rep, requests, replies, pkts)
	}
	t.Logf("%s: %d echo requests, %d echo replies mirrored", what, req, rep)
}

// TestPrivilegedTaaSOVS: the openvswitch mechanism's TaaS pipeline with real packets:
// local mirroring for BOTH, IN and OUT; remote mirroring to a tap service on another host
// over the VXLAN tunnel; an agent restart during mirroring that changes no flow and loses no
// copy; deleting the tap flow stops the copies; deleting a tap service removes every flow
// its tap id installed (counted by cookie).
func TestPrivilegedTaaSOVS(t *testing.T) {
	prefix, a, b := ovsHosts(t, false)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	agentA := a.start(t, url)
	b.start(t, url)
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topo := tapTopology(prefix, "vxlan", true)
	apply(t, ctx, js, topo)
	for _, id := range []string{portA1, portA2, portS, portR} {
		wait(t, ctx, js, streams.KindPort, id, nsv1.Phase_PHASE_ACTIVE)
	}
	tapIDs := map[string]int{}
	for _, id := range []string{svcLocal, svcRemote} {
		ev := wait(t, ctx, js, streams.KindTapService, id, nsv1.Phase_PHASE_ACTIVE)
		var tid int
		if _, err := fmt.Sscan(ev.GetDetails()["tap_id"], &tid); err != nil {
			t.Fatalf("tap service %s details: %v", id, ev.GetDetails())
		}
		tapIDs[id] = tid
	}
	if tapIDs[svcLocal] == tapIDs[svcRemote] {
		t.Fatalf("two tap services share tap id %d", tapIDs[svcLocal])
	}
	eventually(t, 20*time.Second, "A1 pings A2", func() error { return ping(prefix+"-a1", ipA2) })
	eventually(t, 20*time.Second, "A1 pings R across hosts", func() error { return ping(prefix+"-a1", "192.0.2.21") })

	const n = 5
	// Local mirroring, each direction.
	for _, c := range []struct {
		dir               string
		requests, replies int
	}{{"BOTH", n, n}, {"IN", 0, n}, {"OUT", n, 0}} {
		topo.TapFlows = []*nsv1.TapFlow{tapFlowSpec(flowF, svcLocal, c.dir)}
		apply(t, ctx, js, topo)
		ev := wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_ACTIVE)
		if !strings.HasPrefix(ev.GetDetails()["mode"], "local") {
			t.Fatalf("tap flow %s: %v", c.dir, ev.GetDetails())
		}
		got := mirrored(t, prefix, n, "s")
		expectCopies(t, "local "+c.dir, got["s"], c.requests, c.replies)
	}
	// The peer on the other host: what enters A1 comes from br-tun, tagged with the
	// network's local VLAN, and reaches the service untagged all the same.
	topo.TapFlows = []*nsv1.TapFlow{tapFlowSpec(flowF, svcLocal, "BOTH")}
	apply(t, ctx, js, topo)
	wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_ACTIVE)
	got := mirroredTo(t, prefix, "192.0.2.21", n, "s")
	expectCopiesWith(t, "local BOTH, peer on hostB", got["s"], "192.0.2.21", n, n)
	topo.TapFlows = []*nsv1.TapFlow{tapFlowSpec(flowF, svcLocal, "OUT")}
	apply(t, ctx, js, topo)
	wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_ACTIVE)

	// Remote mirroring (BOTH) to the service on hostB, while the local OUT flow goes on.
	topo.TapFlows = append(topo.TapFlows, tapFlowSpec(flowG, svcRemote, "BOTH"))
	apply(t, ctx, js, topo)
	if ev := wait(t, ctx, js, streams.KindTapFlow, flowG, nsv1.Phase_PHASE_ACTIVE); !strings.Contains(ev.GetDetails()["mode"], "hostB") {
		t.Fatalf("remote tap flow: %v", ev.GetDetails())
	}
	got = mirrored(t, prefix, n, "s", "r")
	expectCopies(t, "remote BOTH on hostB", got["r"], n, n)
	expectCopies(t, "local OUT alongside", got["s"], n, 0)

	// Agent restart while mirroring: no flow changes, no copy is lost, no mutation.
	a.ovs.MustOfctl("add-flow", "br-int", "cookie=0x1234,table=0,priority=100,udp,tp_dst=9,actions=drop")
	flowsBefore := a.netsourceFlows(t)
	stopR := capture(t, prefix+"-r", links.PeerName(portR))
	const during = 60
	pinged := make(chan error, 1)
	go func() {
		out, err := exec.Command("ip", "netns", "exec", prefix+"-a1", "ping", "-c", fmt.Sprint(during), "-i", "0.05", "-W", "1", ipA2).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
		pinged <- err
	}()
	time.Sleep(500 * time.Millisecond) // the ping is under way (10 requests) before the agent goes: the restart happens mid-stream on purpose
	agentA.signal(syscall.SIGTERM)
	restarted := time.Now()
	a.start(t, url)
	isSyncedA := func(ev *nsv1.StatusEvent) bool {
		return ev.GetKind() == "agent" && ev.GetHost() == "hostA" && ev.GetDetails()["synced"] == "true"
	}
	beat := statuses.waitFor(t, restarted, 30*time.Second, "hostA heartbeat after restart", isSyncedA)
	beat = statuses.waitFor(t, beat.at.Add(time.Nanosecond), 10*time.Second, "second hostA heartbeat after restart", isSyncedA)
	if err := <-pinged; err != nil {
		t.Fatalf("ping during restart: %v", err)
	}
	copies := stopR()
	if req := countPkts(copies, ipA1, ipA2, 8); req != during {
		t.Fatalf("during the restart %d of %d echo requests were mirrored to hostB", req, during)
	}
	t.Logf("agent restart while pinging: %d of %d echo requests mirrored to hostB; agent back after %s",
		countPkts(copies, ipA1, ipA2, 8), during, beat.at.Sub(restarted).Round(time.Millisecond))
	if m := beat.ev.GetDetails()["kernel_mutations"]; m != "0" {
		t.Errorf("restarted converged agent made %s OVS/kernel mutations", m)
	}
	if n := statuses.count(restarted, func(ev *nsv1.StatusEvent) bool { return ev.GetKind() != "agent" && ev.GetHost() == "hostA" }); n != 0 {
		t.Errorf("restarted converged agent published %d status events", n)
	}
	if after := a.netsourceFlows(t); !slices.Equal(after, flowsBefore) {
		t.Fatalf("flows changed across the restart:\nbefore:\n%s\nafter:\n%s", strings.Join(flowsBefore, "\n"), strings.Join(after, "\n"))
	}
	if got := a.ovs.Flows("br-int", "cookie=0x1234/-1"); len(got) != 1 {
		t.Fatalf("foreign flow after restart: %v", got)
	}
	t.Logf("%d netsource flows on hostA identical before and after the restart; the foreign flow survived", len(flowsBefore))

	// Deleting the local tap flow stops its copies; the remote one goes on.
	if _, err := streams.NewPublisher(js, "test").Delete(ctx, streams.KindTapFlow, flowF); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_DELETED)
	got = mirrored(t, prefix, n, "s", "r")
	expectCopies(t, "local after deleting its tap flow", got["s"], 0, 0)
	expectCopies(t, "remote still", got["r"], n, n)

	// Deleting the remote flow and its service removes every flow their tap id installed.
	rid := tapIDs[svcRemote]
	srcBefore, svcBefore := a.countFlows(t, ovs.TapFlowCookie(rid)), b.countFlows(t, ovs.TapServiceCookie(rid))
	if srcBefore == 0 || svcBefore == 0 {
		t.Fatalf("before deletion: %d flows with the tap flow cookie on hostA, %d with the tap service cookie on hostB", srcBefore, svcBefore)
	}
	if _, err := streams.NewPublisher(js, "test").Delete(ctx, streams.KindTapFlow, flowG); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, js, streams.KindTapFlow, flowG, nsv1.Phase_PHASE_DELETED)
	if _, err := streams.NewPublisher(js, "test").Delete(ctx, streams.KindTapService, svcRemote); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, js, streams.KindTapService, svcRemote, nsv1.Phase_PHASE_DELETED)
	srcAfter, svcAfter := a.countFlows(t, ovs.TapFlowCookie(rid)), b.countFlows(t, ovs.TapServiceCookie(rid))
	t.Logf("tap id %d: flows with the tap flow cookie on hostA %d -> %d, with the tap service cookie on hostB %d -> %d",
		rid, srcBefore, srcAfter, svcBefore, svcAfter)
	if srcAfter != 0 || svcAfter != 0 {
		t.Fatalf("flows left after deleting tap flow and service: %d on hostA, %d on hostB", srcAfter, svcAfter)
	}
	got = mirrored(t, prefix, n, "r")
	expectCopies(t, "remote after deleting flow and service", got["r"], 0, 0)
}

// TestPrivilegedTaaSLinuxBridge: the same local mirroring on the Linux bridge mechanism,
// with tc clsact + u32 + mirred on the source port's device.
func TestPrivilegedTaaSLinuxBridge(t *testing.T) {
	prefix, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	startAgentProc(t, srv.NS.ClientURL(), "hostA", hostNS)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := tapTopology(prefix, "local", false)
	apply(t, ctx, js, topo)
	for _, id := range []string{portA1, portA2, portS} {
		wait(t, ctx, js, streams.KindPort, id, nsv1.Phase_PHASE_ACTIVE)
	}
	wait(t, ctx, js, streams.KindTapService, svcLocal, nsv1.Phase_PHASE_ACTIVE)
	eventually(t, 10*time.Second, "A1 pings A2", func() error { return ping(prefix+"-a1", ipA2) })
	const n = 5
	for _, c := range []struct {
		dir               string
		requests, replies int
	}{{"BOTH", n, n}, {"IN", 0, n}, {"OUT", n, 0}} {
		topo.TapFlows = []*nsv1.TapFlow{tapFlowSpec(flowF, svcLocal, c.dir)}
		apply(t, ctx, js, topo)
		wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_ACTIVE)
		got := mirrored(t, prefix, n, "s")
		expectCopies(t, "linuxbridge "+c.dir, got["s"], c.requests, c.replies)
	}
	filters := run(t, "tc", "-n", hostNS, "filter", "show", "dev", links.TapName(portA1), "ingress")
	if !strings.Contains(filters, "mirred") {
		t.Fatalf("no mirred filter on the source device:\n%s", filters)
	}
	if _, err := streams.NewPublisher(js, "test").Delete(ctx, streams.KindTapFlow, flowF); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, js, streams.KindTapFlow, flowF, nsv1.Phase_PHASE_DELETED)
	got := mirrored(t, prefix, n, "s")
	expectCopies(t, "linuxbridge after deleting the tap flow", got["s"], 0, 0)
	for _, hook := range []string{"ingress", "egress"} {
		if out := run(t, "tc", "-n", hostNS, "filter", "show", "dev", links.TapName(portA1), hook); strings.Contains(out, "mirred") {
			t.Fatalf("mirred filter left on %s:\n%s", hook, out)
		}
	}
}
