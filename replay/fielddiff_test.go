package replay_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/replay"
)

func TestDiffMessages(t *testing.T) {
	base := &nsv1.Port{Id: "p1", Host: "hostA", MacAddress: "fa:16:3e:00:00:01",
		FixedIps:       []*nsv1.FixedIP{{SubnetId: "s1", IpAddress: "192.0.2.11"}},
		SecurityGroups: []string{"sg1", "sg2"}, Binding: &nsv1.Binding{Type: "veth", Netns: "vm1"}}
	for _, c := range []struct {
		name string
		edit func(p *nsv1.Port)
		want []string
	}{
		{"same", func(*nsv1.Port) {}, nil},
		{"nested list element", func(p *nsv1.Port) { p.FixedIps[0].IpAddress = "192.0.2.12" },
			[]string{`fixed_ips[0].ip_address: "192.0.2.11" → "192.0.2.12"`}},
		{"list grows", func(p *nsv1.Port) {
			p.FixedIps = append(p.FixedIps, &nsv1.FixedIP{SubnetId: "s2", IpAddress: "198.51.100.5"})
		},
			[]string{`fixed_ips[1]: <none> → {subnet_id: "s2", ip_address: "198.51.100.5"}`}},
		{"list shrinks", func(p *nsv1.Port) { p.SecurityGroups = p.SecurityGroups[:1] },
			[]string{`security_groups[1]: "sg2" → <none>`}},
		{"optional set to its default", func(p *nsv1.Port) { p.AdminStateUp = proto.Bool(true) },
			[]string{`admin_state_up: <unset> → true`}},
		{"message removed", func(p *nsv1.Port) { p.Binding = nil },
			[]string{`binding: {type: "veth", netns: "vm1"} → <none>`}},
		{"host move", func(p *nsv1.Port) { p.Host = "hostB" }, []string{`host: "hostA" → "hostB"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := proto.Clone(base).(*nsv1.Port)
			c.edit(p)
			var got []string
			for _, ch := range replay.DiffMessages(base, p) {
				got = append(got, ch.String())
			}
			if diff := cmp.Diff(got, c.want); diff != "" {
				t.Fatalf("(-got +want):\n%s", diff)
			}
		})
	}
}

func TestDiffMessagesMapsEnumsAndCreation(t *testing.T) {
	a := &nsv1.StatusEvent{Phase: nsv1.Phase_PHASE_BUILD, Details: map[string]string{"device": "tap1", "old": "x"}}
	b := &nsv1.StatusEvent{Phase: nsv1.Phase_PHASE_ACTIVE, Details: map[string]string{"device": "tap2", "new": "y"}}
	var got []string
	for _, ch := range replay.DiffMessages(a, b) {
		got = append(got, ch.String())
	}
	want := []string{`phase: PHASE_BUILD → PHASE_ACTIVE`, `details["device"]: "tap1" → "tap2"`,
		`details["new"]: <none> → "y"`, `details["old"]: "x" → <none>`}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Fatalf("(-got +want):\n%s", diff)
	}
	// Against nothing, every set field is a change.
	created := replay.DiffMessages(nil, &nsv1.Network{Id: "n1", Mtu: 1450})
	if len(created) != 2 || !strings.Contains(created[1].String(), "mtu: 0 → 1450") {
		t.Fatalf("creation diff: %v", created)
	}
}
