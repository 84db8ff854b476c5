package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/ops/demo"
)

// netnsWithPrefix lists the named namespaces that start with prefix.
func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(run(t, "ip", "netns", "list"), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}

// TestPrivilegedDemoUntilReady runs `netsource demo --until-ready` as CI does: it must
// converge the sample topology, clean up everything it created, and exit 0.
func TestPrivilegedDemoUntilReady(t *testing.T) {
	requireRoot(t)
	prefix := fmt.Sprintf("nsdm%04x", rand.IntN(0xffff))
	lbNetns := "qlbaas-" + demo.SampleTopology(prefix).Topology.GetLoadbalancers()[0].GetId()
	t.Cleanup(func() { // only when the demo failed to clean up after itself
		for _, n := range append(netnsWithPrefix(t, prefix), netnsWithPrefix(t, lbNetns)...) {
			_ = exec.Command("ip", "netns", "del", n).Run()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	started := time.Now()
	cmd := exec.CommandContext(ctx, netsourceBinary(t), "demo", "--until-ready", "--prefix", prefix,
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--report-interval", "500ms")
	out, err := cmd.CombinedOutput()
	took := time.Since(started)
	if err != nil {
		t.Fatalf("demo --until-ready: %v after %s\n%s", err, took.Round(time.Millisecond), out)
	}
	text := string(out)
	for _, want := range []string{"Ready in", "dashboard  http://127.0.0.1:", "web1 on hostA -> web2 on hostB over VXLAN: ok",
		"the agents removed their devices", "Clean."} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	// Once load balancers are built, both backends must answer on the VIP (round robin).
	if !strings.Contains(text, "not checked: the load balancer") && !strings.Contains(text, "hello from web1, hello from web2") &&
		!strings.Contains(text, "hello from web2, hello from web1") {
		t.Errorf("the VIP did not answer from both backends:\n%s", text)
	}
	if left := append(netnsWithPrefix(t, prefix), netnsWithPrefix(t, lbNetns)...); len(left) > 0 {
		t.Fatalf("demo left namespaces %v\n%s", left, text)
	}
	markers, _ := filepath.Glob(filepath.Join(links.DefaultMarkerDir, prefix+"*"))
	if len(markers) > 0 {
		t.Fatalf("demo left namespace markers %v", markers)
	}
	if strings.Contains(text, "kept /tmp/") {
		t.Fatalf("demo kept its work directory:\n%s", text)
	}
	var ready, vip string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "Ready in") {
			ready = line
		}
		if strings.Contains(line, "-> VIP") {
			vip = strings.TrimSpace(line)
		}
	}
	t.Logf("demo --until-ready exited 0 after %s; %s %s", took.Round(time.Millisecond), ready, vip)
}
