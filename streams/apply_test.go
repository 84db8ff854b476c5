package streams_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
	"github.com/netsource/netsource/topology"
)

func sampleTopology(t *testing.T) *nsv1.Topology {
	t.Helper()
	data, err := os.ReadFile("../examples/topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func actions(plan []*streams.Change) map[streams.Action]int {
	out := map[streams.Action]int{}
	for _, c := range plan {
		out[c.Action]++
	}
	return out
}

func TestApplyGetRoundTripEveryKind(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	want := sampleTopology(t)
	plan, err := pub.Apply(ctx, proto.Clone(want).(*nsv1.Topology))
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(plan); got[streams.ActionCreate] != 10 || len(got) != 1 {
		t.Fatalf("first apply actions = %v, want 10 created", got)
	}
	state, err := streams.LoadState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	// Hosts left out in the file are filled from the referenced ports.
	topology.Validate(want, nil)
	got := state.Topology()
	for _, kind := range streams.Kinds {
		gotSpecs, wantSpecs := specsOf(got, kind), specsOf(want, kind)
		if len(wantSpecs) == 0 {
			t.Fatalf("sample lacks %s", kind)
		}
		if diff := cmp.Diff(wantSpecs, gotSpecs, protocmp.Transform()); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", kind, diff)
		}
	}
	// Applying the same file again publishes nothing.
	before := streamMsgs(t, js)
	plan, err = pub.Apply(ctx, sampleTopology(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(plan); got[streams.ActionUnchanged] != 10 {
		t.Fatalf("second apply actions = %v, want 10 unchanged", got)
	}
	if after := streamMsgs(t, js); after != before {
		t.Fatalf("second apply stored %d messages", after-before)
	}
}

func specsOf(t *nsv1.Topology, kind streams.Kind) map[string]streams.Spec {
	out := map[string]streams.Spec{}
	for _, s := range streams.Specs(t) {
		if streams.KindOfSpec(s) == kind {
			out[s.GetId()] = s
		}
	}
	return out
}

func TestDeleteLeavesTombstone(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	if _, err := pub.Apply(ctx, sampleTopology(t)); err != nil {
		t.Fatal(err)
	}
	const lbID = "5e6f7081-0000-4000-8000-000000000001"
	if _, err := pub.Delete(ctx, streams.KindLoadBalancer, lbID); err != nil {
		t.Fatal(err)
	}
	state, err := streams.LoadState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	recs := state.Find(streams.KindLoadBalancer, lbID)
	if len(recs) != 1 || recs[0].Live() || recs[0].Event.GetChange() != nsv1.ChangeKind_CHANGE_KIND_DELETED {
		t.Fatalf("after delete: %+v, want one tombstone", recs)
	}
	if streams.SpecOf(recs[0].Event).GetId() != lbID {
		t.Fatal("tombstone lost the spec it deletes")
	}
	if n := len(state.Topology().GetLoadbalancers()); n != 0 {
		t.Fatalf("get still lists %d load balancers", n)
	}
	// Deleting again: not found. Deleting a network in use: refused, nothing published.
	if _, err := pub.Delete(ctx, streams.KindLoadBalancer, lbID); !errors.Is(err, streams.ErrNotFound) {
		t.Fatalf("second delete: %v, want not found", err)
	}
	before := streamMsgs(t, js)
	_, err = pub.Delete(ctx, streams.KindNetwork, "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01")
	if !errors.Is(err, streams.ErrInUse) || !strings.Contains(err.Error(), "port 3d4e5f60-0000-4000-8000-000000000001") {
		t.Fatalf("delete of a network in use: %v", err)
	}
	if streamMsgs(t, js) != before {
		t.Fatal("refused delete published something")
	}
	// Re-creating after a delete continues from the tombstone.
	plan, err := pub.Apply(ctx, sampleTopology(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(plan); got[streams.ActionCreate] != 1 {
		t.Fatalf("re-apply after delete: %v, want 1 created", got)
	}
}

func TestPortHostMoveTombstonesOldHost(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	topo := &nsv1.Topology{Networks: []*nsv1.Network{testNetwork()}, Ports: []*nsv1.Port{testPort("fa:16:3e:00:00:01")}}
	if _, err := pub.Apply(ctx, proto.Clone(topo).(*nsv1.Topology)); err != nil {
		t.Fatal(err)
	}
	topo.Ports[0].Host = "hostB"
	plan, err := pub.Apply(ctx, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(plan); got[streams.ActionDelete] != 1 || got[streams.ActionCreate] != 1 {
		t.Fatalf("move actions = %v, want 1 deleted + 1 created", got)
	}
	state, err := streams.LoadState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	recs := state.Find(streams.KindPort, portID)
	if len(recs) != 2 || !recs[0].Live() || recs[0].Address.Host != "hostB" || recs[1].Live() || recs[1].Address.Host != "hostA" {
		t.Fatalf("after move: live on %s, tombstone on %s", recs[0].Address.Host, recs[1].Address.Host)
	}
}

func TestInvalidTopologyPublishesNothing(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	for _, mutate := range []func(*nsv1.Topology){
		func(t *nsv1.Topology) { t.Ports[1].MacAddress = "zz:16:3e:00:00:02" },
		func(t *nsv1.Topology) { t.Ports[0].Host = "a.b" },
		func(t *nsv1.Topology) { t.Networks[0].SegmentationId = 1 << 24 },
		func(t *nsv1.Topology) {
			t.Loadbalancers[0].Pools[0].Healthmonitor.UrlPath = "/x\n  server evil 1.2.3.4:80"
		},
	} {
		topo := sampleTopology(t)
		mutate(topo)
		if _, err := pub.Apply(ctxT(t), topo); err == nil {
			t.Fatal("invalid topology accepted")
		}
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("%d messages published from invalid topologies", n)
	}
}

func TestPortsWhoseDeviceNamesCollideAreRejected(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	a, b := testPort("fa:16:3e:00:00:01"), testPort("fa:16:3e:00:00:02")
	b.Id = "3d4e5f60-0000-4000-8000-000000000002" // same first 11 characters: same tap device
	b.Binding.Netns = "vm2"
	_, err := streams.NewPublisher(js, "test").Apply(ctxT(t), &nsv1.Topology{Networks: []*nsv1.Network{testNetwork()}, Ports: []*nsv1.Port{a, b}})
	if err == nil || !strings.Contains(err.Error(), "ports[1].id: device name tap3d4e5f60-00 on host hostA is also port "+portID) {
		t.Fatalf("colliding device names: %v", err)
	}
	b.Host = "hostB" // on another host there is no collision
	if _, err := streams.NewPublisher(js, "test").Apply(ctxT(t), &nsv1.Topology{Networks: []*nsv1.Network{testNetwork()}, Ports: []*nsv1.Port{a, b}}); err != nil {
		t.Fatal(err)
	}
}
