// Package metrics is the agent's Prometheus instrumentation: convergence durations, status
// events and errors by kind, objects by kind and phase, actors by kind, desired events
// applied and the desired-stream lag, and NATS reconnects. Each agent has its own registry
// and serves it on its own address (`netsource agent --metrics ADDR`), never on the default
// mux, so several agents in one process (the demo) do not mix their numbers.
//
// The agent feeds it at three points, without the actors knowing: every StatusEvent passes
// through WrapReporter on its way to the status stream, every heartbeat through
// ObserveHeartbeat, every desired message through DesiredEvent; WatchConn counts
// reconnects of the NATS connection.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// ConvergenceBuckets are the convergence histogram's upper bounds in seconds: from a
// netlink write that takes a millisecond to a haproxy start that takes tens of seconds.
var ConvergenceBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Agent holds one agent's metrics. Its methods are safe for concurrent use.
type Agent struct {
	reg *prometheus.Registry

	convergence    *prometheus.HistogramVec
	statusEvents   *prometheus.CounterVec
	errors         *prometheus.CounterVec
	objects        *prometheus.GaugeVec
	actors         *prometheus.GaugeVec
	desiredEvents  prometheus.Counter
	appliedSeq     prometheus.Gauge
	lag            prometheus.Gauge
	reconnects     prometheus.Counter
	heartbeats     prometheus.Counter
	lastHeartbeat  prometheus.Gauge
	kernelMutation prometheus.Gauge

	mu    sync.Mutex
	phase map[string]phaseOf // kind/id -> the object's last reported phase
}

type phaseOf struct{ kind, phase string }

// New returns the metrics of the agent on host.
func New(host, version, mechanism string) *Agent {
	a := &Agent{
		reg: prometheus.NewRegistry(),
		convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "netsource_agent_convergence_seconds",
			Help:    "Time from receiving a desired event to reaching the phase it ended in (ACTIVE, DOWN, ERROR, DELETED), by kind and phase.",
			Buckets: ConvergenceBuckets,
		}, []string{"kind", "phase"}),
		statusEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netsource_agent_status_events_total", Help: "Status events reported, by kind and phase.",
		}, []string{"kind", "phase"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netsource_agent_errors_total", Help: "Status events in phase ERROR, by kind.",
		}, []string{"kind"}),
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netsource_agent_objects", Help: "Objects by kind and the phase this agent last reported for them.",
		}, []string{"kind", "phase"}),
		actors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netsource_agent_actors", Help: "Objects the agent's actors hold, by kind, as of the last heartbeat.",
		}, []string{"kind"}),
		desiredEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netsource_agent_desired_events_total", Help: "Desired-state events read from the desired stream and handed to the host supervisor.",
		}),
		appliedSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netsource_agent_applied_seq", Help: "Highest desired stream sequence the agent has applied, as of the last heartbeat.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netsource_agent_desired_lag_events",
			Help: "Desired stream's last sequence minus the applied sequence, as of the last heartbeat (an upper bound: it counts other hosts' events).",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netsource_agent_nats_reconnects_total", Help: "Reconnections of the agent's NATS connection.",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "netsource_agent_heartbeats_total", Help: "Heartbeats sent.",
		}),
		lastHeartbeat: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netsource_agent_last_heartbeat_timestamp_seconds", Help: "Unix time of the last heartbeat sent.",
		}),
		kernelMutation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "netsource_agent_kernel_mutations", Help: "Netlink writes since the agent started, as of the last heartbeat.",
		}),
		phase: map[string]phaseOf{},
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netsource_agent_info", Help: "The agent's host, version and mechanism (always 1).",
		ConstLabels: prometheus.Labels{"host": host, "version": version, "mechanism": mechanism},
	})
	info.Set(1)
	a.reg.MustRegister(a.convergence, a.statusEvents, a.errors, a.objects, a.actors, a.desiredEvents, a.appliedSeq, a.lag,
		a.reconnects, a.heartbeats, a.lastHeartbeat, a.kernelMutation, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a
}

// Registry returns the agent's own registry.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// reporter observes every status event before passing it on.
type reporter struct {
	next actors.Reporter
	m    *Agent
}

func (r reporter) Report(ev *nsv1.StatusEvent) {
	r.m.ObserveStatus(ev) // before passing it on: the next reporter owns ev afterwards
	r.next.Report(ev)
}

// WrapReporter returns a Reporter that observes each status event and passes it to next.
// seed is the status of each object in the status stream at start (key kind/id), so the
// objects gauge is right after a restart that publishes nothing.
func (a *Agent) WrapReporter(next actors.Reporter, seed map[string]*nsv1.StatusEvent) actors.Reporter {
	a.mu.Lock()
	for _, ev := range seed {
		a.setPhaseLocked(ev.GetKind(), ev.GetId(), streams.PhaseName(ev.GetPhase()))
	}
	a.mu.Unlock()
	return reporter{next: next, m: a}
}

// ObserveStatus counts one status event.
func (a *Agent) ObserveStatus(ev *nsv1.StatusEvent) {
	kind, phase := ev.GetKind(), streams.PhaseName(ev.GetPhase())
	a.statusEvents.WithLabelValues(kind, phase).Inc()
	if ev.GetPhase() == nsv1.Phase_PHASE_ERROR {
		a.errors.WithLabelValues(kind).Inc()
	}
	if ev.GetConvergence() != nil {
		a.convergence.WithLabelValues(kind, phase).Observe(ev.GetConvergence().AsDuration().Seconds())
	}
	a.mu.Lock()
	a.setPhaseLocked(kind, ev.GetId(), phase)
	a.mu.Unlock()
}

func (a *Agent) setPhaseLocked(kind, id, phase string) {
	key := kind + "/" + id
	if old, ok := a.phase[key]; ok {
		a.objects.WithLabelValues(old.kind, old.phase).Dec()
	}
	if phase == streams.PhaseName(nsv1.Phase_PHASE_DELETED) {
		delete(a.phase, key)
		return
	}
	a.phase[key] = phaseOf{kind: kind, phase: phase}
	a.objects.WithLabelValues(kind, phase).Inc()
}

// ObserveHeartbeat takes the actor counts, applied sequence and lag of a heartbeat sent.
func (a *Agent) ObserveHeartbeat(hb *nsv1.AgentHeartbeat) {
	a.heartbeats.Inc()
	if hb.GetTime() != nil {
		a.lastHeartbeat.Set(float64(hb.GetTime().AsTime().UnixNano()) / 1e9)
	} else {
		a.lastHeartbeat.Set(float64(time.Now().UnixNano()) / 1e9)
	}
	a.actors.Reset()
	for kind, n := range hb.GetCounts() {
		if kind == "kernel_mutations" {
			a.kernelMutation.Set(float64(n))
			continue
		}
		a.actors.WithLabelValues(kind).Set(float64(n))
	}
	a.appliedSeq.Set(float64(hb.GetAppliedSeq()))
	a.lag.Set(float64(hb.GetLag()))
}

// DesiredEvent counts one desired message handed to the supervisor.
func (a *Agent) DesiredEvent() { a.desiredEvents.Inc() }

// WatchConn counts the reconnects of nc, keeping a reconnect handler set before.
func (a *Agent) WatchConn(nc *nats.Conn) {
	prev := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(c *nats.Conn) {
		a.reconnects.Inc()
		if prev != nil {
			prev(c)
		}
	})
}

// Handler serves the registry in the Prometheus exposition formats.
func (a *Agent) Handler() http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Serve serves /metrics on addr and returns the address it listens on (addr may have port
// 0) and a function that stops the server.
func (a *Agent) Serve(addr string, log zerolog.Logger) (net.Addr, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "netsource agent metrics: /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("metrics server failed")
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return ln.Addr(), stop, nil
}
