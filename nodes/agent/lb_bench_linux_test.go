package agent_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/haproxy/haproxytest"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// BenchmarkPrivilegedLoadBalancer measures issue 5's numbers on one host with an in-process
// agent (see docs/benchmarks.md). Run with a fixed count, e.g. -benchtime=20x:
//
//	baseline-check-and-start   `haproxy -c` then a plain haproxy started in a ready namespace,
//	                           until its listener accepts a connection (what any deploy costs)
//	create-event-to-active     new load balancer published -> ACTIVE status stored: namespace,
//	                           VIP veth, gratuitous ARP, config, haproxy up (delete untimed)
//	driver-reload              haproxy.Manager.Ensure of a changed config: -c, state saved,
//	                           SIGUSR2, new worker ready
//	reload-event-to-active-*   pool change published -> ACTIVE, idle and while 4 clients loop
//	                           through the VIP (a new connection per request); failed-req
//	                           counts their failed requests
func BenchmarkPrivilegedLoadBalancer(b *testing.B) {
	e := newLBTestEnv(b)
	e.startAgent()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	topo := e.topology()
	if _, err := e.pub.Apply(ctx, topo); err != nil {
		b.Fatal(err)
	}
	for _, p := range topo.Ports {
		if _, err := streams.Wait(ctx, e.js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			b.Fatal(err)
		}
	}
	for _, be := range []struct{ vm, addr string }{{"b1", "192.0.2.21:8080"}, {"b2", "192.0.2.22:8080"}} {
		srv, err := haproxytest.StartBackend(e.vm(be.vm), be.addr, be.vm)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.Stop)
	}

	// A namespace of its own for the runs outside the agent, with a VIP on a veth.
	direct := e.newLB()
	direct.VipAddress = "192.0.2.200"
	ns := haproxy.Namespace(direct.Id)
	for _, args := range [][]string{
		{"ip", "netns", "add", ns}, {"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "link", "add", "bl0", "type", "veth", "peer", "name", "bl1"},
		{"ip", "-n", ns, "addr", "add", "192.0.2.200/24", "dev", "bl0"},
		{"ip", "-n", ns, "link", "set", "bl0", "up"}, {"ip", "-n", ns, "link", "set", "bl1", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	weight := uint32(1) // each reload of each run sets a new weight, so every change is real

	b.Run("baseline-check-and-start", func(b *testing.B) {
		dir := filepath.Join(e.stateDir, "baseline")
		paths := haproxy.PathsFor(dir, direct.Id)
		if err := os.MkdirAll(paths.Dir, 0o700); err != nil {
			b.Fatal(err)
		}
		cfg, err := haproxy.Render(direct, paths)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(paths.Config, cfg.Text, 0o600); err != nil {
			b.Fatal(err)
		}
		var took []time.Duration
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if out, err := exec.Command("haproxy", "-c", "-q", "-f", paths.Config).CombinedOutput(); err != nil {
				b.Fatalf("haproxy -c: %v %s", err, out)
			}
			cmd := exec.Command("ip", "netns", "exec", ns, "haproxy", "-f", paths.Config)
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			// Probe until the listener accepts (the only way to see a plain start is done).
			for {
				conn, err := haproxytest.DialContext(ctx, ns, "tcp", "192.0.2.200:80")
				if err == nil {
					conn.Close()
					break
				}
				if time.Since(start) > 30*time.Second {
					b.Fatalf("plain haproxy never listened: %v", err)
				}
				time.Sleep(time.Millisecond)
			}
			took = append(took, time.Since(start))
			b.StopTimer()
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			b.StartTimer()
		}
		b.StopTimer()
		reportLatencies(b, took)
	})

	b.Run("create-event-to-active", func(b *testing.B) {
		var took []time.Duration
		b.ResetTimer()
		for range b.N {
			lb := e.newLB()
			start := time.Now()
			seq := e.applyLB(ctx, lb)
			active := e.status.waitFor(b, lb.Id, start, time.Minute, "new load balancer ACTIVE", activeAt(seq))
			took = append(took, active.at.Sub(start))
			b.StopTimer()
			del := time.Now()
			if _, err := e.pub.Delete(ctx, streams.KindLoadBalancer, lb.Id); err != nil {
				b.Fatal(err)
			}
			e.status.waitFor(b, lb.Id, del, time.Minute, "DELETED", func(ev *nsv1.StatusEvent) bool {
				return ev.GetPhase() == nsv1.Phase_PHASE_DELETED
			})
			b.StartTimer()
		}
		b.StopTimer()
		reportLatencies(b, took)
	})

	driverDir := filepath.Join(e.stateDir, "driver")
	b.Cleanup(func() { haproxytest.KillInstances(driverDir) }) // not in the sub-benchmark: it runs more than once
	b.Run("driver-reload", func(b *testing.B) {
		dir := driverDir
		m, err := haproxy.New(haproxy.Options{StateDir: dir, Log: e.log})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		inst := haproxy.Instance{ID: direct.Id, LB: proto.Clone(direct).(*nsv1.LoadBalancer), Device: "bl0",
			Addresses: []net.IP{net.ParseIP("192.0.2.200")}}
		if _, err := m.Ensure(ctx, inst); err != nil { // started, or adopted from the previous run
			b.Fatal(err)
		}
		var took []time.Duration
		b.ResetTimer()
		for i := range b.N {
			weight = weight%200 + 1
			inst.LB.Pools[0].Members[0].Weight = proto.Uint32(weight + 1)
			start := time.Now()
			st, err := m.Ensure(ctx, inst)
			if err != nil || st.Action != haproxy.ActionReloaded {
				b.Fatalf("reload %d: %+v %v", i, st, err)
			}
			took = append(took, time.Since(start))
		}
		b.StopTimer()
		reportLatencies(b, took)
	})

	// One load balancer for every run of the reload benchmarks (the testing package runs a
	// benchmark body more than once; two at the same VIP would fight over it).
	var reloaded *nsv1.LoadBalancer
	reloadBench := func(clients int) func(b *testing.B) {
		return func(b *testing.B) {
			lb := reloaded
			if lb == nil {
				lb = e.newLB()
				start := time.Now()
				seq := e.applyLB(ctx, lb)
				e.status.waitFor(b, lb.Id, start, time.Minute, "load balancer ACTIVE", activeAt(seq))
				reloaded = lb
			}
			var l *load
			if clients > 0 {
				l = startLoad(e.vm("client"), clients)
			}
			loadStart := time.Now()
			var took []time.Duration
			b.ResetTimer()
			for range b.N {
				weight = weight%200 + 1
				lb.Pools[0].Members[0].Weight = proto.Uint32(weight + 1)
				start := time.Now()
				seq := e.applyLB(ctx, lb)
				active := e.status.waitFor(b, lb.Id, start, time.Minute, "reloaded load balancer ACTIVE", activeAt(seq))
				took = append(took, active.at.Sub(start))
			}
			b.StopTimer()
			reportLatencies(b, took)
			if l == nil {
				return
			}
			ok, failed, errs := l.stop()
			b.ReportMetric(float64(failed), "failed-req")
			b.ReportMetric(float64(ok)/time.Since(loadStart).Seconds(), "req/s")
			if failed > 0 {
				b.Errorf("%d of %d requests failed during %d reloads: %v", failed, ok+failed, b.N, errs)
			}
		}
	}
	b.Run("reload-event-to-active-idle", reloadBench(0))
	b.Run("reload-event-to-active-4-clients", reloadBench(4))
}

func reportLatencies(b *testing.B, took []time.Duration) {
	b.ReportMetric(lbPercentile(took, 50), "p50-ms")
	b.ReportMetric(lbPercentile(took, 99), "p99-ms")
}
