package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Route ports of this package's cluster are picked from [20000, 22000): below the Linux
// ephemeral range (32768-60999), apart from the streams package's (13000-19000).
const agentClusterPort = 20000

// appended is one acknowledged append as the publisher saw it.
type appended struct {
	subject, eventID string
	seq              uint64
	duplicate        bool
}

// TestClusterLeaderLossLosesNothing: three servers in this process form one JetStream
// cluster with R3 streams and the permissions of `netsource auth init`. Eight publishers
// append 10,000 events (optimistic concurrency, one writer per subject): 8 networks and
// ports of four hosts, updated over and over. Meanwhile the agent of hostA, with
// least-privilege credentials, converges its share (the networks and 2,498 port events) on
// the recording dataplane. After 2,000 acknowledged appends the server leading
// NETSOURCE_DESIRED, to which publishers and agent are connected, is shut down.
// Afterwards: every event is in the stream exactly once and in its writer's order, every
// acknowledged append is there at its acknowledged sequence, the agent shows every one of
// its ports at its last version, and its dataplane equals the one a fresh agent builds
// from the final stream.
//
// The agent gets a quarter of the events because it publishes one status per converged
// version, one at a time (actors.AsyncReporter): about 500/s on R3 here, 100-200/s under
// -race, which would make all 10,000 take minutes on this 2-core machine.
func TestClusterLeaderLossLosesNothing(t *testing.T) {
	const (
		writers   = 8
		perWriter = 1250 // 1 network + 1249 updates cycling over the writer's ports
		ports     = 50
		total     = writers * perWriter
		killAfter = 2000
	)
	hosts := []string{"hostA", "hostB", "hostC", "hostD"} // writer w's ports are on hosts[w%4]
	start := time.Now()
	dir := t.TempDir()
	ids, err := streams.InitAuth(filepath.Join(dir, "creds"), []string{"hostA"})
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{}
	for _, id := range ids {
		creds[id.Name()] = id.File
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers, err := streams.StartLocalCluster(ctx, filepath.Join(dir, "store"), "nsagent", 3, agentClusterPort,
		filepath.Join(dir, "creds", streams.AuthConfigFile), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, ns := range servers {
			streams.ShutdownServer(ns)
		}
	})
	st, _ := streams.JetStreamCluster(servers[0])
	setup, err := streams.ConnectInProcess(servers[0])
	if err != nil {
		t.Fatal(err)
	}
	setupJS, _ := jetstream.New(setup)
	if err := streams.EnsureStreams(ctx, setupJS, streams.Config{Replicas: st.Replicas()}); err != nil {
		t.Fatal(err)
	}
	setup.Close()
	var leader *server.Server
	waitFact(t, 10*time.Second, "a leader for "+streams.DesiredStream, func() error {
		if leader = streams.StreamLeader(servers, streams.DesiredStream); leader == nil {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	// Everyone connects to the leader first, so its loss forces every client to fail over.
	urls := []string{leader.ClientURL()}
	for _, ns := range servers {
		if ns != leader {
			urls = append(urls, ns.ClientURL())
		}
	}
	url := strings.Join(urls, ",")
	clientOpts := func(name string) []nats.Option {
		sec, err := streams.ClientSecurity{Creds: creds[name]}.Options()
		if err != nil {
			t.Fatal(err)
		}
		return append(sec, nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	}
	pubConn, err := nats.Connect(url, clientOpts("publisher")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pubConn.Close)
	pubJS, _ := jetstream.New(pubConn)
	pub := streams.NewPublisher(pubJS, "cluster-test")

	sec := agent.Security{Client: streams.ClientSecurity{Creds: creds["agent-hostA"]}}
	cfg := fakeAgentConfig(t, "hostA", url, false)
	a := startFakeAgent(t, cfg, agent.Options{Security: sec, NATSOptions: []nats.Option{nats.DontRandomize(), nats.ReconnectWait(100 * time.Millisecond)}})
	if got := pubConn.ConnectedServerName(); got != leader.Name() {
		t.Fatalf("publisher connected to %s, want the leader %s", got, leader.Name())
	}
	t.Logf("cluster of %d up, streams R%d, leader %s, agent ready: %s", st.Size, st.Replicas(), leader.Name(), time.Since(start).Round(time.Millisecond))

	// The writers. Writer w owns network w and its ports; it waits for each ack before the
	// next append to a subject (optimistic concurrency allows no pipelining).
	var (
		mu      sync.Mutex
		acks    []appended
		order   = map[string][]string{} // subject -> event ids in the order the writer appended them
		final   = map[string]int{}      // port id -> last version
		acked   atomic.Int64
		killed  = make(chan time.Time, 1)
		slowest atomic.Int64 // longest single append, ns
	)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	pubStart := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]uint64{}
			appendOne := func(spec streams.Spec, change nsv1.ChangeKind) error {
				ev := streams.NewEvent(change, spec, "")
				subject, _ := streams.SubjectOf(ev)
				began := time.Now()
				ack, err := pub.AppendDurable(ctx, ev, last[subject])
				if d := time.Since(began); int64(d) > slowest.Load() {
					slowest.Store(int64(d))
				}
				if err != nil {
					return fmt.Errorf("writer %d: %s: %w", w, subject, err)
				}
				last[subject] = ack.Seq
				mu.Lock()
				acks = append(acks, appended{subject: subject, eventID: ev.EventId, seq: ack.Seq, duplicate: ack.Duplicate})
				order[subject] = append(order[subject], ev.EventId)
				mu.Unlock()
				if acked.Add(1) == killAfter {
					killed <- time.Now()
					leader.Shutdown() // the stream leader goes away mid-run
				}
				return nil
			}
			if err := appendOne(authNetwork(w), nsv1.ChangeKind_CHANGE_KIND_CREATED); err != nil {
				errs <- err
				return
			}
			for k := range perWriter - 1 {
				p, v := k%ports, k/ports
				change := nsv1.ChangeKind_CHANGE_KIND_UPDATED
				if v == 0 {
					change = nsv1.ChangeKind_CHANGE_KIND_CREATED
				}
				port := authPort(hosts[w%len(hosts)], w, p, v)
				if err := appendOne(port, change); err != nil {
					errs <- err
					return
				}
				if port.Host == "hostA" {
					mu.Lock()
					final[port.Id] = v
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	pubTime := time.Since(pubStart)
	var killedAt time.Time
	select {
	case killedAt = <-killed:
	default:
		t.Fatal("the leader was never shut down")
	}
	newLeader := streams.StreamLeader(servers, streams.DesiredStream)
	dups := 0
	for _, ack := range acks {
		if ack.duplicate {
			dups++
		}
	}
	t.Logf("%d events appended in %s (%.0f/s) by %d writers; leader %s shut down at %s, new leader %v; "+
		"%d acks were duplicates (retries of events stored before); slowest append %s; publisher now on %s",
		len(acks), pubTime.Round(time.Millisecond), float64(len(acks))/pubTime.Seconds(), writers, leader.Name(),
		killedAt.Sub(pubStart).Round(time.Millisecond), serverName(newLeader), dups,
		time.Duration(slowest.Load()).Round(time.Millisecond), pubConn.ConnectedServerName())

	// The stream, read whole through a surviving server.
	var survivor *server.Server
	for _, ns := range servers {
		if ns != leader {
			survivor = ns
			break
		}
	}
	rc, err := streams.ConnectInProcess(survivor)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rjs, _ := jetstream.New(rc)
	all, err := streams.Read(ctx, rjs, streams.DesiredStream, streams.Start{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != total || len(all) != total {
		t.Fatalf("%d acknowledged appends, %d messages in the stream; want %d each", len(acks), len(all), total)
	}
	bySeq := map[uint64]streams.Msg{}
	seen := map[string]uint64{}
	inStream := map[string][]string{}
	for _, m := range all {
		id := m.Header.Get(nats.MsgIdHdr)
		if prev, dup := seen[id]; dup {
			t.Fatalf("event %s stored twice (seq %d and %d)", id, prev, m.Seq)
		}
		seen[id] = m.Seq
		bySeq[m.Seq] = m
		inStream[m.Subject] = append(inStream[m.Subject], id)
	}
	for _, ack := range acks {
		m, ok := bySeq[ack.seq]
		if !ok || m.Header.Get(nats.MsgIdHdr) != ack.eventID || m.Subject != ack.subject {
			t.Fatalf("acknowledged %s at seq %d on %s, but the stream has %q on %s there", ack.eventID, ack.seq, ack.subject,
				m.Header.Get(nats.MsgIdHdr), m.Subject)
		}
	}
	for subject, want := range order {
		if got := inStream[subject]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: stream order %v differs from the writer's %v", subject, got, want)
		}
	}
	t.Logf("stream: %d messages, %d distinct event ids, %d subjects in writer order, every ack at its sequence",
		len(all), len(seen), len(inStream))

	// The agent reaches the final version of every port.
	convergeStart := time.Now()
	waitFact(t, 60*time.Second, "the agent's dataplane shows every port's last version", func() error {
		dump := a.fake.Dump()
		for id, v := range final {
			line := portLine(dump, id)
			want := fmt.Sprintf(" addrs 192.0.2.%d/24", 10+v)
			state := map[bool]string{true: " up peer ", false: " down peer "}[v%4 != 3]
			if !strings.Contains(line, want) || !strings.Contains(line, state) {
				return fmt.Errorf("port %s (version %d): %q", id, v, line)
			}
		}
		return nil
	})
	t.Logf("agent converged %s after the last append (total %s since the first)", time.Since(convergeStart).Round(time.Millisecond),
		time.Since(pubStart).Round(time.Millisecond))
	if !strings.Contains(a.logs.String(), "disconnected from NATS") {
		t.Errorf("the agent never lost its server:\n%s", a.logs)
	}
	if pubConn.Stats().Reconnects == 0 {
		t.Error("the publisher never reconnected")
	}
	if strings.Contains(a.logs.String(), "did not publish") || strings.Contains(a.logs.String(), "does not belong") {
		t.Errorf("the agent refused messages during the failover:\n%s", a.logs)
	}
	a.stop()
	want := a.fake.Dump()

	// A fresh agent built from the final stream reaches the same dataplane.
	b := startFakeAgent(t, cfg, agent.Options{Security: sec})
	waitFact(t, 60*time.Second, "a fresh agent's dataplane equals the first agent's", func() error {
		if got := b.fake.Dump(); got != want {
			return fmt.Errorf("%d vs %d lines", strings.Count(got, "\n"), strings.Count(want, "\n"))
		}
		return nil
	})
	for _, line := range strings.Split(want, "\n") {
		if strings.HasPrefix(line, "veth ") && !isFinal(line, final) {
			t.Fatalf("the agent plugged a port of another host: %s", line)
		}
	}
	t.Logf("fresh agent reproduced the %d-line dump; whole test %s", strings.Count(want, "\n"), time.Since(start).Round(time.Millisecond))
}

func serverName(ns *server.Server) string {
	if ns == nil {
		return "(none yet)"
	}
	return ns.Name()
}

// isFinal: the veth line belongs to one of the ports in final.
func isFinal(line string, final map[string]int) bool {
	for id := range final {
		if strings.HasPrefix(line, "veth "+links.TapName(id)+" ") {
			return true
		}
	}
	return false
}
