package streams

import (
	"strings"
	"testing"
)

func TestDesiredSubject(t *testing.T) {
	const id = "3d4e5f60-0000-4000-8000-000000000001"
	tests := []struct {
		name    string
		kind    Kind
		host    string
		id      string
		want    string
		wantErr string
	}{
		{name: "network ignores host", kind: KindNetwork, host: "hostA", id: id, want: "ns.desired.network." + id},
		{name: "secgroup", kind: KindSecGroup, id: id, want: "ns.desired.secgroup." + id},
		{name: "port", kind: KindPort, host: "hostA", id: id, want: "ns.desired.host.hostA.port." + id},
		{name: "loadbalancer", kind: KindLoadBalancer, host: "h-1_b", id: id, want: "ns.desired.host.h-1_b.loadbalancer." + id},
		{name: "host with dot", kind: KindPort, host: "a.b", id: id, wantErr: `host "a.b" cannot be a subject token`},
		{name: "host with star", kind: KindPort, host: "*", id: id, wantErr: "cannot be a subject token"},
		{name: "host with gt", kind: KindPort, host: ">", id: id, wantErr: "cannot be a subject token"},
		{name: "host with space", kind: KindPort, host: "a b", id: id, wantErr: "cannot be a subject token"},
		{name: "host with tab", kind: KindPort, host: "a\tb", id: id, wantErr: "cannot be a subject token"},
		{name: "empty host", kind: KindPort, host: "", id: id, wantErr: "host is empty"},
		{name: "id with dot", kind: KindNetwork, id: "a.b", wantErr: `network id "a.b" cannot be a subject token`},
		{name: "non-ascii id", kind: KindNetwork, id: "é", wantErr: "cannot be a subject token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DesiredSubject(tt.kind, tt.host, tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DesiredSubject() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DesiredSubject() = %q, %v; want %q", got, err, tt.want)
			}
			addr, err := ParseDesiredSubject(got)
			if err != nil {
				t.Fatalf("ParseDesiredSubject(%q): %v", got, err)
			}
			wantHost := tt.host
			if !tt.kind.HostScoped() {
				wantHost = ""
			}
			if addr != (DesiredAddress{Kind: tt.kind, Host: wantHost, ID: tt.id}) {
				t.Fatalf("ParseDesiredSubject(%q) = %+v", got, addr)
			}
		})
	}
}

func TestParseDesiredSubjectRejects(t *testing.T) {
	for _, s := range []string{"ns.desired", "ns.desired.host.a.network.x", "ns.status.a.port.x", "ns.desired.port.x",
		"ns.desired.host.a.ports.x", "x.desired.network.y"} {
		if _, err := ParseDesiredSubject(s); err == nil {
			t.Errorf("ParseDesiredSubject(%q) accepted", s)
		}
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"networks": KindNetwork, "SecGroups": KindSecGroup, "security_groups": KindSecGroup,
		"port": KindPort, "tap_flows": KindTapFlow, "tapservices": KindTapService, "trunks": KindTrunk, "loadbalancers": KindLoadBalancer} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseKind("router"); err == nil {
		t.Error("ParseKind(router) accepted")
	}
}
