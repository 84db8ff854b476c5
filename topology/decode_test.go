package topology

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

func TestDecodeYAMLAndJSONAgree(t *testing.T) {
	fromYAML := sample(t)
	b, err := os.ReadFile("testdata/sample.json")
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode(sample.json): %v", err)
	}
	if !proto.Equal(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON forms differ:\n%v\n%v", fromYAML, fromJSON)
	}
	// Spot checks that values arrive where the contract puts them.
	lb := fromYAML.GetLoadbalancers()[0]
	if got := lb.GetListeners()[0].GetConnectionLimit(); got != -1 {
		t.Errorf("connection_limit = %d, want -1", got)
	}
	if got := lb.GetPools()[0].GetHealthmonitor().GetExpectedCodes(); got != "200" {
		t.Errorf("expected_codes = %q", got)
	}
	if got := fromYAML.GetSecurityGroups()[0].GetRules()[0].GetPortRangeMin(); got != 80 {
		t.Errorf("port_range_min = %d", got)
	}
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(*netsourcev1.Topology) bool
	}{
		{"empty file", "", func(t *netsourcev1.Topology) bool { return proto.Equal(t, &netsourcev1.Topology{}) }},
		{"only a comment", "# nothing yet\n", func(t *netsourcev1.Topology) bool { return len(t.GetNetworks()) == 0 }},
		{"empty lists", "networks: []\nports: []\nloadbalancers: []\n", func(t *netsourcev1.Topology) bool { return len(t.GetPorts()) == 0 }},
		{"null list", "networks: null\n", func(t *netsourcev1.Topology) bool { return len(t.GetNetworks()) == 0 }},
		{"empty JSON object", "{}", func(t *netsourcev1.Topology) bool { return len(t.GetNetworks()) == 0 }},
		{"null session_persistence", "loadbalancers:\n  - pools:\n      - {id: " + poolID + ", session_persistence: null}\n",
			func(t *netsourcev1.Topology) bool {
				return t.GetLoadbalancers()[0].GetPools()[0].SessionPersistence == nil
			}},
		{"null scalar means left out", "ports:\n  - {id: " + port1ID + ", admin_state_up: null, name: ~}\n",
			func(t *netsourcev1.Topology) bool { return t.GetPorts()[0].AdminStateUp == nil }},
		{"false kept apart from left out", "ports:\n  - {admin_state_up: false}\n",
			func(t *netsourcev1.Topology) bool {
				return t.GetPorts()[0].AdminStateUp != nil && !t.GetPorts()[0].GetAdminStateUp()
			}},
		{"number for a string field", "security_groups:\n  - rules: [{protocol: 6}]\n",
			func(t *netsourcev1.Topology) bool { return t.GetSecurityGroups()[0].GetRules()[0].GetProtocol() == "6" }},
		{"unquoted expected_codes", "loadbalancers:\n  - pools: [{healthmonitor: {expected_codes: 200}}]\n",
			func(t *netsourcev1.Topology) bool {
				return t.GetLoadbalancers()[0].GetPools()[0].GetHealthmonitor().GetExpectedCodes() == "200"
			}},
		{"camelCase names", `{"ports": [{"macAddress": "fa:16:3e:00:00:01", "fixedIps": [{"ipAddress": "192.0.2.1"}]}]}`,
			func(t *netsourcev1.Topology) bool {
				p := t.GetPorts()[0]
				return p.GetMacAddress() == "fa:16:3e:00:00:01" && p.GetFixedIps()[0].GetIpAddress() == "192.0.2.1"
			}},
		{"integer written as float", "networks: [{mtu: 1.45e3, segmentation_id: 7.0}]\n",
			func(t *netsourcev1.Topology) bool {
				return t.GetNetworks()[0].GetMtu() == 1450 && t.GetNetworks()[0].GetSegmentationId() == 7
			}},
		{"negative int32", "loadbalancers: [{listeners: [{connection_limit: -1}]}]\n",
			func(t *netsourcev1.Topology) bool {
				return t.GetLoadbalancers()[0].GetListeners()[0].GetConnectionLimit() == -1
			}},
		{"MAC of digits only stays a string", "ports: [{mac_address: 10:20:30:40:50:60}]\n",
			func(t *netsourcev1.Topology) bool { return t.GetPorts()[0].GetMacAddress() == "10:20:30:40:50:60" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top, err := Decode([]byte(tt.src))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tt.check(top) {
				t.Errorf("decoded to %v", top)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name, src string
		path, msg string
	}{
		{"unknown top-level field", "networks: []\nrouters: []\n", "routers", "unknown field"},
		{"unknown field in a list item", "ports:\n  - id: x\n    binding: {type: veth, nets: vm1}\n", "ports[0].binding.nets", `unknown field (did you mean "netns"?)`},
		{"unknown field deep", "loadbalancers:\n  - pools:\n      - healthmonitor: {type: HTTP, interval: 5}\n",
			"loadbalancers[0].pools[0].healthmonitor.interval", "unknown field"},
		{"unknown field in JSON", `{"networks": [{"id": "x", "subnets": [{"cidr": "192.0.2.0/24", "dns": []}]}]}`,
			"networks[0].subnets[0].dns", "unknown field"},
		{"misspelt with dashes", "ports: [{mac-address: fa:16:3e:00:00:01}]\n", "ports[0].mac-address", `did you mean "mac_address"?`},
		{"string for mtu", "networks:\n  - {mtu: big}\n", "networks[0].mtu", `want an integer, got string "big"`},
		{"quoted number for mtu", "networks:\n  - {mtu: \"1450\"}\n", "networks[0].mtu", `want an integer, got string "1450"`},
		{"fraction", "networks:\n  - {mtu: 1450.5}\n", "networks[0].mtu", "want an integer, got number 1450.5"},
		{"negative uint", "networks:\n  - {segmentation_id: -1}\n", "networks[0].segmentation_id", "-1 is out of range (want 0 to 4294967295)"},
		{"uint32 overflow", "networks:\n  - {segmentation_id: 4294967296}\n", "networks[0].segmentation_id", "4294967296 is out of range"},
		{"huge number", "networks:\n  - {mtu: 1e30}\n", "networks[0].mtu", "is out of range"},
		{"string for a bool", "ports:\n  - {admin_state_up: \"true\"}\n", "ports[0].admin_state_up", `want true or false, got string "true"`},
		{"bool for a string", "ports:\n  - {name: true}\n", "ports[0].name", "want a string, got boolean true"},
		{"YAML 1.1 boolean for a string", "ports:\n  - {name: yes}\n", "ports[0].name", "got boolean true (quote it: YAML reads yes, no"},
		{"list not a list", "networks: {id: x}\n", "networks", "want a list, got a mapping"},
		{"item not a mapping", "networks: [blue]\n", "networks[0]", `want a mapping, got string "blue"`},
		{"null item", "networks: [null]\n", "networks[0]", "null is not allowed in a list"},
		{"nested message not a mapping", "ports: [{binding: veth}]\n", "ports[0].binding", `want a mapping, got string "veth"`},
		{"list of strings holds a mapping", "ports: [{security_groups: [{id: x}]}]\n", "ports[0].security_groups[0]", "want a string, got a mapping"},
		{"proto and JSON name both given", `{"ports": [{"mac_address": "a", "macAddress": "b"}]}`, "ports[0].macAddress", "the same field as ports[0].mac_address"},
		{"top level is a list", "- networks: []\n", "", "the top level must be a mapping"},
		{"top level is a scalar", "hello\n", "", "the top level must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top, err := Decode([]byte(tt.src))
			if err == nil {
				t.Fatalf("Decode = %v, want an error", top)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is not *Errors: %v", err)
			}
			wantProblem(t, *errs, tt.path, tt.msg)
		})
	}
}

func TestDecodeReportsEveryField(t *testing.T) {
	src := "networks:\n  - {mtu: big, colour: blue}\nports:\n  - {bindings: {}}\nrouters: []\n"
	_, err := Decode([]byte(src))
	want := "networks[0].mtu: want an integer, got string \"big\"\n" +
		"networks[0].colour: unknown field\n" +
		"ports[0].bindings: unknown field (did you mean \"binding\"?)\n" +
		"routers: unknown field"
	if err == nil || err.Error() != want {
		t.Errorf("Decode error:\n%v\nwant:\n%s", err, want)
	}
}

func TestDecodeSyntaxErrors(t *testing.T) {
	for _, src := range []string{
		"networks: [\n",
		"networks: []\nnetworks: []\n", // duplicate key
		`{"networks": [], "networks": []}`,
		"\tnetworks: []\n",
	} {
		_, err := Decode([]byte(src))
		if err == nil || !strings.HasPrefix(err.Error(), "decode topology: ") {
			t.Errorf("Decode(%q) = %v, want a decode error", src, err)
		}
	}
}
