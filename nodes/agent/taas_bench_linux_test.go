package agent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/links/linkstest"
	"github.com/netsource/netsource/nodes/ovs/ovstest"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// TaaS benchmarks (issue 6). Each sub-benchmark runs on its own host namespace, with its
// own Open vSwitch for the openvswitch mechanism, an embedded JetStream server and an
// in-process agent.Run. Baselines are measured in the same run on the same host: port
// publish → ACTIVE for the latency, 200 ports for the 200 tap flows. Run with
// -benchtime=30x (FlowActive) and -benchtime=1x (200Flows); see docs/benchmarks.md.

// taasBench is one benchmark host.
type taasBench struct {
	tb     testing.TB
	prefix string
	netns  string
	ovs    *ovstest.Instance
	js     jetstream.JetStream
	pub    *streams.Publisher
	seen   *statusTimes
}

func newTaasBench(b *testing.B, mechanism string) *taasBench {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces, veth pairs and runs Open vSwitch")
	}
	if mechanism == config.MechanismOpenVSwitch {
		ovstest.Require(b)
	}
	e := &taasBench{tb: b, prefix: fmt.Sprintf("nsta%04x", rand.IntN(0xffff))}
	e.netns = e.prefix + "-host"
	linkstest.RemoveNetnsOnCleanup(b, e.prefix)
	for _, args := range [][]string{{"ip", "netns", "add", e.netns}, {"ip", "-n", e.netns, "link", "set", "lo", "up"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	cfg := &config.Config{Host: "bench", Netns: e.netns, Mechanism: mechanism}
	if mechanism == config.MechanismOpenVSwitch {
		e.ovs = ovstest.Start(b, e.netns)
		cfg.OVS = config.OVS{DB: e.ovs.DB, RunDir: e.ovs.RunDir}
	}
	srv := natstest.StartAt(b, b.TempDir(), "127.0.0.1:-1")
	var nc *nats.Conn
	nc, e.js = srv.Connect()
	e.pub = streams.NewPublisher(e.js, "bench")
	e.seen = newStatusTimes(b, nc, "bench")
	off := false
	cfg.NATS = srv.NS.ClientURL()
	cfg.VXLAN.EnableVXLAN = &off
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, cfg, agent.Options{Ready: func() { close(ready) }}, zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.WarnLevel))
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("agent: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		b.Fatalf("agent ended before it was ready: %v", err)
	case <-time.After(time.Minute):
		b.Fatal("agent not ready")
	}
	return e
}

func (e *taasBench) network() *nsv1.Network {
	return &nsv1.Network{Id: tapNet, Name: "bench", NetworkType: "local", Mtu: 1500,
		Subnets: []*nsv1.Subnet{{Id: tapSubnet, Cidr: "198.18.0.0/15", IpVersion: 4}}}
}

// port n: a veth into <prefix>-vm<n> with 198.18.<n/250>.<n%250+1>.
func (e *taasBench) port(n int) *nsv1.Port {
	return &nsv1.Port{Id: fmt.Sprintf("%08x-0000-4000-8000-%012x", 0xb0000000+n, n), NetworkId: tapNet, Host: "bench",
		MacAddress: fmt.Sprintf("fa:16:3e:01:%02x:%02x", n/256, n%256),
		FixedIps:   []*nsv1.FixedIP{{SubnetId: tapSubnet, IpAddress: fmt.Sprintf("198.18.%d.%d", n/250, n%250+1)}},
		Binding:    &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("%s-vm%d", e.prefix, n)}}
}

func (e *taasBench) flow(n int, svc, source, dir string) *nsv1.TapFlow {
	return &nsv1.TapFlow{Id: fmt.Sprintf("%08x-0000-4000-8000-%012x", 0xf0000000+n, n), TapServiceId: svc, SourcePort: source,
		Direction: dir, Host: "bench"}
}

// applyAndWait publishes a topology and waits for every object of kind in it to reach
// phase; it returns when the last one did (arrival of its status at the server).
func (e *taasBench) applyAndWait(ctx context.Context, topo *nsv1.Topology, kind streams.Kind, phase nsv1.Phase) time.Time {
	e.tb.Helper()
	changes, err := e.pub.Apply(ctx, topo)
	if err != nil {
		e.tb.Fatal(err)
	}
	seqs := map[string]uint64{}
	for _, c := range changes {
		if c.Address.Kind == kind {
			seqs[c.Address.ID] = c.Seq
		}
	}
	last, err := e.seen.waitAll(ctx, kind, seqs, phase)
	if err != nil {
		e.tb.Fatal(err)
	}
	return last
}

func (e *taasBench) deleteAndWait(ctx context.Context, kind streams.Kind, ids ...string) {
	e.tb.Helper()
	seqs := map[string]uint64{}
	var mu sync.Mutex
	err := eachParallel(16, len(ids), func(i int) error {
		ch, err := e.pub.Delete(ctx, kind, ids[i])
		if err != nil {
			return err
		}
		mu.Lock()
		for _, c := range ch {
			if c.Address.Kind == kind && c.Address.ID == ids[i] {
				seqs[ids[i]] = c.Seq
			}
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	if _, err := e.seen.waitAll(ctx, kind, seqs, nsv1.Phase_PHASE_DELETED); err != nil {
		e.tb.Fatal(err)
	}
}

// eachParallel runs fn(0..n-1) on workers goroutines and joins the errors.
func eachParallel(workers, n int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

type taasStatusSeen struct {
	phase nsv1.Phase
	seq   uint64
	at    time.Time
}

// statusTimes timestamps the host's status events from a core NATS subscription (a
// message is seen as the server stores it).
type statusTimes struct {
	mu      sync.Mutex
	events  map[string][]taasStatusSeen
	changed chan struct{}
}

func newStatusTimes(tb testing.TB, nc *nats.Conn, host string) *statusTimes {
	tb.Helper()
	w := &statusTimes{events: map[string][]taasStatusSeen{}, changed: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(streams.StatusRoot+"."+host+".*.*", func(m *nats.Msg) {
		at := time.Now()
		ev, err := streams.DecodeStatus(m.Data)
		if err != nil {
			return
		}
		w.mu.Lock()
		key := ev.GetKind() + "/" + ev.GetId()
		w.events[key] = append(w.events[key], taasStatusSeen{phase: ev.GetPhase(), seq: ev.GetDesiredSeq(), at: at})
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *statusTimes) waitAll(ctx context.Context, kind streams.Kind, seqs map[string]uint64, phase nsv1.Phase) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		var last time.Time
		done := 0
		w.mu.Lock()
		for id, seq := range seqs {
			for _, s := range w.events[string(kind)+"/"+id] {
				if s.phase == phase && s.seq >= seq {
					done++
					if s.at.After(last) {
						last = s.at
					}
					break
				}
			}
		}
		w.mu.Unlock()
		if done == len(seqs) {
			return last, nil
		}
		select {
		case <-w.changed:
		case <-ctx.Done():
			return last, fmt.Errorf("%d of %d %ss reached %s: %w", done, len(seqs), kind, streams.PhaseName(phase), ctx.Err())
		}
	}
}

// firstCopy opens a packet socket in a VM namespace and reports when the first ICMP echo
// from src arrives.
func firstCopy(tb testing.TB, netnsName, dev, src string) (wait func(time.Duration) (time.Time, error), closeFn func()) {
	tb.Helper()
	fd, err := packetSocket(netnsName, dev)
	if err != nil {
		tb.Fatal(err)
	}
	got := make(chan time.Time, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 65536), make([]byte, 256)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if p, ok := parseICMP(withVLAN(buf[:n], oob[:oobn])); ok && p.Src == src {
				select {
				case got <- time.Now():
				default:
				}
			}
		}
	}()
	var once sync.Once
	closeFn = func() {
		once.Do(func() {
			close(quit)
			<-done
			unix.Close(fd)
		})
	}
	tb.Cleanup(closeFn)
	return func(d time.Duration) (time.Time, error) {
		select {
		case at := <-got:
			return at, nil
		case <-time.After(d):
			return time.Time{}, fmt.Errorf("no mirrored copy within %s", d)
		}
	}, closeFn
}

// pingForever pings dst from a VM every 10 ms until the benchmark ends (stopped by PID).
func pingForever(tb testing.TB, netnsName, dst string) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", netnsName, "ping", "-q", "-i", "0.01", dst)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkPrivilegedTaaSFlowActive: one tap flow (BOTH) created per iteration on a host
// where the source VM pings its peer every 10 ms and the tap service already exists. Timed:
// publish → the flow's ACTIVE status stored (status-ms) and → the first mirrored echo in the
// service VM (copy-ms, includes up to 10 ms of ping interval). Each iteration then deletes
// the flow (untimed). The baseline, port, publishes a new veth port per iteration on the
// same host (publish → ACTIVE).
func BenchmarkPrivilegedTaaSFlowActive(b *testing.B) {
	for _, mech := range []string{config.MechanismOpenVSwitch, config.MechanismLinuxBridge} {
		b.Run(mech, func(b *testing.B) {
			e := newTaasBench(b, mech)
			ctx := context.Background()
			src, peer, svc := e.port(1), e.port(2), e.port(3)
			service := &nsv1.TapService{Id: svcLocal, PortId: svc.Id, Host: "bench"}
			topo := &nsv1.Topology{Networks: []*nsv1.Network{e.network()}, Ports: []*nsv1.Port{src, peer, svc}}
			e.applyAndWait(ctx, topo, streams.KindPort, nsv1.Phase_PHASE_ACTIVE)
			topo.TapServices = []*nsv1.TapService{service}
			e.applyAndWait(ctx, topo, streams.KindTapService, nsv1.Phase_PHASE_ACTIVE)
			pingForever(b, src.Binding.Netns, peer.FixedIps[0].IpAddress)

			b.Run("port", func(b *testing.B) {
				var total time.Duration
				for i := range b.N {
					p := e.port(100 + i)
					start := time.Now()
					at := e.applyAndWait(ctx, &nsv1.Topology{Ports: []*nsv1.Port{p}}, streams.KindPort, nsv1.Phase_PHASE_ACTIVE)
					total += at.Sub(start)
					b.StopTimer()
					e.deleteAndWait(ctx, streams.KindPort, p.Id)
					b.StartTimer()
				}
				b.ReportMetric(msOf(total)/float64(b.N), "active-ms")
			})
			b.Run("tapflow", func(b *testing.B) {
				var status, copies []float64
				for i := range b.N {
					b.StopTimer()
					wait, closeCap := firstCopy(b, svc.Binding.Netns, links.PeerName(svc.Id), src.FixedIps[0].IpAddress)
					b.StartTimer()
					f := e.flow(i, service.Id, src.Id, "BOTH")
					start := time.Now()
					at := e.applyAndWait(ctx, &nsv1.Topology{TapFlows: []*nsv1.TapFlow{f}}, streams.KindTapFlow, nsv1.Phase_PHASE_ACTIVE)
					first, err := wait(10 * time.Second)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					status, copies = append(status, msOf(at.Sub(start))), append(copies, msOf(first.Sub(start)))
					e.deleteAndWait(ctx, streams.KindTapFlow, f.Id)
					closeCap()
					time.Sleep(30 * time.Millisecond) // copies in flight of the deleted flow
					b.StartTimer()
				}
				slices.Sort(status)
				slices.Sort(copies)
				b.ReportMetric(meanOf(status), "status-ms")
				b.ReportMetric(meanOf(copies), "copy-ms")
				b.ReportMetric(copies[len(copies)/2], "copy-p50-ms")
				b.ReportMetric(copies[len(copies)-1], "copy-max-ms")
			})
		})
	}
}

func meanOf(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// BenchmarkPrivilegedTaaS200Flows: 200 source ports and one tap service port on one host;
// 200 tap flows (BOTH, one per source port) published at once, timed until all are ACTIVE
// (flows-s), then deleted at once (delete-s). Reported: the flows (OVS: netsource flows on
// br-int and br-tap; Linux bridge: tc mirred filters) with the tap flows and after their
// deletion. Baseline in the same run: publishing the 201 ports until all are ACTIVE
// (ports-s).
func BenchmarkPrivilegedTaaS200Flows(b *testing.B) {
	const n = 200
	for _, mech := range []string{config.MechanismOpenVSwitch, config.MechanismLinuxBridge} {
		b.Run(mech, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				e := newTaasBench(b, mech)
				ctx := context.Background()
				svc := e.port(0)
				topo := &nsv1.Topology{Networks: []*nsv1.Network{e.network()}, Ports: []*nsv1.Port{svc}}
				for i := 1; i <= n; i++ {
					topo.Ports = append(topo.Ports, e.port(i))
				}
				start := time.Now()
				portsAt := e.applyAndWait(ctx, topo, streams.KindPort, nsv1.Phase_PHASE_ACTIVE)
				ports := portsAt.Sub(start)
				topo.TapServices = []*nsv1.TapService{{Id: svcLocal, PortId: svc.Id, Host: "bench"}}
				e.applyAndWait(ctx, topo, streams.KindTapService, nsv1.Phase_PHASE_ACTIVE)
				before := e.mirrorFlows(n)
				for i := 1; i <= n; i++ {
					topo.TapFlows = append(topo.TapFlows, e.flow(i, svcLocal, e.port(i).Id, "BOTH"))
				}
				b.StartTimer()
				start = time.Now()
				flowsAt := e.applyAndWait(ctx, topo, streams.KindTapFlow, nsv1.Phase_PHASE_ACTIVE)
				b.StopTimer()
				flows := flowsAt.Sub(start)
				with := e.mirrorFlows(n)
				ids := make([]string, 0, n)
				for _, f := range topo.TapFlows {
					ids = append(ids, f.Id)
				}
				start = time.Now()
				e.deleteAndWait(ctx, streams.KindTapFlow, ids...)
				deleted := time.Since(start)
				after := e.mirrorFlows(n)
				b.ReportMetric(ports.Seconds(), "ports-s")
				b.ReportMetric(flows.Seconds(), "flows-s")
				b.ReportMetric(flows.Seconds()/ports.Seconds(), "flows/ports")
				b.ReportMetric(deleted.Seconds(), "delete-s")
				b.ReportMetric(float64(before.total), "rules-before")
				b.ReportMetric(float64(with.total), "rules-with")
				b.ReportMetric(float64(with.mirror), "mirror-rules")
				b.ReportMetric(float64(after.mirror), "mirror-rules-after")
			}
		})
	}
}

type ruleCount struct{ total, mirror int }

// mirrorFlows counts the host's rules: on OVS every netsource flow of br-int and br-tap
// (total) and those of tap flows (cookie kind 0x11, mirror); on Linux bridge the tc
// mirred filters of the n source devices (both).
func (e *taasBench) mirrorFlows(n int) ruleCount {
	e.tb.Helper()
	var c ruleCount
	if e.ovs != nil {
		for _, br := range []string{"br-int", "br-tap"} {
			for _, f := range e.ovs.Flows(br, "cookie=0x4e53000000000000/0xffff000000000000") {
				c.total++
				if strings.HasPrefix(f, "cookie=0x4e5311") {
					c.mirror++
				}
			}
		}
		return c
	}
	for i := 1; i <= n; i++ {
		for _, hook := range []string{"ingress", "egress"} {
			out, err := exec.Command("tc", "-n", e.netns, "filter", "show", "dev", links.TapName(e.port(i).Id), hook).Output()
			if err != nil {
				e.tb.Fatal(err)
			}
			k := strings.Count(string(out), "mirred")
			c.total += k
			c.mirror += k
		}
	}
	return c
}
