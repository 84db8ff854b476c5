package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/replay"
	"github.com/netsource/netsource/replay/replaytest"
	"github.com/netsource/netsource/streams"
)

func simulate(t *testing.T, src replay.Source, o replay.SimOptions) (*replay.Simulation, []byte) {
	t.Helper()
	sim, err := replay.Simulate(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := replay.WriteSimulation(&buf, sim, true, true); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(sim)
	if err != nil {
		t.Fatal(err)
	}
	return sim, append(buf.Bytes(), data...)
}

// TestSimulateIsDeterministic: five runs over the same history print the same bytes, for
// every host of the script (the actor tree is concurrent in the agent).
func TestSimulateIsDeterministic(t *testing.T) {
	src := scriptFile(t)
	for _, host := range replaytest.Hosts {
		t.Run(host, func(t *testing.T) {
			_, first := simulate(t, src, replay.SimOptions{Host: host})
			for run := 2; run <= 5; run++ {
				if _, out := simulate(t, src, replay.SimOptions{Host: host}); !bytes.Equal(first, out) {
					t.Fatalf("run %d printed something else than run 1 (%d bytes, then %d)", run, len(first), len(out))
				}
			}
		})
	}
}

func stepAt(t *testing.T, sim *replay.Simulation, seq uint64) replay.Step {
	t.Helper()
	for _, st := range sim.Steps {
		if st.Input == "desired" && st.Seq == seq {
			return st
		}
	}
	t.Fatalf("no step for desired #%d", seq)
	return replay.Step{}
}

func seqOf(t *testing.T, pred func(r *replay.Record, ev *nsv1.DesiredEvent) bool) uint64 {
	t.Helper()
	for _, r := range replaytest.History() {
		if r.Stream != replay.Desired {
			continue
		}
		ev, _ := streams.DecodeDesired(r.Data)
		if pred(r, ev) {
			return r.Seq
		}
	}
	t.Fatal("no such event in the script")
	return 0
}

// TestSimulateOperations checks what the operations say for the script's special events.
func TestSimulateOperations(t *testing.T) {
	src := scriptFile(t)
	simA, _ := simulate(t, src, replay.SimOptions{Host: "hostA"})
	simB, _ := simulate(t, src, replay.SimOptions{Host: "hostB"})
	tomb := seqOf(t, func(r *replay.Record, ev *nsv1.DesiredEvent) bool {
		return ev.GetChange() == nsv1.ChangeKind_CHANGE_KIND_DELETED && ev.GetPort().GetId() == replaytest.Moved
	})
	// The move: hostA removes the port's devices, hostB creates its bridge and the port.
	st := stepAt(t, simA, tomb)
	if len(st.Ops) != 1 || !strings.HasPrefix(st.Ops[0].Call, "delete-port "+replaytest.Moved) ||
		!slices.Contains(st.Ops[0].Writes, "delete "+links.TapName(replaytest.Moved)) {
		t.Errorf("hostA at the move's tombstone #%d: %+v", tomb, st.Ops)
	}
	st = stepAt(t, simB, tomb+1)
	if len(st.Ops) != 2 || !strings.HasPrefix(st.Ops[0].Call, "ensure-network "+replaytest.NetBlue) ||
		!strings.HasPrefix(st.Ops[1].Call, "ensure-port "+replaytest.Moved) {
		t.Errorf("hostB at the move's create #%d: %+v", tomb+1, st.Ops)
	}
	// The tombstone is on hostA's subject: hostB's tree never sees it.
	for _, s := range simB.Steps {
		if s.Seq == tomb {
			t.Errorf("hostB was fed hostA's tombstone: %+v", s)
		}
	}
	// Undecodable and invalid events change nothing and are reported ERROR.
	for _, id := range []string{replaytest.Garbled, replaytest.Invalid} {
		seq := seqOf(t, func(r *replay.Record, ev *nsv1.DesiredEvent) bool {
			return strings.HasSuffix(r.Subject, id) && (ev == nil || streams.ValidateSpec(streams.SpecOf(ev)) != nil)
		})
		st := stepAt(t, simA, seq)
		if len(st.Ops) != 0 || len(st.Statuses) != 1 || st.Statuses[0].Phase != "ERROR" {
			t.Errorf("hostA at bad event #%d: ops %+v statuses %+v", seq, st.Ops, st.Statuses)
		}
	}
	// At the end hostA has exactly its live ports' devices.
	for i := range replaytest.Ports {
		dev := links.TapName(replaytest.PortID(i))
		want := replaytest.HostOf(i) == "hostA" && i != 0 && i < 30
		if got := strings.Contains(simA.Dump, "veth "+dev+" "); got != want {
			t.Errorf("hostA's final dump has %s: %v, want %v", dev, got, want)
		}
	}
	if !strings.Contains(simA.ConfigFrom, "heartbeat of hostA") || !strings.Contains(simA.Config, "198.18.0.1") {
		t.Errorf("hostA's configuration did not come from its heartbeat: %s (%s)", simA.Config, simA.ConfigFrom)
	}
}

// TestSimulateTo stops at the bound.
func TestSimulateTo(t *testing.T) {
	src := scriptFile(t)
	sim, _ := simulate(t, src, replay.SimOptions{Host: "hostA", To: replay.Bound{Seq: 20}})
	last := sim.Steps[len(sim.Steps)-1]
	if last.Seq > 20 || last.Seq < 17 {
		t.Fatalf("simulation to #20 ended at #%d", last.Seq)
	}
}

// TestSimulateL2Population feeds other agents' port status, merged by time: the simulated
// host's VXLAN device gets their MACs as forwarding entries.
func TestSimulateL2Population(t *testing.T) {
	src := scriptFile(t)
	cfg := &config.Config{}
	cfg.VXLAN.LocalIP, cfg.VXLAN.L2Population = "198.18.0.2", true
	sim, out := simulate(t, src, replay.SimOptions{Host: "hostB", Config: cfg})
	remote := 0
	for _, st := range sim.Steps {
		if st.Input == "remote-status" {
			remote++
		}
	}
	// The script's statuses carry no port_l2 (no tunnel IP), so no entries are made, but the
	// statuses are fed and the device is unicast (no group, no learning).
	if remote == 0 || !strings.Contains(sim.Dump, "vxlan-1002 vni 1002 local 198.18.0.2 dev eth1 port 4789 nolearning") {
		t.Fatalf("l2population simulation: %d remote statuses fed, dump:\n%s", remote, sim.Dump)
	}
	if !bytes.Contains(out, []byte("status of port")) {
		t.Fatal("remote statuses not printed")
	}
}

// TestRecorderAttributesWrites: every simulated kernel write is listed under the call that
// made it, and a no-op call lists none.
func TestRecorderAttributesWrites(t *testing.T) {
	fake := links.NewFake()
	rec := replay.NewRecorder(fake)
	ctx := context.Background()
	spec := links.NetworkSpec{ID: "n1", Bridge: "brqn1", MTU: 1400}
	for range 2 {
		if err := rec.EnsureNetwork(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.DeleteDevice(ctx, "nothing"); err != nil {
		t.Fatal(err)
	}
	ops := rec.Take()
	got := fmt.Sprint(ops)
	want := "[{ensure-network n1 bridge brqn1 mtu 1400 [create brqn1 set-up brqn1] } {ensure-network n1 bridge brqn1 mtu 1400 [] } {delete-device nothing [] }]"
	if got != want {
		t.Fatalf("recorded %s\nwant     %s", got, want)
	}
	if len(rec.Take()) != 0 || len(rec.Ops()) != 3 {
		t.Fatal("Take returned ops twice")
	}
}
