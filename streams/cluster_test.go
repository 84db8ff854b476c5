package streams_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// Route ports of the clusters these tests start are picked from [base, base+2000): fixed
// before start, below the Linux ephemeral range 32768-60999, apart per test and from other
// packages' tests (nodes/agent uses 20000-22000).
const streamsClusterPort = 13000

// startCluster runs three servers in this process as one JetStream cluster with the
// netsource streams at the replica count the cluster calls for.
func startCluster(t *testing.T, basePort int) ([]*server.Server, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers, err := streams.StartLocalCluster(ctx, t.TempDir(), "nstest", 3, basePort, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, ns := range servers {
			streams.ShutdownServer(ns)
		}
	})
	st, err := streams.JetStreamCluster(servers[0])
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(streams.ClientURLs(servers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := streams.EnsureStreams(ctx, js, streams.Config{Replicas: st.Replicas()}); err != nil {
		t.Fatal(err)
	}
	return servers, js
}

func TestClusterStreamsAreReplicatedThreeTimes(t *testing.T) {
	servers, js := startCluster(t, streamsClusterPort)
	st, _ := streams.JetStreamCluster(servers[1])
	if st.Size != 3 || st.Online != 3 || st.Replicas() != 3 {
		t.Fatalf("cluster state %+v, want 3 servers online and 3 replicas", st)
	}
	for _, name := range []string{streams.DesiredStream, streams.StatusStream} {
		s, err := js.Stream(ctxT(t), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("%s: replicas %d, cluster %+v; want 3 (a leader and two followers)", name, info.Config.Replicas, info.Cluster)
		}
	}
}

// TestLostAckRetryR1VersusR3 is the contract of section 1.2 of the reference: a publish
// retried after its acknowledgement was lost (same Msg-Id, same now-stale expectation) is
// answered "wrong last sequence" (10071) by a single server but with a duplicate ack by a
// replicated stream; Publisher.Append reports success with the first sequence on both.
func TestLostAckRetryR1VersusR3(t *testing.T) {
	_, r3 := startCluster(t, streamsClusterPort+2000)
	r1srv := natstest.Start(t)
	_, r1 := r1srv.Connect()
	for _, tc := range []struct {
		name string
		js   jetstream.JetStream
	}{{"R1", r1}, {"R3", r3}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), "test")
			first, err := tc.js.PublishMsg(ctx, mustEncode(t, ev), jetstream.WithMsgID(ev.EventId), jetstream.WithExpectLastSequencePerSubject(0))
			if err != nil {
				t.Fatal(err)
			}
			// The server's raw answer to the retry.
			retry, err := tc.js.PublishMsg(ctx, mustEncode(t, ev), jetstream.WithMsgID(ev.EventId), jetstream.WithExpectLastSequencePerSubject(0))
			var apiErr *jetstream.APIError
			switch tc.name {
			case "R1":
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10071 {
					t.Fatalf("R1 retry: %v, %v; want error 10071", retry, err)
				}
			case "R3":
				if err != nil || !retry.Duplicate || retry.Sequence != first.Sequence {
					t.Fatalf("R3 retry: %+v, %v; want a duplicate ack of seq %d", retry, err, first.Sequence)
				}
			}
			// The publisher hides the difference.
			pub := streams.NewPublisher(tc.js, "test")
			ack, err := pub.Append(ctx, ev, 0)
			if err != nil || !ack.Duplicate || ack.Seq != first.Sequence {
				t.Fatalf("Append retry: %+v, %v; want duplicate of seq %d", ack, err, first.Sequence)
			}
			// A different event with the stale expectation stays a conflict.
			other := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testNetwork(), "test")
			if _, err := pub.Append(ctx, other, 0); !errors.Is(err, streams.ErrConflict) {
				t.Fatalf("stale writer: %v, want conflict", err)
			}
			if n := streamMsgs(t, tc.js); n != 1 {
				t.Fatalf("stream holds %d messages, want 1", n)
			}
		})
	}
}

// TestR3InFlightConflictAndRacingWriters: on a replicated stream a second expected-sequence
// publish to a subject whose previous write is still being proposed gets 10164 instead of
// 10071. The publisher treats both as a conflict: of two racing writers exactly one wins.
func TestR3InFlightConflictAndRacingWriters(t *testing.T) {
	_, js := startCluster(t, streamsClusterPort+4000)
	ctx := ctxT(t)
	codes := map[int]int{}
	var last uint64
	for round := range 30 {
		// Two publishes with the same expectation, the second sent before the first is acked.
		var futures []jetstream.PubAckFuture
		for w := range 2 {
			port := testPort(fmt.Sprintf("fa:16:3e:00:%02x:%02x", round, w))
			ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, port, "test")
			f, err := js.PublishMsgAsync(mustEncode(t, ev), jetstream.WithMsgID(ev.EventId), jetstream.WithExpectLastSequencePerSubject(last))
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
		wins := 0
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				wins++
				last = ack.Sequence
			case err := <-f.Err():
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || (apiErr.ErrorCode != 10071 && apiErr.ErrorCode != 10164) {
					t.Fatalf("round %d: %v, want 10071 or 10164", round, err)
				}
				codes[int(apiErr.ErrorCode)]++
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d publishes stored, want 1", round, wins)
		}
	}
	t.Logf("losers of 30 pipelined pairs: %d x 10071, %d x 10164 (in flight)", codes[10071], codes[10164])
	if codes[10164] == 0 {
		t.Error("no pipelined loser got 10164: the in-flight case was not exercised")
	}

	// The same race through Publisher.Append: exactly one of two writers wins each round and
	// the other gets a *ConflictError, whichever code the server chose.
	pub := streams.NewPublisher(js, "test")
	for round := range 20 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		acks := make([]streams.Ack, 2)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testPort(fmt.Sprintf("fa:16:3e:01:%02x:%02x", round, w)), "")
				acks[w], errs[w] = pub.Append(ctx, ev, last)
			}()
		}
		wg.Wait()
		wins := 0
		for w := range 2 {
			switch {
			case errs[w] == nil:
				wins++
				last = acks[w].Seq
			case !errors.Is(errs[w], streams.ErrConflict):
				t.Fatalf("round %d: writer %d: %v, want success or conflict", round, w, errs[w])
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, wins)
		}
	}
}

func TestExpectedClusterSize(t *testing.T) {
	routes := []string{"nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"}
	for _, tc := range []struct {
		listen string
		want   int
	}{
		{"10.0.0.1:6222", 3}, // the shared list includes this node
		{"10.0.0.9:6222", 4}, // it does not
	} {
		if got := streams.ExpectedClusterSize(streams.ClusterOptions{Name: "c", Listen: tc.listen, Routes: routes}); got != tc.want {
			t.Errorf("listen %s: %d, want %d", tc.listen, got, tc.want)
		}
	}
	if got := streams.ExpectedClusterSize(streams.ClusterOptions{}); got != 1 {
		t.Errorf("no cluster: %d, want 1", got)
	}
}
