package actors_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/taas"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// tapHarness runs a host supervisor with the tap kinds on a fake mirror and an in-memory
// directory.
type tapHarness struct {
	*harness
	mirror *taas.Fake
	dir    *taas.Memory
}

func newTapHarness(t *testing.T, localOnly bool) *tapHarness {
	t.Helper()
	cfg := &config.Config{Host: "hostA"}
	cfg.VXLAN.LocalIP = "198.18.0.1"
	cfg.ApplyDefaults()
	mirror, dir := taas.NewFake(), taas.NewMemory()
	mirror.LocalOnly = localOnly
	deps := actors.TapDeps{Mirror: mirror, Directory: dir}
	if localOnly {
		deps.LocalOnly = "the linuxbridge mechanism mirrors only to tap services on the same host"
	}
	rep := actors.NewRecordingReporter()
	fake := links.NewFake()
	env := &actors.Env{Config: cfg, Dataplane: fake, Reporter: rep, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OpTimeout: 5 * time.Second, Backoff: actors.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Objects: map[streams.Kind]actors.ObjectProducer{
			streams.KindTapService: actors.TapServiceProducer(deps),
			streams.KindTapFlow:    actors.TapFlowProducer(deps),
		}}
	system := actor.NewActorSystem()
	host, err := system.Root.SpawnNamed(actors.HostProps(env), "host")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = system.Root.PoisonFuture(host).Wait() })
	return &tapHarness{harness: &harness{t: t, root: system.Root, host: host, fake: fake, rep: rep}, mirror: mirror, dir: dir}
}

func (h *tapHarness) wait(kind streams.Kind, id string, phase nsv1.Phase) *nsv1.StatusEvent {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := h.rep.WaitFor(ctx, kind, id, phase)
	if err != nil {
		h.t.Fatalf("%s %s: want %s, latest %v", kind, id, phase, ev)
	}
	return ev
}

const (
	svcID   = "5e000000-0000-4000-8000-000000000001"
	flowID  = "f1000000-0000-4000-8000-000000000001"
	srcPort = "3d4e5f60-0000-4000-8000-00000000000a"
	svcPort = "3d4e5f60-1111-4000-8000-00000000000c"
)

func tapService(id, port string) *nsv1.TapService {
	return &nsv1.TapService{Id: id, PortId: port, Host: "hostA"}
}

func tapFlow(id, svc, dir string) *nsv1.TapFlow {
	return &nsv1.TapFlow{Id: id, TapServiceId: svc, SourcePort: srcPort, Direction: dir, Host: "hostA"}
}

func TestTapFlowWaitsForServiceAndPortsThenMirrors(t *testing.T) {
	h := newTapHarness(t, false)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapFlow(flowID, svcID, "BOTH"))
	h.waitReason(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_BUILD, "waiting for tap service")

	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapService(svcID, svcPort))
	h.waitReason(streams.KindTapService, svcID, nsv1.Phase_PHASE_BUILD, "waiting for port")
	h.mirror.Plug(links.TapName(svcPort), true)
	ev := h.wait(streams.KindTapService, svcID, nsv1.Phase_PHASE_ACTIVE)
	if ev.GetDetails()["tap_id"] != "3900" {
		t.Fatalf("tap service details: %v", ev.GetDetails())
	}
	// The flow learns the tap id from the directory and now waits for its source port.
	h.mirror.Plug(links.TapName(srcPort), true)
	ev = h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ACTIVE)
	if d := ev.GetDetails(); d["tap_id"] != "3900" || d["direction"] != "BOTH" || !strings.HasPrefix(d["mode"], "local") {
		t.Fatalf("tap flow details: %v", d)
	}
	want := "flow " + flowID + " BOTH " + links.TapName(srcPort) + " -> tap 3900 local " + links.TapName(svcPort) + "\n" +
		"service " + svcID + " tap 3900 -> " + links.TapName(svcPort) + "\n"
	if got := h.mirror.Dump(); got != want {
		t.Fatalf("mirror:\n%s\nwant:\n%s", got, want)
	}

	// A resync changes nothing: the supervisor answers GetCounts after forwarding the
	// resync, and each tap actor handles it before anything sent later.
	before := h.mirror.Mutations()
	h.root.Send(h.host, &actors.Resync{})
	if _, err := h.root.RequestFuture(h.host, &actors.GetCounts{}, 5*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapService(svcID, svcPort)) // same spec, new seq: a no-op for the mirror
	h.waitSeq(streams.KindTapService, svcID, nsv1.Phase_PHASE_ACTIVE, h.seq)
	if m := h.mirror.Mutations(); m != before {
		t.Fatalf("resync made %d mirror mutations", m-before)
	}

	// Direction change: the flow is re-programmed.
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, tapFlow(flowID, svcID, "IN"))
	h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ACTIVE)
	eventuallyT(t, func() bool { return strings.Contains(h.mirror.Dump(), "flow "+flowID+" IN ") })

	// A forged invalid version (it bypassed the publisher) is ERROR at its sequence, stays
	// ERROR over a resync, and the mirroring of the last good version goes on.
	running := h.mirror.Dump()
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, tapFlow(flowID, svcID, "SIDEWAYS"))
	h.waitSeq(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ERROR, h.seq)
	h.root.Send(h.host, &actors.Resync{})
	if _, err := h.root.RequestFuture(h.host, &actors.GetCounts{}, 5*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if ev := h.rep.Latest(streams.KindTapFlow, flowID); ev.GetPhase() != nsv1.Phase_PHASE_ERROR || !strings.Contains(ev.GetReason(), "direction") {
		t.Fatalf("after a resync the forged version's status is %v", ev)
	}
	if got := h.mirror.Dump(); got != running {
		t.Fatalf("a forged version changed the mirror:\n%s", got)
	}
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, tapFlow(flowID, svcID, "IN"))
	h.waitSeq(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ACTIVE, h.seq)

	// Deleting the flow, then the service, removes everything and frees the tap id.
	h.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, tapFlow(flowID, svcID, "IN"))
	h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_DELETED)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, tapService(svcID, svcPort))
	h.wait(streams.KindTapService, svcID, nsv1.Phase_PHASE_DELETED)
	if got := h.mirror.Dump(); got != "" {
		t.Fatalf("mirror after deletes:\n%s", got)
	}
	if _, ok := h.dir.Lookup(svcID); ok {
		t.Fatal("tap id not released")
	}
	// The id is reused (TaaS bug 1501953).
	other := "5e000000-0000-4000-8000-000000000002"
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapService(other, svcPort))
	if ev := h.wait(streams.KindTapService, other, nsv1.Phase_PHASE_ACTIVE); ev.GetDetails()["tap_id"] != "3900" {
		t.Fatalf("second service: %v", ev.GetDetails())
	}
}

func TestTapFlowStopsMirroringWhenItsServiceGoes(t *testing.T) {
	h := newTapHarness(t, false)
	h.mirror.Plug(links.TapName(srcPort), true)
	// A service on another host: only the directory knows it.
	if _, err := h.dir.Allocate(context.Background(), taas.ServiceInfo{ServiceID: svcID, Host: "hostB", PortID: svcPort}); err != nil {
		t.Fatal(err)
	}
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapFlow(flowID, svcID, "OUT"))
	ev := h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ACTIVE)
	if ev.GetDetails()["service_host"] != "hostB" || !strings.HasPrefix(ev.GetDetails()["mode"], "remote") {
		t.Fatalf("remote flow details: %v", ev.GetDetails())
	}
	if err := h.dir.Release(context.Background(), svcID); err != nil {
		t.Fatal(err)
	}
	eventuallyT(t, func() bool { return h.mirror.Dump() == "" })
	h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_BUILD)
}

func TestTapFlowToRemoteServiceOnLocalOnlyMirror(t *testing.T) {
	h := newTapHarness(t, true)
	h.mirror.Plug(links.TapName(srcPort), true)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, tapFlow(flowID, svcID, "OUT"))
	h.waitReason(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_BUILD, "mirrors only to tap services on the same host")
	if _, err := h.dir.Allocate(context.Background(), taas.ServiceInfo{ServiceID: svcID, Host: "hostB", PortID: svcPort}); err != nil {
		t.Fatal(err)
	}
	if ev := h.wait(streams.KindTapFlow, flowID, nsv1.Phase_PHASE_ERROR); !strings.Contains(ev.GetReason(), "openvswitch") {
		t.Fatalf("remote flow on a local-only mirror: %v", ev)
	}
}

// waitReason waits until the latest status of kind/id has phase and a reason containing text.
func (h *tapHarness) waitReason(kind streams.Kind, id string, phase nsv1.Phase, text string) {
	h.t.Helper()
	eventuallyT(h.t, func() bool {
		ev := h.rep.Latest(kind, id)
		return ev.GetPhase() == phase && strings.Contains(ev.GetReason(), text)
	})
}

// waitSeq waits until the latest status of kind/id has phase for desired sequence seq.
func (h *tapHarness) waitSeq(kind streams.Kind, id string, phase nsv1.Phase, seq uint64) {
	h.t.Helper()
	eventuallyT(h.t, func() bool {
		ev := h.rep.Latest(kind, id)
		return ev.GetPhase() == phase && ev.GetDesiredSeq() == seq
	})
}

func eventuallyT(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
