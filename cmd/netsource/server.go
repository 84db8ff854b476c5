package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/netsource/netsource/streams"
)

func newServerCmd(g *globals) *cobra.Command {
	var store, listen string
	cmd := &cobra.Command{
		Use:   "server --store DIR [--listen 127.0.0.1:4222]",
		Short: "Run a standalone embedded JetStream server holding the netsource streams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := streams.StartServer(streams.ServerOptions{StoreDir: store, Listen: listen, Log: g.log})
			if err != nil {
				return err
			}
			defer func() {
				ns.Shutdown()
				ns.WaitForShutdown()
			}()
			nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
			if err != nil {
				return fmt.Errorf("connect to embedded server: %w", err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := streams.EnsureStreams(ctx, js, streams.Config{}); err != nil {
				return err
			}
			g.log.Info().Str("store", store).Str("listen", ns.ClientURL()).Msg("serving JetStream")
			<-cmd.Context().Done()
			g.log.Info().Msg("shutting down")
			return nil
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "directory that keeps the streams across restarts (required)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "client listen address")
	_ = cmd.MarkFlagRequired("store")
	return cmd
}
