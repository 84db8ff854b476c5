package config

import (
	"strings"
	"testing"
)

func TestValidateNamesTheOption(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // substring of the error; "" means valid
	}{
		{"minimal", "host: hostA\nvxlan: {local_ip: 198.18.0.1}", ""},
		{"full", `host: hostA
netns: hostA
mechanism: linuxbridge
physical_interface_mappings: {physnet1: eth1}
bridge_mappings: {physnet2: br-ex}
vxlan: {enable_vxlan: true, local_ip: 198.18.0.1, vxlan_group: 239.1.1.0/24, l2_population: false, ttl: 0, tos: 0, udp_port: 4789}
agent: {resync_interval: 30s, report_interval: 10}`, ""},
		{"unknown option", "host: a\nphysical_interface_mapping: {}", "unknown field"},
		{"bad host", "host: a.b\nvxlan: {enable_vxlan: false}", `host "a.b"`},
		{"bad mechanism", "host: a\nmechanism: ovs\nvxlan: {enable_vxlan: false}", `mechanism "ovs"`},
		{"bad interface", "host: a\nphysical_interface_mappings: {physnet1: averyveryverylongname}\nvxlan: {enable_vxlan: false}",
			"Parsing physical_interface_mappings failed: physnet1"},
		{"bad physnet", "host: a\nbridge_mappings: {'phys net': br0}\nvxlan: {enable_vxlan: false}", "Parsing bridge_mappings failed"},
		{"physnet twice", "host: a\nbridge_mappings: {p: br0}\nphysical_interface_mappings: {p: eth1}\nvxlan: {enable_vxlan: false}",
			"in both physical_interface_mappings and bridge_mappings"},
		{"interface twice", "host: a\nphysical_interface_mappings: {p: eth1, q: eth1}\nvxlan: {enable_vxlan: false}", "mapped to both"},
		{"vxlan without local_ip", "host: a", "vxlan.local_ip"},
		{"group not multicast", "host: a\nvxlan: {local_ip: 198.18.0.1, vxlan_group: 198.18.0.9}", "not a multicast address"},
		{"group family", "host: a\nvxlan: {local_ip: 198.18.0.1, vxlan_group: 'ff05::1'}", "different address families"},
		{"bad port", "host: a\nvxlan: {local_ip: 198.18.0.1, udp_port: 70000}", "vxlan.udp_port"},
		{"bad ttl", "host: a\nvxlan: {local_ip: 198.18.0.1, ttl: 300}", "vxlan.ttl"},
		{"bad duration", "host: a\nagent: {resync_interval: soon}", "not a duration"},
		{"negative interval", "host: a\nvxlan: {enable_vxlan: false}\nagent: {report_interval: -1s}", "agent.report_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err == nil {
				c.ApplyDefaults()
				err = c.Validate()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid config rejected: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestGroupFor(t *testing.T) {
	v := VXLAN{VXLANGroup: "239.0.0.0/8"}
	if got := v.GroupFor(1001).String(); got != "239.0.3.233" {
		t.Fatalf("GroupFor(1001) = %s, want 239.0.3.233", got)
	}
	v = VXLAN{VXLANGroup: "239.1.1.1"}
	if got := v.GroupFor(7).String(); got != "239.1.1.1" {
		t.Fatalf("single group: %s", got)
	}
	if (VXLAN{}).GroupFor(1) != nil {
		t.Fatal("no group configured should give nil")
	}
}

func TestFirewallDriver(t *testing.T) {
	for driver, ok := range map[string]bool{"": true, "noop": true, "nftables": true, "iptables": false} {
		c := &Config{Host: "a", SecurityGroup: SecurityGroup{FirewallDriver: driver}}
		off := false
		c.VXLAN.EnableVXLAN = &off
		c.ApplyDefaults()
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("firewall_driver %q: error %v, want ok=%t", driver, err, ok)
		}
	}
}
