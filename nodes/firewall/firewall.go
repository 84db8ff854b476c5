package firewall

import (
	"context"
	"errors"
	"net/netip"
)

// TableName is the name of netsource's two tables, `table bridge netsource` and
// `table inet netsource`. netsource never reads, changes or deletes any other table.
const TableName = "netsource"

// MaxPorts is the number of filtered ports one host can have: a port's index lives in 16
// bits of the packet mark.
const MaxPorts = 0xffff

// ErrDrift says the kernel no longer holds what netsource last applied (someone changed or
// deleted its tables, or turned br_netfilter's sysctls off). The next Apply replaces the
// tables whole.
var ErrDrift = errors.New("firewall state in the kernel differs from what netsource applied")

// Firewall is netsource's contract with nftables on one host. It owns exactly the two
// netsource tables; every change is one atomic transaction.
type Firewall interface {
	// Apply makes netsource's tables exactly what rs describes, in one atomic transaction
	// covering both tables, so no packet ever sees a half-applied state. It is idempotent:
	// applying the same ruleset again sends nothing to the kernel (Change.Ops == 0). The
	// first Apply after New replaces the tables whole (their content is identical when the
	// ruleset did not change, so a restart changes nothing the packets see); later ones
	// send only the difference. Problems of single ports or rules do not fail the Apply:
	// they are returned in Change.Problems and the affected port fails closed.
	Apply(ctx context.Context, rs *Ruleset) (Change, error)
	// Verify compares the kernel with what was last applied (chains, rule counts, set and
	// map elements, and the br_netfilter sysctls) and returns an error wrapping ErrDrift
	// when they differ; the next Apply then replaces the tables whole.
	Verify(ctx context.Context) error
	// Flush deletes netsource's tables, and nothing else, in one transaction. Tables that
	// do not exist are not an error.
	Flush(ctx context.Context) error
	// Dump returns netsource's tables as text: `nft list table` of both for the real
	// implementation, the canonical sorted form of the simulated kernel for the fake.
	Dump(ctx context.Context) (string, error)
	// Close releases the kernel handles.
	Close() error
}

// Change is what one Apply did.
type Change struct {
	// Full: the tables were replaced whole (first Apply, or after drift or an error).
	Full bool
	// Ops is the number of operations in the transaction; 0 means nothing was sent.
	Ops int
	// Script is the transaction as nft commands (for logs and tests).
	Script string
	// Problems are the ports and rules that could not be rendered; each port concerned
	// drops all its traffic instead (fail closed), each rule is left out.
	Problems []Problem
}

// Problem is a port or rule that could not be rendered.
type Problem struct {
	Port  string // port id, or ""
	Group string // security group id, or ""
	Rule  string // rule id, or ""
	Err   error
}

func (p Problem) Error() string {
	switch {
	case p.Port != "":
		return "port " + p.Port + ": " + p.Err.Error()
	case p.Rule != "":
		return "security group " + p.Group + " rule " + p.Rule + ": " + p.Err.Error()
	default:
		return "security group " + p.Group + ": " + p.Err.Error()
	}
}

// Ruleset is the whole desired firewall state of one host.
type Ruleset struct {
	// Ports are the local ports netsource filters: port security on and not owned by the
	// network (device_owner network:*).
	Ports []Port
	// Open are the devices of local ports that pass unfiltered (port_security_enabled
	// false, network-owned ports, load-balancer VIPs). Every other tap* device on a bridge
	// drops its traffic until the firewall knows it, so a port plugged before its rules
	// exist is never open.
	Open []string
	// Groups are the security groups by id: at least those the ports use.
	Groups map[string]Group
	// Members are the addresses of every member port of a security group, on every host,
	// by group id. Only groups that rules name as remote_group_id need an entry.
	Members map[string][]netip.Addr
}

// Port is one filtered port.
type Port struct {
	ID     string
	Device string // tap + port id[:11]
	// MACs the port may send from: its own and those of its allowed address pairs.
	MACs []string
	// Addrs the port may send from: its fixed IPs (host prefixes) and its allowed address
	// pairs (any prefix; a /0 turns that family's source check off, as in Neutron).
	Addrs []netip.Prefix
	// Groups are the port's security group ids. None: ingress is denied, egress allowed.
	Groups []string
}

// Group is one security group.
type Group struct {
	ID    string
	Rules []Rule
}

// Rule is one security group rule, with Neutron's field meanings.
type Rule struct {
	ID        string
	Direction string // ingress | egress
	Ethertype string // IPv4 | IPv6
	// Protocol is tcp, udp, sctp, icmp, icmpv6, any, "" or a number 0-255 (0: any).
	Protocol string
	// PortMin and PortMax are the port range (tcp, udp, sctp) or ICMP type and code; nil
	// leaves them open.
	PortMin, PortMax *int32
	// RemoteIPPrefix limits the remote side to a prefix ("" and /0: anywhere).
	RemoteIPPrefix string
	// RemoteGroupID limits the remote side to the members of a group (Ruleset.Members).
	RemoteGroupID string
}
