package topology

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Ids of the objects in testdata/sample.yaml.
const (
	netID     = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	subnetID  = "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e01"
	sgID      = "1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7a01"
	port1ID   = "3d4e5f60-7182-4394-a5b6-c7d8e9f0a101"
	port2ID   = "3d4e5f60-7182-4394-a5b6-c7d8e9f0a102"
	port3ID   = "3d4e5f60-7182-4394-a5b6-c7d8e9f0a103"
	tapSvcID  = "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e01"
	trunkID   = "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a01"
	poolID    = "9c0d1e2f-3a4b-4c5d-ae6f-7a8b9c0d1e01"
	unknownID = "00000000-0000-4000-8000-0000000000ff"
)

// sample decodes testdata/sample.yaml.
func sample(t testing.TB) *netsourcev1.Topology {
	t.Helper()
	b, err := os.ReadFile("testdata/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	top, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode(sample.yaml): %v", err)
	}
	return top
}

// problems decodes src (the sample when src is empty), applies mutate, validates against
// known and returns every problem found by Decode or Validate.
func problems(t *testing.T, src string, mutate func(*netsourcev1.Topology), known *netsourcev1.Topology) Errors {
	t.Helper()
	var top *netsourcev1.Topology
	if src == "" {
		top = sample(t)
	} else {
		var err error
		if top, err = Decode([]byte(src)); err != nil {
			return asErrors(t, err)
		}
	}
	if mutate != nil {
		mutate(top)
	}
	err := Validate(top, known)
	if err == nil {
		return nil
	}
	return asErrors(t, err)
}

func asErrors(t *testing.T, err error) Errors {
	t.Helper()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is not *Errors: %T %v", err, err)
	}
	return *errs
}

// wantProblem fails unless errs holds a problem at path whose message contains msg.
func wantProblem(t *testing.T, errs Errors, path, msg string) {
	t.Helper()
	for _, e := range errs {
		if e.Path == path && strings.Contains(e.Msg, msg) {
			return
		}
	}
	t.Errorf("no problem at %s containing %q; got:\n%v", path, msg, errs)
}

func TestValidateSample(t *testing.T) {
	top := sample(t)
	if err := Validate(top, nil); err != nil {
		t.Fatalf("Validate(sample) = %v", err)
	}
	for name, got := range map[string]string{
		"tap_services[0].host": top.GetTapServices()[0].GetHost(),
		"tap_flows[0].host":    top.GetTapFlows()[0].GetHost(),
		"trunks[0].host":       top.GetTrunks()[0].GetHost(),
	} {
		want := map[string]string{"tap_services[0].host": "hostB", "tap_flows[0].host": "hostA", "trunks[0].host": "hostA"}[name]
		if got != want {
			t.Errorf("%s = %q, want %q (derived from the port)", name, got, want)
		}
	}
	// Validating again (as the publisher does after filling) changes nothing.
	again := proto.Clone(top).(*netsourcev1.Topology)
	if err := Validate(again, nil); err != nil || !proto.Equal(again, top) {
		t.Errorf("second Validate = %v, changed: %v", err, !proto.Equal(again, top))
	}
}

func TestValidateEmpty(t *testing.T) {
	for _, top := range []*netsourcev1.Topology{nil, {}} {
		if err := Validate(top, nil); err != nil {
			t.Errorf("Validate(%v) = %v", top, err)
		}
	}
}

// Shorthands for mutations of the sample.
func network(t *netsourcev1.Topology) *netsourcev1.Network { return t.Networks[0] }
func subnet(t *netsourcev1.Topology) *netsourcev1.Subnet   { return t.Networks[0].Subnets[0] }
func rule(t *netsourcev1.Topology, i int) *netsourcev1.SecurityGroupRule {
	return t.SecurityGroups[0].Rules[i]
}
func pool(t *netsourcev1.Topology) *netsourcev1.Pool             { return t.Loadbalancers[0].Pools[0] }
func monitor(t *netsourcev1.Topology) *netsourcev1.HealthMonitor { return pool(t).Healthmonitor }
func ptr[T any](v T) *T                                          { return &v }

func TestValidateBad(t *testing.T) {
	tests := []struct {
		name   string
		src    string // a whole file; empty: the sample
		mutate func(*netsourcev1.Topology)
		path   string
		msg    string
	}{
		// networks
		{name: "VLAN 0", mutate: func(t *netsourcev1.Topology) {
			network(t).NetworkType, network(t).PhysicalNetwork, network(t).SegmentationId = "vlan", "physnet1", 0
		}, path: "networks[0].segmentation_id", msg: "VLAN 0 is out of range (want 1-4094)"},
		{name: "VLAN 4095", mutate: func(t *netsourcev1.Topology) {
			network(t).NetworkType, network(t).PhysicalNetwork, network(t).SegmentationId = "vlan", "physnet1", 4095
		}, path: "networks[0].segmentation_id", msg: "VLAN 4095 is out of range"},
		{name: "VNI 0", mutate: func(t *netsourcev1.Topology) { network(t).SegmentationId = 0 },
			path: "networks[0].segmentation_id", msg: "VNI 0 is out of range (want 1-16777215)"},
		{name: "VNI 2^24", mutate: func(t *netsourcev1.Topology) { network(t).SegmentationId = 1 << 24 },
			path: "networks[0].segmentation_id", msg: "VNI 16777216 is out of range"},
		{name: "vxlan with physnet", mutate: func(t *netsourcev1.Topology) { network(t).PhysicalNetwork = "physnet1" },
			path: "networks[0].physical_network", msg: `must be empty for a vxlan network, got "physnet1"`},
		{name: "flat without physnet", mutate: func(t *netsourcev1.Topology) { network(t).NetworkType, network(t).SegmentationId = "flat", 0 },
			path: "networks[0].physical_network", msg: "required for a flat network"},
		{name: "flat with segmentation id", mutate: func(t *netsourcev1.Topology) { network(t).NetworkType, network(t).PhysicalNetwork = "flat", "physnet1" },
			path: "networks[0].segmentation_id", msg: "must be 0 for a flat network, got 1001"},
		{name: "physnet with a dot", mutate: func(t *netsourcev1.Topology) {
			network(t).NetworkType, network(t).PhysicalNetwork, network(t).SegmentationId = "flat", "phys.net", 0
		}, path: "networks[0].physical_network", msg: `"phys.net" is not a valid physical network name`},
		{name: "unknown network_type", mutate: func(t *netsourcev1.Topology) { network(t).NetworkType = "geneve" },
			path: "networks[0].network_type", msg: `unknown network_type "geneve" (want flat, vlan, vxlan or local)`},
		{name: "MTU 67", mutate: func(t *netsourcev1.Topology) { network(t).Mtu = 67 },
			path: "networks[0].mtu", msg: "MTU 67 is out of range (want 68-65535"},
		{name: "IPv6 subnet on MTU 1000", mutate: func(t *netsourcev1.Topology) {
			network(t).Mtu = 1000
			network(t).Subnets = append(network(t).Subnets, &netsourcev1.Subnet{Id: "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e02", Cidr: "2001:db8::/64"})
		}, path: "networks[0].mtu", msg: "MTU 1000 is too small for IPv6 subnet subnets[1] (want at least 1280)"},
		{name: "bad CIDR", mutate: func(t *netsourcev1.Topology) { subnet(t).Cidr = "192.0.2.0/33" },
			path: "networks[0].subnets[0].cidr", msg: `"192.0.2.0/33" is not a CIDR`},
		{name: "non-canonical CIDR", mutate: func(t *netsourcev1.Topology) { subnet(t).Cidr = "192.0.2.5/24" },
			path: "networks[0].subnets[0].cidr", msg: `"192.0.2.5/24" is not a network address, did you mean 192.0.2.0/24`},
		{name: "ip_version mismatch", mutate: func(t *netsourcev1.Topology) { subnet(t).IpVersion = 6 },
			path: "networks[0].subnets[0].ip_version", msg: "6 does not match cidr 192.0.2.0/24"},
		{name: "gateway outside cidr", mutate: func(t *netsourcev1.Topology) { subnet(t).GatewayIp = "192.0.3.1" },
			path: "networks[0].subnets[0].gateway_ip", msg: "192.0.3.1 is outside 192.0.2.0/24"},
		{name: "gateway is broadcast", mutate: func(t *netsourcev1.Topology) { subnet(t).GatewayIp = "192.0.2.255" },
			path: "networks[0].subnets[0].gateway_ip", msg: "192.0.2.255 is the broadcast address of 192.0.2.0/24"},
		{name: "host route of the other family", mutate: func(t *netsourcev1.Topology) { subnet(t).HostRoutes[0].Destination = "2001:db8::/32" },
			path: "networks[0].subnets[0].host_routes[0].destination", msg: `"2001:db8::/32" is IPv6 but the subnet is IPv4`},
		{name: "overlapping subnets", mutate: func(t *netsourcev1.Topology) {
			network(t).Subnets = append(network(t).Subnets, &netsourcev1.Subnet{Id: "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e02", Cidr: "192.0.2.128/25"})
		}, path: "networks[0].subnets[1].cidr", msg: "192.0.2.128/25 overlaps subnets[0] (192.0.2.0/24)"},
		{name: "duplicate subnet id", mutate: func(t *netsourcev1.Topology) {
			network(t).Subnets = append(network(t).Subnets, &netsourcev1.Subnet{Id: subnetID, Cidr: "198.51.100.0/24"})
		}, path: "networks[0].subnets[1].id", msg: "duplicate of networks[0].subnets[0]"},
		{name: "name with newline", mutate: func(t *netsourcev1.Topology) { network(t).Name = "blue\nred" },
			path: "networks[0].name", msg: `"blue\nred" contains '\n', which is not allowed`},
		{name: "name with hash", mutate: func(t *netsourcev1.Topology) { pool(t).Name = "web # backend" },
			path: "loadbalancers[0].pools[0].name", msg: `contains '#'`},
		{name: "name with quote", mutate: func(t *netsourcev1.Topology) { t.Ports[0].Name = `vm"1` },
			path: "ports[0].name", msg: `contains '"'`},
		{name: "name too long", mutate: func(t *netsourcev1.Topology) { t.SecurityGroups[0].Name = strings.Repeat("x", 256) },
			path: "security_groups[0].name", msg: "is too long (256 bytes, at most 255)"},
		{name: "id not a UUID", mutate: func(t *netsourcev1.Topology) { t.SecurityGroups[0].Id = "web" },
			path: "security_groups[0].id", msg: `"web" is not a UUID`},
		{name: "id in upper case", mutate: func(t *netsourcev1.Topology) { t.Ports[2].Id = strings.ToUpper(port3ID) },
			path: "ports[2].id", msg: "is not a canonical UUID (use lower-case hex digits)"},

		// security groups
		{name: "icmp with IPv6", mutate: func(t *netsourcev1.Topology) { rule(t, 1).Ethertype = "IPv6" },
			path: "security_groups[0].rules[1].protocol", msg: `protocol "icmp" is for IPv4; use icmpv6 with ethertype IPv6`},
		{name: "icmpv6 with IPv4", mutate: func(t *netsourcev1.Topology) { rule(t, 1).Protocol = "58" },
			path: "security_groups[0].rules[1].protocol", msg: `protocol "58" is for IPv6; use icmp`},
		{name: "ethertype in lower case", mutate: func(t *netsourcev1.Topology) { rule(t, 2).Ethertype = "ipv4" },
			path: "security_groups[0].rules[2].ethertype", msg: `unknown ethertype "ipv4" (want IPv4 or IPv6)`},
		{name: "unknown protocol", mutate: func(t *netsourcev1.Topology) { rule(t, 2).Protocol = "256" },
			path: "security_groups[0].rules[2].protocol", msg: `unknown protocol "256"`},
		{name: "port range min > max", mutate: func(t *netsourcev1.Topology) { rule(t, 0).PortRangeMin = ptr[int32](90) },
			path: "security_groups[0].rules[0].port_range_min", msg: "port_range_min 90 is greater than port_range_max 80"},
		{name: "port 0", mutate: func(t *netsourcev1.Topology) { rule(t, 0).PortRangeMin = ptr[int32](0) },
			path: "security_groups[0].rules[0].port_range_min", msg: "port 0 is out of range (want 1-65535)"},
		{name: "port range without protocol", mutate: func(t *netsourcev1.Topology) { rule(t, 2).PortRangeMin = ptr[int32](80) },
			path: "security_groups[0].rules[2].port_range_min", msg: "only for tcp, udp, sctp, icmp or icmpv6"},
		{name: "icmp code without type", mutate: func(t *netsourcev1.Topology) { rule(t, 1).PortRangeMax = ptr[int32](0) },
			path: "security_groups[0].rules[1].port_range_max", msg: "an ICMP code needs an ICMP type"},
		{name: "remote prefix and group", mutate: func(t *netsourcev1.Topology) { rule(t, 1).RemoteIpPrefix = "0.0.0.0/0" },
			path: "security_groups[0].rules[1].remote_group_id", msg: "remote_ip_prefix and remote_group_id are exclusive"},
		{name: "remote prefix of the other family", mutate: func(t *netsourcev1.Topology) { rule(t, 0).RemoteIpPrefix = "::/0" },
			path: "security_groups[0].rules[0].remote_ip_prefix", msg: `"::/0" is IPv6 but the rule's ethertype is IPv4`},
		{name: "unknown remote group", mutate: func(t *netsourcev1.Topology) { rule(t, 1).RemoteGroupId = unknownID },
			path: "security_groups[0].rules[1].remote_group_id", msg: `security group "` + unknownID + `" is not in this file or the stream`},

		// ports
		{name: "bad MAC", mutate: func(t *netsourcev1.Topology) { t.Ports[0].MacAddress = "zz:00" },
			path: "ports[0].mac_address", msg: `"zz:00" is not a MAC address`},
		{name: "multicast MAC", mutate: func(t *netsourcev1.Topology) { t.Ports[0].MacAddress = "01:00:5e:00:00:01" },
			path: "ports[0].mac_address", msg: "is a multicast MAC address"},
		{name: "port on an unknown network", mutate: func(t *netsourcev1.Topology) { t.Ports[0].NetworkId = unknownID },
			path: "ports[0].network_id", msg: `network "` + unknownID + `" is not in this file or the stream`},
		{name: "duplicate port ids", mutate: func(t *netsourcev1.Topology) { t.Ports[2].Id = port1ID },
			path: "ports[2].id", msg: "duplicate of ports[0]"},
		{name: "host with a dot", mutate: func(t *netsourcev1.Topology) { t.Ports[0].Host = "a.b" },
			path: "ports[0].host", msg: `"a.b" is not a valid host name: "." is not allowed`},
		{name: "host with a space", mutate: func(t *netsourcev1.Topology) { t.Ports[0].Host = "host A" },
			path: "ports[0].host", msg: `"host A" is not a valid host name: " " is not allowed`},
		{name: "host *", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].Host = "*" },
			path: "loadbalancers[0].host", msg: `"*" is not a valid host name`},
		{name: "host not derivable", mutate: func(t *netsourcev1.Topology) { t.Ports[1].Host = "" },
			path: "tap_services[0].host", msg: `left out, and port "` + port2ID + `" has no valid host to take it from`},
		{name: "host missing", mutate: func(t *netsourcev1.Topology) { t.Ports[1].Host = "" },
			path: "ports[1].host", msg: "required"},
		{name: "IP outside subnet", mutate: func(t *netsourcev1.Topology) { t.Ports[0].FixedIps[0].IpAddress = "192.0.3.11" },
			path: "ports[0].fixed_ips[0].ip_address", msg: "192.0.3.11 is outside 192.0.2.0/24"},
		{name: "IP is the gateway", mutate: func(t *netsourcev1.Topology) { t.Ports[0].FixedIps[0].IpAddress = "192.0.2.1" },
			path: "ports[0].fixed_ips[0].ip_address", msg: "192.0.2.1 is the gateway address of 192.0.2.0/24"},
		{name: "subnet of another network", mutate: func(t *netsourcev1.Topology) { t.Ports[0].FixedIps[0].SubnetId = unknownID },
			path: "ports[0].fixed_ips[0].subnet_id", msg: `subnet "` + unknownID + `" is not a subnet of network "` + netID + `"`},
		{name: "duplicate IP in a network", mutate: func(t *netsourcev1.Topology) { t.Ports[1].FixedIps[0].IpAddress = "192.0.2.11" },
			path: "ports[1].fixed_ips[0].ip_address", msg: "192.0.2.11 is already used by ports[0].fixed_ips[0]"},
		{name: "duplicate MAC in a network", mutate: func(t *netsourcev1.Topology) { t.Ports[1].MacAddress = "FA:16:3E:00:00:01" },
			path: "ports[1].mac_address", msg: `MAC "FA:16:3E:00:00:01" is already used by ports[0]`},
		{name: "unknown security group", mutate: func(t *netsourcev1.Topology) { t.Ports[0].SecurityGroups = []string{unknownID} },
			path: "ports[0].security_groups[0]", msg: `security group "` + unknownID + `" is not in this file or the stream`},
		{name: "allowed address pair not an address", mutate: func(t *netsourcev1.Topology) { t.Ports[0].AllowedAddressPairs[0].IpAddress = "any" },
			path: "ports[0].allowed_address_pairs[0].ip_address", msg: `"any" is not an IP address or CIDR`},
		{name: "veth without netns", mutate: func(t *netsourcev1.Topology) { t.Ports[0].Binding.Netns = "" },
			path: "ports[0].binding.netns", msg: "required for a veth binding"},
		{name: "netns ..", mutate: func(t *netsourcev1.Topology) { t.Ports[0].Binding.Netns = ".." },
			path: "ports[0].binding.netns", msg: `".." is not a valid namespace name`},
		{name: "unknown binding type", mutate: func(t *netsourcev1.Topology) { t.Ports[2].Binding.Type = "macvtap" },
			path: "ports[2].binding.type", msg: `unknown binding type "macvtap" (want tap or veth)`},

		// taps
		{name: "tap service host differs from its port", mutate: func(t *netsourcev1.Topology) { t.TapServices[0].Host = "hostC" },
			path: "tap_services[0].host", msg: `"hostC" is not the host of port "` + port2ID + `" ("hostB")`},
		{name: "tap service on an unknown port", mutate: func(t *netsourcev1.Topology) { t.TapServices[0].PortId = unknownID },
			path: "tap_services[0].port_id", msg: "is not in this file or the stream"},
		{name: "tap flow direction", mutate: func(t *netsourcev1.Topology) { t.TapFlows[0].Direction = "IN_OUT" },
			path: "tap_flows[0].direction", msg: `unknown direction "IN_OUT" (want IN, OUT or BOTH)`},
		{name: "vlan_filter 5000", mutate: func(t *netsourcev1.Topology) { t.TapFlows[0].VlanFilter = "10,5000" },
			path: "tap_flows[0].vlan_filter", msg: `"10,5000" is not a VLAN filter (want e.g. 10,20-30 with VLANs 1-4094): 5000 is out of range 1-4094`},
		{name: "tap flow on an unknown tap service", mutate: func(t *netsourcev1.Topology) { t.TapFlows[0].TapServiceId = unknownID },
			path: "tap_flows[0].tap_service_id", msg: `tap service "` + unknownID + `" is not in this file or the stream`},

		// trunks
		{name: "trunk sub-port is the parent", mutate: func(t *netsourcev1.Topology) { t.Trunks[0].SubPorts[0].PortId = port1ID },
			path: "trunks[0].sub_ports[0].port_id", msg: "is the trunk's parent port"},
		{name: "trunk sub-port on another host", mutate: func(t *netsourcev1.Topology) { t.Trunks[0].SubPorts[0].PortId = port2ID },
			path: "trunks[0].sub_ports[0].port_id", msg: `is on host "hostB", not on the trunk's host "hostA"`},
		{name: "trunk VLAN 4095", mutate: func(t *netsourcev1.Topology) { t.Trunks[0].SubPorts[0].SegmentationId = 4095 },
			path: "trunks[0].sub_ports[0].segmentation_id", msg: "VLAN 4095 is out of range"},
		{name: "trunk duplicate VLAN", mutate: func(t *netsourcev1.Topology) {
			t.Trunks[0].SubPorts = append(t.Trunks[0].SubPorts, &netsourcev1.SubPort{PortId: unknownID, SegmentationType: "vlan", SegmentationId: 101})
		}, path: "trunks[0].sub_ports[1].segmentation_id", msg: "VLAN 101 is already used by trunks[0].sub_ports[0]"},
		{name: "port parent of two trunks", mutate: func(t *netsourcev1.Topology) {
			t.Trunks = append(t.Trunks, &netsourcev1.Trunk{Id: "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a02", PortId: port1ID})
		}, path: "trunks[1].port_id", msg: "is already the parent port of trunks[0]"},
		{name: "parent is a sub-port of another trunk", mutate: func(t *netsourcev1.Topology) {
			t.Trunks = append(t.Trunks, &netsourcev1.Trunk{Id: "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a02", PortId: port2ID,
				SubPorts: []*netsourcev1.SubPort{{PortId: port1ID, SegmentationType: "vlan", SegmentationId: 7}}})
		}, path: "trunks[1].sub_ports[0].port_id", msg: "is the parent port of trunks[0]"},
		{name: "segmentation_type", mutate: func(t *netsourcev1.Topology) { t.Trunks[0].SubPorts[0].SegmentationType = "inherit" },
			path: "trunks[0].sub_ports[0].segmentation_type", msg: `unknown segmentation_type "inherit" (want vlan)`},

		// load balancers
		{name: "VIP outside subnet", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].VipAddress = "198.51.100.1" },
			path: "loadbalancers[0].vip_address", msg: "198.51.100.1 is outside 192.0.2.0/24"},
		{name: "listener port 0", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].Listeners[0].ProtocolPort = 0 },
			path: "loadbalancers[0].listeners[0].protocol_port", msg: "port 0 is out of range (want 1-65535)"},
		{name: "duplicate listener port", mutate: func(t *netsourcev1.Topology) {
			lb := t.Loadbalancers[0]
			lb.Listeners = append(lb.Listeners, &netsourcev1.Listener{Id: "8a9b0c1d-2e3f-4a5b-9c6d-7e8f9a0b1c02", Protocol: "TCP", ProtocolPort: 80})
		}, path: "loadbalancers[0].listeners[1].protocol_port", msg: "port 80 is already used by loadbalancers[0].listeners[0]"},
		{name: "connection_limit 0", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].Listeners[0].ConnectionLimit = ptr[int32](0) },
			path: "loadbalancers[0].listeners[0].connection_limit", msg: "0 is not allowed (want -1 for unlimited or at least 1)"},
		{name: "default pool of another load balancer", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].Listeners[0].DefaultPoolId = unknownID },
			path: "loadbalancers[0].listeners[0].default_pool_id", msg: "is not a pool of this load balancer"},
		{name: "TCP listener on an HTTP pool", mutate: func(t *netsourcev1.Topology) { t.Loadbalancers[0].Listeners[0].Protocol = "TCP" },
			path: "loadbalancers[0].listeners[0].default_pool_id", msg: "speaks HTTP; a TCP listener needs a TCP or HTTPS pool"},
		{name: "unknown lb_algorithm", mutate: func(t *netsourcev1.Topology) { pool(t).LbAlgorithm = "RANDOM" },
			path: "loadbalancers[0].pools[0].lb_algorithm", msg: `unknown lb_algorithm "RANDOM" (want ROUND_ROBIN, LEAST_CONNECTIONS or SOURCE_IP)`},
		{name: "app cookie without name", mutate: func(t *netsourcev1.Topology) {
			pool(t).SessionPersistence = &netsourcev1.SessionPersistence{Type: "APP_COOKIE"}
		}, path: "loadbalancers[0].pools[0].session_persistence.cookie_name", msg: "required for APP_COOKIE"},
		{name: "cookie name for source IP", mutate: func(t *netsourcev1.Topology) {
			pool(t).SessionPersistence = &netsourcev1.SessionPersistence{Type: "SOURCE_IP", CookieName: "JSESSIONID"}
		}, path: "loadbalancers[0].pools[0].session_persistence.cookie_name", msg: "only for APP_COOKIE, not SOURCE_IP"},
		{name: "cookie name with a space", mutate: func(t *netsourcev1.Topology) {
			pool(t).SessionPersistence = &netsourcev1.SessionPersistence{Type: "APP_COOKIE", CookieName: "my cookie"}
		}, path: "loadbalancers[0].pools[0].session_persistence.cookie_name", msg: `"my cookie" is not a valid cookie name`},
		{name: "monitor timeout > delay", mutate: func(t *netsourcev1.Topology) { monitor(t).Timeout = 10 },
			path: "loadbalancers[0].pools[0].healthmonitor.timeout", msg: "timeout 10 is longer than delay 5"},
		{name: "monitor max_retries 11", mutate: func(t *netsourcev1.Topology) { monitor(t).MaxRetries = 11 },
			path: "loadbalancers[0].pools[0].healthmonitor.max_retries", msg: "max_retries 11 is out of range (want 1-10)"},
		{name: "bad expected_codes", mutate: func(t *netsourcev1.Topology) { monitor(t).ExpectedCodes = "2xx" },
			path: "loadbalancers[0].pools[0].healthmonitor.expected_codes", msg: `"2xx" is not a list of HTTP status codes`},
		{name: "expected_codes 600", mutate: func(t *netsourcev1.Topology) { monitor(t).ExpectedCodes = "200-600" },
			path: "loadbalancers[0].pools[0].healthmonitor.expected_codes", msg: "600 is out of range 100-599"},
		{name: "url_path without slash", mutate: func(t *netsourcev1.Topology) { monitor(t).UrlPath = "healthz" },
			path: "loadbalancers[0].pools[0].healthmonitor.url_path", msg: `"healthz" does not start with "/"`},
		{name: "url_path with space", mutate: func(t *netsourcev1.Topology) { monitor(t).UrlPath = "/health z" },
			path: "loadbalancers[0].pools[0].healthmonitor.url_path", msg: "contains whitespace"},
		{name: "http_method", mutate: func(t *netsourcev1.Topology) { monitor(t).HttpMethod = "FETCH" },
			path: "loadbalancers[0].pools[0].healthmonitor.http_method", msg: `unknown http_method "FETCH"`},
		{name: "HTTP fields on a TCP monitor", mutate: func(t *netsourcev1.Topology) { monitor(t).Type = "TCP" },
			path: "loadbalancers[0].pools[0].healthmonitor.url_path", msg: "only for HTTP or HTTPS monitors, not TCP"},
		{name: "duplicate member", mutate: func(t *netsourcev1.Topology) { pool(t).Members[1].Address = "192.0.2.21" },
			path: "loadbalancers[0].pools[0].members[1].address", msg: "192.0.2.21:8080 is already used by loadbalancers[0].pools[0].members[0]"},
		{name: "member weight 257", mutate: func(t *netsourcev1.Topology) { pool(t).Members[0].Weight = ptr[uint32](257) },
			path: "loadbalancers[0].pools[0].members[0].weight", msg: "weight 257 is out of range (want 0-256)"},
		{name: "member outside its subnet", mutate: func(t *netsourcev1.Topology) { pool(t).Members[0].Address = "203.0.113.5" },
			path: "loadbalancers[0].pools[0].members[0].address", msg: `203.0.113.5 is outside subnet "` + subnetID + `" (192.0.2.0/24)`},

		// decoding, through the same entry point
		{name: "unknown field at top level", src: "networks: []\nrouters: []\n",
			path: "routers", msg: "unknown field"},
		{name: "unknown nested field", src: "ports:\n  - id: " + port1ID + "\n    binding: {type: veth, nets: vm1}\n",
			path: "ports[0].binding.nets", msg: `unknown field (did you mean "netns"?)`},
		{name: "string for mtu", src: "networks:\n  - {id: " + netID + ", mtu: big}\n",
			path: "networks[0].mtu", msg: `want an integer, got string "big"`},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate case name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, problems(t, tt.src, tt.mutate, nil), tt.path, tt.msg)
		})
	}
}

// TestValidateReportsEverything breaks several objects at once and expects each problem,
// in file order.
func TestValidateReportsEverything(t *testing.T) {
	errs := problems(t, "", func(t *netsourcev1.Topology) {
		network(t).SegmentationId = 0
		rule(t, 0).PortRangeMin = ptr[int32](90)
		t.Ports[0].MacAddress = "zz:00"
		t.Ports[1].Host = "a.b"
		t.TapFlows[0].VlanFilter = "5000"
		monitor(t).UrlPath = "healthz"
	}, nil)
	want := []string{
		"networks[0].segmentation_id",
		"security_groups[0].rules[0].port_range_min",
		"ports[0].mac_address",
		"ports[1].host",
		"tap_services[0].host", // left out, and ports[1] has no valid host
		"tap_flows[0].vlan_filter",
		"loadbalancers[0].pools[0].healthmonitor.url_path",
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Path)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("paths:\n got %v\nwant %v\n%v", got, want, errs)
	}
	if lines := strings.Count(errs.Error(), "\n") + 1; lines != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%v", lines, len(want), errs)
	}
}

func TestValidateKnown(t *testing.T) {
	known := sample(t)
	tests := []struct {
		name      string
		top       *netsourcev1.Topology
		path, msg string // empty: valid
		check     func(t *testing.T, top *netsourcev1.Topology)
	}{{
		name: "port on a network in the stream",
		top: &netsourcev1.Topology{Ports: []*netsourcev1.Port{{
			Id: "3d4e5f60-7182-4394-a5b6-c7d8e9f0a104", NetworkId: netID, Host: "hostC", MacAddress: "fa:16:3e:00:00:04",
			FixedIps:       []*netsourcev1.FixedIP{{SubnetId: subnetID, IpAddress: "192.0.2.14"}},
			SecurityGroups: []string{sgID},
		}}},
	}, {
		name: "tap service host from a port in the stream",
		top:  &netsourcev1.Topology{TapServices: []*netsourcev1.TapService{{Id: "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e03", PortId: port2ID}}},
		check: func(t *testing.T, top *netsourcev1.Topology) {
			if h := top.TapServices[0].Host; h != "hostB" {
				t.Errorf("host = %q, want hostB", h)
			}
		},
	}, {
		name: "port in the file replaces the known one",
		top: &netsourcev1.Topology{
			Ports:       []*netsourcev1.Port{proto.CloneOf(known.Ports[1])},
			TapServices: []*netsourcev1.TapService{{Id: tapSvcID, PortId: port2ID}},
		},
		check: func(t *testing.T, top *netsourcev1.Topology) {
			top.Ports[0].Host = "hostD"
			if err := Validate(&netsourcev1.Topology{Ports: top.Ports, TapServices: []*netsourcev1.TapService{{Id: tapSvcID, PortId: port2ID}}}, known); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "IP used by a port in the stream",
		top: &netsourcev1.Topology{Ports: []*netsourcev1.Port{{
			Id: "3d4e5f60-7182-4394-a5b6-c7d8e9f0a104", NetworkId: netID, Host: "hostC", MacAddress: "fa:16:3e:00:00:04",
			FixedIps: []*netsourcev1.FixedIP{{SubnetId: subnetID, IpAddress: "192.0.2.12"}},
		}}},
		path: "ports[0].fixed_ips[0].ip_address", msg: `192.0.2.12 is already used by port "` + port2ID + `" in the stream`,
	}, {
		name: "moving a port to another IP frees the old one",
		top: func() *netsourcev1.Topology {
			p1, p2 := proto.CloneOf(known.Ports[0]), proto.CloneOf(known.Ports[1])
			p1.FixedIps[0].IpAddress, p2.FixedIps[0].IpAddress = "192.0.2.12", "192.0.2.11"
			return &netsourcev1.Topology{Ports: []*netsourcev1.Port{p1, p2}}
		}(),
	}, {
		name: "parent of a trunk in the stream",
		top:  &netsourcev1.Topology{Trunks: []*netsourcev1.Trunk{{Id: "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a02", PortId: port1ID}}},
		path: "trunks[0].port_id", msg: `is already the parent port of trunk "` + trunkID + `" in the stream`,
	}, {
		name: "parent is a sub-port of a trunk in the stream",
		top:  &netsourcev1.Topology{Trunks: []*netsourcev1.Trunk{{Id: "2f3a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a02", PortId: port3ID}}},
		path: "trunks[0].port_id", msg: `port "` + port3ID + `" is a sub-port of trunk "` + trunkID + `" in the stream`,
	}, {
		name: "tap flow to a tap service in the stream",
		top: &netsourcev1.Topology{TapFlows: []*netsourcev1.TapFlow{{
			Id: "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e04", TapServiceId: tapSvcID, SourcePort: port3ID, Direction: "IN",
		}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.top, known)
			switch {
			case tt.path == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tt.path != "":
				if err == nil {
					t.Fatalf("Validate = nil, want %s: %s", tt.path, tt.msg)
				}
				wantProblem(t, asErrors(t, err), tt.path, tt.msg)
			}
			if tt.check != nil {
				tt.check(t, tt.top)
			}
		})
	}
}

func TestValidateObject(t *testing.T) {
	top := sample(t)
	if err := Validate(top, nil); err != nil { // fills the hosts the per-object checks need
		t.Fatal(err)
	}
	if err := ValidatePort("port", top.Ports[0]); err != nil {
		t.Errorf("ValidatePort(sample) = %v", err)
	}
	bad := proto.CloneOf(top.Ports[0])
	bad.MacAddress = "zz:00"
	err := ValidatePort("port", bad)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("ValidatePort(bad) = %v, want a *FieldError inside", err)
	}
	want := `port.mac_address: "zz:00" is not a MAC address (want six colon-separated hex octets, e.g. fa:16:3e:00:00:01) (port ` + port1ID + `)`
	if fe.Error() != want {
		t.Errorf("got  %s\nwant %s", fe.Error(), want)
	}
	var list Errors
	if !errors.As(err, &list) || len(list) != 1 {
		t.Errorf("errors.As(Errors) = %v", list)
	}
	// Per-object checks need the host filled in; they do not resolve references.
	if err := ValidateTapFlow("tapflow", &netsourcev1.TapFlow{Id: tapSvcID, TapServiceId: unknownID, SourcePort: unknownID, Direction: "IN"}); err == nil ||
		!strings.Contains(err.Error(), "tapflow.host: required") {
		t.Errorf("ValidateTapFlow without host = %v", err)
	}
	for name, err := range map[string]error{
		"network":      ValidateNetwork("network", nil),
		"secgroup":     ValidateSecurityGroup("secgroup", nil),
		"port":         ValidatePort("port", nil),
		"tapservice":   ValidateTapService("tapservice", nil),
		"tapflow":      ValidateTapFlow("tapflow", nil),
		"trunk":        ValidateTrunk("trunk", nil),
		"loadbalancer": ValidateLoadBalancer("loadbalancer", nil),
	} {
		if err == nil || err.Error() != name+": missing "+name {
			t.Errorf("Validate %s(nil) = %v", name, err)
		}
	}
	for _, f := range []func() error{
		func() error { return ValidateNetwork("n", top.Networks[0]) },
		func() error { return ValidateSecurityGroup("g", top.SecurityGroups[0]) },
		func() error { return ValidateTapService("s", top.TapServices[0]) },
		func() error { return ValidateTapFlow("f", top.TapFlows[0]) },
		func() error { return ValidateTrunk("t", top.Trunks[0]) },
		func() error { return ValidateLoadBalancer("l", top.Loadbalancers[0]) },
	} {
		if err := f(); err != nil {
			t.Errorf("valid object: %v", err)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for _, tt := range []struct {
		in, err string
	}{
		{"hostA", ""},
		{"compute-01_b", ""},
		{strings.Repeat("h", 64), ""},
		{"", "empty host name"},
		{strings.Repeat("h", 65), "is too long for a host name (65 bytes"},
		{"a.b", `"." is not allowed`},
		{"a b", `" " is not allowed`},
		{"a\tb", `"\t" is not allowed`},
		{"*", `"*" is not allowed`},
		{">", `">" is not allowed`},
		{"hôte", `"ô" is not allowed`},
		{"a\xffb", `"\xff" is not allowed`},
	} {
		err := CheckHost(tt.in)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("CheckHost(%q) = %v, want %q", tt.in, err, tt.err)
		}
	}
}

func TestCheckID(t *testing.T) {
	for _, tt := range []struct {
		in, err string
	}{
		{netID, ""},
		{"00000000-0000-0000-0000-000000000000", ""},
		{"", "empty id"},
		{"6a0e4b8e1c7d4a559b3f2f1f4c1e0a01", "is not a UUID"},
		{"{6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01}", "is not a UUID"},
		{"urn:uuid:6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01", "is not a UUID"},
		{"6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a0g", "is not a UUID"},
		{"6a0e4b8e-1c7d-4a55-9b3f.2f1f4c1e0a01", "is not a UUID"},
		{"6A0E4B8E-1C7D-4A55-9B3F-2F1F4C1E0A01", "use lower-case"},
	} {
		err := CheckID(tt.in)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("CheckID(%q) = %v, want %q", tt.in, err, tt.err)
		}
	}
}
