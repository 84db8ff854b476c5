package ovs_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/links/linkstest"
	"github.com/netsource/netsource/nodes/ovs"
	"github.com/netsource/netsource/nodes/ovs/ovstest"
	"github.com/netsource/netsource/nodes/taas"
)

// host is one simulated host: a namespace with its own OVS and a dataplane on it.
type host struct {
	netns string
	ovs   *ovstest.Instance
	dp    *ovs.Dataplane
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs and runs Open vSwitch")
	}
	ovstest.Require(t)
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// namespaces creates namespaces <prefix>-<name> and removes every namespace with the
// test's prefix at the end, also on failure.
func namespaces(t *testing.T, names ...string) (string, []string) {
	t.Helper()
	requireRoot(t)
	prefix := fmt.Sprintf("nsov%04x", rand.IntN(0xffff))
	linkstest.RemoveNetnsOnCleanup(t, prefix)
	var out []string
	for _, n := range names {
		ns := prefix + "-" + n
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		out = append(out, ns)
	}
	return prefix, out
}

func newHost(t *testing.T, netns string, cfg ovs.Config) *host {
	t.Helper()
	o := ovstest.Start(t, netns)
	cfg.Netns, cfg.DB, cfg.RunDir = netns, o.DB, o.RunDir
	cfg.VerifyAfter = -1 // every sync compares with OVS: a second pass must find nothing to do
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dp, err := ovs.New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	return &host{netns: netns, ovs: o, dp: dp}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

const (
	net1 = "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01"
	net2 = "7b1f5c9f-2d8e-4b66-8c40-3a2b5d1f0b02"
)

func vethPort(id, network, netns, mac, cidr string) links.PortSpec {
	ip, n, _ := net.ParseCIDR(cidr)
	hw, _ := net.ParseMAC(mac)
	return links.PortSpec{ID: id, Device: links.TapName(id), Bridge: links.BridgeName(network), MTU: 1500, AdminUp: true,
		Binding: links.BindingVeth, Peer: links.VethPeer{Netns: netns, Name: links.PeerName(id), MAC: hw,
			Addresses: []*net.IPNet{{IP: ip, Mask: n.Mask}}}}
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

// TestPrivilegedOVSLocalNetworkIsIdempotent plugs two VMs into a local network on br-int,
// checks they ping and are isolated from a second network, and that ensuring everything
// again changes nothing (every flow netsource writes is in the form OVS prints back).
func TestPrivilegedOVSLocalNetworkIsIdempotent(t *testing.T) {
	prefix, ns := namespaces(t, "host")
	h := newHost(t, ns[0], ovs.Config{LocalIP: net.ParseIP("198.18.0.1")})
	ctx := ctxT(t)
	nets := []links.NetworkSpec{{ID: net1, Bridge: links.BridgeName(net1)}, {ID: net2, Bridge: links.BridgeName(net2)}}
	ports := []links.PortSpec{
		vethPort("a1000000-0000-4000-8000-000000000001", net1, prefix+"-vm1", "fa:16:3e:00:00:01", "192.0.2.1/24"),
		vethPort("a2000000-0000-4000-8000-000000000002", net1, prefix+"-vm2", "fa:16:3e:00:00:02", "192.0.2.2/24"),
		vethPort("a3000000-0000-4000-8000-000000000003", net2, prefix+"-vm3", "fa:16:3e:00:00:03", "192.0.2.3/24"),
	}
	apply := func() {
		t.Helper()
		for _, n := range nets {
			if err := h.dp.EnsureNetwork(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range ports {
			if _, err := h.dp.EnsurePort(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply()
	eventually(t, 10*time.Second, "vm1 -> vm2 on one network", func() error { return ping(prefix+"-vm1", "192.0.2.2") })
	if ping(prefix+"-vm1", "192.0.2.3") == nil {
		t.Fatal("vm1 reaches vm3 on another network")
	}
	tcpEcho(t, prefix+"-vm1", prefix+"-vm2", "192.0.2.2:8080")
	before := h.dp.Mutations()
	apply()
	if m := h.dp.Mutations() - before; m != 0 {
		t.Fatalf("ensuring the same networks and ports again made %d mutations", m)
	}
	tags := h.ovs.MustVsctl("--format=csv", "--columns=name,tag", "list", "Port")
	if !strings.Contains(tags, links.TapName(ports[0].ID)+",1") || !strings.Contains(tags, links.TapName(ports[2].ID)+",2") {
		t.Fatalf("local VLAN tags:\n%s", tags)
	}
}

// tcpEcho opens a TCP connection from namespace client to an echo listener at addr in
// namespace server and checks a round trip. TCP needs complete checksums: the userspace
// datapath forwards frames before the kernel fills offloaded ones in, so the VMs must compute
// them (links.VethPeer.TxChecksumOff); without that ping works and TCP does not.
func tcpEcho(t *testing.T, client, server, addr string) {
	t.Helper()
	var ln net.Listener
	if err := links.InNamedNetns(server, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	var conn net.Conn
	if err := links.InNamedNetns(client, func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		t.Fatalf("TCP from %s to %s: %v", client, addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("netsource\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "netsource\n" {
		t.Fatalf("TCP echo from %s to %s: %q %v", client, addr, buf, err)
	}
}

// TestPrivilegedOVSFlowsAreCanonical programs every kind of flow (provider networks, VXLAN
// with l2population, tunnels, tap services and flows) and checks that a second sync
// changes nothing.
func TestPrivilegedOVSFlowsAreCanonical(t *testing.T) {
	prefix, ns := namespaces(t, "host")
	h := newHost(t, ns[0], ovs.Config{LocalIP: net.ParseIP("198.18.0.1"), L2Population: true})
	ctx := ctxT(t)
	h.ovs.MustVsctl("add-br", "br-phys", "--", "set", "Bridge", "br-phys", "datapath_type=netdev")
	netVLAN := links.NetworkSpec{ID: net1, Bridge: links.BridgeName(net1), Uplink: links.Uplink{Kind: links.UplinkVLAN, Device: "br-phys", VLANID: 101}}
	netVX := links.NetworkSpec{ID: net2, Bridge: links.BridgeName(net2), Uplink: links.Uplink{Kind: links.UplinkVXLAN, VXLAN: links.VXLAN{VNI: 1001}}}
	p1 := vethPort("b1000000-0000-4000-8000-000000000001", net1, prefix+"-vm1", "fa:16:3e:00:00:01", "192.0.2.1/24")
	p2 := vethPort("b2000000-0000-4000-8000-000000000002", net2, prefix+"-vm2", "fa:16:3e:00:00:02", "198.51.100.2/24")
	steps := []func() error{
		func() error { return h.dp.EnsureNetwork(ctx, netVLAN) },
		func() error { return h.dp.EnsureNetwork(ctx, netVX) },
		func() error { _, err := h.dp.EnsurePort(ctx, p1); return err },
		func() error { _, err := h.dp.EnsurePort(ctx, p2); return err },
		func() error { return h.dp.SetTunnelPeer(ctx, "hostB", net.ParseIP("198.18.0.2")) },
		func() error {
			return h.dp.SetFDB(ctx, "vxlan-1001", []links.FDBEntry{
				{MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}, Dst: net.ParseIP("198.18.0.3")},
				{MAC: net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 0, 9}, Dst: net.ParseIP("198.18.0.3")}})
		},
		func() error {
			return h.dp.EnsureService(ctx, taas.Service{ID: "svc1", TapID: 3900, PortID: p2.ID, Device: p2.Device})
		},
		func() error {
			return h.dp.EnsureFlow(ctx, taas.Flow{ID: "flow1", TapID: 3900, Local: true, SourcePortID: p1.ID, SourceDevice: p1.Device,
				Direction: taas.DirectionBoth})
		},
		func() error {
			return h.dp.EnsureFlow(ctx, taas.Flow{ID: "flow2", TapID: 3901, SourcePortID: p1.ID, SourceDevice: p1.Device,
				Direction: taas.DirectionOut})
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	before := h.dp.Mutations()
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d again: %v", i, err)
		}
	}
	if m := h.dp.Mutations() - before; m != 0 {
		for _, br := range []string{"br-int", "br-tun", "br-tap", "br-phys"} {
			t.Logf("%s:\n%s", br, strings.Join(h.ovs.Flows(br), "\n"))
		}
		t.Fatalf("the same state applied again made %d mutations", m)
	}
	// A foreign flow (another cookie) survives everything netsource does.
	h.ovs.MustOfctl("add-flow", "br-int", "cookie=0x1234,table=0,priority=100,udp,tp_dst=9,actions=drop")
	if err := h.dp.DeleteFlow(ctx, taas.Flow{ID: "flow1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.dp.DeleteService(ctx, taas.Service{ID: "svc1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.dp.DeleteNetwork(ctx, netVLAN); err != nil {
		t.Fatal(err)
	}
	if got := h.ovs.Flows("br-int", "cookie=0x1234/-1"); len(got) != 1 {
		t.Fatalf("foreign flow: %v", got)
	}
	if got := h.ovs.Flows("br-tap", fmt.Sprintf("cookie=%#x/-1", ovs.TapServiceCookie(3900))); len(got) != 0 {
		t.Fatalf("flows of a deleted tap service left: %v", got)
	}
}

// TestPrivilegedOVSInventoryAndPruning: Inventory lists port devices and one entry per
// network record; DeleteDevice of a network entry forgets its local VLAN and flows, of a
// port device unplugs and deletes it; a new dataplane on the same OVS (an agent restart)
// finds the records and changes nothing.
func TestPrivilegedOVSInventoryAndPruning(t *testing.T) {
	prefix, ns := namespaces(t, "host")
	h := newHost(t, ns[0], ovs.Config{})
	ctx := ctxT(t)
	n1 := links.NetworkSpec{ID: net1, Bridge: links.BridgeName(net1)}
	n2 := links.NetworkSpec{ID: net2, Bridge: links.BridgeName(net2)}
	p1 := vethPort("c1000000-0000-4000-8000-000000000001", net1, prefix+"-vm1", "fa:16:3e:00:00:01", "192.0.2.1/24")
	for _, n := range []links.NetworkSpec{n1, n2} {
		if err := h.dp.EnsureNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.dp.EnsurePort(ctx, p1); err != nil {
		t.Fatal(err)
	}
	inventory := func(dp *ovs.Dataplane) []string {
		devs, err := dp.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range devs {
			out = append(out, d.Name+" "+d.Kind)
		}
		slices.Sort(out)
		return out
	}
	want := []string{links.BridgeName(net1) + " ovs-network", links.BridgeName(net2) + " ovs-network", p1.Device + " veth"}
	if got := inventory(h.dp); !slices.Equal(got, want) {
		t.Fatalf("inventory %v, want %v", got, want)
	}
	// A restart: same records, no change.
	h.dp.Close()
	dp2, err := ovs.New(ctx, ovs.Config{Netns: h.netns, DB: h.ovs.DB, RunDir: h.ovs.RunDir}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp2.Close)
	for _, n := range []links.NetworkSpec{n1, n2} {
		if err := dp2.EnsureNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dp2.EnsurePort(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if m := dp2.Mutations(); m != 0 {
		t.Fatalf("restarted dataplane made %d mutations", m)
	}
	// Pruning: network 2 and the port are no longer wanted.
	if err := dp2.DeleteDevice(ctx, links.BridgeName(net2)); err != nil {
		t.Fatal(err)
	}
	if err := dp2.DeleteDevice(ctx, p1.Device); err != nil {
		t.Fatal(err)
	}
	if err := dp2.DeleteDevice(ctx, "br-int"); err == nil {
		t.Fatal("DeleteDevice accepted a device netsource does not own")
	}
	if got := inventory(dp2); !slices.Equal(got, want[:1]) {
		t.Fatalf("inventory after pruning %v, want %v", got, want[:1])
	}
	if ports := h.ovs.MustVsctl("list-ports", "br-int"); strings.Contains(ports, p1.Device) {
		t.Fatalf("pruned port still on br-int:\n%s", ports)
	}
	if ids := h.ovs.MustVsctl("get", "Bridge", "br-int", "external_ids"); strings.Contains(ids, net2) || !strings.Contains(ids, net1) {
		t.Fatalf("network records after pruning: %s", ids)
	}
}

// TestPrivilegedOVSParallelNetworksGetDistinctLocalVLANs: network actors converge in
// parallel; each network must get its own local VLAN (two sharing one would switch each
// other's frames and lose one's flood flow). Found by a trunk test under CI load.
func TestPrivilegedOVSParallelNetworksGetDistinctLocalVLANs(t *testing.T) {
	_, ns := namespaces(t, "host")
	h := newHost(t, ns[0], ovs.Config{LocalIP: net.ParseIP("198.18.0.1")})
	ctx := ctxT(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", 0x6a000000+i)
			errs <- h.dp.EnsureNetwork(ctx, links.NetworkSpec{ID: id, Bridge: links.BridgeName(id),
				Uplink: links.Uplink{Kind: links.UplinkVXLAN, VXLAN: links.VXLAN{VNI: uint32(2000 + i)}}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := h.ovs.MustVsctl("get", "Bridge", "br-int", "external_ids")
	seen := map[string]string{}
	for _, m := range regexp.MustCompile(`netsource-net-([0-9a-f-]+)="lvid=(\d+)`).FindAllStringSubmatch(ids, -1) {
		if other, dup := seen[m[2]]; dup {
			t.Fatalf("networks %s and %s share local VLAN %s", other, m[1], m[2])
		}
		seen[m[2]] = m[1]
	}
	if len(seen) != n {
		t.Fatalf("%d local VLAN records for %d networks:\n%s", len(seen), n, ids)
	}
	if flood := h.ovs.Flows("br-tun", "table=4"); len(flood) < n {
		t.Fatalf("br-tun table 4 has %d flows for %d networks:\n%s", len(flood), n, strings.Join(flood, "\n"))
	}
}
