package ovs

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/netsource/netsource/nodes/taas"
)

// Bridges and patch ports, named as the OVS agent and its TaaS extension name them.
const (
	BrInt = "br-int"
	BrTun = "br-tun"
	BrTap = "br-tap"

	PatchIntToTun = "patch-tun"     // on br-int, peer PatchTunToInt
	PatchTunToInt = "patch-int"     // on br-tun
	PatchIntToTap = "patch-int-tap" // on br-int, peer PatchTapToInt
	PatchTapToInt = "patch-tap-int" // on br-tap
	PatchTunToTap = "patch-tun-tap" // on br-tun, peer PatchTapToTun
	PatchTapToTun = "patch-tap-tun" // on br-tap
)

// OpenFlow tables.
//
// br-int: 0 classifies (TaaS delivery from br-tap, provider-network patch ports), 58 and 59
// mirror (TaaS OUT and IN copies, with clone() so every tap flow that matches a packet gets
// its copy), 60 switches (NORMAL).
//
// br-tun: the OVS agent's tables (0 classify, 2 from br-int, 4 from VXLAN tunnels, 10 learn,
// 20 unicast, 22 flood) plus the TaaS driver's (30 send unicast, 31 send flood, 35 classify,
// 36/37 destination/source check, 38/39 destination/source respond).
//
// br-tap: 0 classify, 1 receive local mirror traffic, 2 receive remote mirror traffic.
const (
	tIntClassify  = 0
	tIntMirrorOut = 58
	tIntMirrorIn  = 59
	tIntSwitch    = 60

	tTunClassify   = 0
	tTunFromInt    = 2
	tTunVXLAN      = 4
	tTunLearn      = 10
	tTunUnicast    = 20
	tTunFlood      = 22
	tTaasSendUcast = 30
	tTaasSendFlood = 31
	tTaasClassify  = 35
	tTaasDstCheck  = 36
	tTaasSrcCheck  = 37
	tTaasDstResp   = 38
	tTaasSrcResp   = 39

	tTapClassify = 0
	tTapRecvLoc  = 1
	tTapRecvRem  = 2
)

// The VLAN of a mirrored frame inside br-tun is a message type (TaaS remote mirroring).
const (
	taasUnicast = 0 // a mirrored frame to a learned destination
	taasFlood   = 1 // a mirrored frame flooded to every tunnel
	taasReply   = 2 // "I am the destination" from the service's host
)

// Local VLANs are taken from 1 up to the first tap id, so a local VLAN never equals a tap id.
const maxLocalVLAN = taas.FirstTapID - 1

// physPatchNames returns the patch ports between br-int and a physical bridge, as the OVS
// agent names them: int-<bridge> on br-int and phy-<bridge> on the bridge, shortened with a
// hash when longer than 15 characters.
func physPatchNames(bridge string) (onInt, onPhys string) {
	return ifName("int-", bridge), ifName("phy-", bridge)
}

func ifName(prefix, name string) string {
	if len(prefix)+len(name) <= 15 {
		return prefix + name
	}
	sum := sha1.Sum([]byte(name))
	keep := 15 - len(prefix) - 6
	return prefix + name[:keep] + hex.EncodeToString(sum[:])[:6]
}

// TunnelPortName is the br-tun port of a remote tunnel endpoint, as the OVS agent names it:
// vxlan-<IPv4 in hex>, or a hash for IPv6.
func TunnelPortName(remote net.IP) string {
	if v4 := remote.To4(); v4 != nil {
		return fmt.Sprintf("vxlan-%02x%02x%02x%02x", v4[0], v4[1], v4[2], v4[3])
	}
	sum := sha1.Sum(remote.To16())
	return "vxlan-" + hex.EncodeToString(sum[:])[:8]
}

// Network types as the dataplane records them.
const (
	typeLocal = "local"
	typeFlat  = "flat"
	typeVLAN  = "vlan"
	typeVXLAN = "vxlan"
)

// netRecord is one network's plumbing on this host, kept in br-int's external_ids
// (netsource-net-<network id> = "lvid=5,type=vlan,phys=br-phys,seg=101") so a restarted
// agent finds the same local VLAN and the flows it computes equal the ones installed.
type netRecord struct {
	ID   string
	LVID int
	Type string
	Phys string // physical bridge (flat, vlan)
	Seg  int    // VLAN id (vlan) or VNI (vxlan)
}

// svcRecord is one tap service delivered on this host (netsource-tapsvc-<id>).
type svcRecord struct {
	ID     string
	TapID  int
	Device string // the service port's device on br-int
}

// flowRecord is one tap flow whose source port is on this host (netsource-tapflow-<id>).
type flowRecord struct {
	ID     string
	TapID  int
	Dir    taas.Direction
	Device string // the source port's device on br-int
}

const (
	netKeyPrefix  = "netsource-net-"
	svcKeyPrefix  = "netsource-tapsvc-"
	flowKeyPrefix = "netsource-tapflow-"
)

func (r netRecord) key() string  { return netKeyPrefix + r.ID }
func (r svcRecord) key() string  { return svcKeyPrefix + r.ID }
func (r flowRecord) key() string { return flowKeyPrefix + r.ID }

func (r netRecord) value() string {
	v := fmt.Sprintf("lvid=%d,type=%s", r.LVID, r.Type)
	if r.Phys != "" {
		v += ",phys=" + r.Phys
	}
	if r.Seg != 0 {
		v += fmt.Sprintf(",seg=%d", r.Seg)
	}
	return v
}

func (r svcRecord) value() string { return fmt.Sprintf("tap=%d,device=%s", r.TapID, r.Device) }

func (r flowRecord) value() string {
	return fmt.Sprintf("tap=%d,dir=%s,device=%s", r.TapID, r.Dir, r.Device)
}

func fields(v string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		if k, val, ok := strings.Cut(kv, "="); ok {
			out[k] = val
		}
	}
	return out
}

// records reads the records of br-int's external_ids; malformed ones are skipped.
func records(ids map[string]string) (map[string]netRecord, map[string]svcRecord, map[string]flowRecord) {
	nets, svcs, flows := map[string]netRecord{}, map[string]svcRecord{}, map[string]flowRecord{}
	for k, v := range ids {
		f := fields(v)
		switch {
		case strings.HasPrefix(k, netKeyPrefix):
			r := netRecord{ID: strings.TrimPrefix(k, netKeyPrefix), Type: f["type"], Phys: f["phys"]}
			r.LVID, _ = strconv.Atoi(f["lvid"])
			r.Seg, _ = strconv.Atoi(f["seg"])
			if r.LVID >= 1 && r.LVID <= maxLocalVLAN && r.Type != "" {
				nets[r.ID] = r
			}
		case strings.HasPrefix(k, svcKeyPrefix):
			r := svcRecord{ID: strings.TrimPrefix(k, svcKeyPrefix), Device: f["device"]}
			r.TapID, _ = strconv.Atoi(f["tap"])
			if r.TapID > 0 && r.Device != "" {
				svcs[r.ID] = r
			}
		case strings.HasPrefix(k, flowKeyPrefix):
			r := flowRecord{ID: strings.TrimPrefix(k, flowKeyPrefix), Dir: taas.Direction(f["dir"]), Device: f["device"]}
			r.TapID, _ = strconv.Atoi(f["tap"])
			if r.TapID > 0 && r.Device != "" {
				flows[r.ID] = r
			}
		}
	}
	return nets, svcs, flows
}

// fdbState is a VXLAN network's l2population entries: flooding VTEPs and unicast MACs.
type fdbState struct {
	flood   []string          // remote IPs
	unicast map[string]string // MAC -> remote IP
}

// model is everything the flows are computed from.
type model struct {
	nets      map[string]netRecord
	svcs      map[string]svcRecord
	flows     map[string]flowRecord
	fdb       map[int]fdbState // by VNI; absent: no l2population entries known yet
	tunneling bool             // br-tun exists (vxlan.local_ip is set)
	l2pop     bool
}

// physBridges lists the physical bridges the networks use, sorted.
func (m *model) physBridges() []string {
	set := map[string]bool{}
	for _, n := range m.nets {
		if n.Phys != "" {
			set[n.Phys] = true
		}
	}
	out := make([]string, 0, len(set))
	for b := range set {
		out = append(out, b)
	}
	sort.Strings(out)
	return out
}

// flowSet collects flows by bridge, first writer of a key wins.
type flowSet map[string]map[string]Flow

func (s flowSet) add(bridge string, f Flow) {
	if s[bridge] == nil {
		s[bridge] = map[string]Flow{}
	}
	if _, ok := s[bridge][f.key()]; !ok {
		s[bridge][f.key()] = f
	}
}

func (s flowSet) list(bridge string) []Flow {
	out := make([]Flow, 0, len(s[bridge]))
	for _, f := range s[bridge] {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Flow) int { return strings.Compare(a.key(), b.key()) })
	return out
}

func resubmit(table int) string { return fmt.Sprintf("resubmit(,%d)", table) }
func output(port int) string    { return fmt.Sprintf("output:%d", port) }

// hexID is a register or tunnel key value as ovs-ofctl prints it.
func hexID(n int) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("0x%x", n)
}

// buildFlows computes every flow netsource wants, by bridge, from the model and the
// database (port numbers, MACs, tunnels). Flows that need a port without an OpenFlow port
// number are left out until it has one.
func buildFlows(m *model, db *dbSnapshot) flowSet {
	fs := flowSet{}
	base := Cookie(kindBase, 0)
	intTap := db.ofport(BrInt, PatchIntToTap)
	tapInt := db.ofport(BrTap, PatchTapToInt)

	// br-int: classify, mirror, switch.
	fs.add(BrInt, Flow{Cookie: base, Table: tIntClassify, Priority: 0, Actions: resubmit(tIntMirrorOut)})
	fs.add(BrInt, Flow{Cookie: base, Table: tIntMirrorOut, Priority: 0, Actions: resubmit(tIntMirrorIn)})
	fs.add(BrInt, Flow{Cookie: base, Table: tIntMirrorIn, Priority: 0, Actions: resubmit(tIntSwitch)})
	fs.add(BrInt, Flow{Cookie: base, Table: tIntSwitch, Priority: 3, Actions: "NORMAL"})
	if intTap > 0 {
		// From br-tap only deliveries to a local tap service (priority 25) come back.
		fs.add(BrInt, Flow{Cookie: base, Table: tIntClassify, Priority: 24, Match: fmt.Sprintf("in_port=%d", intTap), Actions: "drop"})
	}

	// Provider networks: VLAN translation on the physical bridge in both directions, so
	// br-int only ever sees local VLANs (see docs/design.md).
	for _, phys := range m.physBridges() {
		onInt, onPhys := physPatchNames(phys)
		intPort, physPort := db.ofport(BrInt, onInt), db.ofport(phys, onPhys)
		if intPort > 0 {
			fs.add(BrInt, Flow{Cookie: base, Table: tIntClassify, Priority: 2, Match: fmt.Sprintf("in_port=%d", intPort), Actions: "drop"})
		}
		fs.add(phys, Flow{Cookie: base, Table: 0, Priority: 0, Actions: "NORMAL"})
		if physPort > 0 {
			fs.add(phys, Flow{Cookie: base, Table: 0, Priority: 4, Match: fmt.Sprintf("in_port=%d", physPort), Actions: "drop"})
		}
	}
	netIDs := make([]string, 0, len(m.nets))
	for id := range m.nets {
		netIDs = append(netIDs, id)
	}
	sort.Strings(netIDs)
	tunnels := tunnelPorts(db)
	for _, id := range netIDs {
		n := m.nets[id]
		c := Cookie(kindNetwork, uint64(n.LVID))
		switch n.Type {
		case typeFlat, typeVLAN:
			onInt, onPhys := physPatchNames(n.Phys)
			intPort, physPort := db.ofport(BrInt, onInt), db.ofport(n.Phys, onPhys)
			if intPort == 0 || physPort == 0 {
				continue
			}
			fs.add(BrInt, Flow{Cookie: c, Table: tIntClassify, Priority: 3, Match: fmt.Sprintf("in_port=%d,dl_vlan=%d", intPort, n.LVID),
				Actions: resubmit(tIntMirrorOut)})
			if n.Type == typeVLAN {
				fs.add(n.Phys, Flow{Cookie: c, Table: 0, Priority: 5, Match: fmt.Sprintf("in_port=%d,dl_vlan=%d", physPort, n.LVID),
					Actions: setVLAN(n.Seg) + ",NORMAL"})
				fs.add(n.Phys, Flow{Cookie: c, Table: 0, Priority: 3, Match: fmt.Sprintf("dl_vlan=%d", n.Seg),
					Actions: setVLAN(n.LVID) + "," + output(physPort)})
			} else {
				fs.add(n.Phys, Flow{Cookie: c, Table: 0, Priority: 5, Match: fmt.Sprintf("in_port=%d,dl_vlan=%d", physPort, n.LVID),
					Actions: "pop_vlan,NORMAL"})
				fs.add(n.Phys, Flow{Cookie: c, Table: 0, Priority: 3, Match: "vlan_tci=0x0000/0x1fff",
					Actions: pushVLAN(n.LVID) + "," + output(physPort)})
			}
		case typeVXLAN:
			if !m.tunneling {
				continue
			}
			fs.add(BrTun, Flow{Cookie: c, Table: tTunVXLAN, Priority: 1, Match: "tun_id=" + hexID(n.Seg),
				Actions: pushVLAN(n.LVID) + "," + resubmit(tTunLearn)})
			toTunnel := fmt.Sprintf("pop_vlan,set_field:%s->tun_id", hexID(n.Seg))
			flood := tunnels
			fdb, known := m.fdb[n.Seg]
			if m.l2pop && known {
				flood = nil
				for _, ip := range fdb.flood {
					if p := db.ofport(BrTun, TunnelPortName(net.ParseIP(ip))); p > 0 {
						flood = append(flood, p)
					}
				}
				slices.Sort(flood)
				for mac, ip := range fdb.unicast {
					if p := db.ofport(BrTun, TunnelPortName(net.ParseIP(ip))); p > 0 {
						fs.add(BrTun, Flow{Cookie: c, Table: tTunUnicast, Priority: 2, Match: fmt.Sprintf("dl_vlan=%d,dl_dst=%s", n.LVID, mac),
							Actions: toTunnel + "," + output(p)})
					}
				}
			}
			if len(flood) > 0 {
				acts := []string{toTunnel}
				for _, p := range flood {
					acts = append(acts, output(p))
				}
				fs.add(BrTun, Flow{Cookie: c, Table: tTunFlood, Priority: 1, Match: fmt.Sprintf("dl_vlan=%d", n.LVID),
					Actions: strings.Join(acts, ",")})
			}
		}
	}

	if m.tunneling {
		tunBase(fs, db, tunnels)
	}
	tapBase(fs, db, m.tunneling)
	taasFlows(fs, m, db, intTap, tapInt)
	trunkFlows(fs, db)
	return fs
}

// tunnelPorts lists the OpenFlow ports of netsource's tunnels on br-tun, sorted.
func tunnelPorts(db *dbSnapshot) []int {
	var out []int
	if b := db.Bridges[BrTun]; b != nil {
		for _, name := range b.Ports {
			if i := db.Interfaces[name]; i != nil && i.ExternalIDs[extOwner] == ownerTunnel && i.OFPort > 0 {
				out = append(out, i.OFPort)
			}
		}
	}
	slices.Sort(out)
	return out
}

// tunBase is br-tun's static pipeline: the OVS agent's tables and the TaaS driver's.
func tunBase(fs flowSet, db *dbSnapshot, tunnels []int) {
	base := Cookie(kindBase, 0)
	tun := Cookie(kindTunnel, 0)
	patchInt := db.ofport(BrTun, PatchTunToInt)
	patchTap := db.ofport(BrTun, PatchTunToTap)
	add := func(table, prio int, match, actions string) {
		fs.add(BrTun, Flow{Cookie: base, Table: table, Priority: prio, Match: match, Actions: actions})
	}
	add(tTunClassify, 0, "", "drop")
	if patchInt > 0 {
		add(tTunClassify, 1, fmt.Sprintf("in_port=%d", patchInt), resubmit(tTunFromInt))
		add(tTunLearn, 1, "", "learn(table=20,hard_timeout=300,priority=1,cookie="+fmt.Sprintf("%#x", Cookie(kindLearned, 0))+
			",NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:OXM_OF_IN_PORT[]),"+
			output(patchInt))
	}
	if patchTap > 0 {
		add(tTunClassify, 1, fmt.Sprintf("in_port=%d", patchTap), resubmit(tTaasSendUcast))
		add(tTaasDstResp, 2, "reg0="+hexID(taasUnicast), output(patchTap))
		add(tTaasDstResp, 1, "reg0="+hexID(taasFlood)+","+vlanPresent,
			output(patchTap)+",move:NXM_OF_VLAN_TCI[0..11]->NXM_NX_TUN_ID[0..11],"+setVLAN(taasReply)+",IN_PORT")
	}
	add(tTunFromInt, 1, "dl_dst=00:00:00:00:00:00/01:00:00:00:00:00", resubmit(tTunUnicast))
	add(tTunFromInt, 1, "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00", resubmit(tTunFlood))
	add(tTunVXLAN, 0, "", "drop")
	add(tTunUnicast, 0, "", resubmit(tTunFlood))
	add(tTunFlood, 0, "", "drop")
	add(tTaasSendUcast, 0, "", resubmit(tTaasSendFlood))
	add(tTaasSendFlood, 0, "", "drop")
	for _, t := range []int{taasUnicast, taasFlood} {
		add(tTaasClassify, 1, "reg0="+hexID(t), resubmit(tTaasDstCheck))
	}
	add(tTaasClassify, 1, "reg0="+hexID(taasReply), resubmit(tTaasSrcCheck))
	add(tTaasDstCheck, 0, "", "drop")
	add(tTaasSrcCheck, 0, "", "drop")
	add(tTaasSrcResp, 1, "", "learn(table=30,hard_timeout=60,priority=1,cookie="+fmt.Sprintf("%#x", Cookie(kindTaasLearn, 0))+
		",NXM_OF_VLAN_TCI[0..11],load:NXM_OF_VLAN_TCI[0..11]->NXM_NX_TUN_ID[0..11],load:0->NXM_OF_VLAN_TCI[0..11],output:NXM_OF_IN_PORT[])")

	// Tunnel ports: classification, and TaaS's flood of mirrored frames (tun_id <- tap id
	// carried in the VLAN, VLAN <- 1) to every tunnel.
	for _, p := range tunnels {
		fs.add(BrTun, Flow{Cookie: tun, Table: tTunClassify, Priority: 1, Match: fmt.Sprintf("in_port=%d", p), Actions: resubmit(tTunVXLAN)})
	}
	if len(tunnels) > 0 {
		acts := []string{"move:NXM_OF_VLAN_TCI[0..11]->NXM_NX_TUN_ID[0..11]", setVLAN(taasFlood)}
		for _, p := range tunnels {
			acts = append(acts, output(p))
		}
		fs.add(BrTun, Flow{Cookie: tun, Table: tTaasSendFlood, Priority: 1, Match: vlanPresent, Actions: strings.Join(acts, ",")})
	}
}

// tapBase is br-tap's static pipeline.
func tapBase(fs flowSet, db *dbSnapshot, tunneling bool) {
	base := Cookie(kindBase, 0)
	add := func(table, prio int, match, actions string) {
		fs.add(BrTap, Flow{Cookie: base, Table: table, Priority: prio, Match: match, Actions: actions})
	}
	add(tTapClassify, 0, "", "drop")
	if p := db.ofport(BrTap, PatchTapToInt); p > 0 {
		add(tTapClassify, 1, fmt.Sprintf("in_port=%d", p), resubmit(tTapRecvLoc))
	}
	toTun := db.ofport(BrTap, PatchTapToTun)
	if tunneling && toTun > 0 {
		add(tTapClassify, 1, fmt.Sprintf("in_port=%d", toTun), resubmit(tTapRecvRem))
		add(tTapRecvLoc, 0, "", output(toTun))
	} else {
		add(tTapRecvLoc, 0, "", "drop")
	}
	add(tTapRecvRem, 0, "", "drop")
}

// classifyFromTunnel is the br-tun table 4 flow of a tap id: the VLAN of the frame (the
// message type) goes to reg0, the tap id from the tunnel key into the VLAN.
func classifyFromTunnel(cookie uint64, tapID int) Flow {
	return Flow{Cookie: cookie, Table: tTunVXLAN, Priority: 2, Match: "tun_id=" + hexID(tapID),
		Actions: "move:NXM_OF_VLAN_TCI[0..11]->NXM_NX_REG0[0..11],move:NXM_NX_TUN_ID[0..11]->NXM_OF_VLAN_TCI[0..11]," + resubmit(tTaasClassify)}
}

// taasFlows are the flows of tap services (delivery) and tap flows (mirroring).
func taasFlows(fs flowSet, m *model, db *dbSnapshot, intTap, tapInt int) {
	svcIDs := make([]string, 0, len(m.svcs))
	for id := range m.svcs {
		svcIDs = append(svcIDs, id)
	}
	sort.Strings(svcIDs)
	for _, id := range svcIDs {
		s := m.svcs[id]
		c := TapServiceCookie(s.TapID)
		port := db.ofport(BrInt, s.Device)
		if port > 0 && intTap > 0 {
			// TaaS sets the service port's local VLAN here; netsource removes the tag, so the
			// service VM sees frames as the source VM sent or received them.
			fs.add(BrInt, Flow{Cookie: c, Table: tIntClassify, Priority: 25, Match: fmt.Sprintf("in_port=%d,dl_vlan=%d", intTap, s.TapID),
				Actions: "pop_vlan," + output(port)})
		}
		fs.add(BrTap, Flow{Cookie: c, Table: tTapRecvLoc, Priority: 1, Match: fmt.Sprintf("dl_vlan=%d", s.TapID), Actions: "IN_PORT"})
		if tapInt > 0 {
			fs.add(BrTap, Flow{Cookie: c, Table: tTapRecvRem, Priority: 1, Match: fmt.Sprintf("dl_vlan=%d", s.TapID), Actions: output(tapInt)})
		}
		if m.tunneling {
			fs.add(BrTun, classifyFromTunnel(c, s.TapID))
			fs.add(BrTun, Flow{Cookie: c, Table: tTaasDstCheck, Priority: 1, Match: "tun_id=" + hexID(s.TapID), Actions: resubmit(tTaasDstResp)})
		}
	}

	out := map[int][]int{}    // source ofport -> tap ids (OUT)
	in := map[string][]int{}  // source MAC -> tap ids (IN)
	sources := map[int]bool{} // tap ids with a local source
	for _, f := range m.flows {
		_, iface := db.portOn(BrInt, f.Device)
		if iface == nil || iface.OFPort <= 0 {
			continue
		}
		sources[f.TapID] = true
		if f.Dir.Out() {
			out[iface.OFPort] = appendUnique(out[iface.OFPort], f.TapID)
		}
		if mac := normMAC(iface.ExternalIDs["attached-mac"]); f.Dir.In() && mac != "" {
			in[mac] = appendUnique(in[mac], f.TapID)
		}
	}
	if intTap > 0 {
		for port, ids := range out {
			// What a VM sends arrives untagged (or with its own tags) from its access port.
			fs.add(BrInt, Flow{Cookie: TapFlowCookie(ids[0]), Table: tIntMirrorOut, Priority: 20, Match: fmt.Sprintf("in_port=%d", port),
				Actions: mirrorActions(ids, true, intTap, tIntMirrorIn)})
		}
		for mac, ids := range in {
			// What a VM receives comes untagged from local ports, tagged with the local VLAN
			// from br-tun and the physical bridges.
			fs.add(BrInt, Flow{Cookie: TapFlowCookie(ids[0]), Table: tIntMirrorIn, Priority: 20, Match: "vlan_tci=0x0000/0x1000,dl_dst=" + mac,
				Actions: mirrorActions(ids, true, intTap, tIntSwitch)})
			fs.add(BrInt, Flow{Cookie: TapFlowCookie(ids[0]), Table: tIntMirrorIn, Priority: 20, Match: vlanPresent + ",dl_dst=" + mac,
				Actions: mirrorActions(ids, false, intTap, tIntSwitch)})
		}
	}
	if m.tunneling {
		for id := range sources {
			fs.add(BrTun, classifyFromTunnel(TapFlowCookie(id), id)) // a local service's flow wins (added first)
			fs.add(BrTun, Flow{Cookie: TapFlowCookie(id), Table: tTaasSrcCheck, Priority: 1, Match: "tun_id=" + hexID(id), Actions: resubmit(tTaasSrcResp)})
		}
	}
}

// mirrorActions copies the packet once per tap id, vlanPresent with it, to br-tap, and goes on.
// An untagged packet gets the tap id pushed; a vlanPresent one (a local VLAN from br-tun or a
// physical bridge) has its VLAN replaced, so br-int's delivery, which pops the tap id,
// gives the service the frame as the source VM sends or receives it.
func mirrorActions(ids []int, push bool, intTap, next int) string {
	var acts []string
	for _, id := range ids {
		tag := setVLAN(id)
		if push {
			tag = pushVLAN(id)
		}
		acts = append(acts, fmt.Sprintf("clone(%s,%s)", tag, output(intTap)))
	}
	return strings.Join(append(acts, resubmit(next)), ",")
}

// VLAN actions in the OpenFlow 1.4 form the bundles use (ovs-ofctl encodes mod_vlan_vid
// for OpenFlow 1.1+ as an unconditional push, which would double-tag a vlanPresent frame; and
// the OpenFlow 1.0 dump prints both forms as mod_vlan_vid). setVLAN needs a match that
// guarantees a VLAN header.
const vlanPresent = "vlan_tci=0x1000/0x1000"

func pushVLAN(vid int) string { return "push_vlan:0x8100," + setVLAN(vid) }
func setVLAN(vid int) string  { return fmt.Sprintf("set_field:%d->vlan_vid", vid|0x1000) }

func appendUnique(ids []int, id int) []int {
	if slices.Contains(ids, id) {
		return ids
	}
	ids = append(ids, id)
	slices.Sort(ids)
	return ids
}

func normMAC(s string) string {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return ""
	}
	return mac.String()
}
