// Package replaytest is the scripted history the replay tests share: desired events of
// three hosts with the status events and heartbeats their agents would have sent, at fixed
// times, so that every output of the replay tool over it is the same run after run.
//
// The script: three networks, a security group, 36 veth ports (12 per host); rounds of
// updates (addresses, admin state, allowed address pairs, security groups, MACs, names);
// an MTU change; security group edits; port 1 moving from hostA to hostB (tombstone, then
// create); an undecodable event and an invalid one (a MAC that is not a MAC), then its fix;
// a trunk (which agents report PENDING); six deletes. hostC's agent stops at 60% of the
// history, so its later versions never converge and its heartbeat is late at the end.
package replaytest

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/replay"
	"github.com/netsource/netsource/streams"
)

// Fixed names of the script.
var (
	// Start is the time of the first event.
	Start = time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	// Hosts are the agents.
	Hosts = []string{"hostA", "hostB", "hostC"}
)

// Ids of the script's objects.
const (
	NetBlue  = "6a0e4b81-1c7d-4a55-9b3f-2f1f4c1e0a01"
	NetGreen = "6a0e4b82-1c7d-4a55-9b3f-2f1f4c1e0a02"
	NetLocal = "6a0e4b83-1c7d-4a55-9b3f-2f1f4c1e0a03"
	SecGroup = "1b2c3d4e-0000-4000-8000-000000000001"
	Trunk    = "2f3a4b5c-0000-4000-8000-000000000001"
	// Garbled is the id of the port whose only event cannot be decoded.
	Garbled = "3d4e5f99-0000-4000-8000-000000000099"
)

// Ports is the number of ports of the script.
const Ports = 36

// PortID is the id of port i (0 ≤ i < Ports); device names differ in their first 11
// characters, as Linux needs.
func PortID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", 0x3d4e5f60+i, i) }

// Moved is the port that moves from hostA to hostB.
var Moved = PortID(0)

// Invalid is the port that gets an invalid MAC, then a fix.
var Invalid = PortID(3)

// HostOf is where port i starts.
func HostOf(i int) string { return Hosts[i%3] }

type network struct {
	id, cidr, prefix string
	vni              uint32
}

var networks = []network{
	{NetBlue, "192.0.2.0/24", "192.0.2.", 1001},
	{NetGreen, "198.51.100.0/24", "198.51.100.", 1002},
	{NetLocal, "203.0.113.0/24", "203.0.113.", 0},
}

func subnetID(n int) string { return fmt.Sprintf("0c5d1e2f-3a4b-4c5d-8e6f-%012d", n+1) }

func (n network) spec(i int) *nsv1.Network {
	s := &nsv1.Network{Id: n.id, Name: []string{"blue", "green", "local"}[i], NetworkType: "vxlan", SegmentationId: n.vni, Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: subnetID(i), Cidr: n.cidr, GatewayIp: n.prefix + "1", IpVersion: 4}}}
	if n.vni == 0 {
		s.NetworkType, s.Mtu = "local", 0
	}
	return s
}

// builder collects desired and status records with their times.
type builder struct {
	now     time.Time
	seq     uint64
	desired []*replay.Record
	status  []*replay.Record
	specs   map[string]streams.Spec // kind/id -> latest live spec
	hostC   bool                    // hostC's agent is alive
	applied map[string]uint64       // host -> highest desired seq handled
	beats   map[string]int
	netUp   map[string]bool   // host/network: network status reported
	netSeq  map[string]uint64 // network id -> current version
}

func (b *builder) publish(change nsv1.ChangeKind, spec streams.Spec, publisher string) (uint64, string) {
	ev := streams.NewEvent(change, proto.Clone(spec).(streams.Spec), publisher)
	b.seq++
	ev.EventId = fmt.Sprintf("e0e0e0e0-0000-4000-8000-%012d", b.seq)
	ev.Time = timestamppb.New(b.now)
	msg, err := streams.EncodeDesired(ev)
	if err != nil {
		panic(err)
	}
	b.desired = append(b.desired, &replay.Record{Stream: replay.Desired, Subject: msg.Subject, Seq: b.seq, Time: b.now,
		Header: msg.Header, Data: msg.Data})
	key := string(streams.KindOfSpec(spec)) + "/" + spec.GetId()
	if streams.KindOfSpec(spec) == streams.KindNetwork {
		b.netSeq[spec.GetId()] = b.seq
	}
	if change == nsv1.ChangeKind_CHANGE_KIND_DELETED {
		delete(b.specs, key)
	} else {
		b.specs[key] = proto.Clone(spec).(streams.Spec)
	}
	return b.seq, msg.Subject
}

// raw stores a body as is (what a buggy publisher could write).
func (b *builder) raw(subject string, data []byte, header map[string]string) uint64 {
	b.seq++
	r := &replay.Record{Stream: replay.Desired, Subject: subject, Seq: b.seq, Time: b.now, Data: data}
	if len(header) > 0 {
		r.Header = map[string][]string{}
		for k, v := range header {
			r.Header[k] = []string{v}
		}
	}
	b.desired = append(b.desired, r)
	return b.seq
}

func (b *builder) alive(host string) bool { return host != "hostC" || b.hostC }

// report stores a status event of host after delay.
func (b *builder) report(host string, kind streams.Kind, id string, phase nsv1.Phase, reason string, seq uint64, delay time.Duration) {
	if !b.alive(host) {
		return
	}
	at := b.now.Add(delay)
	ev := &nsv1.StatusEvent{Host: host, Kind: string(kind), Id: id, Phase: phase, Reason: reason, DesiredSeq: seq,
		Convergence: durationpb.New(delay), Time: timestamppb.New(at)}
	subject, err := streams.StatusSubject(host, kind, id)
	if err != nil {
		panic(err)
	}
	b.addStatus(subject, ev, at)
	b.applied[host] = max(b.applied[host], seq)
}

func (b *builder) addStatus(subject string, m proto.Message, at time.Time) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	b.status = append(b.status, &replay.Record{Stream: replay.Status, Subject: subject, Time: at, Data: data})
}

// heartbeats: every host every 10 s of history, while alive.
func (b *builder) heartbeats() {
	for i, host := range Hosts {
		if !b.alive(host) {
			continue
		}
		at := b.now.Add(time.Second + time.Duration(i)*300*time.Millisecond)
		b.beats[host]++
		hb := &nsv1.AgentHeartbeat{Binary: "netsource-agent", Host: host, Topic: "N/A", AgentType: "Linux bridge agent",
			Configurations: &nsv1.AgentConfigurations{TunnelingIp: fmt.Sprintf("198.18.0.%d", i+1), TunnelTypes: []string{"vxlan"},
				Mechanism: "linuxbridge"},
			StartFlag: b.beats[host] == 1, Time: timestamppb.New(at), Uuid: fmt.Sprintf("b0b0b0b0-0000-4000-8000-%04d%08d", i, b.beats[host]),
			AppliedSeq: b.applied[host], ReportInterval: durationpb.New(10 * time.Second), StartedAt: timestamppb.New(Start),
			Version: "dev"}
		subject, _ := streams.AgentSubject(host)
		b.addStatus(subject, hb, at)
	}
}

// step moves time on by 2 s, with heartbeats every fifth step.
func (b *builder) step() {
	b.now = b.now.Add(2 * time.Second)
	if b.seq%5 == 0 {
		b.heartbeats()
	}
}

func (b *builder) port(i int) *nsv1.Port {
	return proto.Clone(b.specs[string(streams.KindPort)+"/"+PortID(i)]).(*nsv1.Port)
}

func portSubject(p *nsv1.Port) string {
	s, _ := streams.DesiredSubject(streams.KindPort, p.GetHost(), p.GetId())
	return s
}

// portStatuses reports a port converging: BUILD, then ACTIVE (or DOWN when admin down).
func (b *builder) portStatuses(p *nsv1.Port, seq uint64, i int) {
	host := p.GetHost()
	b.report(host, streams.KindPort, p.GetId(), nsv1.Phase_PHASE_BUILD, "converging", seq, 100*time.Millisecond)
	phase, reason := nsv1.Phase_PHASE_ACTIVE, "device "+links.TapName(p.GetId())+" plugged into "+links.BridgeName(p.GetNetworkId())
	if !p.IsAdminStateUp() {
		phase, reason = nsv1.Phase_PHASE_DOWN, "admin_state_up is false"
	}
	b.report(host, streams.KindPort, p.GetId(), phase, reason, seq, time.Duration(300+(i%5)*110)*time.Millisecond)
}

func (b *builder) networkStatus(host, netID string) {
	key := host + "/" + netID
	if b.netUp[key] {
		return
	}
	b.netUp[key] = true
	seq := b.netSeq[netID]
	b.report(host, streams.KindNetwork, netID, nsv1.Phase_PHASE_BUILD, "creating "+links.BridgeName(netID), seq, 50*time.Millisecond)
	b.report(host, streams.KindNetwork, netID, nsv1.Phase_PHASE_ACTIVE, "bridge "+links.BridgeName(netID)+" ready", seq, 200*time.Millisecond)
}

func (b *builder) updatePort(i int, publisher string, edit func(p *nsv1.Port)) {
	p := b.port(i)
	edit(p)
	seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, p, publisher)
	b.portStatuses(p, seq, i)
	b.step()
}

// History returns the script's records: desired and status messages merged in time order
// (desired first on equal times), status sequences in time order.
func History() []*replay.Record {
	b := &builder{now: Start, specs: map[string]streams.Spec{}, hostC: true, applied: map[string]uint64{},
		beats: map[string]int{}, netUp: map[string]bool{}, netSeq: map[string]uint64{}}
	b.heartbeats()
	for i, n := range networks {
		b.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, n.spec(i), "alice@ops1")
		b.step()
	}
	one, two := int32(80), int32(80)
	sg := &nsv1.SecurityGroup{Id: SecGroup, Name: "web", Rules: []*nsv1.SecurityGroupRule{
		{Id: "1b2c3d4e-0000-4000-8000-0000000000a1", Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp",
			PortRangeMin: &one, PortRangeMax: &two, RemoteIpPrefix: "0.0.0.0/0"},
		{Id: "1b2c3d4e-0000-4000-8000-0000000000a2", Direction: "egress", Ethertype: "IPv4"},
	}}
	b.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, sg, "alice@ops1")
	b.step()
	for i := range Ports {
		n := networks[i%3]
		p := &nsv1.Port{Id: PortID(i), Name: fmt.Sprintf("vm%d-eth0", i), NetworkId: n.id, Host: HostOf(i),
			MacAddress:  fmt.Sprintf("fa:16:3e:00:00:%02x", i+1),
			FixedIps:    []*nsv1.FixedIP{{SubnetId: subnetID(i % 3), IpAddress: fmt.Sprintf("%s%d", n.prefix, 10+i)}},
			DeviceOwner: "compute:nova", Binding: &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("vm%d", i)}}
		if i%2 == 0 {
			p.SecurityGroups = []string{SecGroup}
		}
		seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, p, "nova@compute1")
		b.networkStatus(p.GetHost(), n.id)
		b.portStatuses(p, seq, i)
		b.step()
	}
	// Round 0: new addresses.
	for i := range Ports {
		b.updatePort(i, "alice@ops1", func(p *nsv1.Port) {
			p.FixedIps[0].IpAddress = fmt.Sprintf("%s%d", networks[i%3].prefix, 100+i)
		})
	}
	// Round 1: every fourth port administratively down, the others get an address pair.
	for i := range Ports {
		if i == 5 {
			// One port the agent fails to plug.
			p := b.port(i)
			p.AllowedAddressPairs = []*nsv1.AllowedAddressPair{{IpAddress: networks[i%3].prefix + "200/32"}}
			seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, p, "bob@ops2")
			b.report(p.GetHost(), streams.KindPort, p.GetId(), nsv1.Phase_PHASE_BUILD, "converging", seq, 100*time.Millisecond)
			b.report(p.GetHost(), streams.KindPort, p.GetId(), nsv1.Phase_PHASE_ERROR,
				"plug port "+p.GetId()+" ("+links.TapName(p.GetId())+") into "+links.BridgeName(p.GetNetworkId())+": file exists", seq, 700*time.Millisecond)
			b.step()
			continue
		}
		b.updatePort(i, "bob@ops2", func(p *nsv1.Port) {
			if i%4 == 0 {
				p.AdminStateUp = proto.Bool(false)
			} else {
				p.AllowedAddressPairs = []*nsv1.AllowedAddressPair{{IpAddress: fmt.Sprintf("%s%d/32", networks[i%3].prefix, 200+i)}}
			}
		})
	}
	// The blue network's MTU goes down; every host with a blue port converges it.
	blue := networks[0].spec(0)
	blue.Mtu = 1400
	seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, blue, "alice@ops1")
	for _, host := range Hosts {
		if !b.netUp[host+"/"+NetBlue] {
			continue
		}
		b.report(host, streams.KindNetwork, NetBlue, nsv1.Phase_PHASE_ACTIVE, "bridge "+links.BridgeName(NetBlue)+" ready", seq, 250*time.Millisecond)
	}
	b.step()
	// Round 2: admin state back, security groups off the odd ones.
	for i := range Ports {
		if i == Ports*6/10 {
			b.hostC = false // hostC's agent dies
		}
		b.updatePort(i, "bob@ops2", func(p *nsv1.Port) {
			if i%4 == 0 {
				p.AdminStateUp = nil
			} else {
				p.SecurityGroups = []string{SecGroup}
			}
		})
	}
	// Security group edits.
	for k := range 4 {
		lo, hi := int32(8000+k), int32(8080+k)
		sg.Rules = append(sg.Rules, &nsv1.SecurityGroupRule{Id: fmt.Sprintf("1b2c3d4e-0000-4000-8000-0000000000b%d", k),
			Direction: "ingress", Ethertype: "IPv4", Protocol: "tcp", PortRangeMin: &lo, PortRangeMax: &hi, RemoteIpPrefix: "198.51.100.0/24"})
		b.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, sg, "carol@sec")
		b.step()
	}
	// Round 3: new MACs for the even ports.
	for i := 0; i < Ports; i += 2 {
		b.updatePort(i, "nova@compute1", func(p *nsv1.Port) { p.MacAddress = fmt.Sprintf("fa:16:3e:01:00:%02x", i+1) })
	}
	// Port 0 moves from hostA to hostB: the tombstone on hostA, then the create on hostB.
	moved := b.port(0)
	seq, _ = b.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, moved, "nova@compute1")
	b.report("hostA", streams.KindPort, Moved, nsv1.Phase_PHASE_DELETED, "devices removed", seq, 400*time.Millisecond)
	b.step()
	moved.Host = "hostB"
	seq, _ = b.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, moved, "nova@compute1")
	b.networkStatus("hostB", moved.GetNetworkId())
	b.portStatuses(moved, seq, 0)
	b.step()
	b.updatePort(0, "alice@ops1", func(p *nsv1.Port) { p.FixedIps[0].IpAddress = "192.0.2.50" })
	// An undecodable event on hostA.
	garbled, _ := streams.DesiredSubject(streams.KindPort, "hostA", Garbled)
	seq = b.raw(garbled, []byte("\xff\xfe not protobuf"), map[string]string{"Nats-Msg-Id": "e0e0e0e0-garbled"})
	b.report("hostA", streams.KindPort, Garbled, nsv1.Phase_PHASE_ERROR,
		fmt.Sprintf("event at seq %d: undecodable desired event: proto: cannot parse invalid wire-format data", seq), seq, 20*time.Millisecond)
	b.step()
	// An invalid event (bypassing the publisher's validation), then its fix.
	bad := b.port(3)
	bad.MacAddress = "zz:16:3e:00:00:04"
	ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, bad, "script@buggy")
	ev.EventId, ev.Time = "e0e0e0e0-0000-4000-8000-invalid00001", timestamppb.New(b.now)
	data, _ := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	seq = b.raw(portSubject(bad), data, map[string]string{"Nats-Msg-Id": ev.EventId, streams.HeaderChange: "updated", streams.HeaderKind: "port"})
	b.report("hostA", streams.KindPort, Invalid, nsv1.Phase_PHASE_ERROR,
		fmt.Sprintf("invalid event at seq %d: port.mac_address: \"zz:16:3e:00:00:04\" is not a MAC address "+
			"(want six colon-separated hex octets, e.g. fa:16:3e:00:00:01) (port %s)", seq, Invalid), seq, 20*time.Millisecond)
	b.step()
	b.updatePort(3, "alice@ops1", func(p *nsv1.Port) { p.MacAddress = "fa:16:3e:00:00:04" })
	// A trunk on port 6 (hostA): the agent does not build trunks yet.
	tr := &nsv1.Trunk{Id: Trunk, Name: "trunk6", PortId: PortID(6), Host: "hostA"}
	for k := range 2 {
		if k == 1 {
			tr.AdminStateUp = proto.Bool(false)
		}
		change := nsv1.ChangeKind_CHANGE_KIND_CREATED
		if k == 1 {
			change = nsv1.ChangeKind_CHANGE_KIND_UPDATED
		}
		seq, _ = b.publish(change, tr, "alice@ops1")
		b.report("hostA", streams.KindTrunk, Trunk, nsv1.Phase_PHASE_PENDING, "trunk objects are not built by this agent version yet", seq, 30*time.Millisecond)
		b.step()
	}
	// Round 4: new names; port 4 (hostB) fails to plug.
	for i := 1; i < 30; i++ {
		if i == 4 {
			p := b.port(i)
			p.Name = "web-4"
			seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, p, "nova@compute1")
			b.report(p.GetHost(), streams.KindPort, p.GetId(), nsv1.Phase_PHASE_BUILD, "converging", seq, 100*time.Millisecond)
			b.report(p.GetHost(), streams.KindPort, p.GetId(), nsv1.Phase_PHASE_ERROR, "plug port "+p.GetId()+" ("+
				links.TapName(p.GetId())+") into "+links.BridgeName(p.GetNetworkId())+": no buffer space available", seq, 900*time.Millisecond)
			b.step()
			continue
		}
		b.updatePort(i, "nova@compute1", func(p *nsv1.Port) { p.Name = fmt.Sprintf("web-%d", i) })
	}
	// Deletes.
	for i := 30; i < Ports; i++ {
		p := b.port(i)
		seq, _ := b.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, p, "nova@compute1")
		b.report(p.GetHost(), streams.KindPort, p.GetId(), nsv1.Phase_PHASE_DELETED, "devices removed", seq, 350*time.Millisecond)
		b.step()
	}
	b.heartbeats()
	return merge(b.desired, b.status)
}

// merge orders records by time, desired first on equal times, and numbers status messages.
func merge(desired, status []*replay.Record) []*replay.Record {
	slices.SortStableFunc(status, func(a, b *replay.Record) int { return a.Time.Compare(b.Time) })
	for i, r := range status {
		r.Seq = uint64(i + 1)
	}
	out := make([]*replay.Record, 0, len(desired)+len(status))
	i, j := 0, 0
	for i < len(desired) || j < len(status) {
		if i < len(desired) && (j >= len(status) || !status[j].Time.Before(desired[i].Time)) {
			out = append(out, desired[i])
			i++
		} else {
			out = append(out, status[j])
			j++
		}
	}
	return out
}

// Bytes is the script as a replay file.
func Bytes() []byte {
	var buf bytes.Buffer
	w, err := replay.NewWriter(&buf)
	if err != nil {
		panic(err)
	}
	for _, r := range History() {
		if err := w.Write(r); err != nil {
			panic(err)
		}
	}
	if err := w.Flush(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// WriteFile writes the script as a replay file into a temporary directory of the test.
func WriteFile(t testing.TB) string {
	t.Helper()
	path := t.TempDir() + "/history.nsr"
	if err := os.WriteFile(path, Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
