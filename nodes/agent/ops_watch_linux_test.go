package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// watchLine is what `netsource watch -o json` prints per status event.
type watchLine struct {
	Host        string `json:"host"`
	Kind        string `json:"kind"`
	ID          string `json:"id"`
	Phase       string `json:"phase"`
	Reason      string `json:"reason"`
	DesiredSeq  string `json:"desired_seq"` // protojson writes uint64 as a string
	Convergence string `json:"convergence"`
}

// TestPrivilegedWatchJSONSeesBuildThenActive runs `netsource watch -o json` as its own
// process against a real agent in a namespace and checks that a new port shows up as
// BUILD, then ACTIVE, for the version that was published.
func TestPrivilegedWatchJSONSeesBuildThenActive(t *testing.T) {
	prefix, hostNS := oneHost(t)
	removeMarkersAtEnd(t, prefix)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startAgentProc(t, url, "hostA", hostNS)
	ports := manyPorts(prefix, "hostA", 2)
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports[:1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: ports[0].Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
		t.Fatal(err)
	}

	watch := exec.CommandContext(ctx, netsourceBinary(t), "watch", "-o", "json", "--kind", "port", "--nats", url)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() }) // by PID
	lines := make(chan watchLine)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l watchLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("watch printed a line that is not JSON: %q", sc.Text())
				return
			}
			lines <- l
		}
	}()
	next := func(what string) watchLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended before %s", what)
			}
			return l
		case <-ctx.Done():
			t.Fatalf("no line for %s", what)
		}
		return watchLine{}
	}
	// The current state first: the converged port. Watch is following from here on.
	if l := next("the current state"); l.ID != ports[0].Id || l.Phase != "ACTIVE" {
		t.Fatalf("first line %+v, want %s ACTIVE", l, ports[0].Id)
	}

	plan, err := pub.Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	for _, c := range plan {
		if c.Address.ID == ports[1].Id {
			seq = c.Seq
		}
	}
	published := time.Now()
	var phases []string
	var active watchLine
	for active.Phase != "ACTIVE" {
		l := next("the new port's ACTIVE")
		if l.ID != ports[1].Id {
			continue
		}
		if l.Kind != "port" || l.Host != "hostA" || l.DesiredSeq != itoa(seq) {
			t.Fatalf("line %+v, want port on hostA at desired seq %d", l, seq)
		}
		phases = append(phases, l.Phase)
		active = l
	}
	if strings.Join(phases, " → ") != "BUILD → ACTIVE" {
		t.Fatalf("watch -o json showed %s for the new port, want BUILD → ACTIVE", strings.Join(phases, " → "))
	}
	if active.Convergence == "" || !strings.Contains(active.Reason, "plugged into") {
		t.Fatalf("ACTIVE line lacks convergence or reason: %+v", active)
	}
	t.Logf("watch -o json: port %s BUILD → ACTIVE at desired seq %d, printed %s after publishing (agent convergence %s)",
		ports[1].Id, seq, time.Since(published).Round(time.Millisecond), active.Convergence)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
