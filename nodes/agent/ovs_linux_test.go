package agent_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/ovs/ovstest"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// ovsHost is a simulated host of the openvswitch mechanism: a namespace with its own OVS,
// the underlay (eth1, 198.18.0.x/15) on an OVS bridge br-ul (the userspace datapath sends
// tunnel packets only through OVS bridges), the physical network physnet1 (eth2, shared with
// the other host) on br-phys, and an agent config file pointing at all that.
type ovsHost struct {
	name, netns, localIP, config string
	ovs                          *ovstest.Instance
}

// ovsHosts makes two such hosts, hostA and hostB.
func ovsHosts(t *testing.T, l2pop bool) (prefix string, a, b *ovsHost) {
	t.Helper()
	ovstest.Require(t)
	prefix, nsA, nsB := twoHosts(t)
	run(t, "ip", "-n", nsA, "link", "add", "eth2", "type", "veth", "peer", "name", "eth2", "netns", nsB)
	hosts := []*ovsHost{{name: "hostA", netns: nsA, localIP: "198.18.0.1"}, {name: "hostB", netns: nsB, localIP: "198.18.0.2"}}
	for _, h := range hosts {
		h.ovs = ovstest.Start(t, h.netns)
		h.ovs.MustVsctl("add-br", "br-ul", "--", "set", "Bridge", "br-ul", "datapath_type=netdev", "--", "add-port", "br-ul", "eth1")
		run(t, "ip", "-n", h.netns, "addr", "flush", "dev", "eth1")
		run(t, "ip", "-n", h.netns, "addr", "add", h.localIP+"/15", "dev", "br-ul")
		run(t, "ip", "-n", h.netns, "link", "set", "br-ul", "up")
		h.ovs.MustVsctl("add-br", "br-phys", "--", "set", "Bridge", "br-phys", "datapath_type=netdev", "--", "add-port", "br-phys", "eth2")
		run(t, "ip", "-n", h.netns, "link", "set", "eth2", "up")
		h.config = filepath.Join(t.TempDir(), h.name+".yaml")
		cfg := fmt.Sprintf("host: %s\nnetns: %s\nmechanism: openvswitch\nbridge_mappings: {physnet1: br-phys}\n"+
			"vxlan: {local_ip: %s, l2_population: %t}\novs: {db: %q, rundir: %q, datapath_type: netdev}\n",
			h.name, h.netns, h.localIP, l2pop, h.ovs.DB, h.ovs.RunDir)
		if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return prefix, hosts[0], hosts[1]
}

func (h *ovsHost) start(t *testing.T, url string) *agentProc {
	t.Helper()
	return startAgentProc(t, url, h.name, h.netns, "--config", h.config)
}

// netsourceFlows is every flow netsource installed on the host's bridges (learned ones
// excluded), without counters, as operators compare them.
func (h *ovsHost) netsourceFlows(t *testing.T) []string {
	t.Helper()
	var all []string
	for _, br := range []string{"br-int", "br-tun", "br-tap", "br-phys"} {
		for _, f := range h.ovs.Flows(br, "cookie=0x4e53000000000000/0xffff000000000000") {
			if strings.Contains(f, "hard_timeout=") {
				continue // learned
			}
			all = append(all, br+": "+f)
		}
	}
	return all
}

// countFlows counts the flows with exactly this cookie on the host's bridges.
func (h *ovsHost) countFlows(t *testing.T, cookie uint64) int {
	t.Helper()
	n := 0
	for _, br := range []string{"br-int", "br-tun", "br-tap", "br-phys"} {
		n += len(h.ovs.Flows(br, fmt.Sprintf("cookie=%#x/-1", cookie)))
	}
	return n
}

// packet is one captured frame: IPv4 ICMP echo fields (Type 8 request, 0 reply), the
// 802.1Q VLAN if the frame had one (-1 otherwise).
type packet struct {
	Src, Dst string
	ICMPType int
	VLAN     int
}

func (p packet) String() string {
	kind := map[int]string{8: "request", 0: "reply"}[p.ICMPType]
	return fmt.Sprintf("%s>%s %s vlan=%d", p.Src, p.Dst, kind, p.VLAN)
}

// capture reads the frames received on dev inside netns with a raw packet socket (not
// those the namespace sends) until stop is called, keeping IPv4 ICMP echo requests and
// replies. It returns once the socket is open, so nothing sent after it is missed.
func capture(t *testing.T, netnsName, dev string) (stop func() []packet) {
	t.Helper()
	fd, err := packetSocket(netnsName, dev)
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, netnsName, err)
	}
	var (
		mu   sync.Mutex
		pkts []packet
		done = make(chan struct{})
		quit = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf, oob := make([]byte, 65536), make([]byte, 256)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				continue // read timeout: look at quit again
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if p, ok := parseICMP(withVLAN(buf[:n], oob[:oobn])); ok {
				mu.Lock()
				pkts = append(pkts, p)
				mu.Unlock()
			}
		}
	}()
	var once sync.Once
	stop = func() []packet {
		once.Do(func() {
			time.Sleep(300 * time.Millisecond) // copies in flight arrive
			close(quit)
			<-done
			unix.Close(fd)
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]packet(nil), pkts...)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// packetSocket opens an AF_PACKET socket bound to dev inside netnsName (on a thread
// switched there and back), with a 100 ms read timeout.
func packetSocket(netnsName, dev string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		defer origin.Close()
		target, err := netns.GetFromName(netnsName)
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		fd, err := func() (int, error) {
			ifc, err := net.InterfaceByName(dev)
			if err != nil {
				return -1, err
			}
			proto := int(htons(unix.ETH_P_ALL))
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
			if err != nil {
				return -1, err
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
				unix.Close(fd)
				return -1, err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
				unix.Close(fd)
				return -1, err
			}
			tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}()
		if serr := netns.Set(origin); serr != nil {
			res <- result{-1, serr}
			return // the thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		res <- result{fd, err}
	}()
	r := <-res
	return r.fd, r.err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// withVLAN puts back the 802.1Q tag the kernel took off the frame (VLAN offload) and
// reports in the packet's auxiliary data, as tcpdump does.
func withVLAN(frame, oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return frame
	}
	for _, m := range msgs {
		// struct tpacket_auxdata: status, len, snaplen (u32), mac, net, vlan_tci, vlan_tpid (u16)
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < 20 {
			continue
		}
		status := binary.NativeEndian.Uint32(m.Data[0:4])
		tci, tpid := binary.NativeEndian.Uint16(m.Data[16:18]), binary.NativeEndian.Uint16(m.Data[18:20])
		if status&unix.TP_STATUS_VLAN_VALID == 0 || len(frame) < 12 {
			continue
		}
		if tpid == 0 {
			tpid = 0x8100
		}
		tag := make([]byte, 4)
		binary.BigEndian.PutUint16(tag[0:2], tpid)
		binary.BigEndian.PutUint16(tag[2:4], tci)
		return append(append(append([]byte{}, frame[:12]...), tag...), frame[12:]...)
	}
	return frame
}

// parseICMP reads an Ethernet frame (with at most one 802.1Q tag) carrying IPv4 ICMP echo.
func parseICMP(b []byte) (packet, bool) {
	p := packet{VLAN: -1}
	if len(b) < 14 {
		return p, false
	}
	et := binary.BigEndian.Uint16(b[12:14])
	off := 14
	if et == 0x8100 && len(b) >= 18 {
		p.VLAN = int(binary.BigEndian.Uint16(b[14:16]) & 0x0fff)
		et = binary.BigEndian.Uint16(b[16:18])
		off = 18
	}
	if et != 0x0800 || len(b) < off+20 {
		return p, false
	}
	ip := b[off:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 1 || len(ip) < ihl+8 {
		return p, false
	}
	icmp := ip[ihl:]
	if icmp[0] != 0 && icmp[0] != 8 {
		return p, false
	}
	p.Src, p.Dst, p.ICMPType = net.IP(ip[12:16]).String(), net.IP(ip[16:20]).String(), int(icmp[0])
	return p, true
}

// pingN sends n echo requests, 50 ms apart, and fails unless all are answered.
func pingN(t *testing.T, netnsName, addr string, n int) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netnsName, "ping", "-c", fmt.Sprint(n), "-i", "0.05", "-W", "1", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", addr, netnsName, err, out)
	}
}

// countPkts counts captured packets by kind: requests and replies between a and b.
func countPkts(pkts []packet, src, dst string, icmpType int) int {
	n := 0
	for _, p := range pkts {
		if p.Src == src && p.Dst == dst && p.ICMPType == icmpType {
			n++
		}
	}
	return n
}

const (
	vlanNetID  = "8c2a6d10-3e4f-4a5b-9c6d-7e8f9a0b1c02"
	vlanSubnet = "9d3b7e21-4f50-4b6c-8d7e-8f9a0b1c2d03"
	portCID    = "3d4e5f6c-0000-4000-8000-00000000000c"
	portDID    = "3d4e5f6d-0000-4000-8000-00000000000d"
)

// TestPrivilegedOVSVXLANAndVLANAcrossHosts: with the openvswitch mechanism, VMs on a VXLAN
// network (br-tun tunnels learnt from heartbeats) and on a VLAN network (br-phys on a
// physical link shared by the hosts) ping each other across hosts, and the VLAN's 802.1Q
// tag is on the physical link.
func TestPrivilegedOVSVXLANAndVLANAcrossHosts(t *testing.T) {
	prefix, a, b := ovsHosts(t, false)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	a.start(t, srv.NS.ClientURL())
	b.start(t, srv.NS.ClientURL())
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := vxlanTopology("hostA", "hostB", prefix)
	topo.Networks = append(topo.Networks, &nsv1.Network{Id: vlanNetID, Name: "vlan", NetworkType: "vlan", PhysicalNetwork: "physnet1",
		SegmentationId: 100, Mtu: 1500, Subnets: []*nsv1.Subnet{{Id: vlanSubnet, Cidr: "198.51.100.0/24", IpVersion: 4}}})
	vlanPort := func(id, host, mac, ip, vm string) *nsv1.Port {
		return &nsv1.Port{Id: id, NetworkId: vlanNetID, Host: host, MacAddress: mac,
			FixedIps: []*nsv1.FixedIP{{SubnetId: vlanSubnet, IpAddress: ip}}, Binding: &nsv1.Binding{Type: "veth", Netns: vm}}
	}
	topo.Ports = append(topo.Ports, vlanPort(portCID, "hostA", "fa:16:3e:00:00:0c", "198.51.100.12", prefix+"-vm3"),
		vlanPort(portDID, "hostB", "fa:16:3e:00:00:0d", "198.51.100.13", prefix+"-vm4"))
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{portAID, portBID, portCID, portDID} {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "ping vm1 -> vm2 over VXLAN (OVS tunnels)", func() error { return ping(prefix+"-vm1", "192.0.2.11") })

	onWire := capture(t, b.netns, "eth2")
	eventually(t, 20*time.Second, "ping vm3 -> vm4 over VLAN 100 (br-phys)", func() error { return ping(prefix+"-vm3", "198.51.100.13") })
	pingN(t, prefix+"-vm3", "198.51.100.13", 3)
	pkts := onWire()
	tagged := 0
	for _, p := range pkts {
		if p.Src == "198.51.100.12" && p.Dst == "198.51.100.13" {
			if p.VLAN != 100 {
				t.Fatalf("echo request on the physical link with VLAN %d, want 100: %v", p.VLAN, pkts)
			}
			tagged++
		}
	}
	if tagged < 3 {
		t.Fatalf("%d tagged echo requests on the physical link, want at least 3: %v", tagged, pkts)
	}
	t.Logf("physical link eth2 of hostB carried %d echo requests, all tagged with VLAN 100", tagged)
	// Isolation: the VXLAN VM does not reach the VLAN network.
	if ping(prefix+"-vm1", "198.51.100.13") == nil {
		t.Fatal("vm1 on the VXLAN network reaches vm4 on the VLAN network")
	}
}

// TestPrivilegedOVSVXLANL2Population: with l2_population the OVS mechanism floods a VXLAN
// network only to the VTEPs other agents' port status names and sends known MACs straight
// to their VTEP (br-tun tables 22 and 20), as the OVS agent's l2pop does.
func TestPrivilegedOVSVXLANL2Population(t *testing.T) {
	prefix, a, b := ovsHosts(t, true)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	a.start(t, srv.NS.ClientURL())
	b.start(t, srv.NS.ClientURL())
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, vxlanTopology("hostA", "hostB", prefix)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{portAID, portBID} {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "ping vm1 -> vm2 over VXLAN with l2population", func() error { return ping(prefix+"-vm1", "192.0.2.11") })
	eventually(t, 10*time.Second, "l2population unicast flow on hostA", func() error {
		flows := strings.Join(a.ovs.Flows("br-tun", "table=20"), "\n")
		if !strings.Contains(flows, "dl_dst=fa:16:3e:00:00:0b") {
			return fmt.Errorf("br-tun table 20:\n%s", flows)
		}
		return nil
	})
}
