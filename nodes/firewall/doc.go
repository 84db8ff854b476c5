// Package firewall is netsource's contract with nftables: security groups and
// anti-spoofing for the ports on one host's Linux bridges, replacing the Neutron Linux
// bridge agent's iptables firewall driver and its ebtables ARP and MAC protection.
//
// # Contract
//
// A Firewall (the netlink implementation New, or Fake for tests) owns exactly two tables,
// `table bridge netsource` and `table inet netsource`, and nothing else. Apply takes the
// whole desired state of the host (Ruleset: the filtered ports with their MACs, addresses
// and groups; the unfiltered devices; the groups' rules; the members of remote groups on
// every host) and makes the tables exactly that in ONE netlink batch, which the kernel
// commits atomically: a changed chain is flushed and refilled in the same transaction, so
// no packet ever meets a port without its rules. Applying the same Ruleset twice sends
// nothing. Flush deletes both tables (and only them); Verify detects drift.
//
// # Tables
//
// The bridge family here has no conntrack (no nf_conntrack_bridge), so the stateless part
// runs in the bridge table and the stateful part in the inet table, which br_netfilter
// feeds with bridged IPv4 and IPv6 packets (net.bridge.bridge-nf-call-ip{,6}tables=1,
// per namespace: New and Verify set them).
//
//	bridge netsource
//	  prerouting-ports  hook prerouting -300: iifname vmap @from-ports; iifname "tap*" drop
//	  forward-ports     hook forward -300:    oifname vmap @to-ports;   oifname "tap*" drop
//	  from-<tap>        mark = port index; source MAC, ARP sender and IP/IPv6 source must be
//	                    the port's own or its address pairs'; DHCP server replies and router
//	                    advertisements from the VM dropped; DHCP discover and DAD allowed
//	  to-<tap>          mark |= port index << 16
//	inet netsource
//	  forward-egress    hook forward 0:  ct established,related accept; mark&0xffff vmap @egress-ports
//	  forward-ingress   hook forward 1:  ct established,related accept; mark&0xffff0000 vmap @ingress-ports
//	  input-egress      hook input 0:    the sending port's egress rules for traffic to the host
//	  egress-<tap>      ct invalid drop; jump egress-common; jump sg-<group>-egress...; drop
//	  ingress-<tap>     ct invalid drop; jump ingress-common; jump sg-<group>-ingress...; drop
//	  sg-<group>-<dir>  one rule per security group rule, shared by every port of the group
//	  rg-<group>-v4/v6  the addresses of the group's members on every host (remote_group_id)
//	  netsource-state   a set whose one element's comment is the content hash of the tables
//
// An accept in one base chain lets the packet on to the next, so egress (priority 0) and
// ingress (priority 1) are two independent checks and a security group's chain can end
// each allowed flow with accept. A port without groups allows egress and denies ingress,
// as Neutron does. Devices listed as Open (port_security_enabled false, network:* ports,
// load-balancer VIPs) map to accept; unknown tap devices are dropped, so a port plugged
// before its rules exist is closed rather than open.
//
// # Implementation
//
// compile turns a Ruleset into a model (tables of chains, sets and verdict maps) through a
// small statement form (ir.go) with two renderers: nft text (the Fake's Dump, transaction
// scripts, the `nft -f` baseline) and netlink expressions (netlink_linux.go, the same
// expressions nft compiles from that text, checked by a privileged test that loads both
// and compares `nft list`). diff orders the changes between two models so every reference
// in the batch is valid. The compiler reuses unchanged chains, so a change at a thousand
// ports costs milliseconds. Batches are sent as nft sends them (batch_linux.go): one
// acknowledgement for the whole batch, errors for what failed. Port indexes (marks) are
// kept across changes and read back from the kernel after a restart; when the kernel's
// state hash (saved at full replaces, resyncs and Close) equals the desired one, a
// restarted agent changes nothing at all.
package firewall
