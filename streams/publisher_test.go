package streams_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

const (
	netID  = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	portID = "3d4e5f60-0000-4000-8000-000000000001"
)

func testNetwork() *nsv1.Network {
	return &nsv1.Network{Id: netID, Name: "blue", NetworkType: "vxlan", SegmentationId: 1001, Mtu: 1450}
}

func testPort(mac string) *nsv1.Port {
	return &nsv1.Port{Id: portID, NetworkId: netID, Host: "hostA", MacAddress: mac,
		Binding: &nsv1.Binding{Type: "veth", Netns: "vm1"}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t), streams.DesiredStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestRacingWritersExactlyOneWins(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	created, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testPort("fa:16:3e:00:00:01"), ""), 0)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		expected := created.Seq
		var wg sync.WaitGroup
		errs := make([]error, 2)
		acks := make([]streams.Ack, 2)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each writer has its own event: two operators changing the same port.
				ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testPort("fa:16:3e:00:01:0"+string(rune('1'+w))), "")
				acks[w], errs[w] = pub.Append(ctx, ev, expected)
			}()
		}
		wg.Wait()
		var wins, conflicts int
		for w := range 2 {
			var conflict *streams.ConflictError
			switch {
			case errs[w] == nil:
				wins++
				created = acks[w]
			case errors.As(errs[w], &conflict) && errors.Is(errs[w], streams.ErrConflict):
				conflicts++
				if conflict.Expected != expected || conflict.Actual <= expected {
					t.Errorf("round %d: conflict %+v, expected %d", round, conflict, expected)
				}
			default:
				t.Fatalf("round %d: writer %d: unexpected error %v", round, w, errs[w])
			}
		}
		if wins != 1 || conflicts != 1 {
			t.Fatalf("round %d: %d wins and %d conflicts, want exactly one of each", round, wins, conflicts)
		}
	}
}

func TestSameEventIDStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), "")
	first, err := pub.Append(ctx, ev, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A publish retried after its acknowledgement was lost: same event id, same expected
	// sequence. On a single server JetStream answers "wrong last sequence"; the publisher must
	// recognise its own event and report success.
	retry, err := pub.Append(ctx, ev, 0)
	if err != nil {
		t.Fatalf("retry with the same event id and expectation: %v, want success", err)
	}
	if retry.Seq != first.Seq || !retry.Duplicate {
		t.Fatalf("retry ack = %+v, want seq %d duplicate", retry, first.Seq)
	}
	// Published without expectation (plain dedup path): still stored once.
	if _, err := js.PublishMsg(ctx, mustEncode(t, ev), jetstream.WithMsgID(ev.EventId)); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	// A different event with the stale expectation is a real conflict.
	other := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testNetwork(), "")
	if _, err := pub.Append(ctx, other, 0); !errors.Is(err, streams.ErrConflict) {
		t.Fatalf("stale writer: %v, want conflict", err)
	}
}

func mustEncode(t *testing.T, ev *nsv1.DesiredEvent) *nats.Msg {
	t.Helper()
	m, err := streams.EncodeDesired(ev)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAppendValidates(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	bad := testPort("zz:00:00:00:00:01")
	if _, err := pub.Append(ctxT(t), streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, bad, ""), 0); err == nil {
		t.Fatal("invalid port published")
	}
	hostile := testPort("fa:16:3e:00:00:01")
	hostile.Host = "a.b"
	if _, err := pub.Append(ctxT(t), streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, hostile, ""), 0); err == nil {
		t.Fatal("host a.b published")
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("stream holds %d messages after rejected publishes, want 0", n)
	}
}

func TestServerRestartKeepsEverything(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	pub := streams.NewPublisher(js, "test")
	ctx := ctxT(t)
	ack, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), ""), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testPort("fa:16:3e:00:00:01"), ""), 0); err != nil {
		t.Fatal(err)
	}
	srv = srv.Restart()
	_, js = srv.Connect()
	state, err := streams.LoadState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(state.Live("")); got != 2 {
		t.Fatalf("after restart %d live objects, want 2", got)
	}
	// Optimistic concurrency continues from the stored sequence.
	pub = streams.NewPublisher(js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testNetwork(), ""), ack.Seq); err != nil {
		t.Fatalf("update after restart: %v", err)
	}
}

func TestEnsureStreamsIsIdempotent(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	for range 3 {
		if err := streams.EnsureStreams(ctxT(t), js, streams.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	// Replicas 3 cannot be had on one server: the error names the stream.
	err := streams.EnsureStreams(ctxT(t), js, streams.Config{Replicas: 3})
	if err == nil {
		t.Fatal("replicas 3 on a single server accepted")
	}
}

func TestLoadLastOnEmptyStreamReturns(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	msgs, err := streams.LoadLast(ctxT(t), js, streams.DesiredStream, "ns.desired.host.nobody.>")
	if err != nil || len(msgs) != 0 {
		t.Fatalf("LoadLast on nothing = %v, %v", msgs, err)
	}
}
