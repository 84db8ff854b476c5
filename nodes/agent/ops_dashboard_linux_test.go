package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/netsource/netsource/ops/demo"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// screenshotEnv names the file the dashboard test writes its screenshot to; the
// `screenshot` task sets it to docs/dashboard.png.
const screenshotEnv = "NETSOURCE_DASHBOARD_PNG"

// TestPrivilegedDashboardInBrowser drives the dashboard in headless Chromium against two
// real agents (300 ms heartbeats) converging the demo's sample topology plus one port that
// cannot converge: the page lists hosts and objects with the error first, an admin-down
// port turns DOWN without a reload, and a killed agent is shown down after 3 missed
// intervals, not before.
func TestPrivilegedDashboardInBrowser(t *testing.T) {
	ctx := browser(t) // skips without chromium, before any namespace is made
	prefix, hostA, hostB := twoHosts(t)
	removeMarkersAtEnd(t, prefix)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	const interval = 300 * time.Millisecond
	startAgentProc(t, url, "hostA", hostA, "--local-ip", "198.18.0.1", "--l2-population", "--report-interval", interval.String())
	agentB := startAgentProc(t, url, "hostB", hostB, "--local-ip", "198.18.0.2", "--l2-population", "--report-interval", interval.String())
	_, js := srv.Connect()
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	sample := demo.SampleTopology(prefix)
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Apply(wctx, sample.Topology); err != nil {
		t.Fatal(err)
	}
	lost := &nsv1.Port{Id: "d0000000-0000-4000-8000-000000000001", Name: "orphan", NetworkId: "d1111111-0000-4000-8000-000000000001",
		Host: "hostA", MacAddress: "fa:16:3e:00:20:01", Binding: &nsv1.Binding{Type: "tap"}}
	if _, err := pub.Append(wctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, lost, "test"), 0); err != nil {
		t.Fatal(err)
	}
	web2 := sample.VMs[1]
	for _, vm := range sample.VMs {
		if _, err := streams.Wait(wctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: vm.PortID, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}

	dash := startDashboardServer(t, js)
	if err := chromedp.Do(ctx, chromedp.Navigate(dash), chromedp.WaitVisible(`#hosts .host[data-host="hostB"]`)); err != nil {
		t.Fatal(err)
	}
	hostState := func(h string) string {
		return fmt.Sprintf(`document.querySelector('#hosts .host[data-host="%s"]')?.dataset.state ?? ''`, h)
	}
	rowPhase := func(id string) string {
		return fmt.Sprintf(`document.querySelector('#objects tr[data-kind="port"][data-id="%s"]')?.dataset.phase ?? ''`, id)
	}
	waitPage(t, ctx, 5*time.Second, "hostA up", hostState("hostA"), "up")
	waitPage(t, ctx, 5*time.Second, "hostB up", hostState("hostB"), "up")
	for _, vm := range sample.VMs {
		waitPage(t, ctx, 5*time.Second, vm.Name+" ACTIVE", rowPhase(vm.PortID), "ACTIVE")
	}
	// Every object the agents reported is listed: at least 2 network statuses, 6 ports, the
	// load balancer, the tap service and the tap flow.
	rows := pageValue[float64](t, ctx, `document.querySelectorAll('#objects tbody tr').length`)
	if rows < 11 {
		t.Fatalf("objects table has %v rows, want at least 11", rows)
	}
	// The ERROR object is listed at the top with its reason, and first in the objects table.
	waitPage(t, ctx, 5*time.Second, "orphan port in the errors section",
		fmt.Sprintf(`document.querySelector('#errors tr[data-id="%s"] td.reason')?.textContent.includes('is not in the desired state') ? 'yes' : 'no'`, lost.Id), "yes")
	if first := pageValue[string](t, ctx, `document.querySelector('#objects tbody tr').dataset.id`); first != lost.Id {
		t.Fatalf("first object row is %s, want the ERROR port %s", first, lost.Id)
	}
	if n := pageValue[float64](t, ctx, `document.querySelectorAll('#chart circle[data-kind="port"]').length`); n < 5 {
		t.Fatalf("convergence chart has %v port samples, want at least 5", n)
	}

	// Admin down: the row turns DOWN through the event stream, in the same page.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}
	down := false
	for _, p := range sample.Topology.Ports {
		if p.Id == web2.PortID {
			p.AdminStateUp = &down
		}
	}
	published := time.Now()
	if _, err := pub.Apply(wctx, sample.Topology); err != nil {
		t.Fatal(err)
	}
	shown := waitPage(t, ctx, 10*time.Second, "web2 DOWN", rowPhase(web2.PortID), "DOWN")
	if !pageValue[bool](t, ctx, `window.__sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}
	t.Logf("admin_state_up=false published; the page showed web2 DOWN %s later, without a reload", shown.Sub(published).Round(time.Millisecond))

	// Kill hostB's agent: down after 3 missed intervals (900 ms after its last heartbeat,
	// which was at most one interval before the kill), and not earlier.
	killed := time.Now()
	agentB.signal(syscall.SIGKILL)
	downAt := waitPage(t, ctx, 5*time.Second, "hostB down", hostState("hostB"), "down")
	after := downAt.Sub(killed)
	if after < 3*interval-interval-50*time.Millisecond || after > 3*interval+time.Second {
		t.Fatalf("hostB shown down %s after the kill, want within [%s, %s]", after, 2*interval, 3*interval+time.Second)
	}
	if st := pageValue[string](t, ctx, hostState("hostA")); st != "up" {
		t.Fatalf("hostA is %q while only hostB's agent was killed", st)
	}
	if !pageValue[bool](t, ctx, `window.__sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}
	t.Logf("hostB's agent killed; the page showed hostB down %s later (heartbeat every %s, down after %s)",
		after.Round(time.Millisecond), interval, 3*interval)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv(screenshotEnv)
	if path == "" {
		path = filepath.Join(os.TempDir(), "netsource-dashboard.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); set %s to choose the file", path, len(png), screenshotEnv)
}
