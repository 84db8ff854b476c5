package demo

import (
	"github.com/google/uuid"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// The two simulated hosts: agent host names, and the suffixes of their namespaces.
const (
	HostA = "hostA"
	HostB = "hostB"
)

// idSpace makes the demo's ids: UUIDv5 of the namespace prefix and a name, so each prefix
// has its own objects (two sandboxes never share a load balancer namespace qlbaas-<id>)
// and the same prefix always gets the same ids.
var idSpace = uuid.MustParse("6ba7b812-9dad-11d1-80b4-00c04fd430c8") // RFC 4122 OID namespace

func demoID(prefix, name string) string {
	return uuid.NewSHA1(idSpace, []byte("netsource-demo/"+prefix+"/"+name)).String()
}

// VM is a port of the sample topology with a veth binding: its namespace acts as the VM.
type VM struct {
	Name, Host, IP, Netns string
	PortID                string
	// Backend: the demo serves HTTP on :8080 in this VM (a load-balancer member).
	Backend bool
}

// Sample is the demo's topology and the VMs it creates.
type Sample struct {
	Topology *nsv1.Topology
	VMs      []VM
	// VIPPortID is the load balancer's VIP port, plugged by the load balancer itself.
	VIPPortID string
	VIP       string
}

// SampleTopology is what the demo applies: a VXLAN network with one IPv4 subnet, a
// security group "web" (HTTP from anywhere, 8080 and ICMP within the group, all egress),
// VM ports on both hosts (web1 and monitor on hostA, web2 and client on hostB), an HTTP
// load balancer on hostA whose pool has web1 and web2 as members, and a tap service on the
// monitor port that mirrors web1. The monitor sits on web1's host: the linuxbridge
// mechanism mirrors only to tap services on the same host.
func SampleTopology(prefix string) Sample {
	id := func(name string) string { return demoID(prefix, name) }
	netID, subnetID, sgID := id("network/blue"), id("subnet/blue-v4"), id("secgroup/web")
	vms := []VM{
		{Name: "web1", Host: HostA, IP: "192.0.2.11", Backend: true},
		{Name: "web2", Host: HostB, IP: "192.0.2.12", Backend: true},
		{Name: "client", Host: HostB, IP: "192.0.2.20"},
		{Name: "monitor", Host: HostA, IP: "192.0.2.30"},
	}
	t := &nsv1.Topology{
		Networks: []*nsv1.Network{{Id: netID, Name: "blue", NetworkType: "vxlan", SegmentationId: 1001, Mtu: 1450,
			Subnets: []*nsv1.Subnet{{Id: subnetID, Name: "blue-v4", Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1", IpVersion: 4}}}},
		SecurityGroups: []*nsv1.SecurityGroup{{Id: sgID, Name: "web", Rules: []*nsv1.SecurityGroupRule{
			{Id: id("rule/http"), Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: ptr[int32](80), PortRangeMax: ptr[int32](80),
				RemoteIpPrefix: "0.0.0.0/0"},
			{Id: id("rule/backend"), Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: ptr[int32](8080), PortRangeMax: ptr[int32](8080),
				RemoteGroupId: sgID},
			{Id: id("rule/icmp"), Direction: "ingress", Ethertype: "IPv4", Protocol: "icmp", RemoteGroupId: sgID},
			{Id: id("rule/egress"), Direction: "egress", Ethertype: "IPv4"},
		}}},
	}
	for i := range vms {
		vm := &vms[i]
		vm.PortID, vm.Netns = id("port/"+vm.Name), prefix+"-"+vm.Name
		p := &nsv1.Port{Id: vm.PortID, Name: vm.Name, NetworkId: netID, Host: vm.Host,
			MacAddress:  []string{"fa:16:3e:00:00:11", "fa:16:3e:00:00:12", "fa:16:3e:00:00:20", "fa:16:3e:00:00:30"}[i],
			FixedIps:    []*nsv1.FixedIP{{SubnetId: subnetID, IpAddress: vm.IP}},
			DeviceOwner: "compute:nova", Binding: &nsv1.Binding{Type: "veth", Netns: vm.Netns}}
		if vm.Name != "monitor" { // a mirror's receiver takes whatever comes
			p.SecurityGroups = []string{sgID}
		}
		t.Ports = append(t.Ports, p)
	}
	// The VIP port is a tap binding: the load balancer creates its device and the agent
	// plugs it, as Neutron's L2 agent plugs the haproxy namespace driver's device.
	vip := &nsv1.Port{Id: id("port/lb-vip"), Name: "lb-vip", NetworkId: netID, Host: HostA, MacAddress: "fa:16:3e:00:00:64",
		FixedIps:    []*nsv1.FixedIP{{SubnetId: subnetID, IpAddress: "192.0.2.100"}},
		DeviceOwner: "neutron:LOADBALANCERV2", SecurityGroups: []string{sgID}}
	t.Ports = append(t.Ports, vip)
	poolID := id("pool/web")
	t.Loadbalancers = []*nsv1.LoadBalancer{{Id: id("loadbalancer/web-lb"), Name: "web-lb", Host: HostA,
		VipNetworkId: netID, VipSubnetId: subnetID, VipAddress: "192.0.2.100", VipPortId: vip.Id,
		Listeners: []*nsv1.Listener{{Id: id("listener/http"), Name: "http", Protocol: "HTTP", ProtocolPort: 80,
			DefaultPoolId: poolID}},
		Pools: []*nsv1.Pool{{Id: poolID, Name: "web", Protocol: "HTTP", LbAlgorithm: "ROUND_ROBIN",
			Healthmonitor: &nsv1.HealthMonitor{Id: id("healthmonitor/web"), Type: "HTTP", Delay: 2, Timeout: 1, MaxRetries: 2,
				HttpMethod: "GET", UrlPath: "/", ExpectedCodes: "200"},
			Members: []*nsv1.Member{
				{Id: id("member/web1"), Address: "192.0.2.11", ProtocolPort: 8080, Weight: ptr[uint32](1), SubnetId: subnetID},
				{Id: id("member/web2"), Address: "192.0.2.12", ProtocolPort: 8080, Weight: ptr[uint32](1), SubnetId: subnetID},
			}}},
	}}
	tsID := id("tapservice/capture")
	t.TapServices = []*nsv1.TapService{{Id: tsID, Name: "capture", PortId: vms[3].PortID, Host: HostA}}
	t.TapFlows = []*nsv1.TapFlow{{Id: id("tapflow/mirror-web1"), Name: "mirror-web1", TapServiceId: tsID,
		SourcePort: vms[0].PortID, Direction: "BOTH", Host: HostA}}
	return Sample{Topology: t, VMs: vms, VIPPortID: vip.Id, VIP: "192.0.2.100"}
}

func ptr[T any](v T) *T { return &v }
