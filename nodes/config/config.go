// Package config is the agent's configuration: the YAML file of `netsource agent --config`,
// with option names from Neutron's linuxbridge_agent.ini, its defaults, and its validation.
// Every problem is reported with the option's name, as Neutron's "Parsing
// physical_interface_mappings failed" does, and the agent refuses to start.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"
)

// Mechanisms an agent can drive.
const (
	MechanismLinuxBridge = "linuxbridge"
	MechanismOpenVSwitch = "openvswitch"
)

// Config is the agent configuration.
type Config struct {
	Host                      string            `json:"host"`
	NATS                      string            `json:"nats,omitempty"`
	Netns                     string            `json:"netns,omitempty"`
	Mechanism                 string            `json:"mechanism,omitempty"`
	PhysicalInterfaceMappings map[string]string `json:"physical_interface_mappings,omitempty"`
	BridgeMappings            map[string]string `json:"bridge_mappings,omitempty"`
	VXLAN                     VXLAN             `json:"vxlan"`
	Agent                     Agent             `json:"agent"`
	OVS                       OVS               `json:"ovs"`
	HAProxy                   HAProxy           `json:"haproxy"`
	SecurityGroup             SecurityGroup     `json:"securitygroup"`
	// StoreDir is where an agent without --nats keeps its embedded JetStream server's data.
	StoreDir string `json:"store_dir,omitempty"`
}

// VXLAN is the [VXLAN] section.
type VXLAN struct {
	EnableVXLAN  *bool  `json:"enable_vxlan,omitempty"`
	LocalIP      string `json:"local_ip,omitempty"`
	VXLANGroup   string `json:"vxlan_group,omitempty"`
	L2Population bool   `json:"l2_population,omitempty"`
	TTL          int    `json:"ttl,omitempty"`
	TOS          int    `json:"tos,omitempty"`
	UDPPort      int    `json:"udp_port,omitempty"`
	// Device holds local_ip; the agent finds it at start (not an option).
	Device string `json:"-"`
}

// Enabled reports enable_vxlan (default true, as in Neutron).
func (v VXLAN) Enabled() bool { return v.EnableVXLAN == nil || *v.EnableVXLAN }

// Agent is the [AGENT] section.
type Agent struct {
	ResyncInterval Duration `json:"resync_interval,omitempty"`
	ReportInterval Duration `json:"report_interval,omitempty"`
}

// OVS configures the openvswitch mechanism.
type OVS struct {
	DB           string `json:"db,omitempty"`
	RunDir       string `json:"rundir,omitempty"`
	DatapathType string `json:"datapath_type,omitempty"`
}

// Firewall drivers (securitygroup.firewall_driver).
const (
	FirewallNoop     = "noop"
	FirewallNFTables = "nftables"
)

// SecurityGroup is the [SECURITYGROUP] section. firewall_driver nftables turns on security
// groups and anti-spoofing (nodes/firewall); noop, the default as in Neutron when the option
// is unset, leaves bridged traffic unfiltered.
type SecurityGroup struct {
	FirewallDriver string `json:"firewall_driver,omitempty"`
}

// HAProxy configures load-balancer instances.
type HAProxy struct {
	Binary            string `json:"binary,omitempty"`
	StateDir          string `json:"state_dir,omitempty"`
	SendGratuitousARP *int   `json:"send_gratuitous_arp,omitempty"`
}

// Duration is a time.Duration written as "30s" or as a number of seconds (Neutron's style).
type Duration struct{ time.Duration }

// UnmarshalJSON accepts "30s", "1m30s" or 30.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 30s", s)
		}
		d.Duration = v
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("%s is not a duration", b)
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Defaults of the options left out.
const (
	DefaultResyncInterval = 30 * time.Second
	DefaultReportInterval = 10 * time.Second
	DefaultVXLANPort      = 4789
	DefaultVXLANGroup     = "224.0.0.1"
)

// Load reads a YAML (or JSON) config file strictly: an unknown option is an error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a config document strictly.
func Parse(data []byte) (*Config, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	c := &Config{}
	if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	return c, nil
}

// ApplyDefaults fills the options left out.
func (c *Config) ApplyDefaults() {
	if c.Mechanism == "" {
		c.Mechanism = MechanismLinuxBridge
	}
	if c.Agent.ResyncInterval.Duration == 0 {
		c.Agent.ResyncInterval.Duration = DefaultResyncInterval
	}
	if c.Agent.ReportInterval.Duration == 0 {
		c.Agent.ReportInterval.Duration = DefaultReportInterval
	}
	if c.VXLAN.UDPPort == 0 {
		c.VXLAN.UDPPort = DefaultVXLANPort
	}
	if c.VXLAN.VXLANGroup == "" && !c.VXLAN.L2Population {
		c.VXLAN.VXLANGroup = DefaultVXLANGroup
	}
	if c.OVS.DatapathType == "" {
		c.OVS.DatapathType = "netdev"
	}
	if c.OVS.RunDir == "" {
		c.OVS.RunDir = "/run/openvswitch"
	}
	if c.OVS.DB == "" {
		c.OVS.DB = "unix:" + c.OVS.RunDir + "/db.sock"
	}
	if c.SecurityGroup.FirewallDriver == "" {
		c.SecurityGroup.FirewallDriver = FirewallNoop
	}
	if c.HAProxy.Binary == "" {
		c.HAProxy.Binary = "haproxy"
	}
	if c.HAProxy.StateDir == "" {
		c.HAProxy.StateDir = "/var/lib/netsource/lbaas"
	}
	if c.HAProxy.SendGratuitousARP == nil {
		n := 3
		c.HAProxy.SendGratuitousARP = &n
	}
	if c.StoreDir == "" {
		c.StoreDir = "/var/lib/netsource/jetstream"
	}
}

var (
	tokenRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	ifnameRE  = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)
	netnsRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	physnetRE = tokenRE
)

// Validate checks every option and returns all problems, each naming its option.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !tokenRE.MatchString(c.Host) {
		bad("host %q: want 1-64 characters of letters, digits, '-' and '_' (it becomes a subject token)", c.Host)
	}
	if c.Netns != "" && (!netnsRE.MatchString(c.Netns) || c.Netns == "." || c.Netns == "..") {
		bad("netns %q is not a network namespace name", c.Netns)
	}
	switch c.Mechanism {
	case MechanismLinuxBridge, MechanismOpenVSwitch:
	default:
		bad("mechanism %q: want linuxbridge or openvswitch", c.Mechanism)
	}
	checkMappings := func(option string, m map[string]string) {
		for _, physnet := range sortedKeys(m) {
			dev := m[physnet]
			if !physnetRE.MatchString(physnet) {
				bad("Parsing %s failed: physical network %q is not a valid name", option, physnet)
			}
			if !ifnameRE.MatchString(dev) {
				bad("Parsing %s failed: %s: %q is not a valid interface name (1-15 characters)", option, physnet, dev)
			}
		}
	}
	checkMappings("physical_interface_mappings", c.PhysicalInterfaceMappings)
	checkMappings("bridge_mappings", c.BridgeMappings)
	for physnet := range c.PhysicalInterfaceMappings {
		if _, dup := c.BridgeMappings[physnet]; dup {
			bad("physical network %q is in both physical_interface_mappings and bridge_mappings", physnet)
		}
	}
	seen := map[string]string{}
	for _, physnet := range sortedKeys(c.PhysicalInterfaceMappings) {
		dev := c.PhysicalInterfaceMappings[physnet]
		if other, ok := seen[dev]; ok {
			bad("Parsing physical_interface_mappings failed: interface %q is mapped to both %s and %s", dev, other, physnet)
		}
		seen[dev] = physnet
	}
	if c.VXLAN.Enabled() {
		errs = append(errs, c.VXLAN.validate()...)
	}
	if c.Agent.ResyncInterval.Duration < 0 {
		bad("agent.resync_interval %s must not be negative", c.Agent.ResyncInterval)
	}
	if c.Agent.ReportInterval.Duration < 0 {
		bad("agent.report_interval %s must not be negative", c.Agent.ReportInterval)
	}
	if n := c.HAProxy.SendGratuitousARP; n != nil && (*n < 0 || *n > 100) {
		bad("haproxy.send_gratuitous_arp %d: want 0-100", *n)
	}
	switch c.SecurityGroup.FirewallDriver {
	case "", FirewallNoop, FirewallNFTables:
	default:
		bad("securitygroup.firewall_driver %q: want nftables or noop", c.SecurityGroup.FirewallDriver)
	}
	return errors.Join(errs...)
}

func (v VXLAN) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	local := net.ParseIP(v.LocalIP)
	if local == nil {
		bad("vxlan.local_ip %q: enable_vxlan needs the tunnel endpoint address of this host", v.LocalIP)
	}
	if v.VXLANGroup != "" {
		group, err := ParseGroup(v.VXLANGroup)
		switch {
		case err != nil:
			bad("vxlan.vxlan_group %q: %v", v.VXLANGroup, err)
		case !group.IP.IsMulticast():
			bad("vxlan.vxlan_group %q is not a multicast address", v.VXLANGroup)
		case local != nil && (group.IP.To4() == nil) != (local.To4() == nil):
			bad("vxlan.vxlan_group %q and vxlan.local_ip %q are of different address families", v.VXLANGroup, v.LocalIP)
		}
	} else if !v.L2Population {
		bad("vxlan: neither vxlan_group nor l2_population is set; VXLAN needs one of them to flood")
	}
	if v.TTL < 0 || v.TTL > 255 {
		bad("vxlan.ttl %d: want 0-255", v.TTL)
	}
	if v.TOS < 0 || v.TOS > 255 {
		bad("vxlan.tos %d: want 0-255", v.TOS)
	}
	if v.UDPPort < 1 || v.UDPPort > 65535 {
		bad("vxlan.udp_port %d: want 1-65535", v.UDPPort)
	}
	return errs
}

// ParseGroup parses vxlan_group: one address, or a CIDR from which each VNI gets its own
// group (network address + (VNI AND hostmask)), as Neutron does.
func ParseGroup(s string) (*net.IPNet, error) {
	if ip := net.ParseIP(s); ip != nil {
		bits := 32
		if ip.To4() == nil {
			bits = 128
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, errors.New("not an address or CIDR")
	}
	return n, nil
}

// GroupFor returns the multicast group of a VNI, or nil in unicast (l2population) mode.
func (v VXLAN) GroupFor(vni uint32) net.IP {
	if v.VXLANGroup == "" {
		return nil
	}
	n, err := ParseGroup(v.VXLANGroup)
	if err != nil {
		return nil
	}
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	ones, bits := n.Mask.Size()
	hostBits := bits - ones
	if hostBits == 0 {
		return ip
	}
	offset := uint64(vni)
	if hostBits < 64 {
		offset &= (uint64(1) << hostBits) - 1
	}
	for i := len(ip) - 1; i >= 0 && offset > 0; i-- {
		sum := uint64(ip[i]) + (offset & 0xff)
		ip[i] = byte(sum)
		offset = offset>>8 + sum>>8
	}
	return ip
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
