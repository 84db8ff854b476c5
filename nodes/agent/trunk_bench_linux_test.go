package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/netsource/netsource/nodes/config"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

const (
	benchTrunk   = "2f3a4b5c-0000-4000-8000-00000000be01"
	benchNetB    = "7b1f5c9f-0000-4b66-8c40-00000000be02"
	benchSubnetB = "1d6e2f30-0000-4d6e-9f70-00000000be03"
)

// BenchmarkPrivilegedOVSTrunkSubPort (issue 10): a trunk whose veth-bound parent is
// ACTIVE on the openvswitch mechanism. Each iteration adds one sub-port (a port on a second
// network, VLAN 100+i) to the trunk and times publish → trunk ACTIVE at that version, which
// needs the sub-port's patch pair, its two flows and its VLAN interface in the VM (tc-bpf on
// this kernel). The baseline, measured in the same run on the same host, publishes a plain
// veth port on that network (publish → port ACTIVE). Run with -benchtime=20x.
func BenchmarkPrivilegedOVSTrunkSubPort(b *testing.B) {
	e := newTaasBench(b, config.MechanismOpenVSwitch)
	ctx := context.Background()
	netB := &nsv1.Network{Id: benchNetB, Name: "bench-b", NetworkType: "local", Mtu: 1500,
		Subnets: []*nsv1.Subnet{{Id: benchSubnetB, Cidr: "198.51.100.0/24", IpVersion: 4}}}
	onB := func(p *nsv1.Port, n int) *nsv1.Port {
		p.NetworkId = netB.Id
		p.FixedIps = []*nsv1.FixedIP{{SubnetId: benchSubnetB, IpAddress: fmt.Sprintf("198.51.100.%d", n%250+1)}}
		return p
	}
	parent := e.port(1)
	subs := make([]*nsv1.Port, b.N)
	for i := range subs {
		subs[i] = onB(e.port(1000+i), i)
		subs[i].Binding = nil // carried on the parent: no binding of its own
	}
	e.applyAndWait(ctx, &nsv1.Topology{Networks: []*nsv1.Network{e.network(), netB}, Ports: []*nsv1.Port{parent}}, streams.KindPort, nsv1.Phase_PHASE_ACTIVE)
	if _, err := e.pub.Apply(ctx, &nsv1.Topology{Ports: subs}); err != nil {
		b.Fatal(err)
	}
	tr := &nsv1.Trunk{Id: benchTrunk, PortId: parent.Id, Host: "bench"}
	e.applyAndWait(ctx, &nsv1.Topology{Trunks: []*nsv1.Trunk{tr}}, streams.KindTrunk, nsv1.Phase_PHASE_ACTIVE)

	var sub, plain []time.Duration
	b.ResetTimer()
	for i := range b.N {
		tr.SubPorts = append(tr.SubPorts, &nsv1.SubPort{PortId: subs[i].Id, SegmentationType: "vlan", SegmentationId: uint32(100 + i)})
		start := time.Now()
		at := e.applyAndWait(ctx, &nsv1.Topology{Trunks: []*nsv1.Trunk{tr}}, streams.KindTrunk, nsv1.Phase_PHASE_ACTIVE)
		sub = append(sub, at.Sub(start))

		b.StopTimer()
		p := onB(e.port(2000+i), 100+i)
		start = time.Now()
		at = e.applyAndWait(ctx, &nsv1.Topology{Ports: []*nsv1.Port{p}}, streams.KindPort, nsv1.Phase_PHASE_ACTIVE)
		plain = append(plain, at.Sub(start))
		b.StartTimer()
	}
	b.StopTimer()
	b.Logf("sub-port adds (publish -> trunk ACTIVE): %v", sub)
	b.ReportMetric(percentileMS(sub, 50), "subport-p50-ms")
	b.ReportMetric(percentileMS(sub, 100), "subport-max-ms")
	b.ReportMetric(percentileMS(plain, 50), "port-p50-ms")
	b.ReportMetric(percentileMS(sub, 50)/percentileMS(plain, 50), "ratio-p50")
}
