package streams_test

import (
	"context"
	"fmt"
	"testing"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// BenchmarkPublish compares the publisher client (validation, optimistic concurrency,
// dedup id) with a raw jetstream.Publish of the same bytes, on the same embedded server.
// Each iteration writes one event to one of 1000 port subjects. Report the ratio
// publisher/raw (see docs/benchmarks.md).
func BenchmarkPublish(b *testing.B) {
	const subjects = 1000
	ports := make([]*nsv1.Port, subjects)
	for i := range ports {
		ports[i] = &nsv1.Port{Id: fmt.Sprintf("3d4e5f60-0000-4000-8000-%012d", i), NetworkId: netID, Host: "hostA",
			MacAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256), Binding: &nsv1.Binding{Type: "tap"}}
	}
	b.Run("raw", func(b *testing.B) {
		srv := natstest.Start(b)
		_, js := srv.Connect()
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			msg, err := streams.EncodeDesired(streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, ports[i%subjects], "bench"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.Publish(ctx, msg.Subject, msg.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("publisher", func(b *testing.B) {
		srv := natstest.Start(b)
		_, js := srv.Connect()
		pub := streams.NewPublisher(js, "bench")
		ctx := context.Background()
		last := make([]uint64, subjects)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			k := i % subjects
			ack, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, ports[k], "bench"), last[k])
			if err != nil {
				b.Fatal(err)
			}
			last[k] = ack.Seq
		}
	})
}
