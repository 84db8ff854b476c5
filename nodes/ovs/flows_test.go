package ovs

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/netsource/netsource/nodes/taas"
)

func TestParseDumpKeepsOnlyNetsourceStaticFlows(t *testing.T) {
	out := `NXST_FLOW reply (xid=0x4):
 cookie=0x4e53000000000000, priority=0 actions=resubmit(,58)
 cookie=0x4e53000000000000, table=2, priority=1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)
 cookie=0x4e53010000000005, table=4, priority=1,tun_id=0x3e9 actions=mod_vlan_vid:5,resubmit(,10)
 cookie=0x1234, priority=100,udp,tp_dst=9 actions=drop
 cookie=0x4e53ff0000000000, hard_timeout=60, table=30, priority=1,vlan_tci=0x0f3c/0x0fff actions=load:0xf3c->NXM_NX_TUN_ID[0..11],load:0->NXM_OF_VLAN_TCI[0..11],output:3
 cookie=0x4e53000000000000, table=60, priority=3 actions=NORMAL
`
	got, err := parseDump(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flow{
		{Cookie: Cookie(kindBase, 0), Table: 0, Priority: 0, Actions: "resubmit(,58)"},
		{Cookie: Cookie(kindBase, 0), Table: 2, Priority: 1, Match: "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00", Actions: "resubmit(,22)"},
		{Cookie: Cookie(kindNetwork, 5), Table: 4, Priority: 1, Match: "tun_id=0x3e9", Actions: "mod_vlan_vid:5,resubmit(,10)"},
		{Cookie: Cookie(kindBase, 0), Table: 60, Priority: 3, Actions: "NORMAL"},
	}
	if d := cmp.Diff(got, want); d != "" {
		t.Fatalf("parseDump (-got +want):\n%s", d)
	}
}

func TestDiffFlowsComparesMatchAsASet(t *testing.T) {
	have := []Flow{
		{Cookie: 1, Table: 0, Priority: 3, Match: "in_port=3,dl_vlan=1", Actions: "resubmit(,58)"},
		{Cookie: 1, Table: 0, Priority: 2, Match: "in_port=3", Actions: "drop"},
		{Cookie: 1, Table: 22, Priority: 1, Match: "dl_vlan=1", Actions: "output:3"},
	}
	want := []Flow{
		{Cookie: 1, Table: 0, Priority: 3, Match: "dl_vlan=1,in_port=3", Actions: "resubmit(,58)"}, // same, other order
		{Cookie: 1, Table: 22, Priority: 1, Match: "dl_vlan=1", Actions: "output:3,output:4"},      // changed
		{Cookie: 2, Table: 4, Priority: 1, Match: "tun_id=0x3e9", Actions: "drop"},                 // new
	}
	dels, adds := diffFlows(have, want)
	if got := bundle(dels, adds); got != strings.Join([]string{
		"delete_strict cookie=0x1/-1,table=0,priority=2,in_port=3",
		"add cookie=0x1,table=22,priority=1,dl_vlan=1,actions=output:3,output:4",
		"add cookie=0x2,table=4,priority=1,tun_id=0x3e9,actions=drop",
	}, "\n")+"\n" {
		t.Fatalf("bundle:\n%s", got)
	}
	if dels, adds := diffFlows(want, want); len(dels)+len(adds) != 0 {
		t.Fatalf("equal sets differ: %v %v", dels, adds)
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	n := netRecord{ID: "net1", LVID: 7, Type: typeVLAN, Phys: "br-phys", Seg: 101}
	s := svcRecord{ID: "svc1", TapID: 3900, Device: "tapabc"}
	f := flowRecord{ID: "flow1", TapID: 3901, Dir: taas.DirectionIn, Device: "tapdef"}
	ids := map[string]string{n.key(): n.value(), s.key(): s.value(), f.key(): f.value(), "other": "x",
		netKeyPrefix + "bad": "lvid=0,type=local"}
	nets, svcs, flows := records(ids)
	if d := cmp.Diff([]any{nets, svcs, flows}, []any{map[string]netRecord{"net1": n}, map[string]svcRecord{"svc1": s},
		map[string]flowRecord{"flow1": f}}); d != "" {
		t.Fatalf("records (-got +want):\n%s", d)
	}
}

func TestParseSnapshot(t *testing.T) {
	out := `{"data":[["br-int",["set",[["uuid","p1"],["uuid","p2"]]],["map",[["netsource-net-n1","lvid=1,type=local"]]],"netdev","secure"],["br-tap",["uuid","p3"],["map",[]],"netdev",["set",[]]]],"headings":["name","ports","external_ids","datapath_type","fail_mode"]}
{"data":[[["uuid","p1"],"tapa",5],[["uuid","p2"],"patch-int-tap",["set",[]]],[["uuid","p3"],"patch-tap-int",["set",[]]]],"headings":["_uuid","name","tag"]}
{"data":[["tapa","",3,["map",[]],["map",[["attached-mac","fa:16:3e:00:00:01"]]]],["patch-int-tap","patch",1,["map",[["peer","patch-tap-int"]]],["map",[]]],["patch-tap-int","patch",-1,["map",[["peer","patch-int-tap"]]],["map",[]]]],"headings":["name","type","ofport","options","external_ids"]}
`
	db, err := parseSnapshot(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.ofport(BrInt, "tapa"); got != 3 {
		t.Errorf("ofport of tapa = %d", got)
	}
	if got := db.ofport(BrTap, "patch-tap-int"); got != 0 {
		t.Errorf("ofport of an unopened port = %d, want 0", got)
	}
	if got := db.ofport(BrTap, "tapa"); got != 0 {
		t.Errorf("ofport of a port of another bridge = %d, want 0", got)
	}
	if db.Ports["tapa"].Tag != 5 || db.Bridges[BrInt].ExternalIDs["netsource-net-n1"] != "lvid=1,type=local" ||
		db.Bridges[BrTap].FailMode != "" || db.Interfaces["tapa"].ExternalIDs["attached-mac"] != "fa:16:3e:00:00:01" {
		t.Fatalf("snapshot: %+v %+v %+v", db.Bridges, db.Ports, db.Interfaces)
	}
}

// TestBuildFlowsTaps checks the TaaS flows of one host holding a tap service and two tap
// flows on the same source port (merged into one clone per tap id).
func TestBuildFlowsTaps(t *testing.T) {
	db := &dbSnapshot{
		Bridges: map[string]*dbBridge{BrInt: {Name: BrInt}, BrTap: {Name: BrTap}, BrTun: {Name: BrTun, Ports: []string{"vxlan-c6120002"}}},
		Ports: map[string]*dbPort{
			PatchIntToTap: {Name: PatchIntToTap, Bridge: BrInt}, PatchTapToInt: {Name: PatchTapToInt, Bridge: BrTap},
			"tapsrc": {Name: "tapsrc", Bridge: BrInt}, "tapsvc": {Name: "tapsvc", Bridge: BrInt},
			"vxlan-c6120002": {Name: "vxlan-c6120002", Bridge: BrTun},
		},
		Interfaces: map[string]*dbInterface{
			PatchIntToTap: {OFPort: 1}, PatchTapToInt: {OFPort: 1},
			"tapsrc":         {OFPort: 4, ExternalIDs: map[string]string{"attached-mac": "FA:16:3E:00:00:0A"}},
			"tapsvc":         {OFPort: 5},
			"vxlan-c6120002": {OFPort: 3, ExternalIDs: map[string]string{extOwner: ownerTunnel}},
		},
	}
	m := &model{tunneling: true,
		svcs: map[string]svcRecord{"s": {ID: "s", TapID: 3900, Device: "tapsvc"}},
		flows: map[string]flowRecord{
			"f1": {ID: "f1", TapID: 3900, Dir: taas.DirectionBoth, Device: "tapsrc"},
			"f2": {ID: "f2", TapID: 3901, Dir: taas.DirectionOut, Device: "tapsrc"},
		}}
	fs := buildFlows(m, db)
	var got []string
	for _, br := range []string{BrInt, BrTap, BrTun} {
		for _, f := range fs.list(br) {
			if CookieKind(f.Cookie) == kindTapService || CookieKind(f.Cookie) == kindTapFlow {
				got = append(got, br+" "+f.String())
			}
		}
	}
	want := []string{
		"br-int cookie=0x4e53100000000f3c,table=0,priority=25,in_port=1,dl_vlan=3900,actions=pop_vlan,output:5",
		"br-int cookie=0x4e53110000000f3c,table=58,priority=20,in_port=4,actions=clone(push_vlan:0x8100,set_field:7996->vlan_vid,output:1),clone(push_vlan:0x8100,set_field:7997->vlan_vid,output:1),resubmit(,59)",
		"br-int cookie=0x4e53110000000f3c,table=59,priority=20,vlan_tci=0x0000/0x1000,dl_dst=fa:16:3e:00:00:0a,actions=clone(push_vlan:0x8100,set_field:7996->vlan_vid,output:1),resubmit(,60)",
		"br-int cookie=0x4e53110000000f3c,table=59,priority=20,vlan_tci=0x1000/0x1000,dl_dst=fa:16:3e:00:00:0a,actions=clone(set_field:7996->vlan_vid,output:1),resubmit(,60)",
		"br-tap cookie=0x4e53100000000f3c,table=1,priority=1,dl_vlan=3900,actions=IN_PORT",
		"br-tap cookie=0x4e53100000000f3c,table=2,priority=1,dl_vlan=3900,actions=output:1",
		"br-tun cookie=0x4e53100000000f3c,table=36,priority=1,tun_id=0xf3c,actions=resubmit(,38)",
		"br-tun cookie=0x4e53110000000f3c,table=37,priority=1,tun_id=0xf3c,actions=resubmit(,39)",
		"br-tun cookie=0x4e53110000000f3d,table=37,priority=1,tun_id=0xf3d,actions=resubmit(,39)",
		"br-tun cookie=0x4e53100000000f3c,table=4,priority=2,tun_id=0xf3c,actions=move:NXM_OF_VLAN_TCI[0..11]->NXM_NX_REG0[0..11],move:NXM_NX_TUN_ID[0..11]->NXM_OF_VLAN_TCI[0..11],resubmit(,35)",
		"br-tun cookie=0x4e53110000000f3d,table=4,priority=2,tun_id=0xf3d,actions=move:NXM_OF_VLAN_TCI[0..11]->NXM_NX_REG0[0..11],move:NXM_NX_TUN_ID[0..11]->NXM_OF_VLAN_TCI[0..11],resubmit(,35)",
	}
	if d := cmp.Diff(got, want); d != "" {
		t.Fatalf("TaaS flows (-got +want):\n%s", d)
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{TunnelPortName([]byte{198, 18, 0, 2}), "vxlan-c6120002"},
		{ifName("int-", "br-phys"), "int-br-phys"},
		{ifName("phy-", "br-very-long-name"), "phy-br-ve" + ifName("phy-", "br-very-long-name")[9:]},
	} {
		if c.got != c.want || len(c.got) > 15 {
			t.Errorf("name %q, want %q (at most 15 characters)", c.got, c.want)
		}
	}
}

func TestTrunkFlows(t *testing.T) {
	twin := func(parent, vlan, up string) *dbInterface {
		return &dbInterface{Type: "patch", OFPort: 7, ExternalIDs: map[string]string{extOwner: ownerSubPort, extParent: parent, extVLAN: vlan, extUp: up}}
	}
	for _, tc := range []struct {
		name string
		twin *dbInterface
		want []string
	}{
		{"up", twin("tapparent", "101", "true"), []string{
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=3,dl_vlan=101,actions=pop_vlan,output:7",
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=7,actions=push_vlan:0x8100,set_field:4197->vlan_vid,output:3"}},
		{"admin down", twin("tapparent", "101", "false"), []string{
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=3,dl_vlan=101,actions=drop",
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=7,actions=drop"}},
		{"parent not on br-int", twin("tapgone", "101", "true"), []string{
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=7,actions=drop"}},
		{"bad VLAN", twin("tapparent", "4095", "true"), []string{
			"cookie=0x4e53030000000007,table=0,priority=30,in_port=7,actions=drop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := &dbSnapshot{
				Bridges:    map[string]*dbBridge{BrInt: {Name: BrInt, Ports: []string{"tapparent", "spt-sub"}}},
				Ports:      map[string]*dbPort{"tapparent": {Name: "tapparent", Bridge: BrInt}, "spt-sub": {Name: "spt-sub", Bridge: BrInt}},
				Interfaces: map[string]*dbInterface{"tapparent": {OFPort: 3}, "spt-sub": tc.twin},
			}
			fs := flowSet{}
			trunkFlows(fs, db)
			var got []string
			for _, f := range fs.list(BrInt) {
				got = append(got, f.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("flows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
