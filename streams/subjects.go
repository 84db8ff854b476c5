package streams

import (
	"fmt"
	"strings"
	"unicode"
)

// Kind is the kind of a desired aggregate, as used in subjects, status events and the CLI.
type Kind string

// The aggregate kinds of DESIGN.md.
const (
	KindNetwork      Kind = "network"
	KindSecGroup     Kind = "secgroup"
	KindPort         Kind = "port"
	KindTapService   Kind = "tapservice"
	KindTapFlow      Kind = "tapflow"
	KindTrunk        Kind = "trunk"
	KindLoadBalancer Kind = "loadbalancer"
)

// Kinds lists every kind in the order a topology is published: what others refer to first.
var Kinds = []Kind{KindNetwork, KindSecGroup, KindPort, KindTrunk, KindTapService, KindTapFlow, KindLoadBalancer}

// Subject prefixes and stream names.
const (
	DesiredStream = "NETSOURCE_DESIRED"
	StatusStream  = "NETSOURCE_STATUS"
	DesiredRoot   = "ns.desired"
	StatusRoot    = "ns.status"
	agentToken    = "agent"
)

var kindAliases = map[string]Kind{
	"network": KindNetwork, "networks": KindNetwork, "net": KindNetwork,
	"secgroup": KindSecGroup, "secgroups": KindSecGroup, "security_group": KindSecGroup,
	"security_groups": KindSecGroup, "security-group": KindSecGroup, "security-groups": KindSecGroup, "sg": KindSecGroup,
	"port": KindPort, "ports": KindPort,
	"tapservice": KindTapService, "tapservices": KindTapService, "tap_service": KindTapService, "tap_services": KindTapService,
	"tapflow": KindTapFlow, "tapflows": KindTapFlow, "tap_flow": KindTapFlow, "tap_flows": KindTapFlow,
	"trunk": KindTrunk, "trunks": KindTrunk,
	"loadbalancer": KindLoadBalancer, "loadbalancers": KindLoadBalancer, "lb": KindLoadBalancer, "lbs": KindLoadBalancer,
}

// ParseKind accepts a kind by name, plural or common alias.
func ParseKind(s string) (Kind, error) {
	if k, ok := kindAliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q (want network, secgroup, port, tapservice, tapflow, trunk or loadbalancer)", s)
}

// HostScoped reports whether aggregates of this kind live under a host's subjects.
func (k Kind) HostScoped() bool { return k != KindNetwork && k != KindSecGroup }

// CheckToken rejects a value that must not become a subject token: empty, or holding a
// `.`, `*`, `>`, whitespace or a control character.
func CheckToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII {
			return fmt.Errorf("%s %q cannot be a subject token (no '.', '*', '>', whitespace or non-ASCII)", what, s)
		}
	}
	return nil
}

// DesiredSubject is the subject of one aggregate. host is ignored for networks and
// security groups.
func DesiredSubject(kind Kind, host, id string) (string, error) {
	if err := CheckToken(string(kind)+" id", id); err != nil {
		return "", err
	}
	if !kind.HostScoped() {
		return DesiredRoot + "." + string(kind) + "." + id, nil
	}
	if err := CheckToken("host", host); err != nil {
		return "", err
	}
	return DesiredRoot + ".host." + host + "." + string(kind) + "." + id, nil
}

// DesiredAddress is what a desired subject names.
type DesiredAddress struct {
	Kind Kind
	Host string // empty for networks and security groups
	ID   string
}

// ParseDesiredSubject splits a desired subject into kind, host and id.
func ParseDesiredSubject(subject string) (DesiredAddress, error) {
	t := strings.Split(subject, ".")
	switch {
	case len(t) == 4 && t[0] == "ns" && t[1] == "desired" && (t[2] == string(KindNetwork) || t[2] == string(KindSecGroup)):
		return DesiredAddress{Kind: Kind(t[2]), ID: t[3]}, nil
	case len(t) == 6 && t[0] == "ns" && t[1] == "desired" && t[2] == "host":
		k, err := ParseKind(t[4])
		if err != nil || !k.HostScoped() || string(k) != t[4] {
			return DesiredAddress{}, fmt.Errorf("subject %q: unknown host-scoped kind %q", subject, t[4])
		}
		return DesiredAddress{Kind: k, Host: t[3], ID: t[5]}, nil
	}
	return DesiredAddress{}, fmt.Errorf("subject %q is not a desired-state subject", subject)
}

// KindFilter is the subject filter of every aggregate of one kind (all hosts).
func KindFilter(kind Kind) string {
	if !kind.HostScoped() {
		return DesiredRoot + "." + string(kind) + ".>"
	}
	return DesiredRoot + ".host.*." + string(kind) + ".*"
}

// ObjectFilter matches one aggregate on any host.
func ObjectFilter(kind Kind, id string) (string, error) {
	if err := CheckToken(string(kind)+" id", id); err != nil {
		return "", err
	}
	if !kind.HostScoped() {
		return DesiredRoot + "." + string(kind) + "." + id, nil
	}
	return DesiredRoot + ".host.*." + string(kind) + "." + id, nil
}

// HostFilters are the desired subjects an agent on host consumes: its own aggregates plus
// the shared networks and security groups.
func HostFilters(host string) ([]string, error) {
	if err := CheckToken("host", host); err != nil {
		return nil, err
	}
	return []string{
		DesiredRoot + ".host." + host + ".>",
		DesiredRoot + "." + string(KindNetwork) + ".>",
		DesiredRoot + "." + string(KindSecGroup) + ".>",
	}, nil
}

// StatusSubject is where host reports the status of one object.
func StatusSubject(host string, kind Kind, id string) (string, error) {
	if err := CheckToken("host", host); err != nil {
		return "", err
	}
	if err := CheckToken(string(kind)+" id", id); err != nil {
		return "", err
	}
	return StatusRoot + "." + host + "." + string(kind) + "." + id, nil
}

// AgentSubject is where host sends its heartbeat.
func AgentSubject(host string) (string, error) {
	if err := CheckToken("host", host); err != nil {
		return "", err
	}
	return StatusRoot + "." + host + "." + agentToken, nil
}

// StatusFilter builds a status filter; empty host or kind match any.
func StatusFilter(host string, kind Kind) string {
	h, k := "*", "*"
	if host != "" {
		h = host
	}
	if kind != "" {
		k = string(kind)
	}
	return StatusRoot + "." + h + "." + k + ".*"
}

// AgentFilter matches every agent heartbeat.
const AgentFilter = StatusRoot + ".*." + agentToken

// IsAgentSubject reports whether subject is a heartbeat subject.
func IsAgentSubject(subject string) bool {
	t := strings.Split(subject, ".")
	return len(t) == 4 && t[0] == "ns" && t[1] == "status" && t[3] == agentToken
}
