package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// TestPrivilegedMetricsCountConvergedPorts scrapes `netsource agent --metrics` after a real
// agent converged 10 ports: the convergence histogram counts exactly those, the gauges
// follow the heartbeat, and a NATS server restart counts as one reconnect.
func TestPrivilegedMetricsCountConvergedPorts(t *testing.T) {
	prefix, hostNS := oneHost(t)
	removeMarkersAtEnd(t, prefix)
	srv := natstest.StartAt(t, t.TempDir(), freePort(t)) // a fixed port, so the agent can reconnect after a restart
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	metricsAddr := freePort(t)
	startAgentProc(t, srv.NS.ClientURL(), "hostA", hostNS, "--metrics", metricsAddr, "--report-interval", "200ms")
	url := "http://" + metricsAddr + "/metrics"
	eventually(t, 20*time.Second, "metrics endpoint up", func() error {
		_, err := httpGet(url)
		return err
	})
	before := scrapeMetrics(t, url)

	const n = 10
	ports := manyPorts(prefix, "hostA", n)
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports}); err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	const count = `netsource_agent_convergence_seconds_count{kind="port",phase="ACTIVE"}`
	var got map[string]float64
	eventually(t, 10*time.Second, "heartbeat after convergence", func() error {
		got = scrapeMetrics(t, url)
		if got[`netsource_agent_actors{kind="port"}`] != n || got["netsource_agent_applied_seq"] < n+1 {
			return fmt.Errorf("actors{port} %v, applied_seq %v", got[`netsource_agent_actors{kind="port"}`], got["netsource_agent_applied_seq"])
		}
		return nil
	})
	if before[count] != 0 || got[count] != n {
		t.Fatalf("convergence histogram counts %v ACTIVE ports (%v before), want %d", got[count], before[count], n)
	}
	if inf := got[`netsource_agent_convergence_seconds_bucket{kind="port",phase="ACTIVE",le="+Inf"}`]; inf != n {
		t.Fatalf("+Inf bucket %v, want %d", inf, n)
	}
	sum := got[`netsource_agent_convergence_seconds_sum{kind="port",phase="ACTIVE"}`]
	if sum <= 0 || sum > n*30 {
		t.Fatalf("convergence sum %vs for %d ports", sum, n)
	}
	for k, want := range map[string]float64{
		`netsource_agent_objects{kind="port",phase="ACTIVE"}`:            n,
		`netsource_agent_objects{kind="network",phase="ACTIVE"}`:         1,
		`netsource_agent_status_events_total{kind="port",phase="BUILD"}`: n,
		`netsource_agent_desired_events_total`:                           n + 1,
		`netsource_agent_desired_lag_events`:                             0,
		`netsource_agent_nats_reconnects_total`:                          0,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if e := got[`netsource_agent_errors_total{kind="port"}`]; e != 0 {
		t.Errorf("port errors %v, want 0", e)
	}
	t.Logf("%d ports converged: histogram count %v, mean convergence %.1f ms", n, got[count], sum/n*1000)

	srv.Restart()
	eventually(t, 20*time.Second, "reconnect counted", func() error {
		if r := scrapeMetrics(t, url)["netsource_agent_nats_reconnects_total"]; r != 1 {
			return fmt.Errorf("reconnects %v", r)
		}
		return nil
	})
}
