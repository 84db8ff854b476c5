package actors_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

const (
	lbID      = "5e6f7081-0000-4000-8000-000000000001"
	lbVIPPort = "5f607182-0000-4000-8000-000000000004"
	lbPoolID  = "708192a3-0000-4000-8000-000000000001"
	lbMember1 = "92a3b4c5-0000-4000-8000-000000000001"
	lbMember2 = "92a3b4c5-0000-4000-8000-000000000002"
)

// lbHarness runs a host supervisor with the load balancer kind over fake links and a fake
// haproxy; ops records the haproxy operations the agent made.
type lbHarness struct {
	*harness
	hx  *haproxy.Fake
	ops *opLog
}

type opLog struct {
	mu  sync.Mutex
	ops map[string]int
}

func (o *opLog) count(op string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ops[op]
}

func newLBHarness(t *testing.T, fake *links.Fake, hx *haproxy.Fake, last map[string]*nsv1.StatusEvent) *lbHarness {
	t.Helper()
	cfg := &config.Config{Host: "hostA"}
	cfg.VXLAN.LocalIP = "198.18.0.1"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ops := &opLog{ops: map[string]int{}}
	hx.FailOn = func(op, _ string) error {
		ops.mu.Lock()
		ops.ops[op]++
		ops.mu.Unlock()
		return nil
	}
	opts := actors.LoadBalancerOptions{Driver: hx, StatsInterval: 10 * time.Millisecond}
	rep := actors.NewRecordingReporter()
	env := &actors.Env{Config: cfg, Dataplane: fake, Reporter: rep, LastStatus: last,
		Log:       zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		OpTimeout: 5 * time.Second, Backoff: actors.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Objects:   map[streams.Kind]actors.ObjectProducer{streams.KindLoadBalancer: actors.LoadBalancerActors(opts)},
		Observers: []actors.ObserverProducer{actors.LoadBalancerOrphans(opts)}}
	system := actor.NewActorSystem()
	host, err := system.Root.SpawnNamed(actors.HostProps(env), "host")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = system.Root.PoisonFuture(host).Wait() })
	return &lbHarness{harness: &harness{t: t, root: system.Root, host: host, fake: fake, rep: rep}, hx: hx, ops: ops}
}

func lbNetwork() *nsv1.Network {
	return &nsv1.Network{Id: netID, NetworkType: "local", Mtu: 1500,
		Subnets: []*nsv1.Subnet{{Id: subnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1",
			HostRoutes: []*nsv1.HostRoute{{Destination: "198.51.100.0/24", Nexthop: "192.0.2.254"}}}}}
}

func testLB() *nsv1.LoadBalancer {
	return &nsv1.LoadBalancer{Id: lbID, Host: "hostA", VipNetworkId: netID, VipSubnetId: subnet, VipAddress: "192.0.2.100",
		VipPortId: lbVIPPort,
		Listeners: []*nsv1.Listener{{Id: "6f708192-0000-4000-8000-000000000001", Protocol: "HTTP", ProtocolPort: 80, DefaultPoolId: lbPoolID}},
		Pools: []*nsv1.Pool{{Id: lbPoolID, Protocol: "HTTP", LbAlgorithm: "ROUND_ROBIN",
			Healthmonitor: &nsv1.HealthMonitor{Type: "HTTP", Delay: 1, Timeout: 1, MaxRetries: 2, UrlPath: "/healthz"},
			Members: []*nsv1.Member{{Id: lbMember1, Address: "192.0.2.21", ProtocolPort: 8080, SubnetId: subnet},
				{Id: lbMember2, Address: "192.0.2.22", ProtocolPort: 8080, SubnetId: subnet}}}}}
}

// waitFor waits until the latest status of the load balancer satisfies ok.
func (h *lbHarness) waitFor(what string, ok func(ev *nsv1.StatusEvent) bool) *nsv1.StatusEvent {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := h.rep.Latest(streams.KindLoadBalancer, lbID)
		if ev != nil && ok(ev) {
			return ev
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: last status %v", what, ev)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOps waits until the haproxy operations made so far satisfy ok.
func (h *lbHarness) waitOps(what string, ok func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			h.ops.mu.Lock()
			h.t.Fatalf("%s: operations so far %v", what, h.ops.ops)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *lbHarness) lbEvents() int {
	n := 0
	for _, ev := range h.rep.Events() {
		if ev.GetKind() == string(streams.KindLoadBalancer) {
			n++
		}
	}
	return n
}

func phaseIs(p nsv1.Phase) func(*nsv1.StatusEvent) bool {
	return func(ev *nsv1.StatusEvent) bool { return ev.GetPhase() == p }
}

func TestLoadBalancerLifecycle(t *testing.T) {
	fake, hx := links.NewFake(), haproxy.NewFake()
	h := newLBHarness(t, fake, hx, nil)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
	lb := testLB()
	seq := h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lb)
	h.root.Send(h.host, &actors.CaughtUp{})
	ev := h.waitFor("ACTIVE with member statuses", func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDetails()["member:"+lbMember2] == haproxy.Online
	})
	if ev.GetDesiredSeq() != seq {
		t.Errorf("desired seq %d, want %d", ev.GetDesiredSeq(), seq)
	}
	ns := haproxy.Namespace(lbID)
	want := map[string]string{
		"namespace": ns, "vip_device": "ns-5f607182-00", "vip_address": "192.0.2.100", "haproxy_pid": "1001",
		"config": ev.GetDetails()["config"], "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
		"listener:6f708192-0000-4000-8000-000000000001": "ONLINE", "pool:" + lbPoolID: "ONLINE",
		"member:" + lbMember1: "ONLINE", "member:" + lbMember2: "ONLINE",
	}
	if diff := cmp.Diff(want, ev.GetDetails()); diff != "" {
		t.Errorf("details (-want +got):\n%s", diff)
	}
	// The VIP: a veth on the network's bridge, peer in qlbaas-<id> with the subnet prefix,
	// the host route and the default route via the gateway.
	dump := fake.Dump()
	vip := "veth tap5f607182-00 master brq6a0e4b8e-1c mtu 1500 up peer ns-5f607182-00@" + ns
	if !strings.Contains(dump, vip) || !strings.Contains(dump, "addrs 192.0.2.100/24 routes 198.51.100.0/24 via 192.0.2.254,default via 192.0.2.1") {
		t.Errorf("VIP port not as wanted:\n%s", dump)
	}
	if got := hx.Announced(); len(got) != 1 || got[0] != ns+" ns-5f607182-00 192.0.2.100 3" {
		t.Errorf("gratuitous ARP: %v", got)
	}
	if !strings.Contains(string(hx.Config(lbID)), "server "+lbMember1+" 192.0.2.21:8080 weight 1 check inter 1s fall 2 rise 2") {
		t.Errorf("config:\n%s", hx.Config(lbID))
	}

	// Resync: nothing changes, nothing is published.
	events, mutations := h.lbEvents(), fake.Mutations()
	ensures, stats := h.ops.count("ensure"), h.ops.count("stats")
	for range 3 {
		h.root.Send(h.host, &actors.Resync{})
	}
	h.waitOps("three resyncs and more stats readings", func() bool {
		return h.ops.count("ensure") >= ensures+3 && h.ops.count("stats") >= stats+3
	})
	if starts, reloads := hx.Counts(lbID); starts != 1 || reloads != 0 || h.lbEvents() != events || fake.Mutations() != mutations {
		t.Errorf("resync changed something: starts %d reloads %d, events %d->%d, mutations %d->%d",
			starts, reloads, events, h.lbEvents(), mutations, fake.Mutations())
	}

	// A member fails its checks: OFFLINE, the pool and the load balancer DEGRADED.
	hx.SetServer(lbID, lbPoolID, lbMember2, haproxy.Row{Status: "DOWN", CheckStatus: "L4CON", Weight: 1})
	ev = h.waitFor("member OFFLINE", func(ev *nsv1.StatusEvent) bool { return ev.GetDetails()["member:"+lbMember2] == haproxy.Offline })
	if ev.GetDetails()["operating_status"] != haproxy.Degraded || ev.GetDetails()["pool:"+lbPoolID] != haproxy.Degraded ||
		ev.GetPhase() != nsv1.Phase_PHASE_ACTIVE {
		t.Errorf("after a member went down: %v", ev)
	}

	// A new listener: reloaded, not restarted.
	lb.Listeners = append(lb.Listeners, &nsv1.Listener{Id: "6f708192-0000-4000-8000-000000000002", Protocol: "HTTP",
		ProtocolPort: 8080, DefaultPoolId: lbPoolID})
	seq = h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, lb)
	h.waitFor("ACTIVE at the new version", func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDesiredSeq() == seq
	})
	if starts, reloads := hx.Counts(lbID); starts != 1 || reloads != 1 {
		t.Errorf("after a new listener: starts %d reloads %d", starts, reloads)
	}

	// Admin down: undeployed, the status says why; up again: deployed again.
	lb.AdminStateUp = new(bool)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, lb)
	ev = h.waitFor("DOWN", phaseIs(nsv1.Phase_PHASE_DOWN))
	if !strings.Contains(ev.GetReason(), "admin_state_up is false") || ev.GetDetails()["operating_status"] != haproxy.Offline ||
		hx.Dump() != "" || strings.Contains(fake.Dump(), "tap5f607182-00") {
		t.Errorf("admin down: %v\nhaproxy: %q\nlinks:\n%s", ev, hx.Dump(), fake.Dump())
	}
	lb.AdminStateUp = nil
	h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, lb)
	h.waitFor("ACTIVE again", phaseIs(nsv1.Phase_PHASE_ACTIVE))

	// Delete: haproxy, namespace and VIP gone.
	h.publish(nsv1.ChangeKind_CHANGE_KIND_DELETED, lb)
	h.waitFor("DELETED", phaseIs(nsv1.Phase_PHASE_DELETED))
	if hx.Dump() != "" || strings.Contains(fake.Dump(), "5f607182") {
		t.Errorf("after delete:\nhaproxy: %q\nlinks:\n%s", hx.Dump(), fake.Dump())
	}
}

func TestLoadBalancerNotDeployable(t *testing.T) {
	for name, c := range map[string]struct {
		mutate func(*nsv1.LoadBalancer)
		reason string
	}{
		"no listeners":           {func(lb *nsv1.LoadBalancer) { lb.Listeners = nil }, "no listeners"},
		"listener admin down":    {func(lb *nsv1.LoadBalancer) { lb.Listeners[0].AdminStateUp = new(bool) }, "no listener is admin_state_up"},
		"load balancer disabled": {func(lb *nsv1.LoadBalancer) { lb.AdminStateUp = new(bool) }, "admin_state_up is false"},
	} {
		t.Run(name, func(t *testing.T) {
			fake, hx := links.NewFake(), haproxy.NewFake()
			h := newLBHarness(t, fake, hx, nil)
			h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
			lb := testLB()
			c.mutate(lb)
			h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lb)
			ev := h.waitFor("DOWN", phaseIs(nsv1.Phase_PHASE_DOWN))
			if !strings.Contains(ev.GetReason(), c.reason) || hx.Dump() != "" || strings.Contains(fake.Dump(), "5f607182") {
				t.Errorf("status %v\nhaproxy %q\nlinks:\n%s", ev, hx.Dump(), fake.Dump())
			}
		})
	}
}

// TestLoadBalancerForgedEvent: an invalid graph that reached the agent puts the load balancer
// in ERROR and writes no config, through the supervisor and even when sent to the actor
// directly; a running instance keeps its last good config.
func TestLoadBalancerForgedEvent(t *testing.T) {
	forged := func() *nsv1.LoadBalancer {
		lb := testLB()
		lb.Pools[0].Healthmonitor.UrlPath = "/healthz\n    stats enable"
		return lb
	}
	t.Run("through the supervisor", func(t *testing.T) {
		fake, hx := links.NewFake(), haproxy.NewFake()
		h := newLBHarness(t, fake, hx, nil)
		h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
		h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, forged())
		ev := h.waitFor("ERROR", phaseIs(nsv1.Phase_PHASE_ERROR))
		if !strings.Contains(ev.GetReason(), "url_path") || hx.Dump() != "" || hx.Config(lbID) != nil {
			t.Errorf("status %v, haproxy %q", ev, hx.Dump())
		}
		// A running load balancer keeps its config when a forged update arrives.
		h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testLB())
		h.waitFor("ACTIVE", phaseIs(nsv1.Phase_PHASE_ACTIVE))
		good := string(hx.Config(lbID))
		h.publish(nsv1.ChangeKind_CHANGE_KIND_UPDATED, forged())
		h.waitFor("ERROR", phaseIs(nsv1.Phase_PHASE_ERROR))
		if string(hx.Config(lbID)) != good {
			t.Error("a forged update changed the running config")
		}
	})
	t.Run("straight to the actor", func(t *testing.T) {
		hx := haproxy.NewFake()
		cfg := &config.Config{Host: "hostA"}
		cfg.ApplyDefaults()
		rep := actors.NewRecordingReporter()
		env := &actors.Env{Config: cfg, Dataplane: links.NewFake(), Reporter: rep, Log: zerolog.Nop(), OpTimeout: time.Second,
			Backoff: actors.DefaultBackoff}
		system := actor.NewActorSystem()
		pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return actors.LoadBalancerActors(actors.LoadBalancerOptions{Driver: hx})(env, lbID)
		}))
		defer func() { _ = system.Root.PoisonFuture(pid).Wait() }()
		system.Root.Send(pid, &actors.ObjectDesired{Seq: 7, Received: time.Now(), Spec: forged()})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ev, err := rep.WaitFor(ctx, streams.KindLoadBalancer, lbID, nsv1.Phase_PHASE_ERROR)
		if err != nil || !strings.Contains(ev.GetReason(), "no config written") || !strings.Contains(ev.GetReason(), "url_path") {
			t.Fatalf("status %v %v", ev, err)
		}
		if hx.Dump() != "" {
			t.Errorf("config written: %q", hx.Dump())
		}
	})
}

// TestLoadBalancerRestartsDeadHAProxy: an unexpected exit is reported and repaired at once.
func TestLoadBalancerRestartsDeadHAProxy(t *testing.T) {
	fake, hx := links.NewFake(), haproxy.NewFake()
	h := newLBHarness(t, fake, hx, nil)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, testLB())
	h.waitFor("ACTIVE", phaseIs(nsv1.Phase_PHASE_ACTIVE))
	pid := hx.Kill(lbID)
	ev := h.waitFor("ACTIVE after restart", func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDetails()["haproxy_pid"] != fmt.Sprint(pid)
	})
	if ev.GetDetails()["haproxy_pid"] == fmt.Sprint(pid) {
		t.Errorf("same pid after restart: %v", ev)
	}
	sawError := false
	for _, e := range h.rep.Events() {
		sawError = sawError || e.GetPhase() == nsv1.Phase_PHASE_ERROR && strings.Contains(e.GetReason(), "exited unexpectedly")
	}
	if starts, _ := hx.Counts(lbID); !sawError || starts != 2 {
		t.Errorf("error status seen %t, starts %d", sawError, starts)
	}
}

// TestLoadBalancerConvergedRestart: an agent restarted over a running instance adopts it,
// reloads nothing and publishes nothing.
func TestLoadBalancerConvergedRestart(t *testing.T) {
	fake, hx := links.NewFake(), haproxy.NewFake()
	h := newLBHarness(t, fake, hx, nil)
	netSeq := h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
	lbSeq := h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, testLB())
	h.waitFor("ACTIVE with statuses", func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDetails()["member:"+lbMember1] == haproxy.Online
	})
	stats := h.ops.count("stats")
	h.waitOps("a few more stats readings", func() bool { return h.ops.count("stats") >= stats+3 })
	last := map[string]*nsv1.StatusEvent{}
	for _, ev := range h.rep.Events() {
		last[ev.GetKind()+"/"+ev.GetId()] = ev
	}
	_ = h.root.PoisonFuture(h.host).Wait()

	// The "restarted" agent: same kernel, same running haproxy, a fresh driver.
	hx2 := haproxy.NewFake()
	if err := hx2.AddRunning(testLB()); err != nil {
		t.Fatal(err)
	}
	mutations := fake.Mutations()
	h2 := newLBHarness(t, fake, hx2, last)
	h2.seq = netSeq - 1
	h2.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
	h2.seq = lbSeq - 1
	h2.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, testLB())
	h2.root.Send(h2.host, &actors.CaughtUp{})
	h2.waitOps("restarted agent converged and read stats", func() bool {
		return h2.ops.count("ensure") > 0 && h2.ops.count("stats") >= 3
	})
	if starts, reloads := hx2.Counts(lbID); starts != 0 || reloads != 0 {
		t.Errorf("restart touched haproxy: starts %d reloads %d", starts, reloads)
	}
	if n := h2.lbEvents(); n != 0 {
		t.Errorf("restart published %d load balancer statuses: %v", n, h2.rep.Events())
	}
	if fake.Mutations() != mutations {
		t.Errorf("restart changed the kernel: %d mutations", fake.Mutations()-mutations)
	}
}

// TestLoadBalancerOrphansPruned: instances of load balancers nobody desires are removed
// once the desired state is loaded; desired ones are left alone.
func TestLoadBalancerOrphansPruned(t *testing.T) {
	fake, hx := links.NewFake(), haproxy.NewFake()
	orphan := testLB()
	orphan.Id = "5e6f7081-0000-4000-8000-0000000000ff"
	for _, lb := range []*nsv1.LoadBalancer{orphan, testLB()} {
		if err := hx.AddRunning(lb); err != nil {
			t.Fatal(err)
		}
	}
	h := newLBHarness(t, fake, hx, nil)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, lbNetwork())
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, testLB())
	h.root.Send(h.host, &actors.CaughtUp{})
	h.waitFor("ACTIVE", phaseIs(nsv1.Phase_PHASE_ACTIVE))
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(hx.Dump(), orphan.Id) {
		if time.Now().After(deadline) {
			t.Fatalf("orphan not pruned:\n%s", hx.Dump())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(hx.Dump(), "instance "+lbID) {
		t.Errorf("desired instance pruned:\n%s", hx.Dump())
	}
}

// TestLoadBalancerNetworkMissing: a load balancer whose network never comes is in ERROR
// once the desired state is loaded.
func TestLoadBalancerNetworkMissing(t *testing.T) {
	h := newLBHarness(t, links.NewFake(), haproxy.NewFake(), nil)
	h.publish(nsv1.ChangeKind_CHANGE_KIND_CREATED, testLB())
	h.root.Send(h.host, &actors.CaughtUp{})
	ev := h.waitFor("ERROR", phaseIs(nsv1.Phase_PHASE_ERROR))
	if !strings.Contains(ev.GetReason(), netID) {
		t.Errorf("reason %q does not name the network", ev.GetReason())
	}
}
