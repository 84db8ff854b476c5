package ovs

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/netsource/netsource/nodes/links"
)

// Trunk sub-ports (see doc.go, "Trunks"). A sub-port is a pair of patch ports on br-int:
// tap<sub-port id[:11]>, an ordinary access port in the sub-port's network's local VLAN
// that carries the sub-port's iface-id, and its twin spt-<sub-port id[:11]>, parked in the
// dead VLAN 4095 so NORMAL never switches through it. Two flows join the twin to the
// parent's port: a frame the VM tags with the sub-port's VLAN loses the tag and goes to the
// twin (and so enters br-int again on the sub-port's access port), and a frame br-int sends
// to the sub-port comes out of the twin and goes to the parent with the tag pushed. What
// the flows are computed from is the twin's external_ids (netsource-parent, netsource-vlan,
// netsource-up), so a restarted agent computes the flows that are installed.

const (
	ownerSubPort = "subport"          // netsource=subport on a sub-port's twin
	extParent    = "netsource-parent" // the parent port's device on br-int
	extVLAN      = "netsource-vlan"   // the sub-port's VLAN on the parent
	extUp        = "netsource-up"     // "false": admin_state_up false, frames dropped
	deadVLAN     = 4095               // the OVS agent's DEAD_VLAN_TAG
	kindTrunk    = 0x03               // cookie kind of sub-port flows (id: the twin's ofport)
	twinPrefix   = "spt-"
)

// TwinName is the br-int patch port that joins a sub-port to its parent: spt-<id[:11]>.
func TwinName(subPortID string) string {
	id := subPortID
	if len(id) > 11 {
		id = id[:11]
	}
	return twinPrefix + id
}

// subPortTwin is one sub-port as its twin's external_ids describe it.
type subPortTwin struct {
	name   string
	ofport int
	parent string
	vlan   int
	up     bool
}

// subPortTwins lists the sub-port twins on br-int, sorted by name.
func subPortTwins(db *dbSnapshot) []subPortTwin {
	var out []subPortTwin
	if b := db.Bridges[BrInt]; b != nil {
		for _, name := range b.Ports {
			i := db.Interfaces[name]
			if i == nil || i.ExternalIDs[extOwner] != ownerSubPort {
				continue
			}
			vlan, _ := strconv.Atoi(i.ExternalIDs[extVLAN])
			out = append(out, subPortTwin{name: name, ofport: i.OFPort, parent: i.ExternalIDs[extParent], vlan: vlan,
				up: i.ExternalIDs[extUp] != "false"})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out
}

// trunkFlows translates between the parents' VLANs and the sub-ports' twins in br-int
// table 0. A twin whose parent or VLAN is unusable, or whose sub-port is administratively
// down, drops what it receives (its dead VLAN would otherwise join it to the other twins).
func trunkFlows(fs flowSet, db *dbSnapshot) {
	for _, t := range subPortTwins(db) {
		if t.ofport <= 0 {
			continue
		}
		c := Cookie(kindTrunk, uint64(t.ofport))
		parent := db.ofport(BrInt, t.parent)
		fromTwin := Flow{Cookie: c, Table: tIntClassify, Priority: 30, Match: fmt.Sprintf("in_port=%d", t.ofport), Actions: "drop"}
		if parent <= 0 || t.vlan < 1 || t.vlan > 4094 {
			fs.add(BrInt, fromTwin)
			continue
		}
		fromParent := Flow{Cookie: c, Table: tIntClassify, Priority: 30, Match: fmt.Sprintf("in_port=%d,dl_vlan=%d", parent, t.vlan), Actions: "drop"}
		if t.up {
			fromParent.Actions = "pop_vlan," + output(t.ofport)
			fromTwin.Actions = pushVLAN(t.vlan) + "," + output(parent)
		}
		fs.add(BrInt, fromParent)
		fs.add(BrInt, fromTwin)
	}
}

// subPortTxn is the ovs-vsctl transaction that makes a sub-port's patch pair as wanted;
// empty when it already is.
func subPortTxn(db *dbSnapshot, spec links.PortSpec, lvid int) txn {
	var t txn
	twin := TwinName(spec.ID)
	sp := spec.SubPort
	portIDs := map[string]string{"iface-id": spec.ID, "iface-status": "active", extOwner: ownerPort}
	if spec.Peer.MAC != nil {
		portIDs["attached-mac"] = spec.Peer.MAC.String()
	}
	twinIDs := map[string]string{extOwner: ownerSubPort, extParent: sp.ParentDevice, extVLAN: strconv.Itoa(sp.VLANID),
		extUp: strconv.FormatBool(spec.AdminUp)}
	patch := func(name, peer string, tag int, ids map[string]string) {
		p, i := db.portOn(BrInt, name)
		if p == nil {
			t.add("--may-exist", "add-port", BrInt, name)
		}
		if i == nil || i.Type != "patch" || i.Options["peer"] != peer {
			t.add("set", "Interface", name, "type=patch", "options:peer="+quote(peer))
		}
		if p == nil || p.Tag != tag {
			t.add("set", "Port", name, fmt.Sprintf("tag=%d", tag))
		}
		var sets []string
		for _, k := range sortedKeys(ids) {
			if i == nil || i.ExternalIDs[k] != ids[k] {
				sets = append(sets, "external_ids:"+quote(k)+"="+quote(ids[k]))
			}
		}
		if len(sets) > 0 {
			t.add(append([]string{"set", "Interface", name}, sets...)...)
		}
	}
	patch(spec.Device, twin, lvid, portIDs)
	patch(twin, spec.Device, deadVLAN, twinIDs)
	return t
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
