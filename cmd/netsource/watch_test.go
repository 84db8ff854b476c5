package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/netsource/netsource/ops"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// dashboardState polls the dashboard at addr until its /api/state satisfies ok (10 s at most).
func dashboardState(t *testing.T, addr string, ok func(ops.View) bool) ops.View {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state ops.View
		resp, err := http.Get("http://" + addr + "/api/state")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&state)
			resp.Body.Close()
		}
		if err == nil && ok(state) {
			return state
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard /api/state: %v %+v", err, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCLI runs the netsource command in-process until ctx ends, and returns what it
// prints, line by line, and its result.
func startCLI(t *testing.T, ctx context.Context, url string, args ...string) (<-chan string, <-chan error) {
	t.Helper()
	stdoutMu.Lock()
	r, w, err := os.Pipe()
	if err != nil {
		stdoutMu.Unlock()
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	root := newRootCmd()
	root.SetArgs(append([]string{"--nats", url, "--log-level", "error"}, args...))
	errc := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		os.Stdout = saved
		w.Close()
		stdoutMu.Unlock()
		errc <- err
	}()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, errc
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output line within 10s")
	}
	return ""
}

type fakeAgent struct {
	t    *testing.T
	sink *streams.StatusSink
}

func (a *fakeAgent) status(kind, id string, phase nsv1.Phase, seq uint64) {
	a.t.Helper()
	if _, err := a.sink.Publish(context.Background(), &nsv1.StatusEvent{Kind: kind, Id: id, Phase: phase, DesiredSeq: seq,
		Reason: strings.ToLower(streams.PhaseName(phase))}); err != nil {
		a.t.Fatal(err)
	}
}

const (
	port0 = "3d4e5f60-0000-4000-8000-000000000001"
	port1 = "3d4e5f60-0000-4000-8000-000000000002"
	net0  = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
)

// statusServer is a JetStream server with a fake agent hostA publishing status.
func statusServer(t *testing.T) (string, *fakeAgent) {
	t.Helper()
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	sink, err := streams.NewStatusSink(js, "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Heartbeat(context.Background(), &nsv1.AgentHeartbeat{ReportInterval: durationpb.New(time.Second),
		Counts: map[string]uint32{"port": 2}}); err != nil {
		t.Fatal(err)
	}
	return srv.NS.ClientURL(), &fakeAgent{t: t, sink: sink}
}

func TestWatchJSONPrintsEveryEvent(t *testing.T) {
	url, agent := statusServer(t)
	agent.status("port", port0, nsv1.Phase_PHASE_ACTIVE, 2)
	agent.status("network", net0, nsv1.Phase_PHASE_ERROR, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines, errc := startCLI(t, ctx, url, "watch", "-o", "json", "--kind", "port")
	phaseOf := func(line string) (id, phase string) {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		return v["id"].(string), v["phase"].(string)
	}
	if id, phase := phaseOf(nextLine(t, lines)); id != port0 || phase != "ACTIVE" {
		t.Fatalf("first line: %s %s, want the current state of %s", id, phase, port0)
	}
	agent.status("network", net0, nsv1.Phase_PHASE_ACTIVE, 1) // another kind: filtered out
	agent.status("port", port1, nsv1.Phase_PHASE_BUILD, 3)
	agent.status("port", port1, nsv1.Phase_PHASE_ACTIVE, 3)
	var got []string
	for range 2 {
		id, phase := phaseOf(nextLine(t, lines))
		got = append(got, id+" "+phase)
	}
	if want := []string{port1 + " BUILD", port1 + " ACTIVE"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("watch -o json printed %v, want %v", got, want)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}

func TestWatchPhaseFilter(t *testing.T) {
	url, agent := statusServer(t)
	agent.status("port", port0, nsv1.Phase_PHASE_ACTIVE, 2)
	agent.status("network", net0, nsv1.Phase_PHASE_ERROR, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines, errc := startCLI(t, ctx, url, "watch", "--phase", "error", "--plain")
	if l := nextLine(t, lines); !strings.Contains(l, net0) || !strings.Contains(l, "ERROR") {
		t.Fatalf("--phase error printed %q", l)
	}
	agent.status("port", port1, nsv1.Phase_PHASE_ERROR, 3)
	if l := nextLine(t, lines); !strings.Contains(l, port1) || !strings.Contains(l, "ERROR") {
		t.Fatalf("--phase error printed %q", l)
	}
	cancel()
	<-errc
}

func TestWatchOnceTable(t *testing.T) {
	url, agent := statusServer(t)
	agent.status("port", port0, nsv1.Phase_PHASE_ACTIVE, 2)
	agent.status("network", net0, nsv1.Phase_PHASE_ERROR, 1)
	out, err := runCLI(t, url, "watch", "--once")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if !strings.Contains(lines[0], "1 hosts") || !strings.Contains(lines[0], "2 objects: 1 ERROR, 1 ACTIVE") {
		t.Fatalf("title line %q", lines[0])
	}
	for _, want := range []string{"HOST   STATE  HEARTBEAT", "hostA  up", "KIND     NAME  ID", "network        " + net0 + "  hostA  ERROR"} {
		if !strings.Contains(out, want) {
			t.Errorf("watch --once lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("watch --once to a pipe has ANSI escapes:\n%q", out)
	}
}

func TestDashboardCommand(t *testing.T) {
	url, agent := statusServer(t)
	agent.status("port", port0, nsv1.Phase_PHASE_DOWN, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, errc := startCLI(t, ctx, url, "dashboard", "--listen", addr)
	state := dashboardState(t, addr, func(v ops.View) bool { return len(v.Hosts) == 1 && len(v.Objects) == 1 })
	if state.Hosts[0].Host != "hostA" || state.Hosts[0].State != "up" || state.Objects[0].Phase != "DOWN" {
		t.Fatalf("state %+v", state)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("dashboard ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dashboard did not stop with its context")
	}
}
