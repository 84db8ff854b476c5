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
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Route ports of this package's cluster are picked from [20000, 22000): below the Linux
// ephemeral range (32768-60999), apart from the streams package's (13000-19000).
const agentClusterPort = 20000

// The workload of the cluster tests: eight writers append 10,000 events (optimistic
// concurrency, one writer per subject): 8 networks and ports of four hosts, updated over
// and over. The server leading NETSOURCE_DESIRED is lost after 2,000 acknowledged appends.
//
// The agent gets a quarter of the events (hostA's ports: the networks and 2,498 port
// events) because it publishes one status per converged version, one at a time
// (actors.AsyncReporter): about 500/s on R3 here, 100-200/s under -race, which would make
// all 10,000 take minutes on this 2-core machine.
const (
	loadWriters   = 8
	loadPerWriter = 1250 // 1 network + 1249 updates cycling over the writer's ports
	loadPorts     = 50
	loadTotal     = loadWriters * loadPerWriter
	loadLoseAfter = 2000
)

var loadHosts = []string{"hostA", "hostB", "hostC", "hostD"} // writer w's ports are on hosts[w%4]

// appended is one acknowledged append as the publisher saw it.
type appended struct {
	subject, eventID string
	seq              uint64
	duplicate        bool
	at               time.Time
}

// clusterLoad is what the writers did: every acknowledged append, each subject's events in
// the order its writer appended them, and the last version of each of hostA's ports.
type clusterLoad struct {
	mu      sync.Mutex
	acks    []appended
	order   map[string][]string // subject -> event ids in the order the writer appended them
	final   map[string]int      // hostA's port id -> last version
	acked   atomic.Int64
	slowest atomic.Int64 // longest single append, ns
	start   time.Time
	took    time.Duration
	lostAt  time.Time // when lose was called
}

// writeClusterLoad runs the writers through pub until every event is acknowledged, and
// calls lose once, on the writer that got the loadLoseAfter-th acknowledgement. Each writer
// waits for an append's ack before its next append to the subject (optimistic concurrency
// allows no pipelining).
func writeClusterLoad(t *testing.T, ctx context.Context, pub *streams.Publisher, lose func()) *clusterLoad {
	t.Helper()
	l := &clusterLoad{order: map[string][]string{}, final: map[string]int{}, start: time.Now()}
	var wg sync.WaitGroup
	errs := make(chan error, loadWriters)
	for w := range loadWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]uint64{}
			appendOne := func(spec streams.Spec, change nsv1.ChangeKind) error {
				ev := streams.NewEvent(change, spec, "")
				subject, _ := streams.SubjectOf(ev)
				began := time.Now()
				ack, err := pub.AppendDurable(ctx, ev, last[subject])
				if d := time.Since(began); int64(d) > l.slowest.Load() {
					l.slowest.Store(int64(d))
				}
				if err != nil {
					return fmt.Errorf("writer %d: %s: %w", w, subject, err)
				}
				last[subject] = ack.Seq
				l.mu.Lock()
				l.acks = append(l.acks, appended{subject: subject, eventID: ev.EventId, seq: ack.Seq, duplicate: ack.Duplicate, at: time.Now()})
				l.order[subject] = append(l.order[subject], ev.EventId)
				l.mu.Unlock()
				if l.acked.Add(1) == loadLoseAfter {
					l.mu.Lock()
					l.lostAt = time.Now()
					l.mu.Unlock()
					lose() // the stream leader goes away mid-run
				}
				return nil
			}
			if err := appendOne(authNetwork(w), nsv1.ChangeKind_CHANGE_KIND_CREATED); err != nil {
				errs <- err
				return
			}
			for k := range loadPerWriter - 1 {
				p, v := k%loadPorts, k/loadPorts
				change := nsv1.ChangeKind_CHANGE_KIND_UPDATED
				if v == 0 {
					change = nsv1.ChangeKind_CHANGE_KIND_CREATED
				}
				port := authPort(loadHosts[w%len(loadHosts)], w, p, v)
				if err := appendOne(port, change); err != nil {
					errs <- err
					return
				}
				if port.Host == "hostA" {
					l.mu.Lock()
					l.final[port.Id] = v
					l.mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l.took = time.Since(l.start)
	if l.lostAt.IsZero() {
		t.Fatal("the leader was never lost")
	}
	return l
}

// duplicates counts the acknowledgements that were duplicates: retries of events stored
// before the leader went.
func (l *clusterLoad) duplicates() int {
	n := 0
	for _, ack := range l.acks {
		if ack.duplicate {
			n++
		}
	}
	return n
}

// ackStall is the longest pause between two consecutive acknowledgements from the loss on:
// how long the publishers waited for the stream to come back.
func (l *clusterLoad) ackStall() time.Duration {
	var prev time.Time
	var stall time.Duration
	for _, ack := range l.acks {
		if !prev.IsZero() && !ack.at.Before(l.lostAt) && ack.at.Sub(prev) > stall {
			stall = ack.at.Sub(prev)
		}
		if ack.at.After(prev) {
			prev = ack.at
		}
	}
	return stall
}

func (l *clusterLoad) logSummary(t *testing.T, lost, newLeader, publisherOn string) {
	t.Helper()
	t.Logf("%d events appended in %s (%.0f/s) by %d writers; leader %s lost at %s, new leader %s; "+
		"longest pause between acks from then on %s; %d acks were duplicates (retries of events stored before); "+
		"slowest append %s; publisher now on %s",
		len(l.acks), l.took.Round(time.Millisecond), float64(len(l.acks))/l.took.Seconds(), loadWriters, lost,
		l.lostAt.Sub(l.start).Round(time.Millisecond), newLeader, l.ackStall().Round(time.Millisecond), l.duplicates(),
		time.Duration(l.slowest.Load()).Round(time.Millisecond), publisherOn)
}

// checkStream reads the whole desired stream through js: every event is there exactly once
// and in its writer's order, every acknowledged append at its acknowledged sequence.
func (l *clusterLoad) checkStream(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	all, err := streams.Read(ctx, js, streams.DesiredStream, streams.Start{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.acks) != loadTotal || len(all) != loadTotal {
		t.Fatalf("%d acknowledged appends, %d messages in the stream; want %d each", len(l.acks), len(all), loadTotal)
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
	for _, ack := range l.acks {
		m, ok := bySeq[ack.seq]
		if !ok || m.Header.Get(nats.MsgIdHdr) != ack.eventID || m.Subject != ack.subject {
			t.Fatalf("acknowledged %s at seq %d on %s, but the stream has %q on %s there", ack.eventID, ack.seq, ack.subject,
				m.Header.Get(nats.MsgIdHdr), m.Subject)
		}
	}
	for subject, want := range l.order {
		if got := inStream[subject]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: stream order %v differs from the writer's %v", subject, got, want)
		}
	}
	t.Logf("stream: %d messages, %d distinct event ids (0 lost, 0 stored twice), %d subjects in writer order, every ack at its sequence",
		len(all), len(seen), len(inStream))
}

// checkAgent waits until agent a (of hostA, which lost its server too) shows every one of
// its ports at its last version without refusing anything, stops it, and checks that a
// fresh agent with the same configuration builds the same dataplane from the final stream.
func (l *clusterLoad) checkAgent(t *testing.T, a *fakeAgent, cfg *config.Config, sec agent.Security) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", a.logs)
		}
	}()
	convergeStart := time.Now()
	waitFact(t, 60*time.Second, "the agent's dataplane shows every port's last version", func() error {
		dump := a.fake.Dump()
		for id, v := range l.final {
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
		time.Since(l.start).Round(time.Millisecond))
	if !strings.Contains(a.logs.String(), "disconnected from NATS") {
		t.Errorf("the agent never lost its server:\n%s", a.logs)
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
		if strings.HasPrefix(line, "veth ") && !isFinal(line, l.final) {
			t.Fatalf("the agent plugged a port of another host: %s", line)
		}
	}
	t.Logf("fresh agent reproduced the %d-line dump", strings.Count(want, "\n"))
}

// clusterClientOptions: credentials of name, the URL list in its order, reconnecting forever.
func clusterClientOptions(t *testing.T, creds map[string]string, name string) []nats.Option {
	t.Helper()
	sec, err := streams.ClientSecurity{Creds: creds[name]}.Options()
	if err != nil {
		t.Fatal(err)
	}
	return append(sec, nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
}

// clusterAgent starts hostA's agent, with its least-privilege credentials, on the servers at
// url (first the leader).
func clusterAgent(t *testing.T, creds map[string]string, url string) (*fakeAgent, *config.Config, agent.Security) {
	t.Helper()
	sec := agent.Security{Client: streams.ClientSecurity{Creds: creds["agent-hostA"]}}
	cfg := fakeAgentConfig(t, "hostA", url, false)
	a := startFakeAgent(t, cfg, agent.Options{Security: sec, NATSOptions: []nats.Option{nats.DontRandomize(), nats.ReconnectWait(100 * time.Millisecond)}})
	return a, cfg, sec
}

// initClusterAuth runs `netsource auth init` for hostA into dir/creds and returns the
// credentials files by identity name and auth.conf.
func initClusterAuth(t *testing.T, dir string) (map[string]string, string) {
	t.Helper()
	ids, err := streams.InitAuth(filepath.Join(dir, "creds"), []string{"hostA"})
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{}
	for _, id := range ids {
		creds[id.Name()] = id.File
	}
	return creds, filepath.Join(dir, "creds", streams.AuthConfigFile)
}

// TestClusterLeaderLossLosesNothing: three servers in this process form one JetStream
// cluster with R3 streams and the permissions of `netsource auth init`. The writers of
// writeClusterLoad append 10,000 events while the agent of hostA, with least-privilege
// credentials, converges its share on the recording dataplane. After 2,000 acknowledged
// appends the server leading NETSOURCE_DESIRED, to which publishers and agent are
// connected, is shut down. Afterwards: every event is in the stream exactly once and in
// its writer's order, every acknowledged append is there at its acknowledged sequence, the
// agent shows every one of its ports at its last version, and its dataplane equals the one
// a fresh agent builds from the final stream. TestClusterLeaderKilledLosesNothing does the
// same with server processes and kill -9.
func TestClusterLeaderLossLosesNothing(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	creds, authConf := initClusterAuth(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers, err := streams.StartLocalCluster(ctx, filepath.Join(dir, "store"), "nsagent", 3, agentClusterPort, authConf, zerolog.Nop())
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
	pubConn, err := nats.Connect(url, clusterClientOptions(t, creds, "publisher")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pubConn.Close)
	pubJS, _ := jetstream.New(pubConn)
	pub := streams.NewPublisher(pubJS, "cluster-test")
	a, cfg, sec := clusterAgent(t, creds, url)
	if got := pubConn.ConnectedServerName(); got != leader.Name() {
		t.Fatalf("publisher connected to %s, want the leader %s", got, leader.Name())
	}
	t.Logf("cluster of %d up, streams R%d, leader %s, agent ready: %s", st.Size, st.Replicas(), leader.Name(), time.Since(start).Round(time.Millisecond))

	load := writeClusterLoad(t, ctx, pub, func() { leader.Shutdown() })
	load.logSummary(t, leader.Name(), serverName(streams.StreamLeader(servers, streams.DesiredStream)), pubConn.ConnectedServerName())

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
	load.checkStream(t, ctx, rjs)
	if pubConn.Stats().Reconnects == 0 {
		t.Error("the publisher never reconnected")
	}
	load.checkAgent(t, a, cfg, sec)
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
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
