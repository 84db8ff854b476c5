package agent_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/firewall"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// Security groups and anti-spoofing end to end: two agent processes with
// securitygroup.firewall_driver nftables, a VXLAN network, vm1 on host A and vm2 on host B,
// real TCP, ICMP and ARP between the VM namespaces.

const (
	fwWebID     = "1b2c3d4e-0000-4000-8000-0000000000f1"
	fwClientsID = "1b2c3d4e-0000-4000-8000-0000000000f2"
	fwVM1MAC    = "fa:16:3e:00:00:0a"
	fwVM1IP     = "192.0.2.10"
	fwVM2IP     = "192.0.2.11"
	fwSpoofIP   = "192.0.2.99"
)

func fwRule(n int, dir, proto string, lo, hi int32, prefix, group string) *nsv1.SecurityGroupRule {
	r := &nsv1.SecurityGroupRule{Id: fmt.Sprintf("1b2c3d4e-0000-4000-8000-%012x", 0xe0+n), Direction: dir, Ethertype: "IPv4",
		Protocol: proto, RemoteIpPrefix: prefix, RemoteGroupId: group}
	if lo >= 0 {
		r.PortRangeMin = &lo
	}
	if hi >= 0 {
		r.PortRangeMax = &hi
	}
	return r
}

// fwTopology: vm2 is in group web (tcp/8080 from 192.0.2.0/24, tcp/5432 from the members of
// group clients, all egress); vm1 starts in no group (ingress denied, egress allowed).
func fwTopology(prefix string) *nsv1.Topology {
	topo := vxlanTopology("hostA", "hostB", prefix)
	topo.Ports[1].SecurityGroups = []string{fwWebID}
	topo.SecurityGroups = []*nsv1.SecurityGroup{
		{Id: fwWebID, Name: "web", Rules: []*nsv1.SecurityGroupRule{
			fwRule(1, "ingress", "tcp", 8080, 8080, "192.0.2.0/24", ""),
			fwRule(2, "ingress", "tcp", 5432, 5432, "", fwClientsID),
			fwRule(3, "egress", "", -1, -1, "", ""),
		}},
		{Id: fwClientsID, Name: "clients", Rules: []*nsv1.SecurityGroupRule{fwRule(4, "egress", "", -1, -1, "", "")}},
	}
	return topo
}

// startFirewallAgent runs an agent with the nftables firewall driver.
func startFirewallAgent(t *testing.T, url, host, netns, localIP string) *agentProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), host+"-firewall.yaml")
	cfg := fmt.Sprintf("host: %s\nnetns: %s\nvxlan: {local_ip: %s}\nsecuritygroup: {firewall_driver: nftables}\n", host, netns, localIP)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return startAgentProc(t, url, host, netns, "--config", path)
}

// fwListen runs TCP echo servers on the ports inside a VM namespace until the test ends.
func fwListen(t *testing.T, vm string, ports ...int) {
	t.Helper()
	for _, p := range ports {
		var l net.Listener
		if err := firewall.InNetns(vm, func() (err error) { l, err = net.Listen("tcp4", fmt.Sprintf(":%d", p)); return err }); err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
		t.Cleanup(func() { l.Close() })
	}
}

// fwConnect opens a TCP connection from a VM namespace (optionally from src) and checks
// that one byte makes the round trip.
func fwConnect(vm, src, dst string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := firewall.InNetns(vm, func() error {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		c, err = d.Dial("tcp4", dst)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := fwEcho(c, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func fwEcho(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err
}

func fwCanConnect(vm, src, dst string) error {
	c, err := fwConnect(vm, src, dst, time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// fwQuick is a connection attempt with a short timeout, for polling: between VM
// namespaces on one machine a SYN/ACK takes well under a millisecond, so 30 ms without one
// means the SYN was dropped.
func fwQuick(vm, src, dst string) error {
	c, err := fwConnect(vm, src, dst, 30*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}

// fwBlocked checks that a connection does not get through (the SYN is dropped: a timeout,
// not a refusal).
func fwBlocked(t *testing.T, vm, src, dst string) {
	t.Helper()
	err := fwCanConnect(vm, src, dst)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s -> %s from %q: got %v, want a timeout (dropped)", vm, dst, src, err)
	}
}

// fwUntil polls cond every 20 ms and returns how long it took to hold.
func fwUntil(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fwARPClaims sends ARP replies from vm claiming ip with the VM's MAC, and counts how many
// such frames reach the sniffer in another VM.
func fwARPClaims(t *testing.T, from, to, fromDev, toDev, mac, ip string) int {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	claimed := net.ParseIP(ip).To4()
	var sniff int
	if err := firewall.InNetns(to, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(fwHtons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		sniff = fd
		ifi, err := net.InterfaceByName(toDev)
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 200000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: fwHtons(unix.ETH_P_ARP), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sniff)

	frame := make([]byte, 42)
	copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:12], hw)
	binary.BigEndian.PutUint16(frame[12:], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(frame[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(frame[16:], 0x0800) // IPv4
	frame[18], frame[19] = 6, 4
	binary.BigEndian.PutUint16(frame[20:], 2) // reply
	copy(frame[22:28], hw)
	copy(frame[28:32], claimed)
	copy(frame[32:38], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[38:42], claimed)
	if err := firewall.InNetns(from, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(fromDev)
		if err != nil {
			return err
		}
		for range 5 {
			if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n := 0
	buf := make([]byte, 1500)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		m, _, err := unix.Recvfrom(sniff, buf, 0)
		if err != nil {
			continue // receive timeout: keep listening until the deadline
		}
		if m >= 42 && binary.BigEndian.Uint16(buf[20:]) == 2 && net.IP(buf[28:32]).Equal(claimed) && net.HardwareAddr(buf[22:28]).String() == hw.String() {
			n++
		}
	}
	return n
}

func fwHtons(v uint16) uint16 { return v<<8 | v>>8 }

func fwApply(t *testing.T, ctx context.Context, js jetstream.JetStream, topo *nsv1.Topology) {
	t.Helper()
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
}

func fwWaitGroup(t *testing.T, ctx context.Context, js jetstream.JetStream, host, id string) *nsv1.StatusEvent {
	t.Helper()
	ev, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindSecGroup, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE, Host: host})
	if err != nil {
		t.Fatalf("security group %s on %s: %v", id, host, err)
	}
	return ev
}

// withoutState drops the netsource-state set (the hash of the applied tables) from a listing.
func withoutState(listing string) string {
	var out []string
	skip := false
	for _, line := range strings.Split(listing, "\n") {
		switch {
		case line == "\tset netsource-state {":
			skip = true
		case skip:
			skip = line != "\t}"
		default:
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func nftRuleset(t *testing.T, netns string) string {
	t.Helper()
	return run(t, "ip", "netns", "exec", netns, "nft", "list", "ruleset")
}

func TestPrivilegedFirewallSecurityGroups(t *testing.T) {
	prefix, hostA, hostB := twoHosts(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	outer := t // agents live as long as the whole test, not one step
	startFirewallAgent(t, url, "hostA", hostA, "198.18.0.1")
	agentB := startFirewallAgent(t, url, "hostB", hostB, "198.18.0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	topo := fwTopology(prefix)
	fwApply(t, ctx, js, topo)
	for _, id := range []string{portAID, portBID} {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	ev := fwWaitGroup(t, ctx, js, "hostB", fwWebID)
	if ev.GetDetails()["port_ids"] != portBID {
		t.Fatalf("web on hostB: %v", ev)
	}
	vm1, vm2 := prefix+"-vm1", prefix+"-vm2"
	vm1Dev := links.PeerName(portAID)
	fwListen(t, vm2, 8080, 8081, 5432)
	web, web2, db := fwVM2IP+":8080", fwVM2IP+":8081", fwVM2IP+":5432"

	t.Run("tcp 8080 from 192.0.2.0/24 passes, 8081 does not", func(t *testing.T) {
		took := fwUntil(t, 15*time.Second, "connect to 8080", func() error { return fwCanConnect(vm1, "", web) })
		t.Logf("8080 reachable %s after the group was ACTIVE", took.Round(time.Millisecond))
		fwBlocked(t, vm1, "", web2)
		// Ingress of vm1 is denied (no groups): vm2 cannot open a connection to it.
		fwListen(t, vm1, 8080)
		fwBlocked(t, vm2, "", fwVM1IP+":8080")
	})

	t.Run("ICMP blocked until a rule allows it, without touching the port", func(t *testing.T) {
		if err := ping(vm1, fwVM2IP); err == nil {
			t.Fatal("ping passes without an ICMP rule")
		}
		since := time.Now()
		topo.SecurityGroups[0].Rules = append(topo.SecurityGroups[0].Rules, fwRule(5, "ingress", "icmp", -1, -1, "", ""))
		fwApply(t, ctx, js, topo)
		ev := fwWaitGroup(t, ctx, js, "hostB", fwWebID)
		t.Logf("rule change ACTIVE on hostB, converged in %s: %s", ev.GetConvergence().AsDuration(), ev.GetReason())
		if err := ping(vm1, fwVM2IP); err != nil {
			t.Fatalf("ping after the ICMP rule is ACTIVE: %v", err)
		}
		if n := statuses.count(since, func(ev *nsv1.StatusEvent) bool { return ev.GetKind() == "port" }); n != 0 {
			t.Fatalf("the rule change re-plugged ports: %d port status events", n)
		}
	})

	t.Run("remote group member on the other host: allowed within 1s, blocked after it leaves", func(t *testing.T) {
		fwBlocked(t, vm1, "", db)
		start := time.Now()
		topo.Ports[0].SecurityGroups = []string{fwClientsID}
		fwApply(t, ctx, js, topo)
		took := fwUntil(t, 10*time.Second, "connect to 5432 after joining clients", func() error { return fwQuick(vm1, "", db) })
		t.Logf("vm1 joined clients on hostA: 5432 on hostB reachable after %s", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("member on another host allowed after %s, want within 1s", took)
		}
		t.Logf("(%s from publishing the port update)", time.Since(start).Round(time.Millisecond))
		topo.Ports[0].SecurityGroups = nil
		fwApply(t, ctx, js, topo)
		left := fwUntil(t, 10*time.Second, "5432 blocked after leaving clients", func() error {
			if err := fwQuick(vm1, "", db); err == nil {
				return errors.New("still reachable")
			}
			return nil
		})
		t.Logf("vm1 left clients: 5432 blocked after %s (polled with 30 ms connection attempts)", left.Round(time.Millisecond))
		fwBlocked(t, vm1, "", db)
	})

	t.Run("anti-spoofing: foreign address, MAC and ARP claims dropped; address pairs pass", func(t *testing.T) {
		run(t, "ip", "-n", vm1, "addr", "add", fwSpoofIP+"/24", "dev", vm1Dev)
		fwBlocked(t, vm1, fwSpoofIP, web)
		if err := fwCanConnect(vm1, "", web); err != nil {
			t.Fatalf("own address stopped working: %v", err)
		}
		if n := fwARPClaims(t, vm1, vm2, vm1Dev, links.PeerName(portBID), fwVM1MAC, fwVM2IP); n != 0 {
			t.Fatalf("%d ARP replies claiming vm2's address reached vm2", n)
		}
		run(t, "ip", "-n", vm1, "link", "set", vm1Dev, "address", "fa:16:3e:99:99:99")
		run(t, "ip", "-n", vm1, "neigh", "flush", "dev", vm1Dev)
		fwBlocked(t, vm1, "", web)
		run(t, "ip", "-n", vm1, "link", "set", vm1Dev, "address", fwVM1MAC)
		fwUntil(t, 5*time.Second, "own MAC works again", func() error { return fwCanConnect(vm1, "", web) })

		topo.Ports[0].AllowedAddressPairs = []*nsv1.AllowedAddressPair{{IpAddress: fwSpoofIP}, {IpAddress: fwVM2IP + "/32"}}
		fwApply(t, ctx, js, topo)
		// The port actor re-converges the VM side to the port's own addresses.
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: portAID, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", vm1, "addr", "replace", fwSpoofIP+"/24", "dev", vm1Dev)
		took := fwUntil(t, 10*time.Second, "connect from an allowed address pair", func() error { return fwCanConnect(vm1, fwSpoofIP, web) })
		t.Logf("address pair %s usable after %s", fwSpoofIP, took.Round(time.Millisecond))
		if n := fwARPClaims(t, vm1, vm2, vm1Dev, links.PeerName(portBID), fwVM1MAC, fwVM2IP); n == 0 {
			t.Fatal("ARP replies for an allowed address pair were dropped")
		}
		topo.Ports[0].AllowedAddressPairs = nil
		fwApply(t, ctx, js, topo)
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: portAID, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", vm1, "addr", "replace", fwSpoofIP+"/24", "dev", vm1Dev)
		fwUntil(t, 10*time.Second, "pair removed", func() error {
			if fwQuick(vm1, fwSpoofIP, web) == nil {
				return errors.New("pair address still passes")
			}
			return nil
		})
		fwBlocked(t, vm1, fwSpoofIP, web)
		run(t, "ip", "-n", vm1, "addr", "del", fwSpoofIP+"/24", "dev", vm1Dev)
	})

	t.Run("agent restart: identical tables, established connections keep working", func(t *testing.T) {
		conn, err := fwConnect(vm1, "", web, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		running := nftRuleset(t, hostB)
		agentB.signal(syscall.SIGTERM)
		// The stopping agent saved the hash of its tables (set netsource-state), which lets
		// the next one recognise them and change nothing.
		before := nftRuleset(t, hostB)
		if a, b := withoutState(running), withoutState(before); a != b {
			t.Fatalf("stopping the agent changed the rules:\n--- running\n%s\n--- stopped\n%s", a, b)
		}
		if err := fwEcho(conn, time.Second); err != nil {
			t.Fatalf("established connection while the agent is down: %v", err)
		}
		restarted := time.Now()
		startFirewallAgent(outer, url, "hostB", hostB, "198.18.0.2")
		isSyncedBeat := func(ev *nsv1.StatusEvent) bool {
			return ev.GetKind() == "agent" && ev.GetHost() == "hostB" && ev.GetDetails()["synced"] == "true"
		}
		last := timedStatus{at: restarted}
		for range 3 {
			last = statuses.waitFor(t, last.at.Add(time.Nanosecond), 15*time.Second, "hostB heartbeat after restart", isSyncedBeat)
			if err := fwEcho(conn, time.Second); err != nil {
				t.Fatalf("established connection after the restart: %v", err)
			}
		}
		if after := nftRuleset(t, hostB); after != before {
			t.Fatalf("nft list ruleset changed across the restart:\n--- before\n%s\n--- after\n%s", before, after)
		}
		if n := statuses.count(restarted, func(ev *nsv1.StatusEvent) bool { return ev.GetHost() == "hostB" && ev.GetKind() == "secgroup" }); n != 0 {
			t.Fatalf("restarted agent republished %d security group statuses", n)
		}
	})

	t.Run("port_security_enabled false removes filtering", func(t *testing.T) {
		fwBlocked(t, vm1, "", web2)
		off := false
		topo.Ports[1].PortSecurityEnabled = &off
		fwApply(t, ctx, js, topo)
		took := fwUntil(t, 10*time.Second, "8081 reachable without port security", func() error { return fwQuick(vm1, "", web2) })
		t.Logf("8081 reachable %s after port security was turned off", took.Round(time.Millisecond))
		if ruleset := nftRuleset(t, hostB); !strings.Contains(ruleset, `"`+links.TapName(portBID)+`" : accept`) {
			t.Fatalf("port B is not unfiltered on hostB:\n%s", ruleset)
		}
	})
}
