package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/netsource/netsource/nodes/agent"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

func publishRaw(t *testing.T, js jetstream.JetStream, subject string, m proto.Message, header nats.Header) uint64 {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: header}
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestAgentIgnoresStatusItDidNotPublish: without server permissions (none here), anyone
// can write on ns.status.hostA.>; the agent must not take such a message for its own.
func TestAgentIgnoresStatusItDidNotPublish(t *testing.T) {
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, authNetwork(1), ""), 0); err != nil {
		t.Fatal(err)
	}
	port := authPort("hostA", 1, 1, 0)
	ack, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, port, ""), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Before the agent starts, someone claims the port is ACTIVE at its current version. An
	// agent that believed it would never publish the port's real status.
	subject, _ := streams.StatusSubject("hostA", streams.KindPort, port.Id)
	forged := &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: port.Id, Phase: nsv1.Phase_PHASE_ACTIVE, Reason: "forged", DesiredSeq: ack.Seq}
	publishRaw(t, js, subject, forged, nil)

	a := startFakeAgent(t, fakeAgentConfig(t, "hostA", srv.NS.ClientURL(), false), agent.Options{})
	waitFact(t, 20*time.Second, "the agent's own status replaces the forged one", func() error {
		m, ev, err := lastStatusMsg(ctx, js, "hostA", streams.KindPort, port.Id)
		if err != nil {
			return err
		}
		if ev.GetReason() == "forged" || !strings.HasPrefix(m.Header.Get(streams.HeaderPublisher), "hostA/") {
			return fmt.Errorf("last status %v (publisher %q)", ev, m.Header.Get(streams.HeaderPublisher))
		}
		return nil
	})
	// While it runs, another process writes on its subjects, pretending to be it.
	publishRaw(t, js, subject, forged, nats.Header{streams.HeaderPublisher: []string{"hostA/impostor"}})
	hb := waitCounter(t, ctx, js, "foreign_status_ignored", 2)
	if hb.GetCounts()["desired_rejected"] != 0 {
		t.Errorf("desired_rejected = %d, want 0", hb.GetCounts()["desired_rejected"])
	}
	logs := a.logs.String()
	for _, want := range []string{`"reason":"no Ns-Publisher header"`, `published by another process \"hostA/impostor\"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func waitCounter(t *testing.T, ctx context.Context, js jetstream.JetStream, name string, want uint32) *nsv1.AgentHeartbeat {
	t.Helper()
	var hb *nsv1.AgentHeartbeat
	waitFact(t, 20*time.Second, "heartbeat counter "+name, func() error {
		var err error
		if hb, err = lastHeartbeat(ctx, js, "hostA"); err != nil {
			return err
		}
		if got := hb.GetCounts()[name]; got < want {
			return fmt.Errorf("%s = %d, want %d", name, got, want)
		}
		return nil
	})
	return hb
}

// TestAgentRefusesDesiredEventsOnTheWrongSubject: an event whose subject names another
// object or host than its content (a buggy or hostile publisher that bypassed
// Publisher.Append) changes nothing; the object is reported ERROR and counted.
func TestAgentRefusesDesiredEventsOnTheWrongSubject(t *testing.T) {
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, authNetwork(1), ""), 0); err != nil {
		t.Fatal(err)
	}
	good := authPort("hostA", 1, 1, 0)
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, good, ""), 0); err != nil {
		t.Fatal(err)
	}
	a := startFakeAgent(t, fakeAgentConfig(t, "hostA", srv.NS.ClientURL(), false), agent.Options{})

	otherID := authPort("hostA", 1, 2, 0)   // its subject will name port 3
	otherHost := authPort("hostB", 1, 4, 0) // bound to hostB, put on hostA's subject
	for _, tc := range []struct {
		port    *nsv1.Port
		subject string
		id      string // the id the subject names
	}{
		{otherID, "ns.desired.host.hostA.port." + authPortID(1003), authPortID(1003)},
		{otherHost, "ns.desired.host.hostA.port." + otherHost.Id, otherHost.Id},
	} {
		ev := streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, tc.port, "rogue")
		publishRaw(t, js, tc.subject, ev, nats.Header{nats.MsgIdHdr: []string{ev.EventId}})
		waitFact(t, 20*time.Second, "ERROR status for "+tc.subject, func() error {
			_, st, err := lastStatusMsg(ctx, js, "hostA", streams.KindPort, tc.id)
			if err != nil {
				return err
			}
			if st.GetPhase() != nsv1.Phase_PHASE_ERROR || !strings.Contains(st.GetReason(), "not what its subject") {
				return fmt.Errorf("status %v", st)
			}
			t.Logf("%s: %s %q", tc.subject, streams.PhaseName(st.GetPhase()), st.GetReason())
			return nil
		})
	}
	waitCounter(t, ctx, js, "desired_rejected", 2)
	// The good port is plugged; neither rogue one is.
	dump := a.fake.Dump()
	if portLine(dump, good.Id) == "" {
		t.Errorf("the valid port is not plugged:\n%s", dump)
	}
	for _, id := range []string{otherID.Id, otherHost.Id, authPortID(1003)} {
		if l := portLine(dump, id); l != "" {
			t.Errorf("a refused event plugged %s: %s", id, l)
		}
	}
}

// TestAgentWithLeastPrivilegeCredentials runs an agent with the agent-hostA credentials of
// `netsource auth init` against a server that enforces them: its ordered consumers (one
// per filter), status, heartbeat and l2population follower all fit its permissions; it
// signs its status, so a restart recognises it and publishes nothing new.
func TestAgentWithLeastPrivilegeCredentials(t *testing.T) {
	dir := t.TempDir()
	ids, err := streams.InitAuth(filepath.Join(dir, "creds"), []string{"hostA", "hostB"})
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{}
	for _, id := range ids {
		creds[id.Name()] = id.File
	}
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: filepath.Join(dir, "store"), Listen: "127.0.0.1:-1", Log: zerolog.Nop(),
		MaxStore: 1 << 30, MaxMemory: 256 << 20, ConfigFile: filepath.Join(dir, "creds", streams.AuthConfigFile)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streams.ShutdownServer(ns) })
	connectAs := func(name string) jetstream.JetStream {
		opts, err := streams.ClientSecurity{Creds: creds[name]}.Options()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(ns.ClientURL(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		return js
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := streams.EnsureStreams(ctx, connectAs("admin"), streams.Config{}); err != nil {
		t.Fatal(err)
	}
	pub := streams.NewPublisher(connectAs("publisher"), "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, authNetwork(1), ""), 0); err != nil {
		t.Fatal(err)
	}
	port := authPort("hostA", 1, 1, 0)
	portSeq, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, port, ""), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Host B's port: agent A must never see it.
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, authPort("hostB", 1, 2, 0), ""), 0); err != nil {
		t.Fatal(err)
	}
	dash := connectAs("dashboard")
	sec := agent.Security{Client: streams.ClientSecurity{Creds: creds["agent-hostA"]}}
	cfg := fakeAgentConfig(t, "hostA", ns.ClientURL(), true)
	a := startFakeAgent(t, cfg, agent.Options{Security: sec})
	_, err = streams.Wait(ctx, dash, streams.WaitOptions{Kind: streams.KindPort, ID: port.Id, Phase: nsv1.Phase_PHASE_ACTIVE, MinDesiredSeq: portSeq.Seq})
	if err != nil {
		t.Fatalf("port not ACTIVE: %v\n%s", err, a.logs)
	}
	m, _, err := lastStatusMsg(ctx, dash, "hostA", streams.KindPort, port.Id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(streams.HeaderPublisherSig) == "" {
		t.Fatalf("status not signed: %v", m.Header)
	}
	if l := portLine(a.fake.Dump(), authPortID(1002)); l != "" {
		t.Fatalf("agent A plugged host B's port: %s", l)
	}
	hb := waitCounter(t, ctx, dash, "foreign_status_ignored", 0)
	if got := hb.GetCounts()["port"]; got != 1 {
		t.Fatalf("heartbeat counts %v, want one port", hb.GetCounts())
	}
	if strings.Contains(a.logs.String(), "ermission") {
		t.Fatalf("permission trouble in the agent's log:\n%s", a.logs)
	}
	a.stop()

	// A restart (a new process, the same key) recognises its signed status: nothing new.
	before, firstStart := m.Seq, hb.GetStartedAt().AsTime()
	b := startFakeAgent(t, cfg, agent.Options{Security: sec})
	waitFact(t, 20*time.Second, "heartbeat of the restarted agent after its full sync", func() error {
		hb, err := lastHeartbeat(ctx, dash, "hostA")
		if err != nil || hb.GetStartFlag() || !hb.GetStartedAt().AsTime().After(firstStart) {
			return fmt.Errorf("heartbeat %v, %v", hb, err)
		}
		if portLine(b.fake.Dump(), port.Id) == "" {
			return fmt.Errorf("port not plugged yet")
		}
		return nil
	})
	m, _, err = lastStatusMsg(ctx, dash, "hostA", streams.KindPort, port.Id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Seq != before {
		t.Fatalf("restart re-published the port's status (seq %d, was %d)", m.Seq, before)
	}
	if n := b.logs.String(); strings.Contains(n, "did not publish") {
		t.Fatalf("restarted agent took its own signed status for a foreign one:\n%s", n)
	}
}
