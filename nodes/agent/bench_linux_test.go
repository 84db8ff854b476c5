package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Host-agent benchmarks (issue 3). Each runs as root in its own host namespace with an
// embedded JetStream server and an in-process agent.Run on the netlink dataplane; every
// port is a veth binding into its own VM namespace on one "local" network. Run them with
// -benchtime=1x (they converge hundreds of ports per iteration), except PortActive, which
// takes one latency sample per iteration (-benchtime=500x); see `go tool task bench` and
// docs/benchmarks.md.
//
// Latencies are publish → ACTIVE: from just before the desired event is published to the
// moment the agent's ACTIVE status for that desired sequence reaches the server, seen by a
// core NATS subscription on the host's status subjects.

// BenchmarkPrivilegedAgentPortActive: one port published at a time on a host whose network
// bridge already exists (an anchor port keeps it). Each iteration publishes a new port,
// waits for ACTIVE (timed), then deletes it and waits for DELETED (not timed).
func BenchmarkPrivilegedAgentPortActive(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	a := e.startAgent(ctx)
	anchor := e.benchPort(1)
	changes, err := e.pub.Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{benchNetwork()}, Ports: []*nsv1.Port{anchor}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.watch.waitAll(ctx, streams.KindPort, portSeqs(changes), nsv1.Phase_PHASE_ACTIVE, time.Time{}); err != nil {
		b.Fatal(err)
	}
	ensures0, _ := a.dp.calls()
	mut0 := a.dp.Mutations()
	var (
		lat      breakdown
		statuses int
	)
	b.ResetTimer()
	for i := range b.N {
		p := e.benchPort(i + 2)
		start := time.Now()
		ack, err := e.pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, p, ""), 0)
		if err != nil {
			b.Fatal(err)
		}
		seqs := map[string]uint64{p.GetId(): ack.Seq}
		at, err := e.watch.waitAll(ctx, streams.KindPort, seqs, nsv1.Phase_PHASE_ACTIVE, start)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		lat.add(a.dp, p.GetId(), start, at[p.GetId()])
		statuses += e.watch.count(streams.KindPort, p.GetId())
		e.deletePorts(ctx, []*nsv1.Port{p}, seqs)
		b.StartTimer()
	}
	b.StopTimer()
	ensures, _ := a.dp.calls()
	lat.reportTo(b)
	b.ReportMetric(percentileMS(lat.total, 100), "max-ms")
	b.ReportMetric(float64(ensures-ensures0)/float64(b.N), "ensures/port")
	b.ReportMetric(float64(a.dp.Mutations()-mut0)/float64(b.N), "mutations/port") // create and delete
	b.ReportMetric(float64(statuses)/float64(b.N), "statuses/port")               // create and delete
}

// BenchmarkPrivilegedAgent500Ports: 500 ports published at once (apply of one topology),
// timed until all are ACTIVE, against a plain loop that makes the same kernel changes with
// links.Netlink directly (EnsureNetwork, then EnsurePort of the same 500 specs). The
// network's bridge does not exist at the start of either (the agent removes it after the
// last port), so both create it.
func BenchmarkPrivilegedAgent500Ports(b *testing.B) {
	const ports = 500
	b.Run("netlink-loop", func(b *testing.B) {
		e := newBenchNetns(b)
		nl, err := links.New(e.netns, e.log)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nl.Close)
		cfg := e.config()
		network := benchNetwork()
		netSpec, err := actors.NetworkSpec(cfg, network)
		if err != nil {
			b.Fatal(err)
		}
		specs := make([]links.PortSpec, ports)
		for i := range specs {
			if specs[i], err = actors.PortSpec(e.benchPort(i+1), network, netSpec, nil); err != nil {
				b.Fatal(err)
			}
		}
		ctx := context.Background()
		var mutations uint64
		b.ResetTimer()
		for range b.N {
			m0 := nl.Mutations()
			if err := nl.EnsureNetwork(ctx, netSpec); err != nil {
				b.Fatal(err)
			}
			for _, s := range specs {
				if _, err := nl.EnsurePort(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			mutations += nl.Mutations() - m0
			for _, s := range specs {
				if err := nl.DeletePort(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			if err := nl.DeleteNetwork(ctx, netSpec); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(inMS(b.Elapsed())/float64(b.N), "ms")
		b.ReportMetric(float64(mutations)/float64(b.N*ports), "mutations/port")
	})
	b.Run("agent", func(b *testing.B) {
		e := newBenchEnv(b)
		ctx := context.Background()
		a := e.startAgent(ctx)
		network := benchNetwork()
		changes, err := e.pub.Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{network}})
		if err != nil {
			b.Fatal(err)
		}
		netSeq := changes[0].Seq
		topo := &nsv1.Topology{Networks: []*nsv1.Network{network}}
		for i := range ports {
			topo.Ports = append(topo.Ports, e.benchPort(i+1))
		}
		var (
			lat               breakdown
			publish, settle   time.Duration
			mutations         uint64
			ensures, statuses int
		)
		b.ResetTimer()
		for range b.N {
			ensures0, _ := a.dp.calls()
			mut0 := a.dp.Mutations()
			total0 := e.watch.total()
			start := time.Now()
			changes, err := e.pub.Apply(ctx, topo)
			if err != nil {
				b.Fatal(err)
			}
			publish += time.Since(start)
			seqs := portSeqs(changes)
			at, err := e.watch.waitAll(ctx, streams.KindPort, seqs, nsv1.Phase_PHASE_ACTIVE, start)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			for id, t := range at {
				lat.add(a.dp, id, start, t)
			}
			// What the agent did for the ports, including the re-checks the kernel's link
			// events of its own changes trigger after the ports are ACTIVE.
			last, err := a.dp.waitIdle(ctx, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			settle += last.Sub(start)
			ensures1, _ := a.dp.calls()
			ensures += ensures1 - ensures0
			mutations += a.dp.Mutations() - mut0
			total1 := e.watch.total()
			statuses += total1 - total0

			deleted := time.Now()
			e.deletePorts(ctx, topo.Ports, seqs)
			// The bridge goes after the last port: wait for it, so the next iteration starts
			// from the same kernel state as the loop.
			if _, err := e.watch.waitAll(ctx, streams.KindNetwork, map[string]uint64{benchNetID: netSeq},
				nsv1.Phase_PHASE_DELETED, deleted); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.StopTimer()
		n := float64(b.N)
		b.ReportMetric(inMS(b.Elapsed())/n, "ms")
		b.ReportMetric(inMS(publish)/n, "publish-ms")
		b.ReportMetric(inMS(settle)/n, "settle-ms")
		lat.reportTo(b)
		b.ReportMetric(float64(ensures)/(n*ports), "ensures/port")
		b.ReportMetric(float64(mutations)/(n*ports), "mutations/port")
		b.ReportMetric(float64(statuses)/(n*ports), "statuses/port")
	})
}

// BenchmarkPrivilegedAgent1000Ports converges 1000 ports (not timed), measures the heap the
// agent holds for them, stops the agent and times a restart on the same server and
// namespace until the restarted agent has loaded the desired state, ensured the network and
// every port once and run orphan pruning. A restart must change nothing: any kernel
// mutation fails the benchmark.
func BenchmarkPrivilegedAgent1000Ports(b *testing.B) {
	const ports = 1000
	e := newBenchEnv(b)
	ctx := context.Background()
	topo := &nsv1.Topology{Networks: []*nsv1.Network{benchNetwork()}}
	for i := range ports {
		topo.Ports = append(topo.Ports, e.benchPort(i+1))
	}

	clients := e.srv.NS.NumClients()
	heap0, objects0 := liveHeap()
	first := e.startAgent(ctx)
	heapReady, objectsReady := liveHeap()
	start := time.Now()
	changes, err := e.pub.Apply(ctx, topo)
	if err != nil {
		b.Fatal(err)
	}
	at, err := e.watch.waitAll(ctx, streams.KindPort, portSeqs(changes), nsv1.Phase_PHASE_ACTIVE, start)
	if err != nil {
		b.Fatal(err)
	}
	var converged time.Time
	for _, t := range at {
		if t.After(converged) {
			converged = t
		}
	}
	settled, err := first.dp.waitIdle(ctx, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	firstMutations := first.dp.Mutations()
	firstEnsures, _ := first.dp.calls()
	e.watch.forget()
	first.dp.forget()
	heap1, objects1 := liveHeap()
	first.stop()
	released := first.released
	first = nil
	e.waitReleased(ctx, released, clients)
	heapBase, objectsBase := liveHeap()
	b.Logf("live heap (bytes, objects): before the agent %d, %d; agent ready %d, %d; 1000 ports converged %d, %d; agent stopped %d, %d",
		heap0, objects0, heapReady, objectsReady, heap1, objects1, heapBase, objectsBase)
	// The agent's fixed cost is what it holds with no port; the stream's growth (1000
	// desired events, their statuses) stays in the server after the agent stopped.
	fixed, fixedObjects := int64(heapReady)-int64(heap0), int64(objectsReady)-int64(objects0)
	agentHeap := int64(heap1) - int64(heapBase) - fixed
	agentObjects := int64(objects1) - int64(objectsBase) - fixedObjects
	var (
		restart, ready time.Duration
		statuses       int
		mutations      uint64
		ensures        int
	)
	b.ResetTimer()
	for range b.N {
		total0 := e.watch.total()
		a := e.startAgent(ctx)
		last, err := a.dp.waitFirstPass(ctx, ports)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		restart += last.Sub(a.started)
		ready += a.readyAt.Sub(a.started)
		if _, err := a.dp.waitIdle(ctx, time.Second); err != nil {
			b.Fatal(err)
		}
		calls, _ := a.dp.calls()
		ensures += calls
		a.stop()
		mutations += a.dp.Mutations()
		total1 := e.watch.total()
		statuses += total1 - total0
		b.StartTimer()
	}
	b.StopTimer()
	if mutations != 0 {
		b.Fatalf("restarting an agent with %d converged ports made %d kernel mutations, want 0", ports, mutations)
	}
	n := float64(b.N)
	b.ReportMetric(inMS(converged.Sub(start)), "converge-ms")
	b.ReportMetric(inMS(settled.Sub(start)), "settle-ms")
	b.ReportMetric(float64(firstEnsures)/ports, "ensures/port")
	b.ReportMetric(float64(firstMutations)/ports, "mutations/port")
	b.ReportMetric(inMS(restart)/n, "restart-ms")
	b.ReportMetric(inMS(ready)/n, "ready-ms")
	b.ReportMetric(float64(statuses)/n, "restart-statuses")
	b.ReportMetric(float64(ensures)/(n*ports), "restart-ensures/port")
	b.ReportMetric(float64(int64(heap1)-int64(heapReady))/ports, "bytes/port")
	b.ReportMetric(float64(agentHeap)/ports, "agent-bytes/port")
	b.ReportMetric(float64(agentObjects)/ports, "agent-objects/port")
	b.ReportMetric(float64(fixed)/1e6, "fixed-MB")
}

// portSeqs returns the desired sequence of every port an apply stored or left unchanged.
func portSeqs(changes []*streams.Change) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range changes {
		if c.Address.Kind == streams.KindPort {
			out[c.Address.ID] = c.Seq
		}
	}
	return out
}
