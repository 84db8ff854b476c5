package ops

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// authServer is a real server with the configuration `netsource auth init` writes for
// hostA, holding port web1 in the desired state and its status; it returns a JetStream
// context per identity name (admin, publisher, dashboard, agent-hostA).
func authServer(t *testing.T, ctx context.Context) func(name string) jetstream.JetStream {
	t.Helper()
	dir := t.TempDir()
	ids, err := streams.InitAuth(filepath.Join(dir, "creds"), []string{"hostA"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: filepath.Join(dir, "store"), Listen: "127.0.0.1:-1",
		Log: zerolog.Nop(), MaxStore: 1 << 30, MaxMemory: 256 << 20, ConfigFile: filepath.Join(dir, "creds", streams.AuthConfigFile)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streams.ShutdownServer(ns) })
	setup, err := streams.ConnectInProcess(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	setupJS, _ := jetstream.New(setup)
	if err := streams.EnsureStreams(ctx, setupJS, streams.Config{}); err != nil {
		t.Fatal(err)
	}
	as := func(name string) jetstream.JetStream {
		t.Helper()
		for _, id := range ids {
			if id.Name() != name {
				continue
			}
			opts, err := streams.ClientSecurity{Creds: id.File}.Options()
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(ns.ClientURL(), opts...)
			if err != nil {
				t.Fatalf("connect as %s: %v", name, err)
			}
			t.Cleanup(nc.Close)
			js, _ := jetstream.New(nc)
			return js
		}
		t.Fatalf("no identity %s", name)
		return nil
	}
	pub := streams.NewPublisher(as("publisher"), "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED,
		&nsv1.Port{Id: portID, Name: "web1", Host: "hostA", NetworkId: "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01",
			MacAddress: "fa:16:3e:00:00:01"}, "test"), 0); err != nil {
		t.Fatal(err)
	}
	return as
}

// TestDashboardRoleShowsStatusByID: with the dashboard role's credentials, which may not
// read the desired stream, the dashboard comes up at once, shows every status event by id
// (no names), says why on every view and tells its owner once.
func TestDashboardRoleShowsStatusByID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	as := authServer(t, ctx)
	sink, err := streams.NewStatusSink(as("agent-hostA"), "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Heartbeat(ctx, &nsv1.AgentHeartbeat{ReportInterval: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Publish(ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE, DesiredSeq: 1}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var notices []string
	fleet := NewFleet(Options{Notice: func(n string) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n)
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	began := time.Now()
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ServeFleet(serveCtx, as("dashboard"), ln, Scope{}, fleet) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("dashboard: %v", err)
		}
	})
	select {
	case <-fleet.Ready():
	case err := <-done:
		t.Fatalf("dashboard ended: %v", err)
	case <-ctx.Done():
		t.Fatal("the dashboard never became ready")
	}
	t.Logf("ready after %s", time.Since(began).Round(time.Millisecond))
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("ready after %s: the refusal was not noticed before the request timed out", took)
	}

	resp, err := http.Get(base + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	var v View
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !v.Ready || v.Notice != NamesRefused || len(v.Hosts) != 1 || len(v.Objects) != 1 {
		t.Fatalf("state: %+v", v)
	}
	if o := v.Objects[0]; o.ID != portID || o.Name != "" || o.Phase != "ACTIVE" {
		t.Fatalf("object %+v, want %s ACTIVE without a name", o, portID)
	}
	var table strings.Builder
	if err := RenderTable(&table, v, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	if title, _, _ := strings.Cut(table.String(), "\n"); !strings.Contains(title, NamesRefused) {
		t.Errorf("table title %q lacks the notice", title)
	}

	// Live events keep coming, by id.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if snap := readEvent(t, r); !snap.Full || snap.Notice != NamesRefused {
		t.Fatalf("snapshot %+v", snap)
	}
	if _, err := sink.Publish(ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_DOWN, DesiredSeq: 2}); err != nil {
		t.Fatal(err)
	}
	inc := readEvent(t, r)
	if inc.Full || len(inc.Objects) != 1 || inc.Objects[0].ID != portID || inc.Objects[0].Phase != "DOWN" || inc.Notice != NamesRefused {
		t.Fatalf("increment %+v", inc)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notices) != 1 || notices[0] != NamesRefused {
		t.Fatalf("notices %q, want one", notices)
	}
}

// TestFollowWithDesiredAccessNamesObjects: the same server with the publisher's
// credentials (which read both streams) names the object and shows no notice.
func TestFollowWithDesiredAccessNamesObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	as := authServer(t, ctx)
	sink, err := streams.NewStatusSink(as("agent-hostA"), "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Publish(ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE, DesiredSeq: 1}); err != nil {
		t.Fatal(err)
	}
	fleet := NewFleet(Options{})
	followCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Follow(followCtx, as("publisher"), fleet, Scope{}) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("follow: %v", err)
		}
	}()
	select {
	case <-fleet.Ready():
	case <-ctx.Done():
		t.Fatal("never ready")
	}
	v := fleet.Snapshot()
	if v.Notice != "" || len(v.Objects) != 1 || v.Objects[0].Name != "web1" {
		t.Fatalf("snapshot %+v", v)
	}
}
