package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/haproxy/haproxytest"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// Helpers of the load balancer tests (issue 5): one host namespace with an in-process
// agent and an embedded JetStream server; "VM" namespaces for two backends and a client,
// all veth ports of one local network 192.0.2.0/24; backends are Go HTTP servers whose
// sockets live in the VM namespaces (haproxytest), each answering its own name.

const (
	lbHost    = "lbhost"
	lbNetID   = "4b5c6d70-0000-4000-8000-000000000001"
	lbSubnet  = "4b5c6d70-0000-4000-8000-000000000002"
	lbPoolID  = "4b5c6d70-0000-4000-8000-0000000000a0"
	lbMember1 = "4b5c6d70-0000-4000-8000-0000000000b1"
	lbMember2 = "4b5c6d70-0000-4000-8000-0000000000b2"
	lbVIP     = "192.0.2.100"
)

type lbTestEnv struct {
	tb       testing.TB
	prefix   string
	hostNS   string
	stateDir string // the agent's haproxy.state_dir; instances are in <stateDir>/<host>/<id>
	srv      *natstest.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	pub      *streams.Publisher
	status   *lbStatusLog
	log      zerolog.Logger
	mu       sync.Mutex
	lbIDs    []string // their qlbaas-<id> namespaces are removed at the end
}

// newLBTestEnv makes the host namespace and the server. Cleanup (registered first, so it
// runs last) kills the test's haproxy processes by PID and deletes every namespace it made,
// also when the test fails.
func newLBTestEnv(tb testing.TB) *lbTestEnv {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces, veth pairs, bridges and haproxy processes")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		tb.Skip("haproxy is not installed (the deps task installs it)")
	}
	e := &lbTestEnv{tb: tb, prefix: fmt.Sprintf("nslb%04x", rand.IntN(0xffff)),
		log: zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)}
	e.hostNS = e.prefix + "-host"
	dir, err := os.MkdirTemp("", "nslb") // short: haproxy socket paths are limited to 97 bytes
	if err != nil {
		tb.Fatal(err)
	}
	e.stateDir = dir
	tb.Cleanup(func() {
		haproxytest.KillInstances(filepath.Join(dir, lbHost))
		e.mu.Lock()
		for _, id := range e.lbIDs {
			_ = netns.DeleteNamed(haproxy.Namespace(id))
			_ = os.Remove(filepath.Join(links.DefaultMarkerDir, haproxy.Namespace(id)))
		}
		e.mu.Unlock()
		lbRemoveNamespaces(tb, e.prefix)
		_ = os.RemoveAll(dir)
	})
	for _, args := range [][]string{{"ip", "netns", "add", e.hostNS}, {"ip", "-n", e.hostNS, "link", "set", "lo", "up"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	e.srv = natstest.StartAt(tb, tb.TempDir(), "127.0.0.1:-1")
	e.nc, e.js = e.srv.Connect()
	e.pub = streams.NewPublisher(e.js, "lbtest")
	e.status = newLBStatusLog(tb, e.nc)
	return e
}

func (e *lbTestEnv) config() *config.Config {
	off := false
	cfg := &config.Config{Host: lbHost, Netns: e.hostNS, NATS: e.srv.NS.ClientURL()}
	cfg.VXLAN.EnableVXLAN = &off
	cfg.HAProxy.StateDir = e.stateDir
	cfg.Agent.ReportInterval.Duration = 300 * time.Millisecond
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		e.tb.Fatal(err)
	}
	return cfg
}

// startAgent runs agent.Run until the returned stop is called (or the test ends) and
// waits until it has loaded the desired state.
func (e *lbTestEnv) startAgent() (stop func()) {
	e.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.tb.Errorf("agent: %v", err)
			}
		})
	}
	e.tb.Cleanup(stop)
	go func() { done <- agent.Run(ctx, e.config(), agent.Options{Ready: func() { close(ready) }}, e.log) }()
	select {
	case <-ready:
	case err := <-done:
		done <- err
		e.tb.Fatalf("agent ended before it was ready: %v", err)
	case <-time.After(time.Minute):
		e.tb.Fatal("agent not ready after a minute")
	}
	return stop
}

func lbPortID(n int) string { return fmt.Sprintf("4b5c6d7%d-0000-4000-8000-00000000000%d", n, n) }

// vm is the namespace of VM name.
func (e *lbTestEnv) vm(name string) string { return e.prefix + "-" + name }

// topology: the network and three veth ports: backends b1 (192.0.2.21) and b2
// (192.0.2.22), and a client (192.0.2.30).
func (e *lbTestEnv) topology() *nsv1.Topology {
	port := func(n int, vm, ip string) *nsv1.Port {
		return &nsv1.Port{Id: lbPortID(n), NetworkId: lbNetID, Host: lbHost, MacAddress: fmt.Sprintf("fa:16:3e:4b:00:%02x", n),
			FixedIps: []*nsv1.FixedIP{{SubnetId: lbSubnet, IpAddress: ip}},
			Binding:  &nsv1.Binding{Type: "veth", Netns: e.vm(vm)}}
	}
	return &nsv1.Topology{
		Networks: []*nsv1.Network{{Id: lbNetID, Name: "lb", NetworkType: "local", Mtu: 1500,
			Subnets: []*nsv1.Subnet{{Id: lbSubnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1", IpVersion: 4}}}},
		Ports: []*nsv1.Port{port(1, "b1", "192.0.2.21"), port(2, "b2", "192.0.2.22"), port(3, "client", "192.0.2.30")},
	}
}

// newLB is a load balancer with a fresh id and VIP port: an HTTP listener on port 80 whose
// round-robin pool has both backends on 8080, checked over HTTP every second, down after
// two failures.
func (e *lbTestEnv) newLB() *nsv1.LoadBalancer {
	id := uuid.NewString()
	e.mu.Lock()
	e.lbIDs = append(e.lbIDs, id)
	e.mu.Unlock()
	return &nsv1.LoadBalancer{Id: id, Name: "web", Host: lbHost, VipNetworkId: lbNetID, VipSubnetId: lbSubnet,
		VipAddress: lbVIP, VipPortId: uuid.NewString(),
		Listeners: []*nsv1.Listener{{Id: uuid.NewString(), Protocol: "HTTP", ProtocolPort: 80, DefaultPoolId: lbPoolID}},
		Pools: []*nsv1.Pool{{Id: lbPoolID, Protocol: "HTTP", LbAlgorithm: "ROUND_ROBIN",
			Healthmonitor: &nsv1.HealthMonitor{Type: "HTTP", Delay: 1, Timeout: 1, MaxRetries: 2, HttpMethod: "GET",
				UrlPath: "/healthz", ExpectedCodes: "200"},
			Members: []*nsv1.Member{
				{Id: lbMember1, Address: "192.0.2.21", ProtocolPort: 8080, SubnetId: lbSubnet},
				{Id: lbMember2, Address: "192.0.2.22", ProtocolPort: 8080, SubnetId: lbSubnet}}}}}
}

// applyLB publishes lb (apply: validated) and returns its desired sequence.
func (e *lbTestEnv) applyLB(ctx context.Context, lb *nsv1.LoadBalancer) uint64 {
	e.tb.Helper()
	plan, err := e.pub.Apply(ctx, &nsv1.Topology{Loadbalancers: []*nsv1.LoadBalancer{lb}})
	if err != nil {
		e.tb.Fatal(err)
	}
	for _, c := range plan {
		if c.Address.Kind == streams.KindLoadBalancer && c.Address.ID == lb.GetId() {
			return c.Seq
		}
	}
	e.tb.Fatalf("apply did not plan load balancer %s", lb.GetId())
	return 0
}

// paths are the files of instance id.
func (e *lbTestEnv) paths(id string) haproxy.Paths {
	return haproxy.PathsFor(filepath.Join(e.stateDir, lbHost), id)
}

// lbStatusLog records every load balancer status and heartbeat of the host as the server
// stores them (core NATS subscription), with arrival times.
type lbStatusLog struct {
	mu      sync.Mutex
	events  []lbSeen
	beats   []time.Time
	changed chan struct{}
}

type lbSeen struct {
	at time.Time
	ev *nsv1.StatusEvent
}

func newLBStatusLog(tb testing.TB, nc *nats.Conn) *lbStatusLog {
	tb.Helper()
	l := &lbStatusLog{changed: make(chan struct{}, 1)}
	notify := func() {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
	sub, err := nc.Subscribe(streams.StatusRoot+"."+lbHost+".loadbalancer.*", func(m *nats.Msg) {
		at := time.Now()
		if ev, err := streams.DecodeStatus(m.Data); err == nil {
			l.mu.Lock()
			l.events = append(l.events, lbSeen{at: at, ev: ev})
			l.mu.Unlock()
			notify()
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	beats, err := nc.Subscribe(streams.StatusRoot+"."+lbHost+".agent", func(*nats.Msg) {
		l.mu.Lock()
		l.beats = append(l.beats, time.Now())
		l.mu.Unlock()
		notify()
	})
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range []*nats.Subscription{sub, beats} {
		_ = s.SetPendingLimits(-1, -1)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe(); _ = beats.Unsubscribe() })
	return l
}

// waitFor returns the first status of load balancer id that arrived after after and
// satisfies ok.
func (l *lbStatusLog) waitFor(tb testing.TB, id string, after time.Time, timeout time.Duration, what string,
	ok func(*nsv1.StatusEvent) bool) lbSeen {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		var last *nsv1.StatusEvent
		for _, s := range l.events {
			if s.ev.GetId() != id || s.at.Before(after) {
				continue
			}
			last = s.ev
			if ok(s.ev) {
				l.mu.Unlock()
				return s
			}
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline:
			tb.Fatalf("%s: not within %s; last status %v", what, timeout, last)
		}
	}
}

// count returns how many statuses of id arrived after after.
func (l *lbStatusLog) count(id string, after time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.events {
		if s.ev.GetId() == id && !s.at.Before(after) {
			n++
		}
	}
	return n
}

// since returns the statuses of id that arrived after after.
func (l *lbStatusLog) since(id string, after time.Time) []*nsv1.StatusEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*nsv1.StatusEvent
	for _, s := range l.events {
		if s.ev.GetId() == id && !s.at.Before(after) {
			out = append(out, s.ev)
		}
	}
	return out
}

// waitBeats waits for n heartbeats after after.
func (l *lbStatusLog) waitBeats(tb testing.TB, n int, after time.Time) {
	tb.Helper()
	deadline := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		got := 0
		for _, at := range l.beats {
			if !at.Before(after) {
				got++
			}
		}
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-l.changed:
		case <-deadline:
			tb.Fatalf("%d of %d heartbeats after %s", got, n, after)
		}
	}
}

func activeAt(seq uint64) func(*nsv1.StatusEvent) bool {
	return func(ev *nsv1.StatusEvent) bool {
		return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDesiredSeq() >= seq
	}
}

func memberIs(member, status string) func(*nsv1.StatusEvent) bool {
	return func(ev *nsv1.StatusEvent) bool { return ev.GetDetails()["member:"+member] == status }
}

// lbRemoveNamespaces deletes the named namespaces with prefix and netsource's markers of them.
func lbRemoveNamespaces(tb testing.TB, prefix string) {
	entries, _ := os.ReadDir("/run/netns")
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), prefix) {
			if err := netns.DeleteNamed(ent.Name()); err != nil {
				tb.Errorf("remove netns %s: %v", ent.Name(), err)
			}
		}
	}
	markers, _ := filepath.Glob(filepath.Join(links.DefaultMarkerDir, prefix+"*"))
	for _, m := range markers {
		_ = os.Remove(m)
	}
}

// lbEventually is the rare polling wait: ok is retried until it succeeds or timeout.
func lbEventually(tb testing.TB, timeout time.Duration, what string, ok func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lbPercentile is the nearest-rank percentile of durations, in milliseconds.
func lbPercentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := min(max(int(float64(len(s))*p/100+0.999999)-1, 0), len(s)-1)
	return float64(s[rank]) / float64(time.Millisecond)
}
