package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/netsource/netsource/ops/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo [--until-ready]",
		Short: "Embedded server, two agents in sandbox namespaces, the dashboard and a sample topology (root)",
		Long: "Run a whole netsource on this machine, as root: an embedded JetStream server, two agents " +
			"(hostA and hostB, each in its own network namespace, joined by an underlay veth), the " +
			"dashboard, and a sample topology: a VXLAN network, VM ports on both hosts, a security group, " +
			"a load balancer with two backends and a tap. Shows the objects converging, says where the " +
			"dashboard, NATS and metrics are, and on Ctrl-C deletes the topology, stops everything and " +
			"removes the namespaces it created. Kinds the agents do not build yet are shown as such " +
			"instead of waited for. --until-ready cleans up and exits as soon as the topology has " +
			"converged (exit 0), or after --timeout (exit 1).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.LogLevel = g.logLevel
			return demo.Run(cmd.Context(), o, os.Stdout)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.UntilReady, "until-ready", false, "exit (after cleaning up) as soon as the topology has converged: for CI")
	f.StringVar(&o.Prefix, "prefix", "nsdemo", "prefix of the network namespaces the demo creates (and removes)")
	f.StringVar(&o.Dashboard, "listen", "127.0.0.1:8080", "dashboard address (a free port is picked when it is taken)")
	f.StringVar(&o.NATS, "nats-listen", "127.0.0.1:4222", "embedded JetStream server's client address (a free port is picked when it is taken)")
	f.StringVar(&o.Metrics, "metrics", "127.0.0.1:9101", "hostA's metrics address, hostB's is the next port; off for none")
	f.DurationVar(&o.ReportInterval, "report-interval", 2*time.Second, "the agents' heartbeat interval")
	f.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up waiting for the topology after this long")
	f.BoolVar(&o.Keep, "keep", false, "keep the work directory (JetStream store, logs)")
	return cmd
}
