package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/netsource/netsource/streams"
)

func newServerCmd(g *globals) *cobra.Command {
	var (
		store, listen, auth, name, replicas string
		cluster                             streams.ClusterOptions
		routes                              string
	)
	cmd := &cobra.Command{
		Use:   "server --store DIR [--listen 127.0.0.1:4222] [--auth FILE] [--cluster NAME --name N --cluster-listen ADDR --routes URL,URL]",
		Short: "Run an embedded JetStream server holding the netsource streams, alone or as one node of a cluster",
		Long: "Run an embedded JetStream server holding the netsource streams.\n\n" +
			"--auth loads a nats-server configuration (the auth.conf of `netsource auth init`): clients then need " +
			"--creds. --tls-cert/--tls-key make client connections TLS; with --tls-ca clients must present a " +
			"certificate that CA signed.\n\n" +
			"--cluster joins other servers through routes into one JetStream cluster; give every node the same " +
			"--cluster and --routes (listing itself is fine) and its own --name. With --replicas auto the streams get " +
			"3 replicas once three servers are in the cluster, 1 on a single server.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if routes != "" {
				cluster.Routes = strings.Split(routes, ",")
			}
			wantReplicas, err := parseReplicas(replicas)
			if err != nil {
				return err
			}
			ns, err := streams.StartServer(streams.ServerOptions{StoreDir: store, Listen: listen, Log: g.log,
				Name: name, ConfigFile: auth, TLS: g.tls, Cluster: cluster})
			if err != nil {
				return err
			}
			defer streams.ShutdownServer(ns)
			nc, err := streams.ConnectInProcess(ns)
			if err != nil {
				return fmt.Errorf("connect to embedded server: %w", err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			n, err := setupStreams(cmd.Context(), g, ns, js, cluster, wantReplicas)
			if err != nil {
				if cmd.Context().Err() != nil {
					return nil // stopped while setting up: a normal stop
				}
				return err
			}
			g.log.Info().Str("store", store).Str("listen", ns.ClientURL()).Str("cluster", cluster.Name).
				Int("replicas", n).Bool("auth", auth != "").Bool("tls", g.tls.Enabled()).Msg("serving JetStream")
			<-cmd.Context().Done()
			g.log.Info().Msg("shutting down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&store, "store", "", "directory that keeps the streams across restarts (required)")
	f.StringVar(&listen, "listen", "127.0.0.1:4222", "client listen address")
	f.StringVar(&auth, "auth", "", "nats-server configuration `FILE` to load, e.g. auth.conf of netsource auth init")
	f.StringVar(&name, "name", "", "server name, unique in the cluster (default netsource; required with --cluster)")
	f.StringVar(&cluster.Name, "cluster", "", "JetStream cluster name: join the servers of --routes")
	f.StringVar(&cluster.Listen, "cluster-listen", "", "route listen address for the other nodes, e.g. 0.0.0.0:6222")
	f.StringVar(&routes, "routes", "", "route URLs of the cluster's nodes, comma-separated, e.g. nats-route://10.0.0.1:6222,...")
	f.StringVar(&replicas, "replicas", "auto", "replicas of the streams: auto (3 from three servers on, else 1) or a number")
	_ = cmd.MarkFlagRequired("store")
	return cmd
}

func parseReplicas(s string) (int, error) {
	if s == "auto" || s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 5 {
		return 0, fmt.Errorf("--replicas %q: want auto or 1 to 5", s)
	}
	return n, nil
}

// setupStreams waits until the cluster has formed (every node of --routes online, or as
// many as the replicas asked for), then creates or updates the streams. Every node does
// this; whichever comes first creates them and the others find them as they are. Streams
// created with one replica before the cluster grew are scaled up.
func setupStreams(ctx context.Context, g *globals, ns *server.Server, js jetstream.JetStream, c streams.ClusterOptions, replicas int) (int, error) {
	size := streams.ExpectedClusterSize(c)
	if replicas > size {
		size = replicas
	}
	var st streams.ClusterState
	for {
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		st, err = streams.WaitCluster(waitCtx, ns, size)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		g.log.Warn().Err(err).Int("want", size).Msg("waiting for the JetStream cluster to form")
	}
	if replicas == 0 {
		replicas = st.Replicas()
	}
	for {
		setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := streams.EnsureStreams(setupCtx, js, streams.Config{Replicas: replicas})
		cancel()
		if err == nil {
			return replicas, nil
		}
		if ctx.Err() != nil || !retryableSetup(err) {
			return 0, err
		}
		g.log.Warn().Err(err).Msg("creating the streams; retrying")
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// retryableSetup: a cluster that has just formed may not answer stream requests yet.
func retryableSetup(err error) bool {
	return streams.IsTransient(err) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
