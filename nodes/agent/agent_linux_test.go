package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// requireRoot skips kernel tests for non-root users.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs and bridges")
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// twoHosts creates two "host" namespaces joined by an underlay veth (198.18.0.1/15 and
// 198.18.0.2/15) and removes them, and any VM namespace with the prefix, at the end.
func twoHosts(t *testing.T) (prefix, hostA, hostB string) {
	t.Helper()
	requireRoot(t)
	prefix = fmt.Sprintf("nsag%04x", rand.IntN(0xffff))
	hostA, hostB = prefix+"-a", prefix+"-b"
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
				_ = exec.Command("ip", "netns", "del", name).Run()
			}
		}
	})
	for _, h := range []string{hostA, hostB} {
		run(t, "ip", "netns", "add", h)
		run(t, "ip", "-n", h, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", hostA, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", hostB)
	for i, h := range []string{hostA, hostB} {
		run(t, "ip", "-n", h, "addr", "add", fmt.Sprintf("198.18.0.%d/15", i+1), "dev", "eth1")
		run(t, "ip", "-n", h, "link", "set", "eth1", "up")
		// Multicast VXLAN needs a route for the group out of the underlay.
		run(t, "ip", "-n", h, "route", "add", "224.0.0.0/4", "dev", "eth1")
	}
	return prefix, hostA, hostB
}

func startAgent(t *testing.T, url, host, netns, localIP string, l2pop bool) {
	t.Helper()
	cfg := &config.Config{Host: host, NATS: url, Netns: netns}
	cfg.VXLAN.LocalIP = localIP
	cfg.VXLAN.L2Population = l2pop
	cfg.Agent.ReportInterval.Duration = time.Second
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	go func() { done <- agent.Run(ctx, cfg, agent.Options{}, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", host, err)
		}
	})
}

func ping(netns, addr string) error {
	return exec.Command("ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", addr).Run()
}

func eventually(t *testing.T, timeout time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const (
	netID   = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	subnet  = "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
	portAID = "3d4e5f60-0000-4000-8000-00000000000a"
	portBID = "3d4e5f60-0000-4000-8000-00000000000b"
)

func vxlanTopology(hostA, hostB, prefix string) *nsv1.Topology {
	port := func(id, host, mac, ip, vm string) *nsv1.Port {
		return &nsv1.Port{Id: id, NetworkId: netID, Host: host, MacAddress: mac,
			FixedIps: []*nsv1.FixedIP{{SubnetId: subnet, IpAddress: ip}},
			Binding:  &nsv1.Binding{Type: "veth", Netns: vm}}
	}
	return &nsv1.Topology{
		Networks: []*nsv1.Network{{Id: netID, Name: "blue", NetworkType: "vxlan", SegmentationId: 1001, Mtu: 1450,
			Subnets: []*nsv1.Subnet{{Id: subnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1", IpVersion: 4}}}},
		Ports: []*nsv1.Port{
			port(portAID, hostA, "fa:16:3e:00:00:0a", "192.0.2.10", prefix+"-vm1"),
			port(portBID, hostB, "fa:16:3e:00:00:0b", "192.0.2.11", prefix+"-vm2"),
		},
	}
}

func TestPrivilegedVXLANAcrossHosts(t *testing.T) {
	for _, mode := range []struct {
		name  string
		l2pop bool
	}{{"multicast", false}, {"l2population", true}} {
		t.Run(mode.name, func(t *testing.T) {
			prefix, hostA, hostB := twoHosts(t)
			srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
			url := srv.NS.ClientURL()
			startAgent(t, url, "hostA", hostA, "198.18.0.1", mode.l2pop)
			startAgent(t, url, "hostB", hostB, "198.18.0.2", mode.l2pop)
			_, js := srv.Connect()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			topo := vxlanTopology("hostA", "hostB", prefix)
			if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{portAID, portBID} {
				if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 10*time.Second, "ping vm1 -> vm2 across hosts", func() error { return ping(prefix+"-vm1", "192.0.2.11") })

			// admin_state_up false: DOWN and no ping; back to true: ACTIVE and ping.
			topo.Ports[1].AdminStateUp = new(bool)
			if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
				t.Fatal(err)
			}
			if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: portBID, Phase: nsv1.Phase_PHASE_DOWN}); err != nil {
				t.Fatal(err)
			}
			if err := ping(prefix+"-vm1", "192.0.2.11"); err == nil {
				t.Fatal("ping works to an admin-down port")
			}
			topo.Ports[1].AdminStateUp = nil
			if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
				t.Fatal(err)
			}
			if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: portBID, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "ping after admin up", func() error { return ping(prefix+"-vm1", "192.0.2.11") })

			// Delete port B: its device goes; it was the last port of the network on host B,
			// so the bridge goes too.
			if _, err := streams.NewPublisher(js, "test").Delete(ctx, streams.KindPort, portBID); err != nil {
				t.Fatal(err)
			}
			if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: portBID, Phase: nsv1.Phase_PHASE_DELETED}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "bridge gone on host B", func() error {
				out, _ := exec.Command("ip", "-n", hostB, "-br", "link").Output()
				if strings.Contains(string(out), "brq6a0e4b8e-1c") || strings.Contains(string(out), "tap3d4e5f60-00") {
					return fmt.Errorf("devices left on host B:\n%s", out)
				}
				return nil
			})
		})
	}
}
