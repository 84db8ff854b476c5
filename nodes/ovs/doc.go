// Package ovs is the openvswitch mechanism: a links.Dataplane that plugs ports into Open
// vSwitch as the Neutron OVS agent does, and a taas.Mirror that programs the TaaS OVS
// driver's pipeline. It drives OVS through its command-line tools only (ovs-vsctl for the
// database, ovs-ofctl with OpenFlow 1.4 bundles for flows); no OVSDB or OpenFlow library
// is needed.
//
// # Bridges
//
//	br-int   every port, an access port tagged with its network's local VLAN
//	br-tun   VXLAN tunnels to the other hosts (vxlan-<remote ip in hex>), when vxlan.local_ip is set
//	br-tap   TaaS: mirrored traffic between br-int and br-tun
//	<phys>   the OVS bridge of a physical network (bridge_mappings), made by the operator
//
// with patch ports patch-tun/patch-int (br-int/br-tun), patch-int-tap/patch-tap-int
// (br-int/br-tap), patch-tun-tap/patch-tap-tun (br-tun/br-tap) and int-<phys>/phy-<phys>.
// New creates the first three and their patch ports when missing (fail_mode secure, the
// configured datapath_type); physical bridges must exist.
//
// # State and ownership
//
// What the flows are computed from is kept in OVS itself, in br-int's external_ids:
// netsource-net-<network id> (local VLAN, type, physical bridge, segmentation id),
// netsource-tapsvc-<id> (tap id, service port device) and netsource-tapflow-<id> (tap id,
// direction, source port device). A restarted agent therefore finds the same local VLANs
// and computes exactly the flows that are installed: a restart changes nothing. Ports carry
// external_ids iface-id, attached-mac, iface-status and netsource=port; tunnels
// netsource=tunnel and netsource-host=<peer>.
//
// Every flow netsource installs carries a cookie 0x4e53 ("NS") << 48 | kind << 40 | object.
// A sync dumps the bridge's flows with that prefix only (ovs-ofctl dump-flows with a cookie
// mask, OpenFlow 1.4 so the dump prints actions as they were written), compares them with
// the wanted set by table, priority and match, and applies the difference as one bundle of
// delete_strict (with cookie=<ours>/-1) and add. Flows with other cookies are never
// touched; learned flows (MAC learning, TaaS destination learning) have their own kinds and
// are left to their timeouts. Concurrent changes share syncs.
//
// # Networks
//
// A network gets a local VLAN (1-3899, so never equal to a tap id). VXLAN: br-tun table 4
// maps the VNI to the local VLAN and table 22 floods the local VLAN to the tunnels (all of
// them, or with l2population the VTEPs SetFDB names, table 20 sending known MACs to their
// VTEP). Flat and VLAN: the physical bridge translates in both directions (outbound
// local VLAN -> segmentation id or untagged, inbound the reverse), so br-int only ever sees
// local VLANs; anything else crossing the patch ports is dropped.
//
// # TaaS
//
// The base pipeline of the TaaS OVS driver (reference section 2): br-tap table 0 classifies
// (from br-int -> 1, from br-tun -> 2), table 1 receives local mirror traffic (default: to
// br-tun), table 2 remote (default: drop); br-tun table 0 sends br-tap's traffic to table
// 30 (learned unicast, default -> 31 flood to every tunnel with VLAN 1 as the message type
// and the tap id as tunnel key), table 35 classifies received TaaS frames on reg0, 36/37
// check destination/source, 38 delivers (and answers a flooded frame with VLAN 2) and 39
// learns the destination's tunnel port (learn action, 60 s). A tap service adds its
// delivery: br-int table 0 priority 25 (tap id -> pop the VLAN, output to the service
// port), br-tap table 1 (bounce a local copy back to br-int) and table 2 (accept a remote
// copy), br-tun table 4 (tunnel key = tap id -> classify) and 36. A tap flow copies with
// clone() in br-int tables 58 (OUT: in_port = the source port) and 59 (IN: dl_dst = its
// MAC), one clone per tap id, so several tap flows on one port, or OUT on one port and IN
// on its peer, all get their copy; and adds br-tun tables 4 and 37 for its tap id.
//
// # Trunks
//
// A trunk sub-port is a patch pair on br-int: tap<sub-port id[:11]>, an access port in its
// network's local VLAN carrying the sub-port's iface-id, and its twin spt-<id[:11]> in the
// dead VLAN 4095. Two flows in br-int table 0 join the twin to the parent's port, popping
// the sub-port's VLAN on the way in and pushing it on the way out (trunk.go). No trunk
// bridge: the parent stays an ordinary br-int port.
package ovs
