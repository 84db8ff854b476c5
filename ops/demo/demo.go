// Package demo is `netsource demo`: a whole netsource installation in a sandbox on one
// machine. It starts an embedded JetStream server, two agents (hostA and hostB, in their own
// network namespaces joined by an underlay veth), the dashboard, and applies a sample
// topology: a VXLAN network, VM ports on both hosts, a security group, a load balancer with
// two backends and a tap. It shows the objects converging, says where everything is, and
// on Ctrl-C (or at once with UntilReady) deletes the topology, stops what it started and
// removes every namespace it made.
//
// It waits for every object the agents build; kinds an agent does not build yet report
// PENDING with NotBuiltReason, and the demo says so instead of waiting for them (see
// Tracker). Root is needed: it creates network namespaces.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/ops"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Options configures Run; zero values take the defaults.
type Options struct {
	// Prefix of every namespace the demo creates (default "nsdemo").
	Prefix string
	// Dashboard is the dashboard's address (default 127.0.0.1:8080). When it is taken the
	// demo picks a free port; port 0 always does.
	Dashboard string
	// NATS is the embedded JetStream server's client address (default 127.0.0.1:4222), taken
	// or not as Dashboard.
	NATS string
	// Metrics is hostA's metrics address, hostB's is the next port (default
	// 127.0.0.1:9101); "off" serves none.
	Metrics string
	// ReportInterval of the agents' heartbeats (default 2s).
	ReportInterval time.Duration
	// Timeout bounds the wait for the topology to converge (default 2m).
	Timeout time.Duration
	// UntilReady cleans up and returns as soon as the topology has converged.
	UntilReady bool
	// Keep leaves the work directory (store and logs) in place.
	Keep bool
	// LogLevel of the agents' and the server's log file (default info).
	LogLevel string
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "nsdemo"
	}
	if o.Dashboard == "" {
		o.Dashboard = "127.0.0.1:8080"
	}
	if o.NATS == "" {
		o.NATS = "127.0.0.1:4222"
	}
	if o.Metrics == "" {
		o.Metrics = "127.0.0.1:9101"
	}
	if o.ReportInterval <= 0 {
		o.ReportInterval = 2 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	return o
}

// ErrNotReady is returned when the topology did not converge within the timeout.
var ErrNotReady = errors.New("the sample topology did not converge")

// run is one demo's state, for the cleanup.
type run struct {
	o       Options
	out     io.Writer
	start   time.Time
	sample  Sample
	box     sandbox
	dir     string
	logFile *os.File
	log     zerolog.Logger

	server    *server.Server
	nc        *nats.Conn
	js        jetstream.JetStream
	natsURL   string
	dashURL   string
	metrics   map[string]string // host -> metrics URL
	stopDash  context.CancelFunc
	dashDone  chan struct{}
	stopAgent context.CancelFunc
	agents    sync.WaitGroup
	agentErrs chan error
	backends  map[string]*backend
	published bool
	tracker   *Tracker
}

// Run runs the demo until ctx ends (Ctrl-C), or with UntilReady until the topology has
// converged, and always cleans up before it returns. Progress goes to out.
func Run(ctx context.Context, o Options, out io.Writer) (err error) {
	o = o.withDefaults()
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (it creates network namespaces, veth pairs and bridges); run it with sudo")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("demo: needs iproute2's ip command (`go tool task deps` installs it)")
	}
	r := &run{o: o, out: out, start: time.Now(), sample: SampleTopology(o.Prefix), box: sandbox{prefix: o.Prefix},
		metrics: map[string]string{}, backends: map[string]*backend{}, agentErrs: make(chan error, 2)}
	defer func() {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = nil // Ctrl-C before the topology converged: stopping is what was asked
		}
		if cerr := r.cleanup(err != nil); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := r.setUp(ctx); err != nil {
		return err
	}
	if err := r.waitReady(ctx); err != nil {
		return err
	}
	r.printReady()
	if o.UntilReady {
		return nil
	}
	fmt.Fprintln(out, "Press Ctrl-C to stop the demo and remove everything it created.")
	select {
	case <-ctx.Done():
		fmt.Fprintln(out)
		return nil
	case err := <-r.agentErrs:
		return fmt.Errorf("demo: an agent stopped: %w", err)
	}
}

func (r *run) say(format string, args ...any) {
	fmt.Fprintf(r.out, "%6.1fs  "+format+"\n", append([]any{time.Since(r.start).Seconds()}, args...)...)
}

func (r *run) setUp(ctx context.Context) error {
	if old, err := r.box.namespaces(); err != nil {
		return err
	} else if len(old) > 0 {
		r.say("removing namespaces left by an earlier demo: %v", old)
		if _, err := r.box.remove(); err != nil {
			return fmt.Errorf("demo: leftover namespaces: %w", err)
		}
	}
	var err error
	if r.dir, err = os.MkdirTemp("", "netsource-demo-"); err != nil {
		return err
	}
	if r.logFile, err = os.Create(filepath.Join(r.dir, "netsource.log")); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(r.o.LogLevel)
	if err != nil {
		return fmt.Errorf("demo: log level %q: %w", r.o.LogLevel, err)
	}
	r.log = zerolog.New(r.logFile).Level(lvl).With().Timestamp().Logger()

	if err := r.box.create(); err != nil {
		return fmt.Errorf("demo: sandbox: %w", err)
	}
	r.say("namespaces %s and %s: hostA and hostB, underlay 198.18.0.1/15 <-> 198.18.0.2/15 on eth1",
		r.box.hostNetns(HostA), r.box.hostNetns(HostB))

	natsAddr, err := r.pickAddr("NATS", r.o.NATS)
	if err != nil {
		return err
	}
	r.server, err = streams.StartServer(streams.ServerOptions{StoreDir: filepath.Join(r.dir, "jetstream"), Listen: natsAddr,
		Log: r.log.With().Str("component", "nats-server").Logger()})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	r.natsURL = r.server.ClientURL()
	if r.nc, err = nats.Connect(r.natsURL, nats.Name("netsource-demo")); err != nil {
		return fmt.Errorf("demo: connect to %s: %w", r.natsURL, err)
	}
	if r.js, err = jetstream.New(r.nc); err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := streams.EnsureStreams(setupCtx, r.js, streams.Config{}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	r.say("embedded JetStream server on %s (store %s)", r.natsURL, filepath.Join(r.dir, "jetstream"))

	dashAddr, err := r.pickAddr("dashboard", r.o.Dashboard)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", dashAddr)
	if err != nil {
		return fmt.Errorf("demo: dashboard: %w", err)
	}
	r.dashURL = "http://" + ln.Addr().String() + "/"
	dashCtx, stopDash := context.WithCancel(context.Background())
	r.stopDash, r.dashDone = stopDash, make(chan struct{})
	go func() {
		defer close(r.dashDone)
		if err := ops.Serve(dashCtx, r.js, ln, ops.Scope{}); err != nil {
			r.log.Error().Err(err).Msg("dashboard stopped")
		}
	}()
	r.say("dashboard on %s", r.dashURL)

	if err := r.startAgents(); err != nil {
		return err
	}

	pub := streams.NewPublisher(r.js, "netsource-demo")
	plan, err := pub.Apply(setupCtx, r.sample.Topology)
	if err != nil {
		return fmt.Errorf("demo: apply the sample topology: %w", err)
	}
	r.published = true
	r.tracker = NewTracker(r.sample.Topology, plan)
	r.say("published the sample topology: %d objects (network, security group, %d ports, load balancer, tap service, tap flow)",
		len(plan), len(r.sample.Topology.GetPorts()))
	return nil
}

// pickAddr is freeAddr, saying so when the wanted port is taken.
func (r *run) pickAddr(what, want string) (string, error) {
	addr, err := freeAddr(want)
	if err != nil {
		return "", fmt.Errorf("demo: %s address: %w", what, err)
	}
	if _, port, _ := net.SplitHostPort(want); port != "0" && addr != want {
		r.say("%s: %s is taken; using %s", what, want, addr)
	}
	return addr, nil
}

func (r *run) startAgents() error {
	agentCtx, stop := context.WithCancel(context.Background()) // not ctx: the agents tear down after Ctrl-C
	r.stopAgent = stop
	port := 0
	if r.o.Metrics != "off" {
		host, p, err := net.SplitHostPort(r.o.Metrics)
		if err != nil {
			return fmt.Errorf("demo: metrics address %q: %w", r.o.Metrics, err)
		}
		if _, err := fmt.Sscan(p, &port); err != nil {
			return fmt.Errorf("demo: metrics port %q: %w", p, err)
		}
		for i, h := range []string{HostA, HostB} {
			want := net.JoinHostPort(host, "0")
			if port > 0 {
				want = net.JoinHostPort(host, fmt.Sprint(port+i))
			}
			addr, err := r.pickAddr(h+" metrics", want)
			if err != nil {
				return err
			}
			r.metrics[h] = addr
		}
	}
	for _, h := range []string{HostA, HostB} {
		cfg := &config.Config{Host: h, NATS: r.natsURL, Netns: r.box.hostNetns(h),
			VXLAN: config.VXLAN{LocalIP: underlayIP(h), L2Population: true},
			Agent: config.Agent{ReportInterval: config.Duration{Duration: r.o.ReportInterval}}}
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("demo: agent %s config: %w", h, err)
		}
		opts := agent.Options{Metrics: r.metrics[h]}
		log := r.log.With().Str("component", "agent").Logger()
		r.agents.Add(1)
		go func() {
			defer r.agents.Done()
			if err := agent.Run(agentCtx, cfg, opts, log); err != nil {
				r.agentErrs <- fmt.Errorf("agent %s: %w", h, err)
			}
		}()
		r.say("agent %s in namespace %s (VXLAN %s, l2population, heartbeat every %s)", h, cfg.Netns, cfg.VXLAN.LocalIP, r.o.ReportInterval)
	}
	return nil
}

// waitReady follows the status stream until every target is settled, printing each
// change; the backends start as soon as their VMs' ports are ACTIVE.
func (r *run) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	events := make(chan *nsv1.StatusEvent, 1024)
	followErr := make(chan error, 1)
	go func() {
		followErr <- streams.Follow(ctx, r.js, streams.StatusStream, streams.FollowOptions{Filters: []string{streams.StatusFilter("", "")}},
			func(m streams.Msg) {
				if ev, err := streams.DecodeStatus(m.Data); err == nil {
					select {
					case events <- ev:
					case <-ctx.Done():
					}
				}
			})
	}()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	for !r.tracker.Done() {
		select {
		case ev := <-events:
			t := r.tracker.Observe(ev)
			if t == nil {
				continue
			}
			_, why := r.tracker.Settled(t)
			mark := " "
			if ok, _ := r.tracker.Settled(t); ok {
				mark = "✓"
			}
			r.say("%s %-12s %-12s %-5s %-7s %s", mark, t.Kind, nameOr(t), t.Host, streams.PhaseName(ev.GetPhase()), oneLine(ev.GetReason()))
			if why == "ACTIVE" && t.Kind == streams.KindPort {
				r.startBackendFor(t.ID)
			}
		case <-progress.C:
			settled, _, total := r.tracker.Counts()
			var open []string
			for _, t := range r.tracker.Targets() {
				if ok, why := r.tracker.Settled(t); !ok && len(open) < 3 {
					open = append(open, fmt.Sprintf("%s %s on %s (%s)", t.Kind, nameOr(t), t.Host, why))
				}
			}
			r.say("  waiting: %d of %d settled; still waiting for %s", settled, total, strings.Join(open, ", "))
		case err := <-r.agentErrs:
			return fmt.Errorf("demo: an agent stopped: %w", err)
		case err := <-followErr:
			if err != nil {
				return fmt.Errorf("demo: status stream: %w", err)
			}
			return r.notReady(ctx)
		case <-ctx.Done():
			return r.notReady(ctx)
		}
	}
	return nil
}

func (r *run) notReady(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err() // Ctrl-C: not a failure of the demo's
	}
	fmt.Fprintf(r.out, "\nNot converged after %s:\n", r.o.Timeout)
	r.printTargets(func(t *Target) bool { ok, _ := r.tracker.Settled(t); return !ok })
	fmt.Fprintf(r.out, "Logs: %s\n", r.logFile.Name())
	return fmt.Errorf("demo: %w within %s", ErrNotReady, r.o.Timeout)
}

func (r *run) startBackendFor(portID string) {
	for _, vm := range r.sample.VMs {
		if vm.PortID != portID || !vm.Backend || r.backends[vm.Name] != nil {
			continue
		}
		b, err := startBackend(vm)
		if err != nil {
			r.say("  %v", err)
			continue
		}
		r.backends[vm.Name] = b
		r.say("  backend %s: HTTP on %s:8080 inside namespace %s", vm.Name, vm.IP, vm.Netns)
	}
}

func nameOr(t *Target) string {
	if t.Name != "" {
		return t.Name
	}
	return t.ID[:8]
}

func oneLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}

func (r *run) printTargets(keep func(*Target) bool) {
	w := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  KIND\tNAME\tHOST\tPHASE\tREASON")
	for _, t := range r.tracker.Targets() {
		if !keep(t) {
			continue
		}
		phase, reason := "-", "no status yet"
		if t.Last != nil {
			phase, reason = streams.PhaseName(t.Last.GetPhase()), oneLine(t.Last.GetReason())
			if ok, why := r.tracker.Settled(t); ok && why != "ACTIVE" && !notBuilt(t.Last) {
				reason += " (" + why + ")"
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", t.Kind, nameOr(t), t.Host, phase, reason)
	}
	_ = w.Flush()
}

func (r *run) printReady() {
	settled, notBuilt, total := r.tracker.Counts()
	fmt.Fprintf(r.out, "\nReady in %.1fs: %d of %d ACTIVE", time.Since(r.start).Seconds(), settled-notBuilt, total)
	if notBuilt > 0 {
		fmt.Fprintf(r.out, "; %d not built by this agent version yet (they turn ACTIVE when their kinds land)", notBuilt)
	}
	fmt.Fprint(r.out, ".\n\n")
	r.printTargets(func(*Target) bool { return true })
	web1, web2 := r.sample.VMs[0], r.sample.VMs[1]
	pingResult := "ok"
	if err := ping(web1.Netns, web2.IP); err != nil {
		pingResult = "FAILED: " + err.Error()
	}
	lbResult := r.checkVIP()
	fmt.Fprintf(r.out, "\n  dashboard  %s\n", r.dashURL)
	fmt.Fprintf(r.out, "  nats       %s    try: NATS_URL=%s netsource watch\n", r.natsURL, r.natsURL)
	if len(r.metrics) > 0 {
		fmt.Fprintf(r.out, "  metrics    http://%s/metrics (hostA), http://%s/metrics (hostB)\n", r.metrics[HostA], r.metrics[HostB])
	}
	fmt.Fprintf(r.out, "  VMs        ip netns exec %s ping %s   (web1 on hostA -> web2 on hostB over VXLAN: %s)\n",
		web1.Netns, web2.IP, pingResult)
	fmt.Fprintf(r.out, "  LB         ip netns exec %s bash -c 'exec 3<>/dev/tcp/%s/80; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'\n",
		r.sample.VMs[2].Netns, r.sample.VIP)
	fmt.Fprintf(r.out, "             (client on hostB -> VIP %s on hostA: %s)\n", r.sample.VIP, lbResult)
	fmt.Fprintf(r.out, "  logs       %s\n\n", r.logFile.Name())
}

// checkVIP asks the load balancer's VIP for a page a few times from the client VM, and
// says which backends answered, once load balancers are built.
func (r *run) checkVIP() string {
	lb := r.sample.Topology.GetLoadbalancers()[0]
	for _, t := range r.tracker.Targets() {
		if t.Kind == streams.KindLoadBalancer && t.ID == lb.GetId() && (t.Last == nil || t.Last.GetPhase() != nsv1.Phase_PHASE_ACTIVE) {
			return "not checked: the load balancer is not ACTIVE"
		}
	}
	client := r.sample.VMs[2]
	seen := map[string]bool{}
	var answers []string
	var lastErr error
	deadline := time.Now().Add(15 * time.Second) // the health monitor marks the members up first
	for len(seen) < 2 && time.Now().Before(deadline) {
		body, err := httpGetIn(client.Netns, "http://"+r.sample.VIP+"/")
		if err != nil {
			lastErr = err
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if first, _, _ := strings.Cut(body, " ("); !seen[first] {
			seen[first] = true
			answers = append(answers, first)
		}
	}
	if len(answers) == 0 {
		return fmt.Sprintf("no answer: %v", lastErr)
	}
	return strings.Join(answers, ", ")
}

// cleanup deletes the topology (the agents remove their devices and namespaces), stops the
// backends, dashboard, agents and server, removes the sandbox's namespaces, and the work
// directory unless Keep is set or the demo failed.
func (r *run) cleanup(failed bool) error {
	fmt.Fprintln(r.out, "Cleaning up…")
	var errs []error
	for _, b := range r.backends {
		b.stop()
	}
	if r.published {
		r.deleteTopology()
	}
	if r.stopDash != nil {
		r.stopDash()
		<-r.dashDone
	}
	if r.stopAgent != nil {
		r.stopAgent()
		done := make(chan struct{})
		go func() { r.agents.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			errs = append(errs, errors.New("demo: agents did not stop within 30s"))
		}
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.server != nil {
		r.server.Shutdown()
		r.server.WaitForShutdown()
	}
	lbNetns := "qlbaas-" + r.sample.Topology.GetLoadbalancers()[0].GetId()
	removed, err := r.box.remove(lbNetns)
	if err != nil {
		errs = append(errs, fmt.Errorf("demo: remove namespaces: %w", err))
	}
	if len(removed) > 0 {
		fmt.Fprintf(r.out, "  removed namespaces %v\n", removed)
	}
	if r.logFile != nil {
		r.logFile.Close()
	}
	if r.dir != "" {
		if r.o.Keep || failed {
			fmt.Fprintf(r.out, "  kept %s (JetStream store and logs)\n", r.dir)
		} else if err := os.RemoveAll(r.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		fmt.Fprintln(r.out, "Clean.")
	}
	return errors.Join(errs...)
}

// deleteTopology publishes the deletes in reverse reference order and waits (up to 20 s)
// until the agents report every object they had as DELETED.
func (r *run) deleteTopology() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub := streams.NewPublisher(r.js, "netsource-demo")
	specs := streams.Specs(r.sample.Topology)
	deleted := 0
	for i := len(specs) - 1; i >= 0; i-- {
		kind := streams.KindOfSpec(specs[i])
		if _, err := pub.Delete(ctx, kind, specs[i].GetId()); err != nil && !errors.Is(err, streams.ErrNotFound) {
			fmt.Fprintf(r.out, "  delete %s %s: %v\n", kind, specs[i].GetId(), err)
			continue
		}
		deleted++
	}
	// Objects the agents reported must be reported DELETED; the agents then have removed
	// their devices and the VM namespaces they created.
	pending := map[string]bool{}
	for _, t := range r.tracker.Targets() {
		if t.Last != nil && t.Last.GetPhase() != nsv1.Phase_PHASE_DELETED {
			pending[t.key()] = true
		}
	}
	if len(pending) == 0 {
		fmt.Fprintf(r.out, "  deleted %d objects\n", deleted)
		return
	}
	started := time.Now()
	waitCtx, found := context.WithCancel(ctx)
	defer found()
	_ = streams.Follow(waitCtx, r.js, streams.StatusStream, streams.FollowOptions{Filters: []string{streams.StatusFilter("", "")}},
		func(m streams.Msg) {
			ev, err := streams.DecodeStatus(m.Data)
			if err == nil && ev.GetPhase() == nsv1.Phase_PHASE_DELETED {
				delete(pending, ev.GetHost()+"/"+ev.GetKind()+"/"+ev.GetId())
				if len(pending) == 0 {
					found()
				}
			}
		})
	if len(pending) > 0 {
		fmt.Fprintf(r.out, "  deleted %d objects; %d not reported DELETED within 20s (their namespaces are removed anyway)\n", deleted, len(pending))
		return
	}
	fmt.Fprintf(r.out, "  deleted %d objects; the agents removed their devices in %.1fs\n", deleted, time.Since(started).Seconds())
}
