package agent

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/firewall"
	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/taas"
	"github.com/netsource/netsource/nodes/tc"
	"github.com/netsource/netsource/streams"
)

// registerPlugins adds the actors of the kinds beyond networks and ports to env: one line
// per feature (env.Objects[kind] = producer, or env.Observers = append(...)), plus whatever
// driver the feature needs. The returned function releases those drivers when the agent
// stops. Features whose drivers are missing on this host must say so in an error here
// rather than fail later object by object.
func registerPlugins(ctx context.Context, cfg *config.Config, env *actors.Env, log zerolog.Logger) (func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	_ = ctx

	// Tap services and tap flows (TaaS): the OVS pipeline with tap ids shared by all agents
	// on the openvswitch mechanism, tc mirred to local tap services on the Linux bridge one.
	if taps, err := tapDeps(cfg, env, log); err != nil {
		closeAll()
		return nil, err
	} else if taps != nil {
		closers = append(closers, taps.close)
		env.Objects[streams.KindTapService] = actors.TapServiceProducer(taps.deps)
		env.Objects[streams.KindTapFlow] = actors.TapFlowProducer(taps.deps)
	}

	// Security groups and anti-spoofing (nodes/firewall): one observer over the host's
	// nftables tables, with securitygroup.firewall_driver nftables.
	if fw, err := firewallDriver(cfg, log); err != nil {
		closeAll()
		return nil, err
	} else if fw != nil {
		closers = append(closers, func() { _ = fw.Close() })
		env.Observers = append(env.Observers, actors.FirewallObserver(fw))
	}

	// Load balancers (nodes/haproxy): one haproxy per load balancer in qlbaas-<id>; instances
	// live under <state_dir>/<host>, so agents of several hosts on one machine never prune
	// each other's. An orphan observer removes instances nobody desires once caught up.
	lbDriver, err := haproxy.New(haproxy.Options{Binary: cfg.HAProxy.Binary,
		StateDir: filepath.Join(cmp.Or(cfg.HAProxy.StateDir, haproxy.DefaultStateDir), cfg.Host),
		Log:      log.With().Str("component", "haproxy").Logger()})
	if err != nil {
		closeAll()
		return nil, err
	}
	closers = append(closers, lbDriver.Close)
	lbOpts := actors.LoadBalancerOptions{Driver: lbDriver}
	env.Objects[streams.KindLoadBalancer] = actors.LoadBalancerActors(lbOpts)
	env.Observers = append(env.Observers, actors.LoadBalancerOrphans(lbOpts))
	return closeAll, nil
}

type tapPlugin struct {
	deps  actors.TapDeps
	close func()
}

// tapDeps picks the tap actors' drivers for the agent's dataplane; nil when it has none
// (a test's fake dataplane on the openvswitch mechanism).
func tapDeps(cfg *config.Config, env *actors.Env, log zerolog.Logger) (*tapPlugin, error) {
	if o, ok := env.Dataplane.(*ovsDataplane); ok {
		deps := actors.TapDeps{Mirror: o.Dataplane, Directory: o.taps}
		if o.localOnly {
			deps.LocalOnly = "the shared tap id directory " + taas.KVBucket + " is unavailable; see the agent log"
		}
		return &tapPlugin{deps: deps, close: func() {}}, nil
	}
	if cfg.Mechanism != config.MechanismLinuxBridge {
		return nil, nil
	}
	m, err := tc.New(cfg.Netns, log)
	if err != nil {
		return nil, err
	}
	return &tapPlugin{deps: actors.TapDeps{Mirror: m, Directory: taas.NewMemory(),
		LocalOnly: "the linuxbridge mechanism mirrors only to tap services on the same host"}, close: m.Close}, nil
}

// firewallDriver opens the nftables firewall in the agent's namespace when the config asks
// for it. It refuses to start an agent whose kernel cannot filter bridged traffic rather
// than leave security groups silently unapplied. With the noop driver it returns nil after
// removing netsource's tables if an earlier agent left them (their catch-all drop of
// unknown tap devices would close every new port).
func firewallDriver(cfg *config.Config, log zerolog.Logger) (*firewall.Netlink, error) {
	if cfg.SecurityGroup.FirewallDriver != config.FirewallNFTables {
		if cfg.Mechanism == config.MechanismLinuxBridge {
			if removed, err := firewall.RemoveTables(cfg.Netns); err != nil {
				log.Debug().Err(err).Msg("firewall driver noop: could not check for netsource nftables tables")
			} else if removed {
				log.Warn().Msg("firewall driver noop: removed the netsource nftables tables an earlier agent left")
			}
		}
		return nil, nil
	}
	if cfg.Mechanism != config.MechanismLinuxBridge {
		return nil, fmt.Errorf("securitygroup.firewall_driver nftables works with mechanism linuxbridge, not %s", cfg.Mechanism)
	}
	fw, err := firewall.New(cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("securitygroup.firewall_driver nftables: %w", err)
	}
	return fw, nil
}
