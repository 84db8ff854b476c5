package agent

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/ovs"
	"github.com/netsource/netsource/nodes/taas"
	"github.com/netsource/netsource/streams"
)

// ovsDataplane is the openvswitch mechanism: the OVS dataplane plus what lives next to it
// for the life of the agent, the tap id directory (a JetStream key-value bucket shared by
// every agent) and the follower of other agents' heartbeats that keeps a VXLAN tunnel to
// each tunneling_ip (as the OVS agent's tunnel_sync does).
type ovsDataplane struct {
	*ovs.Dataplane
	taps      taas.Directory
	localOnly bool // taps is this agent's own directory (the shared one was unavailable)
	stop      func()
}

// openOVS opens the openvswitch mechanism of cfg.
func openOVS(ctx context.Context, cfg *config.Config, js jetstream.JetStream, log zerolog.Logger) (*ovsDataplane, error) {
	var local net.IP
	if cfg.VXLAN.Enabled() {
		local = net.ParseIP(cfg.VXLAN.LocalIP)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dp, err := ovs.New(setupCtx, ovs.Config{Netns: cfg.Netns, DB: cfg.OVS.DB, RunDir: cfg.OVS.RunDir,
		DatapathType: cfg.OVS.DatapathType, LocalIP: local, VXLANPort: cfg.VXLAN.UDPPort, L2Population: cfg.VXLAN.L2Population}, log)
	if err != nil {
		return nil, fmt.Errorf("openvswitch mechanism: %w", err)
	}
	if local != nil {
		dev, onBridge, err := dp.DeviceWithAddress(setupCtx, local)
		if err != nil {
			dp.Close()
			return nil, fmt.Errorf("vxlan.local_ip %s in netns %q: %w", local, cfg.Netns, err)
		}
		if !onBridge && cfg.OVS.DatapathType == "netdev" {
			log.Warn().Str("device", dev).Str("local_ip", local.String()).
				Msg("the userspace datapath sends tunnel packets only through an OVS bridge: put vxlan.local_ip on an OVS bridge's internal port")
		}
		cfg.VXLAN.Device = dev
	}
	var dir taas.Directory
	localOnly := false
	if kv, err := taas.NewKV(setupCtx, js, cfg.Host, 0, log); err != nil {
		// Ports and networks do not need it: the agent runs, and tap flows mirror to tap
		// services of this host only until the bucket is reachable (e.g. permissions).
		log.Error().Err(err).Str("bucket", taas.KVBucket).
			Msg("tap id directory unavailable; tap flows mirror only to tap services on this host")
		dir, localOnly = taas.NewMemory(), true
	} else {
		dir = kv
	}
	runCtx, stopPeers := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		followTunnelPeers(runCtx, js, dp, cfg.Host, log)
	}()
	return &ovsDataplane{Dataplane: dp, taps: dir, localOnly: localOnly, stop: func() {
		stopPeers()
		<-done
		if kv, ok := dir.(*taas.KV); ok {
			kv.Close()
		}
		dp.Close()
	}}, nil
}

// Close stops the heartbeat follower and the directory and releases the dataplane.
func (o *ovsDataplane) Close() { o.stop() }

// followTunnelPeers turns other agents' heartbeats into tunnels until ctx ends. Each
// endpoint is applied once (and again after a failure).
func followTunnelPeers(ctx context.Context, js jetstream.JetStream, dp *ovs.Dataplane, self string, log zerolog.Logger) {
	applied := map[string]string{} // host -> tunneling_ip
	backoff := time.Second
	for ctx.Err() == nil {
		err := streams.Follow(ctx, js, streams.StatusStream, streams.FollowOptions{Filters: []string{streams.AgentFilter}},
			func(m streams.Msg) {
				hb, err := streams.DecodeHeartbeat(m.Data)
				if err != nil || hb.GetHost() == self || hb.GetHost() == "" {
					return
				}
				ip := net.ParseIP(hb.GetConfigurations().GetTunnelingIp())
				if ip == nil || applied[hb.GetHost()] == ip.String() {
					return
				}
				opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := dp.SetTunnelPeer(opCtx, hb.GetHost(), ip); err != nil {
					log.Warn().Err(err).Str("peer", hb.GetHost()).Msg("tunnel to peer failed; retried with its next heartbeat")
					return
				}
				applied[hb.GetHost()] = ip.String()
			})
		if err != nil {
			log.Warn().Err(err).Dur("retry_in", backoff).Msg("following heartbeats for tunnels failed")
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
