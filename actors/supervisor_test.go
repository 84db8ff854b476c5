package actors_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

const (
	netID  = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	subnet = "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
)

// harness runs a host supervisor over a fake dataplane.
type harness struct {
	t    *testing.T
	root *actor.RootContext
	host *actor.PID
	fake *links.Fake
	rep  *actors.RecordingReporter
	seq  uint64
	sent []*actors.DesiredMsg // every desired message so far, to replay into a restarted supervisor
}

func newHarness(t *testing.T, dp links.Dataplane, fake *links.Fake) *harness {
	t.Helper()
	return newSeededHarness(t, dp, fake, nil)
}

// newSeededHarness starts the supervisor as a restarted agent does: lastStatus is what the
// status stream held (key kind/id).
func newSeededHarness(t *testing.T, dp links.Dataplane, fake *links.Fake, lastStatus map[string]*nsv1.StatusEvent) *harness {
	t.Helper()
	cfg := &config.Config{Host: "hostA"}
	cfg.VXLAN.LocalIP = "198.18.0.1"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rep := actors.NewRecordingReporter()
	env := &actors.Env{Config: cfg, Dataplane: dp, Reporter: rep, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OpTimeout: 5 * time.Second, Backoff: actors.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		LastStatus: lastStatus}
	system := actor.NewActorSystem()
	host, err := system.Root.SpawnNamed(actors.HostProps(env), "host")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, err := fake.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range events {
			system.Root.Send(host, &actors.LinkEventMsg{Event: ev})
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = system.Root.PoisonFuture(host).Wait()
	})
	return &harness{t: t, root: system.Root, host: host, fake: fake, rep: rep}
}

func (h *harness) publish(change nsv1.ChangeKind, spec streams.Spec) uint64 {
	h.t.Helper()
	msg, err := streams.EncodeDesired(streams.NewEvent(change, spec, "test"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.seq++
	m := &actors.DesiredMsg{Msg: streams.Msg{Subject: msg.Subject, Seq: h.seq, Data: msg.Data}}
	h.sent = append(h.sent, m)
	h.root.Send(h.host, m)
	return h.seq
}

func (h *harness) raw(subject string, data []byte) {
	h.seq++
	h.root.Send(h.host, &actors.DesiredMsg{Msg: streams.Msg{Subject: subject, Seq: h.seq, Data: data}})
}

func (h *harness) waitPhase(kind streams.Kind, id string, phase nsv1.Phase) *nsv1.StatusEvent {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := h.rep.WaitFor(ctx, kind, id, phase)
	if err != nil {
		h.t.Fatalf("%s %s: want %s, last status %v", kind, id, streams.PhaseName(phase), ev)
	}
	return ev
}

func network() *nsv1.Network {
	return &nsv1.Network{Id: netID, NetworkType: "vxlan", SegmentationId: 1001, Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: subnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1"}}}
}

func port(n int, kind string) *nsv1.Port {
	return &nsv1.Port{Id: fmt.Sprintf("%08x-0000-4000-8000-00000000000a", 0x3d4e5f60+n), NetworkId: netID, Host: "hostA",
		MacAddress: fmt.Sprintf("fa:16:3e:00:00:%02x", n),
		FixedIps:   []*nsv1.FixedIP{{SubnetId: subnet, IpAddress: fmt.Sprintf("192.0.2.%d", 10+n)}},
		Binding:    binding(kind, n)}
}

func binding(kind string, n int) *nsv1.Binding {
	if kind == "veth" {
		return &nsv1.Binding{Type: kind, Netns: fmt.Sprintf("vm%d", n)}
	}
	return &nsv1.Binding{Type: kind}
}

func TestConvergeAndResyncMakesNoChange(t *testing.T) {
	fake := links.NewFake()
	h := newHarness(t, fake, fake)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, network())
	for i := 1; i <= 3; i++ {
		h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, port(i, "veth"))
	}
	h.root.Send(h.host, &actors.CaughtUp{})
	for i := 1; i <= 3; i++ {
		ev := h.waitPhase(streams.KindPort, port(i, "veth").Id, nsv1.Phase_PHASE_ACTIVE)
		if ev.GetPortL2().GetTunnelIp() != "198.18.0.1" || ev.GetDesiredSeq() != uint64(i+1) {
			t.Fatalf("ACTIVE status lacks l2 facts or seq: %v", ev)
		}
	}
	h.waitPhase(streams.KindNetwork, netID, nsv1.Phase_PHASE_ACTIVE)
	dump := h.fake.Dump()
	for _, want := range []string{"bridge brq6a0e4b8e-1c mtu 1450 up", "vxlan vxlan-1001 vni 1001", "peer ns-3d4e5f62-00@vm2"} {
		if !strings.Contains(dump, want) {
			t.Fatalf("dump lacks %q:\n%s", want, dump)
		}
	}
	before, events := h.fake.Mutations(), len(h.rep.Events())
	h.root.Send(h.host, &actors.Resync{})
	_, _ = h.root.RequestFuture(h.host, &actors.GetCounts{}, time.Second).Result()
	time.Sleep(100 * time.Millisecond) // children finish the resync round (no observable fact to wait on: nothing changes)
	if after := h.fake.Mutations(); after != before {
		t.Fatalf("resync of a converged host made %d kernel changes", after-before)
	}
	if all := h.rep.Events(); len(all) != events {
		t.Fatalf("resync of a converged host published %d status events: %v", len(all)-events, all[events:])
	}
}

func TestBadEventsAreErrorsAndOthersConverge(t *testing.T) {
	fake := links.NewFake()
	h := newHarness(t, fake, fake)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, network())
	good := port(1, "veth")
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, good)
	const garbled = "3d4e5f60-0000-4000-8000-0000000000ff"
	h.raw("ns.desired.host.hostA.port."+garbled, []byte("\xff\xfe not protobuf"))
	orphan := port(2, "veth")
	orphan.NetworkId = "11111111-2222-4333-8444-555555555555"
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, orphan)
	invalid := port(3, "veth")
	invalid.MacAddress = "zz:00:00:00:00:00"
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, invalid)
	h.root.Send(h.host, &actors.CaughtUp{})

	h.waitPhase(streams.KindPort, good.Id, nsv1.Phase_PHASE_ACTIVE)
	if ev := h.waitPhase(streams.KindPort, garbled, nsv1.Phase_PHASE_ERROR); !strings.Contains(ev.GetReason(), "undecodable") {
		t.Fatalf("garbled event reason: %q", ev.GetReason())
	}
	if ev := h.waitPhase(streams.KindPort, orphan.Id, nsv1.Phase_PHASE_ERROR); !strings.Contains(ev.GetReason(), "is not in the desired state") {
		t.Fatalf("unknown network reason: %q", ev.GetReason())
	}
	if ev := h.waitPhase(streams.KindPort, invalid.Id, nsv1.Phase_PHASE_ERROR); !strings.Contains(ev.GetReason(), "mac_address") {
		t.Fatalf("invalid port reason: %q", ev.GetReason())
	}
	// The network arriving later heals the orphan port.
	n2 := network()
	n2.Id, n2.SegmentationId = orphan.NetworkId, 1002
	n2.Subnets[0].Id = "0c5d1e2f-3a4b-4c5d-8e6f-000000000002"
	orphan.FixedIps[0].SubnetId = n2.Subnets[0].Id
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, n2)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, orphan)
	h.waitPhase(streams.KindPort, orphan.Id, nsv1.Phase_PHASE_ACTIVE)
}

func TestTapBindingWaitsForDevice(t *testing.T) {
	fake := links.NewFake()
	h := newHarness(t, fake, fake)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, network())
	p := port(1, "tap")
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, p)
	h.root.Send(h.host, &actors.CaughtUp{})
	if ev := h.waitPhase(streams.KindPort, p.Id, nsv1.Phase_PHASE_BUILD); !strings.Contains(ev.GetReason(), "waiting for device") {
		// BUILD may first say "converging"; wait for the device reason.
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(h.rep.Latest(streams.KindPort, p.Id).GetReason(), "waiting for device") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	h.fake.AddTapDevice(links.TapName(p.Id))
	h.waitPhase(streams.KindPort, p.Id, nsv1.Phase_PHASE_ACTIVE)
	h.fake.RemoveDevice(links.TapName(p.Id))
	if ev := h.waitPhase(streams.KindPort, p.Id, nsv1.Phase_PHASE_DOWN); !strings.Contains(ev.GetReason(), "disappeared") {
		t.Fatalf("DOWN reason %q", ev.GetReason())
	}
	h.fake.AddTapDevice(links.TapName(p.Id))
	h.waitPhase(streams.KindPort, p.Id, nsv1.Phase_PHASE_ACTIVE)
}

func TestVethDeletedByHandComesBack(t *testing.T) {
	fake := links.NewFake()
	h := newHarness(t, fake, fake)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, network())
	p := port(1, "veth")
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, p)
	h.root.Send(h.host, &actors.CaughtUp{})
	h.waitPhase(streams.KindPort, p.Id, nsv1.Phase_PHASE_ACTIVE)
	h.fake.RemoveDevice(links.TapName(p.Id))
	deadline := time.Now().Add(time.Second)
	for !strings.Contains(h.rep.Latest(streams.KindPort, p.Id).GetReason(), "re-created") {
		if time.Now().After(deadline) {
			t.Fatalf("no repair status within 1s; last %v", h.rep.Latest(streams.KindPort, p.Id))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(h.fake.Dump(), "veth "+links.TapName(p.Id)) {
		t.Fatal("device not re-created")
	}
}

// panicky panics in EnsurePort for one port until told to stop.
type panicky struct {
	links.Dataplane
	device string
	armed  atomic.Bool
}

func (p *panicky) EnsurePort(ctx context.Context, spec links.PortSpec) (links.PortState, error) {
	if spec.Device == p.device && p.armed.Load() {
		panic("injected failure")
	}
	return p.Dataplane.EnsurePort(ctx, spec)
}

func TestCrashingChildIsRestartedOthersCarryOn(t *testing.T) {
	fake := links.NewFake()
	bad := port(1, "veth")
	dp := &panicky{Dataplane: fake, device: links.TapName(bad.Id)}
	dp.armed.Store(true)
	h := newHarness(t, dp, fake)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, network())
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, bad)
	good := port(2, "veth")
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, good)
	h.root.Send(h.host, &actors.CaughtUp{})
	h.waitPhase(streams.KindPort, good.Id, nsv1.Phase_PHASE_ACTIVE)
	if ev := h.waitPhase(streams.KindPort, bad.Id, nsv1.Phase_PHASE_ERROR); !strings.Contains(ev.GetReason(), "injected failure") {
		t.Fatalf("crash reason %q", ev.GetReason())
	}
	dp.armed.Store(false)
	h.waitPhase(streams.KindPort, bad.Id, nsv1.Phase_PHASE_ACTIVE)
}

func TestBackoffIsCappedExponential(t *testing.T) {
	b := actors.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		got := b.Delay(n)
		if got < want || got > want+want/5 {
			t.Errorf("Delay(%d) = %s, want %s..%s", n, got, want, want+want/5)
		}
	}
}

func TestBridgePortLimit(t *testing.T) {
	fake := links.NewFake()
	h := newHarness(t, fake, fake)
	local := &nsv1.Network{Id: netID, NetworkType: "local"}
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, local)
	const n = links.MaxBridgePorts + 1
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-000000000001", 0xa0000000+i)
		h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, &nsv1.Port{Id: ids[i], NetworkId: netID, Host: "hostA",
			MacAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256), Binding: &nsv1.Binding{Type: "veth", Netns: "vm"}})
		if i == n-2 {
			// The first 1023 ports are plugged before the 1024th arrives.
			for _, id := range ids[:n-1] {
				h.waitPhase(streams.KindPort, id, nsv1.Phase_PHASE_ACTIVE)
			}
		}
	}
	ev := h.waitPhase(streams.KindPort, ids[n-1], nsv1.Phase_PHASE_ERROR)
	if !strings.Contains(ev.GetReason(), "1023") {
		t.Fatalf("1024th port reason %q, want it to name the Linux limit", ev.GetReason())
	}
}
