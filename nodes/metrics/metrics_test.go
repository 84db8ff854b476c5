package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/metrics/metricstest"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams/natstest"
)

// scrape returns the samples of a text exposition, keyed by name{labels} as written.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	return parseText(t, resp.Body)
}

func parseText(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out, err := metricstest.Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func status(kind, id string, phase nsv1.Phase, conv time.Duration) *nsv1.StatusEvent {
	ev := &nsv1.StatusEvent{Kind: kind, Id: id, Phase: phase}
	if conv > 0 {
		ev.Convergence = durationpb.New(conv)
	}
	return ev
}

func TestAgentMetrics(t *testing.T) {
	m := New("hostA", "dev", "linuxbridge")
	rec := actors.NewRecordingReporter()
	rep := m.WrapReporter(rec, map[string]*nsv1.StatusEvent{"port/p0": {Kind: "port", Id: "p0", Phase: nsv1.Phase_PHASE_ACTIVE}})
	rep.Report(status("port", "p1", nsv1.Phase_PHASE_BUILD, 0))
	rep.Report(status("port", "p1", nsv1.Phase_PHASE_ACTIVE, 30*time.Millisecond))
	rep.Report(status("port", "p2", nsv1.Phase_PHASE_BUILD, 0))
	rep.Report(status("port", "p2", nsv1.Phase_PHASE_ACTIVE, 3*time.Second))
	rep.Report(status("network", "n1", nsv1.Phase_PHASE_ERROR, 2*time.Millisecond))
	rep.Report(status("port", "p0", nsv1.Phase_PHASE_DELETED, time.Millisecond))
	if n := len(rec.Events()); n != 6 {
		t.Fatalf("wrapped reporter passed on %d of 6 events", n)
	}
	m.ObserveHeartbeat(&nsv1.AgentHeartbeat{Counts: map[string]uint32{"port": 2, "network": 1, "kernel_mutations": 12},
		AppliedSeq: 40, Lag: 2, Time: timestamppb.Now()})
	for range 3 {
		m.DesiredEvent()
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	got := scrape(t, srv.URL)
	want := map[string]float64{
		`netsource_agent_convergence_seconds_count{kind="port",phase="ACTIVE"}`:            2,
		`netsource_agent_convergence_seconds_bucket{kind="port",phase="ACTIVE",le="0.05"}`: 1,
		`netsource_agent_convergence_seconds_bucket{kind="port",phase="ACTIVE",le="5"}`:    2,
		`netsource_agent_convergence_seconds_count{kind="network",phase="ERROR"}`:          1,
		`netsource_agent_status_events_total{kind="port",phase="BUILD"}`:                   2,
		`netsource_agent_errors_total{kind="network"}`:                                     1,
		`netsource_agent_objects{kind="port",phase="ACTIVE"}`:                              2,
		`netsource_agent_objects{kind="network",phase="ERROR"}`:                            1,
		`netsource_agent_actors{kind="port"}`:                                              2,
		`netsource_agent_kernel_mutations`:                                                 12,
		`netsource_agent_applied_seq`:                                                      40,
		`netsource_agent_desired_lag_events`:                                               2,
		`netsource_agent_desired_events_total`:                                             3,
		`netsource_agent_heartbeats_total`:                                                 1,
		`netsource_agent_info{host="hostA",mechanism="linuxbridge",version="dev"}`:         1,
		`netsource_agent_nats_reconnects_total`:                                            0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %t), want %v", k, g, ok, v)
		}
	}
	if _, ok := got[`netsource_agent_actors{kind="kernel_mutations"}`]; ok {
		t.Error("kernel_mutations counted as an actor kind")
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

func TestReconnectsAndServe(t *testing.T) {
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	nc, err := nats.Connect(srv.NS.ClientURL(), nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	prev := make(chan struct{}, 1)
	nc.SetReconnectHandler(func(*nats.Conn) { prev <- struct{}{} })
	m := New("hostA", "dev", "linuxbridge")
	m.WatchConn(nc)
	addr, stop, err := m.Serve("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.NS.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-prev:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	got := scrape(t, "http://"+addr.String()+"/metrics")
	if got["netsource_agent_nats_reconnects_total"] != 1 {
		t.Fatalf("reconnects = %v, want 1", got["netsource_agent_nats_reconnects_total"])
	}
	stop()
	if _, err := http.Get("http://" + addr.String() + "/metrics"); err == nil {
		t.Fatal("metrics server still serving after stop")
	}
}
