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
// takes one latency sample per iteration (-benchtime=200x); see `go tool task bench` and
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
	lat := make([]time.Duration, 0, b.N)
	var statuses int
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
		lat = append(lat, at[p.GetId()].Sub(start))
		statuses += e.watch.count(streams.KindPort, p.GetId())
		e.deletePorts(ctx, []*nsv1.Port{p}, seqs)
		b.StartTimer()
	}
	b.StopTimer()
	ensures, _ := a.dp.calls()
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 99), "p99-ms")
	b.ReportMetric(percentile(lat, 100), "max-ms")
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
			if specs[i], err = actors.PortSpec(e.benchPort(i+1), network, netSpec); err != nil {
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
		b.ReportMetric(ms(b.Elapsed())/float64(b.N), "ms")
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
			lat                       []time.Duration
			publish                   time.Duration
			mutations                 uint64
			ensures, statuses, builds int
		)
		b.ResetTimer()
		for range b.N {
			ensures0, _ := a.dp.calls()
			mut0 := a.dp.Mutations()
			total0, phases0 := e.watch.counts()
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
			for _, t := range at {
				lat = append(lat, t.Sub(start))
			}
			// What the agent did for the ports until they were all ACTIVE, plus what their own
			// link events made it re-check meanwhile.
			ensures1, _ := a.dp.calls()
			ensures += ensures1 - ensures0
			mutations += a.dp.Mutations() - mut0
			total1, phases1 := e.watch.counts()
			statuses += total1 - total0
			builds += phases1[nsv1.Phase_PHASE_BUILD] - phases0[nsv1.Phase_PHASE_BUILD]

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
		b.ReportMetric(ms(b.Elapsed())/n, "ms")
		b.ReportMetric(ms(publish)/n, "publish-ms")
		b.ReportMetric(percentile(lat, 50), "p50-ms")
		b.ReportMetric(percentile(lat, 99), "p99-ms")
		b.ReportMetric(float64(ensures)/(n*ports), "ensures/port")
		b.ReportMetric(float64(mutations)/(n*ports), "mutations/port")
		b.ReportMetric(float64(statuses)/(n*ports), "statuses/port")
		b.ReportMetric(float64(builds)/(n*ports), "builds/port")
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

	heap0 := heapInuse()
	first := e.startAgent(ctx)
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
	firstMutations := first.dp.Mutations()
	e.watch.forget()
	first.dp.forget()
	heap1 := heapInuse()
	first.stop()

	heapBase := heapInuse()
	var (
		restart, ready time.Duration
		agentHeap      uint64
		statuses       int
		mutations      uint64
	)
	b.ResetTimer()
	for i := range b.N {
		total0, _ := e.watch.counts()
		a := e.startAgent(ctx)
		last, err := a.dp.waitFirstPass(ctx, ports)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		restart += last.Sub(a.started)
		ready += a.readyAt.Sub(a.started)
		if i == 0 {
			a.dp.forget()
			if h := heapInuse(); h > heapBase {
				agentHeap = h - heapBase
			}
		}
		a.stop()
		mutations += a.dp.Mutations()
		total1, _ := e.watch.counts()
		statuses += total1 - total0
		b.StartTimer()
	}
	b.StopTimer()
	if mutations != 0 {
		b.Fatalf("restarting an agent with %d converged ports made %d kernel mutations, want 0", ports, mutations)
	}
	n := float64(b.N)
	b.ReportMetric(ms(converged.Sub(start)), "converge-ms")
	b.ReportMetric(float64(firstMutations)/ports, "mutations/port")
	b.ReportMetric(ms(restart)/n, "restart-ms")
	b.ReportMetric(ms(ready)/n, "ready-ms")
	b.ReportMetric(float64(statuses)/n, "restart-statuses")
	b.ReportMetric(float64(int64(heap1)-int64(heap0))/ports, "bytes/port")
	b.ReportMetric(float64(agentHeap)/ports, "agent-bytes/port")
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
