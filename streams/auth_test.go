package streams_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// authEnv is a real server loaded with the configuration `netsource auth init` writes for
// hosts hostA and hostB, listening on loopback TCP.
type authEnv struct {
	t   *testing.T
	ns  *server.Server
	ids map[string]streams.Identity // by Identity.Name()
	dir string
}

func startAuthServer(t *testing.T) *authEnv {
	t.Helper()
	dir := t.TempDir()
	ids, err := streams.InitAuth(filepath.Join(dir, "creds"), []string{"hostA", "hostB"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: filepath.Join(dir, "store"), Listen: "127.0.0.1:-1",
		Log: zerolog.Nop(), MaxStore: 1 << 30, MaxMemory: 256 << 20, ConfigFile: filepath.Join(dir, "creds", streams.AuthConfigFile)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streams.ShutdownServer(ns) })
	// The embedded server's own client (an internal user only this process knows) sets up
	// the streams, as `netsource server` does.
	nc, err := streams.ConnectInProcess(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := streams.EnsureStreams(ctxT(t), js, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	e := &authEnv{t: t, ns: ns, ids: map[string]streams.Identity{}, dir: dir}
	for _, id := range ids {
		e.ids[id.Name()] = id
	}
	return e
}

// client is one connection as some identity; permission violations the server reports
// asynchronously are collected.
type client struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu         sync.Mutex
	violations []string
	notify     chan struct{}
}

func (e *authEnv) connect(name string, extra ...nats.Option) *client {
	e.t.Helper()
	id, ok := e.ids[name]
	if !ok {
		e.t.Fatalf("no identity %s", name)
	}
	opts, err := streams.ClientSecurity{Creds: id.File}.Options()
	if err != nil {
		e.t.Fatal(err)
	}
	c := &client{notify: make(chan struct{}, 1)}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}), nats.Name(name))
	nc, err := nats.Connect(e.ns.ClientURL(), append(opts, extra...)...)
	if err != nil {
		e.t.Fatalf("connect as %s: %v", name, err)
	}
	e.t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c
}

// violation waits for the server's permission violation naming subject (a "*" token in
// subject stands for any one token, e.g. a consumer name).
func (c *client) violation(t *testing.T, subject string) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		for _, v := range c.violations {
			if _, rest, ok := strings.Cut(v, `to "`); ok && matchSubject(subject, strings.TrimSuffix(rest, `"`)) {
				c.mu.Unlock()
				return v
			}
		}
		seen := append([]string(nil), c.violations...)
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-deadline:
			t.Fatalf("no permission violation for %s; saw %q", subject, seen)
		}
	}
}

func matchSubject(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	if len(p) != len(s) {
		return false
	}
	for i := range p {
		if p[i] != "*" && p[i] != s[i] {
			return false
		}
	}
	return true
}

// refusedPublish publishes msg as a JetStream publish and checks that the server refused it:
// no acknowledgement, a permission violation naming the subject, and nothing stored.
func (e *authEnv) refusedPublish(c *client, subject string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	msg := nats.NewMsg(subject)
	msg.Data = []byte("forged")
	if ack, err := c.js.PublishMsg(ctx, msg); err == nil {
		e.t.Fatalf("publish to %s acknowledged (seq %d), want refused", subject, ack.Sequence)
	}
	v := c.violation(e.t, subject)
	e.t.Logf("refused: %s", v)
	e.assertNothingOn(subject)
}

func (e *authEnv) assertNothingOn(subject string) {
	e.t.Helper()
	admin := e.connect("admin")
	for _, stream := range []string{streams.DesiredStream, streams.StatusStream} {
		s, err := admin.js.Stream(ctxT(e.t), stream)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := s.GetLastMsgForSubject(ctxT(e.t), subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
			e.t.Fatalf("%s holds a message on %s (err %v)", stream, subject, err)
		}
	}
}

func TestAuthInitWritesKeysAndConfig(t *testing.T) {
	dir := t.TempDir()
	ids, err := streams.InitAuth(dir, []string{"hostA"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, id := range ids {
		names = append(names, id.Name())
		st, err := os.Stat(id.File)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", id.File, st.Mode().Perm())
		}
	}
	if got, want := strings.Join(names, ","), "admin,publisher,dashboard,agent-hostA"; got != want {
		t.Fatalf("identities %s, want %s", got, want)
	}
	// Running it again with one more host keeps existing keys and adds the new one.
	again, err := streams.InitAuth(dir, []string{"hostA", "hostB"})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if again[i].PublicKey != id.PublicKey {
			t.Errorf("%s: key changed on the second run", id.Name())
		}
	}
	conf, err := os.ReadFile(filepath.Join(dir, streams.AuthConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{again[4].PublicKey, `"ns.status.hostB.>"`, `"$JS.API.CONSUMER.CREATE.NETSOURCE_DESIRED.*.ns.desired.host.hostB.>"`} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("auth.conf lacks %s", want)
		}
	}
	if _, err := streams.InitAuth(dir, []string{"bad.host"}); err == nil {
		t.Fatal("host bad.host accepted")
	}
	// The fragment is valid nats-server configuration.
	opts := &server.Options{}
	if err := opts.ProcessConfigFile(filepath.Join(dir, streams.AuthConfigFile)); err != nil {
		t.Fatalf("nats-server rejects auth.conf: %v", err)
	}
	if len(opts.Nkeys) != 5 {
		t.Fatalf("auth.conf has %d nkey users, want 5", len(opts.Nkeys))
	}
}

func TestAuthAgentSpeaksOnlyForItsHost(t *testing.T) {
	e := startAuthServer(t)
	a := e.connect("agent-hostA")
	ctx := ctxT(t)

	// Its own status goes through.
	sink, err := streams.NewStatusSink(a.js, "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Publish(ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
		t.Fatalf("agent A publishing its own status: %v", err)
	}
	// Another host's status and the desired state are refused.
	e.refusedPublish(a, "ns.status.hostB.port."+portID)
	e.refusedPublish(a, "ns.status.hostB.agent")
	e.refusedPublish(a, "ns.desired.network."+netID)
	e.refusedPublish(a, "ns.desired.host.hostA.port."+portID)

	// It reads what DESIGN.md gives host A, one ordered consumer per filter...
	pub := streams.NewPublisher(e.connect("publisher").js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), ""), 0); err != nil {
		t.Fatal(err)
	}
	portB := testPort("fa:16:3e:00:00:0b")
	portB.Host = "hostB"
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, portB, ""), 0); err != nil {
		t.Fatal(err)
	}
	filters, _ := streams.HostFilters("hostA")
	for _, f := range filters {
		if _, err := streams.LoadLast(ctx, a.js, streams.DesiredStream, f); err != nil {
			t.Fatalf("agent A reading %s: %v", f, err)
		}
	}
	if _, err := streams.LoadLast(ctx, a.js, streams.StatusStream, streams.StatusFilter("", streams.KindPort)); err != nil {
		t.Fatalf("agent A reading port status (l2population): %v", err)
	}
	if _, err := streams.LoadStatus(ctx, a.js, "hostA", ""); err != nil {
		t.Fatalf("agent A reading its own status: %v", err)
	}
	if _, err := streams.LoadLast(ctx, a.js, streams.StatusStream, streams.AgentFilter); err != nil {
		t.Fatalf("agent A reading heartbeats (tunnel peers): %v", err)
	}
	// The tap id directory of the openvswitch mechanism, once an administrator made it.
	admin := e.connect("admin")
	if _, err := admin.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.TaaSBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	kv, err := a.js.KeyValue(ctx, streams.TaaSBucket)
	if err != nil {
		t.Fatalf("agent A opening the tap id bucket: %v", err)
	}
	if _, err := kv.Create(ctx, "tap.1", []byte("hostA")); err != nil {
		t.Fatalf("agent A allocating a tap id: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("agent A watching the tap id bucket: %v", err)
	}
	if e := <-w.Updates(); e == nil || e.Key() != "tap.1" {
		t.Fatalf("watch delivered %v, want tap.1", e)
	}
	_ = w.Stop()
	// ...but not host B's desired state, nor everything through one multi-filter
	// consumer (whose filters the create subject does not show).
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := streams.LoadLast(short, a.js, streams.DesiredStream, "ns.desired.host.hostB.>"); err == nil {
		t.Fatal("agent A read host B's desired state")
	}
	a.violation(t, "$JS.API.CONSUMER.CREATE.NETSOURCE_DESIRED.*.ns.desired.host.hostB.>")
	short2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if _, err := streams.LoadLast(short2, a.js, streams.DesiredStream, filters...); err == nil {
		t.Fatal("agent A created a consumer with several filters")
	}
	a.violation(t, "$JS.API.CONSUMER.CREATE.NETSOURCE_DESIRED.*")
	// Nor another client's replies: its inbox is its own.
	b := e.connect("agent-hostB")
	for _, subject := range []string{streams.InboxPrefix(e.ids["agent-hostB"].PublicKey) + ".>", "_INBOX.>", "ns.desired.>"} {
		if _, err := a.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		_ = a.nc.Flush()
		a.violation(t, subject)
	}
	_ = b
}

func TestAuthDashboardPublishesNothing(t *testing.T) {
	e := startAuthServer(t)
	d := e.connect("dashboard")
	for _, subject := range []string{"ns.status.hostA.port." + portID, "ns.status.hostA.agent", "ns.desired.network." + netID,
		"ns.desired.host.hostA.port." + portID} {
		e.refusedPublish(d, subject)
	}
	// A plain core publish anywhere is refused too.
	if err := d.nc.Publish("anything", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = d.nc.Flush()
	d.violation(t, "anything")
	// It reads the status stream.
	if _, err := streams.LoadStatus(ctxT(t), d.js, "", ""); err != nil {
		t.Fatalf("dashboard reading status: %v", err)
	}
}

// TestAuthDashboardCannotReadDesired: the dashboard role is read-only on status; every
// JetStream API request about the desired stream is refused, and WithRefusal ends a read
// as soon as the server says so instead of after the request's timeout.
func TestAuthDashboardCannotReadDesired(t *testing.T) {
	e := startAuthServer(t)
	ctx := ctxT(t)
	pub := streams.NewPublisher(e.connect("publisher").js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), ""), 0); err != nil {
		t.Fatal(err)
	}
	d := e.connect("dashboard")
	// The first refusal on a fresh connection, seen through WithRefusal.
	began := time.Now()
	readCtx, stop := streams.WithRefusal(ctx, d.nc, streams.DesiredStream)
	defer stop()
	if _, err := streams.LoadLast(readCtx, d.js, streams.DesiredStream, "ns.desired.>"); err == nil {
		t.Fatal("dashboard read the desired state")
	}
	if cause := context.Cause(readCtx); !errors.Is(cause, streams.ErrRefused) {
		t.Fatalf("read ended by %v, want ErrRefused", cause)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("refusal noticed after %s", took)
	}
	t.Logf("refusal noticed after %s", time.Since(began).Round(time.Millisecond))
	d.violation(t, "$JS.API.CONSUMER.CREATE.NETSOURCE_DESIRED.*.ns.desired.>")

	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, time.Second)
		t.Cleanup(cancel)
		return c
	}
	if _, err := d.js.Stream(short(), streams.DesiredStream); err == nil {
		t.Fatal("dashboard got the desired stream's info")
	}
	d.violation(t, "$JS.API.STREAM.INFO.NETSOURCE_DESIRED")
	subject := "ns.desired.network." + netID
	for _, api := range []string{"$JS.API.DIRECT.GET.NETSOURCE_DESIRED." + subject, "$JS.API.STREAM.MSG.GET.NETSOURCE_DESIRED"} {
		body := []byte(`{"last_by_subj":"` + subject + `"}`)
		if strings.HasPrefix(api, "$JS.API.DIRECT") {
			body = nil
		}
		if _, err := d.nc.Request(api, body, time.Second); err == nil {
			t.Fatalf("dashboard got an answer from %s", api)
		}
		d.violation(t, api)
	}
	if !streams.IsRefused(d.nc.LastError(), streams.DesiredStream) {
		t.Fatalf("last error %v is not a refusal about %s", d.nc.LastError(), streams.DesiredStream)
	}
	// Reading status still works on the same connection.
	if _, err := streams.LoadStatus(ctx, d.js, "", ""); err != nil {
		t.Fatalf("dashboard reading status: %v", err)
	}
	// The publisher's and the admin's reads are not refused.
	if _, err := streams.LoadLast(ctx, e.connect("publisher").js, streams.DesiredStream, "ns.desired.>"); err != nil {
		t.Fatalf("publisher reading desired state: %v", err)
	}
}

func TestIsRefused(t *testing.T) {
	violation := func(subject string) error {
		return fmt.Errorf("%w: Permissions Violation for Publish to %q", nats.ErrPermissionViolation, subject)
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{violation("$JS.API.CONSUMER.CREATE.NETSOURCE_DESIRED.abc.ns.desired.>"), true},
		{violation("$JS.API.STREAM.INFO.NETSOURCE_DESIRED"), true},
		{violation("$JS.API.STREAM.INFO.NETSOURCE_STATUS"), false},
		{violation("ns.desired.network.NETSOURCE_DESIRED"), false}, // not an API request
		{fmt.Errorf("%w: Permissions Violation for Subscription to %q", nats.ErrPermissionViolation, "_INBOX.>"), false},
		{errors.New(`Permissions Violation for Publish to "$JS.API.STREAM.INFO.NETSOURCE_DESIRED"`), false},
		{nil, false},
	} {
		if got := streams.IsRefused(c.err, streams.DesiredStream); got != c.want {
			t.Errorf("IsRefused(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestAuthPublisherCannotPublishStatus(t *testing.T) {
	e := startAuthServer(t)
	p := e.connect("publisher")
	ctx := ctxT(t)
	pub := streams.NewPublisher(p.js, "test")
	ack, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, testNetwork(), ""), 0)
	if err != nil {
		t.Fatalf("publisher appending desired state: %v", err)
	}
	// The lost-ack path reads the last message from the leader: allowed too.
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, testNetwork(), ""), 0); !errors.Is(err, streams.ErrConflict) {
		t.Fatalf("stale write: %v, want conflict", err)
	}
	if _, err := streams.LoadState(ctx, p.js); err != nil {
		t.Fatalf("publisher reading desired state: %v", err)
	}
	if _, err := streams.LoadStatus(ctx, p.js, "", ""); err != nil {
		t.Fatalf("publisher reading status: %v", err)
	}
	e.refusedPublish(p, "ns.status.hostA.port."+portID)
	e.refusedPublish(p, "ns.status.hostA.agent")
	_ = ack
}

func TestAuthClientWithoutCredentialsCannotConnect(t *testing.T) {
	e := startAuthServer(t)
	if nc, err := nats.Connect(e.ns.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect without credentials: %v, want authorization violation", err)
	} else {
		t.Logf("refused: %v", err)
	}
	// A well-formed key the server does not know is refused too.
	stranger, err := streams.InitAuth(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := streams.ClientSecurity{Creds: stranger[0].File}.Options()
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(e.ns.ClientURL(), append(opts, nats.MaxReconnects(0))...); err == nil {
		nc.Close()
		t.Fatal("connected with an unknown key")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect with an unknown key: %v, want authorization violation", err)
	}
	// The admin may set up streams.
	admin := e.connect("admin")
	if err := streams.EnsureStreams(ctxT(t), admin.js, streams.Config{}); err != nil {
		t.Fatalf("admin: %v", err)
	}
}
