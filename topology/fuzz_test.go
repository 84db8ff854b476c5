package topology

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// fuzzSeeds are small bad (and odd) files; testdata/fuzz/FuzzDecodeValidate holds more.
var fuzzSeeds = []string{
	"",
	"networks: []\nrouters: []\n",
	"ports:\n  - id: " + port1ID + "\n    binding: {type: veth, nets: vm1}\n",
	"networks:\n  - {id: " + netID + ", network_type: vlan, physical_network: physnet1, segmentation_id: 4095, mtu: 67}\n",
	"networks:\n  - {id: " + netID + ", network_type: vxlan, segmentation_id: 1, subnets: [{id: " + subnetID + ", cidr: 192.0.2.5/24, gateway_ip: 192.0.3.1}]}\n",
	"ports:\n  - {id: " + port1ID + ", network_id: " + netID + ", host: a.b, mac_address: zz:00, fixed_ips: [{subnet_id: " + subnetID + ", ip_address: 192.0.2.1}]}\n",
	"security_groups:\n  - {id: " + sgID + ", rules: [{direction: ingress, ethertype: IPv6, protocol: icmp, port_range_min: 9, port_range_max: 1, remote_ip_prefix: ::/0, remote_group_id: " + sgID + "}]}\n",
	"tap_flows:\n  - {id: x, tap_service_id: svc, source_port: " + port1ID + ", direction: UP, vlan_filter: \"5000,1-,-3\"}\n",
	"trunks:\n  - {id: " + trunkID + ", port_id: " + port1ID + ", sub_ports: [{port_id: " + port1ID + ", segmentation_type: vlan, segmentation_id: 0}]}\n",
	"loadbalancers:\n  - {host: \"*\", listeners: [{protocol: TCP, protocol_port: 0, default_pool_id: " + poolID + "}], pools: [{id: " + poolID + ", protocol: HTTP, session_persistence: {type: APP_COOKIE}, healthmonitor: {type: HTTP, delay: 1, timeout: 2, expected_codes: 2xx, url_path: x}, members: [{address: 192.0.2.1, protocol_port: 80}, {address: 192.0.2.1, protocol_port: 80}]}]}\n",
	`{"networks": [{"mtu": "big"}], "ports": [{"macAddress": 1, "mac_address": null}]}`,
	"- 1\n",
	"networks: [null, {}]\n\"na\\nme\": 1\n",
}

// FuzzDecodeValidate feeds arbitrary files through Decode and Validate: neither may panic,
// every problem must print as exactly one line, and validating a second time (after the
// hosts were filled in) must report the same problems.
func FuzzDecodeValidate(f *testing.F) {
	for _, name := range []string{"testdata/sample.yaml", "testdata/sample.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		top, err := Decode(data)
		if err != nil {
			checkOneLinePerProblem(t, err)
			return
		}
		known := proto.CloneOf(top)
		first := Validate(top, nil)
		checkOneLinePerProblem(t, first)
		second := Validate(top, nil)
		if errString(first) != errString(second) {
			t.Errorf("second Validate differs:\n%v\n---\n%v", first, second)
		}
		checkOneLinePerProblem(t, Validate(top, known))
		checkOneLinePerProblem(t, Validate(&netsourcev1.Topology{}, top))
		for _, p := range top.GetPorts() {
			checkOneLinePerProblem(t, ValidatePort("port", p))
		}
		for _, lb := range top.GetLoadbalancers() {
			checkOneLinePerProblem(t, ValidateLoadBalancer("loadbalancer", lb))
		}
	})
}

// checkOneLinePerProblem fails when a problem's text spans lines (a value was not quoted).
func checkOneLinePerProblem(t *testing.T, err error) {
	t.Helper()
	var errs *Errors
	if err == nil || !errors.As(err, &errs) {
		return
	}
	if len(*errs) == 0 {
		t.Fatalf("empty *Errors returned as an error")
	}
	for _, e := range *errs {
		if strings.ContainsAny(e.Error(), "\n\r") || e.Msg == "" {
			t.Errorf("problem is not one line: %q", e.Error())
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
