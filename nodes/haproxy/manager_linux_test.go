package haproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/haproxy/haproxytest"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs and haproxy processes")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy is not installed (the deps task installs it)")
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// lbEnv is a load balancer namespace qlbaas-<id> with the VIP 192.0.2.100/24 on vip0, a
// veth to a "VM" namespace with 192.0.2.21/24, and a short state directory. Cleanup kills
// every haproxy of the instance by PID and deletes both namespaces, also on failure.
type lbEnv struct {
	id, lbNS, vm, stateDir string
}

func newLBEnv(t *testing.T) *lbEnv {
	t.Helper()
	requireRoot(t)
	e := &lbEnv{id: uuid.NewString(), vm: fmt.Sprintf("nshx%04x-vm", rand.IntN(0xffff))}
	e.lbNS = Namespace(e.id)
	dir, err := os.MkdirTemp("", "nshx")
	if err != nil {
		t.Fatal(err)
	}
	e.stateDir = dir
	t.Cleanup(func() {
		haproxytest.KillInstances(dir)
		for _, ns := range []string{e.lbNS, e.vm} {
			_ = netns.DeleteNamed(ns)
		}
		_ = os.RemoveAll(dir)
	})
	for _, ns := range []string{e.lbNS, e.vm} {
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", e.lbNS, "link", "add", "vip0", "type", "veth", "peer", "name", "eth0", "netns", e.vm)
	sh(t, "ip", "-n", e.lbNS, "addr", "add", "192.0.2.100/24", "dev", "vip0")
	sh(t, "ip", "-n", e.vm, "addr", "add", "192.0.2.21/24", "dev", "eth0")
	sh(t, "ip", "-n", e.lbNS, "link", "set", "vip0", "up")
	sh(t, "ip", "-n", e.vm, "link", "set", "eth0", "up")
	return e
}

func (e *lbEnv) lb(ports ...uint32) *nsv1.LoadBalancer {
	pool := &nsv1.Pool{Id: "708192a3-0000-4000-8000-000000000001", Protocol: "HTTP", LbAlgorithm: "ROUND_ROBIN",
		Healthmonitor: &nsv1.HealthMonitor{Type: "HTTP", Delay: 1, Timeout: 1, MaxRetries: 1, UrlPath: "/healthz"},
		Members:       []*nsv1.Member{{Id: "92a3b4c5-0000-4000-8000-000000000001", Address: "192.0.2.21", ProtocolPort: 8080}}}
	lb := &nsv1.LoadBalancer{Id: e.id, VipAddress: "192.0.2.100", Pools: []*nsv1.Pool{pool}}
	for i, p := range ports {
		lb.Listeners = append(lb.Listeners, &nsv1.Listener{Id: fmt.Sprintf("6f708192-0000-4000-8000-%012d", i), Protocol: "HTTP",
			ProtocolPort: p, DefaultPoolId: pool.Id})
	}
	return lb
}

func (e *lbEnv) instance(lb *nsv1.LoadBalancer) Instance {
	return Instance{ID: e.id, LB: lb, Device: "vip0", Addresses: []net.IP{net.ParseIP("192.0.2.100")}}
}

func (e *lbEnv) get(t *testing.T, port int) string {
	t.Helper()
	body, err := haproxytest.Get(haproxytest.Client(e.vm, 5*time.Second), fmt.Sprintf("http://192.0.2.100:%d/", port))
	if err != nil {
		t.Fatalf("GET :%d through the VIP: %v", port, err)
	}
	return body
}

func reloads(t *testing.T, m *Manager, id string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := query(ctx, m.Paths(id).Master, "show proc")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseShowProc(out)
	if err != nil {
		t.Fatal(err)
	}
	return p.reloads
}

func TestPrivilegedManagerLifecycle(t *testing.T) {
	e := newLBEnv(t)
	if _, err := haproxytest.StartBackend(e.vm, "192.0.2.21:8080", "b1"); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	m, err := New(Options{StateDir: e.stateDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Start: served through the VIP.
	st, err := m.Ensure(ctx, e.instance(e.lb(80)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Action != ActionStarted || st.Proc.PID <= 0 {
		t.Fatalf("first Ensure: %+v", st)
	}
	if got := e.get(t, 80); got != "b1" {
		t.Fatalf("GET = %q", got)
	}
	pid := st.Proc.PID

	// The same config again: nothing happens.
	st, err = m.Ensure(ctx, e.instance(e.lb(80)))
	if err != nil || st.Action != ActionUnchanged || st.Proc.PID != pid || reloads(t, m, e.id) != 0 {
		t.Fatalf("second Ensure: %+v %v (reloads %d)", st, err, reloads(t, m, e.id))
	}

	// A new listener: reloaded in place.
	st, err = m.Ensure(ctx, e.instance(e.lb(80, 81)))
	if err != nil || st.Action != ActionReloaded || st.Proc.PID != pid {
		t.Fatalf("Ensure with a new listener: %+v %v", st, err)
	}
	if got := e.get(t, 81); got != "b1" || reloads(t, m, e.id) != 1 {
		t.Fatalf("GET :81 = %q, reloads %d", got, reloads(t, m, e.id))
	}
	stats, err := m.Stats(ctx, e.id)
	if err != nil {
		t.Fatal(err)
	}
	if got := Statuses(e.lb(80, 81), stats)["member:92a3b4c5-0000-4000-8000-000000000001"]; got != Online {
		t.Errorf("member status %s, want ONLINE (stats %+v)", got, stats.Servers)
	}

	// A restarted agent adopts the running haproxy and leaves it alone.
	m.Close()
	m, err = New(Options{StateDir: e.stateDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	st, err = m.Ensure(ctx, e.instance(e.lb(80, 81)))
	if err != nil || st.Action != ActionAdopted || st.Proc.PID != pid || reloads(t, m, e.id) != 1 {
		t.Fatalf("Ensure after restart: %+v %v", st, err)
	}

	// A config haproxy -c accepts but cannot load (the port is taken): the reload fails,
	// the old config stays on disk and keeps serving.
	busy, err := haproxytest.Listen(e.lbNS, "tcp", "192.0.2.100:82")
	if err != nil {
		t.Fatal(err)
	}
	before := fileHash(m.Paths(e.id).Config)
	_, err = m.Ensure(ctx, e.instance(e.lb(80, 81, 82)))
	if !errors.Is(err, ErrReloadFailed) {
		t.Fatalf("reload onto a busy port: %v, want ErrReloadFailed", err)
	}
	busy.Close()
	if fileHash(m.Paths(e.id).Config) != before {
		t.Error("the refused config was left on disk")
	}
	if got := e.get(t, 81); got != "b1" {
		t.Fatalf("after a failed reload GET :81 = %q", got)
	}

	// kill -9: the adopted master's exit is noticed through its pidfd; Ensure starts anew.
	workers := haproxytest.ChildrenOf(pid)
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.Proc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit of the killed haproxy not noticed")
	}
	st, err = m.Ensure(ctx, e.instance(e.lb(80, 81)))
	if err != nil || st.Action != ActionStarted || st.Proc.PID == pid {
		t.Fatalf("Ensure after kill: %+v %v", st, err)
	}
	if got := e.get(t, 80); got != "b1" {
		t.Fatalf("after restart GET = %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range workers {
		for haproxytest.Alive(w) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if haproxytest.Alive(w) {
			t.Errorf("worker %d of the killed master still runs", w)
		}
	}

	// Delete: process, namespace and state gone; again is fine.
	pid = st.Proc.PID
	workers = haproxytest.ChildrenOf(pid)
	if err := m.Delete(ctx, e.id); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(workers, pid) {
		if haproxytest.Alive(p) {
			t.Errorf("process %d still runs after Delete", p)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", e.lbNS)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s left: %v", e.lbNS, err)
	}
	if _, err := os.Stat(m.Paths(e.id).Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory left: %v", err)
	}
	if err := m.Delete(ctx, e.id); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestPrivilegedPruneKeepsWanted: Prune stops instances nobody wants, never one ensured by
// this manager or one keep accepts.
func TestPrivilegedPruneKeepsWanted(t *testing.T) {
	e := newLBEnv(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	m, err := New(Options{StateDir: e.stateDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := m.Ensure(ctx, e.instance(e.lb(80)))
	if err != nil {
		t.Fatal(err)
	}
	if pruned, err := m.Prune(ctx, func(string) bool { return false }); err != nil || len(pruned) != 0 {
		t.Fatalf("Prune of an instance ensured by this manager: %v %v", pruned, err)
	}
	m.Close()
	m, err = New(Options{StateDir: e.stateDir, Log: log}) // a restarted agent
	if err != nil {
		t.Fatal(err)
	}
	if pruned, err := m.Prune(ctx, func(id string) bool { return id == e.id }); err != nil || len(pruned) != 0 {
		t.Fatalf("Prune of a wanted instance: %v %v", pruned, err)
	}
	pruned, err := m.Prune(ctx, func(string) bool { return false })
	if err != nil || len(pruned) != 1 || pruned[0] != e.id {
		t.Fatalf("Prune of an orphan: %v %v", pruned, err)
	}
	if haproxytest.Alive(st.Proc.PID) {
		t.Error("orphan haproxy still runs")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", e.lbNS)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan namespace left: %v", err)
	}
}

// TestPrivilegedAnnounce: the gratuitous ARP reaches a neighbour, which learns the VIP's
// MAC before any traffic (arp_accept makes it create the entry).
func TestPrivilegedAnnounce(t *testing.T) {
	e := newLBEnv(t)
	sh(t, "ip", "netns", "exec", e.vm, "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_accept=1")
	sh(t, "ip", "netns", "exec", e.vm, "sysctl", "-q", "-w", "net.ipv4.conf.eth0.arp_accept=1")
	mac, err := exec.Command("ip", "-n", e.lbNS, "-br", "link", "show", "vip0").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(mac))[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := announce(ctx, e.lbNS, "vip0", []net.IP{net.ParseIP("192.0.2.100")}, 2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ip", "-n", e.vm, "neigh", "show", "192.0.2.100").Output()
		if strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbour did not learn 192.0.2.100 at %s from the gratuitous ARP: %q", want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrivilegedWaitUsable waits for duplicate address detection on the link-local address
// the kernel gives a link that comes up (tentative for about a second), without sleeping.
func TestPrivilegedWaitUsable(t *testing.T) {
	requireRoot(t)
	ns := fmt.Sprintf("nshx%04x-dad", rand.IntN(0xffff))
	t.Cleanup(func() { _ = netns.DeleteNamed(ns) })
	sh(t, "ip", "netns", "add", ns)
	sh(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=1")
	sh(t, "ip", "-n", ns, "link", "add", "a0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "b0")
	lla := net.ParseIP("fe80::ff:fe00:1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- waitUsable(ctx, ns, "a0", []net.IP{lla}) }()
	sh(t, "ip", "-n", ns, "link", "set", "b0", "up")
	sh(t, "ip", "-n", ns, "link", "set", "a0", "up")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "-n", ns, "-6", "addr", "show", "dev", "a0").Output()
	if strings.Contains(string(out), "tentative") || !strings.Contains(string(out), "fe80::ff:fe00:1") {
		t.Fatalf("waitUsable returned after %s but the address is not usable:\n%s", time.Since(start), out)
	}
	t.Logf("link-local address usable after %s", time.Since(start))
}
