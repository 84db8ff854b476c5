package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/netsource/netsource/ops"
)

func newDashboardCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "dashboard --listen ADDR",
		Short: "Serve the web dashboard: hosts, objects, errors, live events, convergence latency",
		Long: "Serve the web dashboard (everything embedded in the binary): hosts with heartbeat age " +
			"(down after 3 missed report intervals), objects per host by kind and phase, ERROR objects " +
			"with their reasons first, a live feed of status events and a convergence-latency chart, " +
			"updated live over server-sent events. /api/state has the same data as JSON.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("dashboard: listen on %s: %w", listen, err)
			}
			g.log.Info().Str("url", "http://"+ln.Addr().String()+"/").Str("nats", g.natsURL).Msg("serving the dashboard")
			// A user that may not read the desired stream (the dashboard role) sees objects by
			// id: said once here and on the page.
			fleet := ops.NewFleet(ops.Options{Notice: func(n string) { g.log.Warn().Msg(n) }})
			return ops.ServeFleet(cmd.Context(), js, ln, ops.Scope{}, fleet)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the dashboard on")
	return cmd
}
