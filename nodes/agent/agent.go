// Package agent wires one netsource host agent together: the JetStream connection (or an
// embedded server), the links dataplane in the agent's namespace, the actor tree, and the
// goroutines that feed it (desired stream, kernel link events, remote port status for
// l2population, resync ticks) and report for it (status, heartbeat).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/metrics"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Version is reported in heartbeats.
var Version = "dev"

// Options are what the command line adds to the config file.
type Options struct {
	// Listen is the client address of the embedded server when the agent runs one.
	Listen string
	// Dataplane overrides the netlink dataplane (tests, the replay simulator).
	Dataplane links.Dataplane
	// Ready, if set, is called once the first full sync is done.
	Ready func()
	// Security is the agent's credentials and TLS towards --nats, or the configuration
	// (e.g. auth.conf) and TLS of its embedded server. When zero, Run takes it from ctx
	// (WithSecurity).
	Security Security
	// NATSOptions are added to the client options (tests: server order, handlers).
	NATSOptions []nats.Option
	// Metrics is the address of the Prometheus /metrics endpoint ("" for none).
	Metrics string
}

// Run runs the agent until ctx ends. cfg must be validated.
func Run(ctx context.Context, cfg *config.Config, opts Options, log zerolog.Logger) error {
	log = log.With().Str("host", cfg.Host).Logger()
	started := time.Now()

	sec := opts.security(ctx)
	nc, ns, err := connect(cfg, opts, sec, log)
	if err != nil {
		return err
	}
	defer func() {
		_ = nc.Drain()
		if ns != nil {
			streams.ShutdownServer(ns)
		}
	}()
	met, stopMetrics, err := startMetrics(cfg, opts, nc, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := ensureStreams(setupCtx, js, ns != nil); err != nil {
		return err
	}
	guard, err := newGuard(cfg.Host, sec, log)
	if err != nil {
		return err
	}

	dp := opts.Dataplane
	if dp == nil && cfg.Mechanism == config.MechanismOpenVSwitch {
		o, err := openOVS(ctx, cfg, js, log)
		if err != nil {
			return err
		}
		defer o.Close()
		dp = o
	}
	if dp == nil {
		nl, err := links.New(cfg.Netns, log)
		if err != nil {
			return fmt.Errorf("open netlink in netns %q: %w", cfg.Netns, err)
		}
		defer nl.Close()
		dp = nl
		if cfg.VXLAN.Enabled() {
			dev, err := nl.DeviceWithAddress(net.ParseIP(cfg.VXLAN.LocalIP))
			if err != nil {
				return fmt.Errorf("vxlan.local_ip %s in netns %q: %w", cfg.VXLAN.LocalIP, cfg.Netns, err)
			}
			cfg.VXLAN.Device = dev
		}
	}

	last, err := guard.loadOwnStatus(setupCtx, js)
	if err != nil {
		return err
	}
	lastStatus := make(map[string]*nsv1.StatusEvent, len(last))
	for _, ev := range last {
		lastStatus[ev.GetKind()+"/"+ev.GetId()] = ev
	}
	sink, err := streams.NewStatusSink(guard.stamp.Wrap(js), cfg.Host)
	if err != nil {
		return err
	}
	reporter := actors.NewAsyncReporter(sink, log)
	defer reporter.Close()

	env := &actors.Env{Config: cfg, Dataplane: dp, Reporter: reporter, Log: log, OpTimeout: 30 * time.Second,
		Backoff: actors.DefaultBackoff, LastStatus: lastStatus, Objects: map[streams.Kind]actors.ObjectProducer{}}
	env.Reporter = met.WrapReporter(env.Reporter, lastStatus)
	closePlugins, err := registerPlugins(ctx, cfg, env, log)
	if err != nil {
		return err
	}
	defer closePlugins()
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(s *actor.ActorSystem) *slog.Logger {
		return slog.New(zerolog.NewSlogHandler(log.With().Str("component", "protoactor").Logger())).With("system", s.ID)
	}))
	host, err := system.Root.SpawnNamed(actors.HostProps(env), "host-"+cfg.Host)
	if err != nil {
		return fmt.Errorf("spawn host supervisor: %w", err)
	}
	defer func() {
		_ = system.Root.PoisonFuture(host).Wait()
		system.Shutdown()
	}()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make(chan error, 8)
	go func() { errs <- watchLinks(runCtx, dp, system.Root, host, log) }()
	go func() { errs <- guard.watchOwnStatus(runCtx, js) }()
	filters, err := streams.HostFilters(cfg.Host)
	if err != nil {
		return err
	}
	synced := make(chan struct{})
	go func() {
		errs <- guard.followDesired(runCtx, js, streams.FollowOptions{
			Filters: filters,
			CaughtUp: func() {
				system.Root.Send(host, &actors.CaughtUp{})
				close(synced)
			},
		}, func(m streams.Msg) { met.DesiredEvent(); system.Root.Send(host, &actors.DesiredMsg{Msg: m}) })
	}()
	// Remote port status feeds l2population and the observers (the firewall learns remote
	// group members from it); a nil Status tells them the statuses stored at start are in.
	if cfg.VXLAN.Enabled() && cfg.VXLAN.L2Population || len(env.Observers) > 0 {
		go func() {
			errs <- streams.Follow(runCtx, js, streams.StatusStream, streams.FollowOptions{
				Filters:  []string{streams.StatusFilter("", streams.KindPort)},
				CaughtUp: func() { system.Root.Send(host, &actors.RemotePortStatus{}) },
			}, func(m streams.Msg) {
				if ev, err := streams.DecodeStatus(m.Data); err == nil {
					system.Root.Send(host, &actors.RemotePortStatus{Status: ev})
				}
			})
		}()
	}
	hb := &heartbeat{cfg: cfg, js: js, sink: sink, root: system.Root, host: host, dp: dp, started: started, log: log}
	hb.observe = met.ObserveHeartbeat
	hb.counts = guard.counts
	resync := time.NewTicker(cfg.Agent.ResyncInterval.Duration)
	defer resync.Stop()
	var report <-chan time.Time
	if cfg.Agent.ReportInterval.Duration > 0 {
		t := time.NewTicker(cfg.Agent.ReportInterval.Duration)
		defer t.Stop()
		report = t.C
	}
	log.Info().Str("netns", cfg.Netns).Str("mechanism", cfg.Mechanism).Msg("agent started")
	for {
		select {
		case <-ctx.Done():
			log.Info().Msg("agent stopping")
			return nil
		case err := <-errs:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("agent: %w", err)
			}
		case <-synced:
			synced = nil
			log.Info().Dur("since_start", time.Since(started)).Msg("desired state loaded; full sync started")
			hb.send(ctx)
			if opts.Ready != nil {
				opts.Ready()
			}
		case <-resync.C:
			system.Root.Send(host, &actors.Resync{})
		case <-report:
			hb.send(ctx)
		}
	}
}

func connect(cfg *config.Config, opts Options, sec Security, log zerolog.Logger) (*nats.Conn, *server.Server, error) {
	base := []nats.Option{
		nats.Name("netsource-agent-" + cfg.Host),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
	}
	if cfg.NATS != "" {
		client, err := sec.Client.Options()
		if err != nil {
			return nil, nil, err
		}
		// A comma-separated URL list is a server pool: the client fails over between them.
		all := append(append(base, nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond)), client...)
		nc, err := nats.Connect(cfg.NATS, append(all, opts.NATSOptions...)...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", cfg.NATS, err)
		}
		return nc, nil, nil
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("embedded server store: %w", err)
	}
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: cfg.StoreDir, Listen: opts.Listen, Log: log,
		ConfigFile: sec.ServerConfig, TLS: sec.Client.TLS})
	if err != nil {
		return nil, nil, err
	}
	log.Info().Str("store", cfg.StoreDir).Str("url", ns.ClientURL()).Msg("embedded JetStream server running")
	nc, err := streams.ConnectInProcess(ns, append(base, opts.NATSOptions...)...)
	if err != nil {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("connect to embedded server: %w", err)
	}
	return nc, ns, nil
}

// watchLinks turns kernel link events into supervisor messages. The netlink subscription
// can drop messages, so after it ends the agent resubscribes and resyncs everything.
func watchLinks(ctx context.Context, dp links.Dataplane, root *actor.RootContext, host *actor.PID, log zerolog.Logger) error {
	for ctx.Err() == nil {
		events, err := dp.Watch(ctx)
		if err != nil {
			log.Error().Err(err).Msg("link watch failed; retrying")
		} else {
			for ev := range events {
				root.Send(host, &actors.LinkEventMsg{Event: ev})
			}
			if ctx.Err() == nil {
				log.Warn().Msg("link watch ended; resubscribing and resyncing")
			}
		}
		root.Send(host, &actors.Resync{})
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

type heartbeat struct {
	cfg      *config.Config
	js       jetstream.JetStream
	sink     *streams.StatusSink
	root     *actor.RootContext
	host     *actor.PID
	dp       links.Dataplane
	started  time.Time
	log      zerolog.Logger
	reported bool // a heartbeat after the first full sync went out
	counts   func(map[string]uint32)
	observe  func(*nsv1.AgentHeartbeat)
}

func (h *heartbeat) send(ctx context.Context) {
	res, err := h.root.RequestFuture(h.host, &actors.GetCounts{}, 5*time.Second).Result()
	if err != nil {
		h.log.Warn().Err(err).Msg("heartbeat: supervisor did not answer")
		return
	}
	counts, ok := res.(*actors.Counts)
	if !ok {
		return
	}
	byKind := map[string]uint32{"kernel_mutations": uint32(h.dp.Mutations())}
	for k, v := range counts.ByKind {
		byKind[k] = v
	}
	if h.counts != nil {
		h.counts(byKind)
	}
	hb := &nsv1.AgentHeartbeat{
		Binary: "netsource-agent", Topic: "N/A", AgentType: agentType(h.cfg.Mechanism),
		Configurations: &nsv1.AgentConfigurations{
			BridgeMappings: h.cfg.BridgeMappings, InterfaceMappings: h.cfg.PhysicalInterfaceMappings,
			Mechanism: h.cfg.Mechanism, Devices: counts.Devices, L2Population: h.cfg.VXLAN.L2Population,
		},
		StartFlag: !h.reported, Time: timestamppb.Now(), Uuid: uuid.NewString(), Counts: byKind,
		AppliedSeq: counts.AppliedSeq, ReportInterval: durationpb.New(h.cfg.Agent.ReportInterval.Duration),
		StartedAt: timestamppb.New(h.started), Version: Version,
	}
	if h.cfg.VXLAN.Enabled() {
		hb.Configurations.TunnelingIp = h.cfg.VXLAN.LocalIP
		hb.Configurations.TunnelTypes = []string{"vxlan"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s, err := h.js.Stream(ctx, streams.DesiredStream); err == nil {
		if info, err := s.Info(ctx); err == nil && info.State.LastSeq > counts.AppliedSeq {
			hb.Lag = info.State.LastSeq - counts.AppliedSeq
		}
	}
	if err := h.sink.Heartbeat(ctx, hb); err != nil && !errors.Is(err, context.Canceled) {
		h.log.Warn().Err(err).Msg("heartbeat not sent")
		return
	}
	if h.observe != nil {
		h.observe(hb)
	}
	if counts.Synced {
		h.reported = true
	}
}

func agentType(mechanism string) string {
	if mechanism == config.MechanismOpenVSwitch {
		return "Open vSwitch agent"
	}
	return "Linux bridge agent"
}

// startMetrics creates the agent's metrics, counts the connection's reconnects, and serves
// /metrics when opts.Metrics is set. The returned function stops the server.
func startMetrics(cfg *config.Config, opts Options, nc *nats.Conn, log zerolog.Logger) (*metrics.Agent, func(), error) {
	met := metrics.New(cfg.Host, Version, cfg.Mechanism)
	met.WatchConn(nc)
	if opts.Metrics == "" {
		return met, func() {}, nil
	}
	addr, stop, err := met.Serve(opts.Metrics, log)
	if err != nil {
		return nil, nil, err
	}
	log.Info().Str("addr", addr.String()).Msg("serving metrics on /metrics")
	return met, stop, nil
}

// Security is how the agent proves who it is and whom it trusts.
type Security struct {
	// Client: credentials (--creds) and TLS files towards --nats. Without --nats, the TLS
	// files are the embedded server's (its certificate, and the CA its clients need).
	Client streams.ClientSecurity
	// ServerConfig is a nats-server configuration file for the embedded server, e.g. the
	// auth.conf of `netsource auth init`.
	ServerConfig string
}

type securityKey struct{}

// WithSecurity returns ctx carrying sec for Run, for callers that build Options where
// the security flags are not at hand (the command line's global flags). A non-zero
// Options.Security wins.
func WithSecurity(ctx context.Context, sec Security) context.Context {
	return context.WithValue(ctx, securityKey{}, sec)
}

func (o Options) security(ctx context.Context) Security {
	if o.Security != (Security{}) {
		return o.Security
	}
	sec, _ := ctx.Value(securityKey{}).(Security)
	return sec
}

// ensureStreams creates the streams on the agent's embedded server. A shared server's
// streams belong to `netsource server` (which sizes their replicas for its cluster), and an
// agent's permissions do not allow creating them: there the agent only checks that they
// exist and creates them only when they do not (a server without permissions).
func ensureStreams(ctx context.Context, js jetstream.JetStream, embedded bool) error {
	if !embedded {
		missing := false
		for _, name := range []string{streams.DesiredStream, streams.StatusStream} {
			_, err := js.Stream(ctx, name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				missing = true
				continue
			}
			if err != nil {
				return fmt.Errorf("look up stream %s: %w", name, err)
			}
		}
		if !missing {
			return nil
		}
	}
	return streams.EnsureStreams(ctx, js, streams.Config{})
}

// guard is the agent's defence in depth behind the server's permissions: it recognises the
// agent's own status messages (streams.StatusStamp) and desired events whose subject does
// not name what they carry, logs what it refuses, and counts it for the heartbeat.
type guard struct {
	host  string
	stamp *streams.StatusStamp
	log   zerolog.Logger
	// perFilter: one ordered consumer per desired filter. Needed whenever the agent
	// authenticates: a least-privilege agent may only create consumers whose single filter
	// is in the create subject, which a consumer with several filters does not have.
	perFilter bool

	foreignStatus  atomic.Uint32 // status on this host's subjects that this agent did not publish
	rejectedDesire atomic.Uint32 // desired events whose subject does not match their content
}

func newGuard(host string, sec Security, log zerolog.Logger) (*guard, error) {
	key, err := sec.Client.KeyPair()
	if err != nil {
		return nil, err
	}
	stamp, err := streams.NewStatusStamp(host, key)
	if err != nil {
		return nil, err
	}
	return &guard{host: host, stamp: stamp, log: log,
		perFilter: sec.Client.Creds != "" || sec.Client.TLS.Cert != ""}, nil
}

// counts adds the guard's counters to a heartbeat.
func (g *guard) counts(byKind map[string]uint32) {
	byKind["foreign_status_ignored"] = g.foreignStatus.Load()
	byKind["desired_rejected"] = g.rejectedDesire.Load()
}

// loadOwnStatus reads the last status of each of this host's objects, leaving out what
// this agent did not publish: a forged status then does not make the agent believe its
// status is already reported, so it publishes the real one over it.
func (g *guard) loadOwnStatus(ctx context.Context, js jetstream.JetStream) ([]*nsv1.StatusEvent, error) {
	msgs, err := streams.LoadLast(ctx, js, streams.StatusStream, streams.StatusFilter(g.host, ""))
	if err != nil {
		return nil, fmt.Errorf("load status: %w", err)
	}
	out := make([]*nsv1.StatusEvent, 0, len(msgs))
	for _, m := range msgs {
		if why := g.stamp.Foreign(m, false); why != "" {
			g.foreign(m, why)
			continue
		}
		if ev, err := streams.DecodeStatus(m.Data); err == nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

// watchOwnStatus reports every status message stored on this host's subjects while the
// agent runs that this process did not publish: a forger, or a second agent started with
// the same host name.
func (g *guard) watchOwnStatus(ctx context.Context, js jetstream.JetStream) error {
	return streams.Follow(ctx, js, streams.StatusStream, streams.FollowOptions{
		Filters: []string{streams.StatusRoot + "." + g.host + ".>"}, Start: streams.Start{New: true},
	}, func(m streams.Msg) {
		if why := g.stamp.Foreign(m, true); why != "" {
			g.foreign(m, why)
		}
	})
}

func (g *guard) foreign(m streams.Msg, why string) {
	g.foreignStatus.Add(1)
	g.log.Warn().Str("subject", m.Subject).Uint64("seq", m.Seq).Str("reason", why).
		Msg("ignoring a status message on this host's subjects that this agent did not publish")
}

// checkDesired counts and logs a desired event whose subject is not the one its content
// belongs on (another host, another id, another kind). The supervisor refuses such events
// itself and reports the object ERROR.
func (g *guard) checkDesired(m streams.Msg) {
	addr, err := streams.ParseDesiredSubject(m.Subject)
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case addr.Host != "" && addr.Host != g.host:
		why = "subject of host " + addr.Host
	default:
		if ev, err := streams.DecodeDesired(m.Data); err == nil {
			if got, err := streams.AddressOf(ev); err != nil || got != addr {
				why = fmt.Sprintf("carries %s %s of host %q", got.Kind, got.ID, got.Host)
			}
		}
	}
	if why != "" {
		g.rejectedDesire.Add(1)
		g.log.Warn().Str("subject", m.Subject).Uint64("seq", m.Seq).Str("reason", why).
			Msg("desired event does not belong on its subject; refused")
	}
}

// followDesired follows the desired stream with o's filters: with one ordered consumer
// for all of them, or, when g.perFilter, with one per filter, whose handlers it
// serialises and whose initial loads it joins into one CaughtUp. Across filters, messages
// then arrive in the order the consumers deliver them rather than in stream order; the
// supervisor does not depend on it (a port whose network is late waits for it).
func (g *guard) followDesired(ctx context.Context, js jetstream.JetStream, o streams.FollowOptions, handle func(streams.Msg)) error {
	var mu sync.Mutex
	check := func(m streams.Msg) {
		mu.Lock()
		defer mu.Unlock()
		g.checkDesired(m)
		handle(m)
	}
	if !g.perFilter || len(o.Filters) < 2 {
		return streams.Follow(ctx, js, streams.DesiredStream, o, check)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending, caughtUp := len(o.Filters), o.CaughtUp
	errs := make(chan error, len(o.Filters))
	for _, f := range o.Filters {
		fo := o
		fo.Filters = []string{f}
		fo.CaughtUp = func() {
			mu.Lock()
			pending--
			last := pending == 0
			mu.Unlock()
			if last && caughtUp != nil {
				caughtUp()
			}
		}
		go func() { errs <- streams.Follow(ctx, js, streams.DesiredStream, fo, check) }()
	}
	err := <-errs
	cancel()
	for range len(o.Filters) - 1 {
		if e := <-errs; err == nil {
			err = e
		}
	}
	return err
}
