package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
)

func newAgentCmd(g *globals) *cobra.Command {
	var (
		configFile, host, netns, listen, store, mechanism string
		metricsAddr                                       string
		l2pop                                             bool
		localIP, firewallDriver                           string
		resync, report                                    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent --host H [--netns NS] [--nats URL] [--config FILE]",
		Short: "Run the per-host agent (with no --nats it runs an embedded JetStream server)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &config.Config{}
			if configFile != "" {
				c, err := config.Load(configFile)
				if err != nil {
					return err
				}
				cfg = c
			}
			flags := cmd.Flags()
			override := func(name string, dst *string, v string) {
				if flags.Changed(name) {
					*dst = v
				}
			}
			override("host", &cfg.Host, host)
			override("netns", &cfg.Netns, netns)
			override("store", &cfg.StoreDir, store)
			override("mechanism", &cfg.Mechanism, mechanism)
			override("local-ip", &cfg.VXLAN.LocalIP, localIP)
			override("firewall-driver", &cfg.SecurityGroup.FirewallDriver, firewallDriver)
			if flags.Changed("l2-population") {
				cfg.VXLAN.L2Population = l2pop
			}
			if flags.Changed("resync-interval") {
				cfg.Agent.ResyncInterval.Duration = resync
			}
			if flags.Changed("report-interval") {
				cfg.Agent.ReportInterval.Duration = report
			}
			if cmd.Flag("nats").Changed || os.Getenv("NATS_URL") != "" {
				cfg.NATS = g.natsURL
			}
			if cfg.Host == "" {
				if h, err := os.Hostname(); err == nil {
					cfg.Host = h
				}
			}
			if cfg.VXLAN.LocalIP == "" && cfg.VXLAN.EnableVXLAN == nil {
				off := false // no tunnel endpoint configured: VXLAN stays off instead of failing start
				cfg.VXLAN.EnableVXLAN = &off
			}
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("agent configuration is invalid:\n%w", err)
			}
			return agent.Run(cmd.Context(), cfg, agent.Options{Listen: listen, Metrics: metricsAddr,
				Security: agent.Security{Client: g.security(), ServerConfig: g.serverAuth}}, g.log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "agent config file (YAML, option names of linuxbridge_agent.ini)")
	f.StringVar(&host, "host", "", "host name of this agent (default: the machine's host name)")
	f.StringVar(&netns, "netns", "", "converge inside this network namespace")
	f.StringVar(&listen, "listen", "127.0.0.1:4222", "client address of the embedded JetStream server (when no --nats)")
	f.StringVar(&store, "store", "", "store directory of the embedded JetStream server (default /var/lib/netsource/jetstream)")
	f.StringVar(&mechanism, "mechanism", "", "linuxbridge or openvswitch")
	f.StringVar(&localIP, "local-ip", "", "VXLAN tunnel endpoint address (vxlan.local_ip)")
	f.StringVar(&firewallDriver, "firewall-driver", "", "nftables (security groups and anti-spoofing) or noop (securitygroup.firewall_driver)")
	f.BoolVar(&l2pop, "l2-population", false, "unicast VXLAN flooding from other agents' port status (vxlan.l2_population)")
	f.DurationVar(&resync, "resync-interval", 0, "periodic full resync (agent.resync_interval)")
	f.DurationVar(&report, "report-interval", 0, "heartbeat interval (agent.report_interval)")
	f.StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics on ADDR/metrics, e.g. 127.0.0.1:9101 (default: off)")
	return cmd
}
