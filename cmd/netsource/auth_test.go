package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/netsource/netsource/ops"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// startCommand runs the netsource command with args in the background until ctx ends and
// returns its result channel. runCLI swaps os.Stdout, which cobra reads when a command
// starts, so the start is done under stdoutMu, up to the command's pre-run hook.
func startCommand(ctx context.Context, args ...string) <-chan error {
	root := newRootCmd()
	root.SetArgs(args)
	started := make(chan struct{})
	pre := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, a []string) error {
		close(started)
		return pre(cmd, a)
	}
	done := make(chan error, 1)
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case <-started:
	case err := <-done: // failed before the hook (flags)
		done <- err
	}
	return done
}

// runServerArgs runs `netsource server ARGS...` until the test ends.
func runServerArgs(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := startCommand(ctx, append([]string{"server", "--log-level", "disabled"}, args...)...)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server %v: %v", args, err)
		}
	})
}

// authInitAndServe runs `netsource auth init` for hostA and hostB and `netsource server
// --auth` with its configuration until the test ends; it returns the server's URL and the
// credentials file of an identity name (admin, publisher, dashboard, agent-hostA...).
func authInitAndServe(t *testing.T) (url string, creds func(name string) string) {
	t.Helper()
	dir := t.TempDir()
	out, err := runCLI(t, "nats://unused", "auth", "init", "--out", dir, "--hosts", "hostA,hostB", "-o", "json")
	if err != nil {
		t.Fatalf("auth init: %v\n%s", err, out)
	}
	var res struct {
		Config     string         `json:"config"`
		Identities []identityView `json:"identities"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Identities) != 5 {
		t.Fatalf("auth init output: %v\n%s", err, out)
	}
	creds = func(name string) string { return filepath.Join(dir, name+".nk") }
	listen := freePort(t)
	url = "nats://" + listen
	runServerArgs(t, "--store", t.TempDir(), "--listen", listen, "--auth", res.Config)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := runCLI(t, url, "--creds", creds("publisher"), "get", "networks"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server with --auth not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return url, creds
}

func TestAuthInitServerAndCreds(t *testing.T) {
	url, creds := authInitAndServe(t)
	if out, err := runCLI(t, url, "--creds", creds("publisher"), "apply", "-f", "../../examples/topology.yaml"); err != nil {
		t.Fatalf("apply as publisher: %v\n%s", err, out)
	}
	if _, err := runCLI(t, url, "get", "networks"); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("get without --creds: %v, want an authorization violation", err)
	}
	if out, err := runCLI(t, url, "--creds", creds("dashboard"), "status"); err != nil {
		t.Fatalf("status as dashboard: %v\n%s", err, out)
	}
}

// TestDashboardRoleWatchesByID: the dashboard role is read-only on status. `watch` and
// `dashboard` with its credentials show every status by object id, without the names of the
// desired stream they may not read, and say so; `get` fails at once with a clear error.
func TestDashboardRoleWatchesByID(t *testing.T) {
	url, creds := authInitAndServe(t)
	if out, err := runCLI(t, url, "--creds", creds("publisher"), "apply", "-f", "../../examples/topology.yaml"); err != nil {
		t.Fatalf("apply as publisher: %v\n%s", err, out)
	}
	sec, err := streams.ClientSecurity{Creds: creds("agent-hostA")}.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, sec...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sink, err := streams.NewStatusSink(js, "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Heartbeat(context.Background(), &nsv1.AgentHeartbeat{ReportInterval: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{t: t, sink: sink}
	agent.status("port", port0, nsv1.Phase_PHASE_ACTIVE, 5) // port vm1 of examples/topology.yaml

	// The publisher reads both streams: the name is there.
	out, err := runCLI(t, url, "--creds", creds("publisher"), "watch", "--once")
	if err != nil || !strings.Contains(out, "vm1") || strings.Contains(out, ops.NamesRefused) {
		t.Fatalf("watch --once as publisher: %v\n%s", err, out)
	}
	began := time.Now()
	out, err = runCLI(t, url, "--creds", creds("dashboard"), "watch", "--once")
	if err != nil {
		t.Fatalf("watch --once as dashboard: %v\n%s", err, out)
	}
	title, _, _ := strings.Cut(out, "\n")
	if !strings.Contains(title, ops.NamesRefused) || !strings.Contains(out, port0+"  hostA  ACTIVE") || strings.Contains(out, "vm1") {
		t.Fatalf("watch --once as dashboard:\n%s", out)
	}
	t.Logf("watch --once as dashboard took %s", time.Since(began).Round(time.Millisecond))

	began = time.Now()
	_, err = runCLI(t, url, "--creds", creds("dashboard"), "get", "networks")
	if err == nil || !errors.Is(err, streams.ErrRefused) {
		t.Fatalf("get as dashboard: %v, want refused", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("get as dashboard failed after %s, not at once", took)
	}

	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, errc := startCLI(t, ctx, url, "--creds", creds("dashboard"), "dashboard", "--listen", addr)
	state := dashboardState(t, addr, func(v ops.View) bool { return v.Ready && len(v.Objects) == 1 })
	if o := state.Objects[0]; o.ID != port0 || o.Name != "" || o.Phase != "ACTIVE" || state.Notice != ops.NamesRefused {
		t.Fatalf("dashboard state %+v", state)
	}
	agent.status("port", port0, nsv1.Phase_PHASE_DOWN, 6)
	dashboardState(t, addr, func(v ops.View) bool { return len(v.Objects) == 1 && v.Objects[0].Phase == "DOWN" })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("dashboard ended with %v", err)
	}
}

// clusterPorts returns three consecutive free ports below the ephemeral range.
func clusterPorts(t *testing.T) []int {
	t.Helper()
	for range 100 {
		base := 22000 + rand.IntN(600)*3
		ok := true
		for i := range 3 {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return []int{base, base + 1, base + 2}
		}
	}
	t.Fatal("no free route ports")
	return nil
}

func TestServerClusterOfThreeMakesR3Streams(t *testing.T) {
	ports := clusterPorts(t)
	var routes, urls []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i, p := range ports {
		listen := freePort(t)
		urls = append(urls, "nats://"+listen)
		runServerArgs(t, "--store", t.TempDir(), "--listen", listen, "--name", fmt.Sprintf("n%d", i),
			"--cluster", "nstest", "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", p), "--routes", strings.Join(routes, ","))
	}
	// A client with the whole list reaches the cluster through whichever server answers.
	nc, err := nats.Connect(strings.Join(urls, ","), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := js.Stream(context.Background(), "NETSOURCE_DESIRED")
		if err == nil {
			info, err := s.Info(context.Background())
			if err == nil && info.Config.Replicas == 3 && info.Cluster != nil && len(info.Cluster.Replicas) == 2 {
				t.Logf("NETSOURCE_DESIRED: R%d, leader %s", info.Config.Replicas, info.Cluster.Leader)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no R3 stream from three `netsource server --cluster`: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := runCLI(t, strings.Join(urls, ","), "apply", "-f", "../../examples/topology.yaml"); err != nil {
		t.Fatalf("apply to the cluster: %v\n%s", err, out)
	}
}
