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
}

// Run runs the agent until ctx ends. cfg must be validated.
func Run(ctx context.Context, cfg *config.Config, opts Options, log zerolog.Logger) error {
	log = log.With().Str("host", cfg.Host).Logger()
	started := time.Now()

	nc, ns, err := connect(cfg, opts, log)
	if err != nil {
		return err
	}
	defer func() {
		_ = nc.Drain()
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := streams.EnsureStreams(setupCtx, js, streams.Config{}); err != nil {
		return err
	}

	dp := opts.Dataplane
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

	last, err := streams.LoadStatus(setupCtx, js, cfg.Host, "")
	if err != nil {
		return err
	}
	lastStatus := make(map[string]*nsv1.StatusEvent, len(last))
	for _, ev := range last {
		lastStatus[ev.GetKind()+"/"+ev.GetId()] = ev
	}
	sink, err := streams.NewStatusSink(js, cfg.Host)
	if err != nil {
		return err
	}
	reporter := actors.NewAsyncReporter(sink, log)
	defer reporter.Close()

	env := &actors.Env{Config: cfg, Dataplane: dp, Reporter: reporter, Log: log, OpTimeout: 30 * time.Second,
		Backoff: actors.DefaultBackoff, LastStatus: lastStatus, Objects: map[streams.Kind]actors.ObjectProducer{}}
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
	errs := make(chan error, 4)
	go func() { errs <- watchLinks(runCtx, dp, system.Root, host, log) }()
	filters, err := streams.HostFilters(cfg.Host)
	if err != nil {
		return err
	}
	synced := make(chan struct{})
	go func() {
		errs <- streams.Follow(runCtx, js, streams.DesiredStream, streams.FollowOptions{
			Filters: filters,
			CaughtUp: func() {
				system.Root.Send(host, &actors.CaughtUp{})
				close(synced)
			},
		}, func(m streams.Msg) { system.Root.Send(host, &actors.DesiredMsg{Msg: m}) })
	}()
	if cfg.VXLAN.Enabled() && cfg.VXLAN.L2Population {
		go func() {
			errs <- streams.Follow(runCtx, js, streams.StatusStream, streams.FollowOptions{
				Filters: []string{streams.StatusFilter("", streams.KindPort)},
			}, func(m streams.Msg) {
				if ev, err := streams.DecodeStatus(m.Data); err == nil {
					system.Root.Send(host, &actors.RemotePortStatus{Status: ev})
				}
			})
		}()
	}
	hb := &heartbeat{cfg: cfg, js: js, sink: sink, root: system.Root, host: host, dp: dp, started: started, log: log}
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

func connect(cfg *config.Config, opts Options, log zerolog.Logger) (*nats.Conn, *server.Server, error) {
	name := nats.Name("netsource-agent-" + cfg.Host)
	if cfg.NATS != "" {
		nc, err := nats.Connect(cfg.NATS, name, nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", cfg.NATS, err)
		}
		return nc, nil, nil
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("embedded server store: %w", err)
	}
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: cfg.StoreDir, Listen: opts.Listen, Log: log})
	if err != nil {
		return nil, nil, err
	}
	log.Info().Str("store", cfg.StoreDir).Str("url", ns.ClientURL()).Msg("embedded JetStream server running")
	nc, err := nats.Connect(ns.ClientURL(), name, nats.InProcessServer(ns))
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
