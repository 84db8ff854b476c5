package streams_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// BenchmarkPublishReplicas compares Publisher.Append on a single server (R1) with a
// three-server cluster in this process (R3), with one writer and with eight concurrent
// writers on distinct subjects (how apply publishes). Clients are in-process, on the R3
// stream's leader. The baseline is R1 with one writer (see docs/benchmarks.md).
func BenchmarkPublishReplicas(b *testing.B) {
	const subjects = 1000
	ports := make([]*nsv1.Port, subjects)
	for i := range ports {
		ports[i] = &nsv1.Port{Id: fmt.Sprintf("3d4e5f60-0000-4000-8000-%012d", i), NetworkId: netID, Host: "hostA",
			MacAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256), Binding: &nsv1.Binding{Type: "tap"}}
	}
	r1 := func(b *testing.B) jetstream.JetStream {
		_, js := natstest.Start(b).Connect()
		return js
	}
	r3 := func(b *testing.B) jetstream.JetStream {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		servers, err := streams.StartLocalCluster(ctx, b.TempDir(), "nsbench", 3, streamsClusterPort+6000, "", zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			for _, ns := range servers {
				streams.ShutdownServer(ns)
			}
		})
		nc, err := streams.ConnectInProcess(servers[0])
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		if err := streams.EnsureStreams(ctx, js, streams.Config{Replicas: 3}); err != nil {
			b.Fatal(err)
		}
		leader := streams.StreamLeader(servers, streams.DesiredStream)
		for leader == nil {
			time.Sleep(10 * time.Millisecond)
			leader = streams.StreamLeader(servers, streams.DesiredStream)
		}
		lc, err := streams.ConnectInProcess(leader)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(lc.Close)
		js, _ = jetstream.New(lc)
		return js
	}
	for _, tc := range []struct {
		name    string
		server  func(*testing.B) jetstream.JetStream
		writers int
	}{
		{"R1-1writer", r1, 1}, {"R1-8writers", r1, 8}, {"R3-1writer", r3, 1}, {"R3-8writers", r3, 8},
	} {
		b.Run(tc.name, func(b *testing.B) {
			pub := streams.NewPublisher(tc.server(b), "bench")
			last := make([]atomic.Uint64, subjects)
			var next atomic.Int64
			ctx := context.Background()
			b.SetParallelism((tc.writers + 1) / 2) // GOMAXPROCS 2 on this machine: 1 or 8 goroutines
			if tc.writers == 1 {
				b.SetParallelism(1)
			}
			b.ResetTimer()
			run := func(k int) {
				ack, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, ports[k], "bench"), last[k].Load())
				if err != nil {
					b.Error(err)
					return
				}
				last[k].Store(ack.Seq)
			}
			if tc.writers == 1 {
				for i := 0; b.Loop(); i++ {
					run(i % subjects)
				}
				return
			}
			// Each goroutine owns subjects w, w+writers, ... so no two write one subject.
			b.RunParallel(func(pb *testing.PB) {
				w := int(next.Add(1)-1) % tc.writers
				for i := 0; pb.Next(); i++ {
					run((w + i*tc.writers) % subjects)
				}
			})
		})
	}
}
