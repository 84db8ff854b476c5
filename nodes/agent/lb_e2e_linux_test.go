package agent_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/haproxy/haproxytest"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// TestPrivilegedLoadBalancer is issue 5's "Show" list with real haproxy and real HTTP: an
// in-process agent, two backends and a client in VM namespaces, the VIP in qlbaas-<id>.
func TestPrivilegedLoadBalancer(t *testing.T) {
	e := newLBTestEnv(t)
	stopAgent := e.startAgent()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	topo := e.topology()
	if _, err := e.pub.Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	for _, p := range topo.Ports {
		if _, err := streams.Wait(ctx, e.js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	b1, err := haproxytest.StartBackend(e.vm("b1"), "192.0.2.21:8080", "b1")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := haproxytest.StartBackend(e.vm("b2"), "192.0.2.22:8080", "b2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b1.Stop)
	t.Cleanup(b2.Stop)
	client := haproxytest.Client(e.vm("client"), 5*time.Second)
	get := func() (string, error) { return haproxytest.Get(client, "http://"+lbVIP+"/") }
	// The client learns the VIP from gratuitous ARP (arp_accept creates the entry).
	if out, err := exec.Command("ip", "netns", "exec", e.vm("client"), "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_accept=1").CombinedOutput(); err != nil {
		t.Fatalf("arp_accept: %v %s", err, out)
	}

	lb := e.newLB()
	published := time.Now()
	seq := e.applyLB(ctx, lb)
	active := e.status.waitFor(t, lb.Id, published, 30*time.Second, "new load balancer ACTIVE", func(ev *nsv1.StatusEvent) bool {
		return activeAt(seq)(ev) && ev.GetDetails()["member:"+lbMember1] == haproxy.Online && ev.GetDetails()["member:"+lbMember2] == haproxy.Online
	})
	t.Logf("event -> ACTIVE with both members ONLINE: %s; details %v", active.at.Sub(published), active.ev.GetDetails())
	pid, _ := strconv.Atoi(active.ev.GetDetails()["haproxy_pid"])
	if pid <= 0 {
		t.Fatalf("no haproxy_pid in %v", active.ev.GetDetails())
	}

	t.Run("gratuitous ARP announces the VIP", func(t *testing.T) {
		vipDev := links.PeerName(lb.VipPortId)
		out, err := exec.Command("ip", "-n", haproxy.Namespace(lb.Id), "-br", "link", "show", vipDev).Output()
		if err != nil {
			t.Fatal(err)
		}
		mac := strings.Fields(string(out))[2]
		lbEventually(t, 2*time.Second, "client learns the VIP's MAC", func() error {
			out, _ := exec.Command("ip", "-n", e.vm("client"), "neigh", "show", lbVIP).Output()
			if !strings.Contains(string(out), mac) {
				return errors.New(strings.TrimSpace(string(out)))
			}
			return nil
		})
	})

	t.Run("round robin alternates", func(t *testing.T) {
		prev := ""
		count := map[string]int{}
		for i := range 20 {
			got, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if got == prev {
				t.Fatalf("request %d went to %s twice in a row", i, got)
			}
			prev = got
			count[got]++
		}
		if count["b1"] != 10 || count["b2"] != 10 {
			t.Fatalf("20 requests: %v", count)
		}
	})

	update := func(what string, mutate func(*nsv1.LoadBalancer)) uint64 {
		t.Helper()
		mutate(lb)
		start := time.Now()
		seq := e.applyLB(ctx, lb)
		e.status.waitFor(t, lb.Id, start, 30*time.Second, what, activeAt(seq))
		return seq
	}
	sameBackend := func(t *testing.T, n int) string {
		t.Helper()
		first := ""
		for i := range n {
			got, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = got
			} else if got != first {
				t.Fatalf("request %d went to %s, the first to %s", i, got, first)
			}
		}
		return first
	}

	t.Run("SOURCE_IP keeps one client on one member", func(t *testing.T) {
		update("session persistence SOURCE_IP", func(lb *nsv1.LoadBalancer) {
			lb.Pools[0].SessionPersistence = &nsv1.SessionPersistence{Type: "SOURCE_IP"}
		})
		t.Logf("persistence SOURCE_IP: all 20 requests on %s", sameBackend(t, 20))
		update("lb_algorithm SOURCE_IP", func(lb *nsv1.LoadBalancer) {
			lb.Pools[0].SessionPersistence = nil
			lb.Pools[0].LbAlgorithm = "SOURCE_IP"
		})
		t.Logf("lb_algorithm SOURCE_IP: all 20 requests on %s", sameBackend(t, 20))
		update("back to round robin", func(lb *nsv1.LoadBalancer) { lb.Pools[0].LbAlgorithm = "ROUND_ROBIN" })
	})

	t.Run("weight 0 member gets nothing", func(t *testing.T) {
		seq := update("b2 weight 0", func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[1].Weight = proto.Uint32(0) })
		b2.ResetHits()
		if got := sameBackend(t, 20); got != "b1" || b2.Hits() != 0 {
			t.Fatalf("requests went to %s; b2 answered %d", got, b2.Hits())
		}
		e.status.waitFor(t, lb.Id, time.Time{}, 5*time.Second, "b2 DRAINING", func(ev *nsv1.StatusEvent) bool {
			return ev.GetDesiredSeq() >= seq && memberIs(lbMember2, haproxy.Draining)(ev)
		})
		update("b2 weight 1", func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[1].Weight = nil })
	})

	t.Run("stopped backend goes OFFLINE, traffic to the other, back ONLINE", func(t *testing.T) {
		e.status.waitFor(t, lb.Id, time.Time{}, 10*time.Second, "b2 ONLINE", memberIs(lbMember2, haproxy.Online))
		stopped := time.Now()
		b2.Stop()
		off := e.status.waitFor(t, lb.Id, stopped, 10*time.Second, "b2 OFFLINE", memberIs(lbMember2, haproxy.Offline))
		took := off.at.Sub(stopped)
		limit := time.Duration(lb.Pools[0].Healthmonitor.Delay*lb.Pools[0].Healthmonitor.MaxRetries)*time.Second + time.Second
		t.Logf("b2 stopped -> member OFFLINE status: %s (limit %s); operating_status %s", took, limit, off.ev.GetDetails()["operating_status"])
		if took > limit {
			t.Errorf("OFFLINE after %s, want within delay x max_retries + 1 s = %s", took, limit)
		}
		if off.ev.GetDetails()["operating_status"] != haproxy.Degraded {
			t.Errorf("load balancer operating_status %s with a member down", off.ev.GetDetails()["operating_status"])
		}
		if got := sameBackend(t, 10); got != "b1" {
			t.Fatalf("traffic went to %s while b2 is down", got)
		}
		started := time.Now()
		if err := b2.Start(); err != nil {
			t.Fatal(err)
		}
		on := e.status.waitFor(t, lb.Id, started, 10*time.Second, "b2 ONLINE again", memberIs(lbMember2, haproxy.Online))
		t.Logf("b2 started -> member ONLINE status: %s", on.at.Sub(started))
	})

	t.Run("zero failed requests across 10 reloads under load", func(t *testing.T) {
		master := e.paths(lb.Id).Master
		before, err := haproxytest.Reloads(master)
		if err != nil {
			t.Fatal(err)
		}
		load := startLoad(e.vm("client"), 4)
		var took []time.Duration
		for i := range 10 {
			start := time.Now()
			if i%2 == 0 {
				update("new listener", func(lb *nsv1.LoadBalancer) {
					lb.Listeners = append(lb.Listeners, &nsv1.Listener{Id: uuid.NewString(), Protocol: "HTTP",
						ProtocolPort: uint32(81 + i/2), DefaultPoolId: lbPoolID})
				})
			} else {
				update("pool change", func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].Weight = proto.Uint32(uint32(2 + i)) })
			}
			took = append(took, time.Since(start))
		}
		ok, failed, errs := load.stop()
		after, err := haproxytest.Reloads(master)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("10 reloads (master reload count %d -> %d), event -> ACTIVE p50 %.0f ms max %.0f ms; requests ok %d failed %d",
			before, after, lbPercentile(took, 50), lbPercentile(took, 100), ok, failed)
		if after-before != 10 {
			t.Errorf("master reloaded %d times, want 10", after-before)
		}
		if failed != 0 || ok < 100 {
			t.Errorf("%d requests failed (first errors %v), %d succeeded", failed, errs, ok)
		}
		if got, err := haproxytest.Get(client, "http://"+lbVIP+":85/"); err != nil || (got != "b1" && got != "b2") {
			t.Errorf("the fifth new listener: %q %v", got, err)
		}
		cur, err := os.ReadFile(e.paths(lb.Id).PID)
		if err != nil || strings.TrimSpace(string(cur)) != strconv.Itoa(pid) {
			t.Errorf("reloads changed the master pid: %q %v, want %d", cur, err, pid)
		}
	})

	t.Run("kill -9 haproxy: back within 2 s with a status event", func(t *testing.T) {
		killed := time.Now()
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		back := e.status.waitFor(t, lb.Id, killed, 10*time.Second, "ACTIVE after kill -9", func(ev *nsv1.StatusEvent) bool {
			return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDetails()["haproxy_pid"] != strconv.Itoa(pid)
		})
		took := back.at.Sub(killed)
		sawError := e.status.count(lb.Id, killed) >= 2
		t.Logf("kill -9 master %d -> ACTIVE with pid %s: %s (%q); ERROR event seen %t", pid, back.ev.GetDetails()["haproxy_pid"],
			took, back.ev.GetReason(), sawError)
		if took > 2*time.Second || !sawError {
			t.Errorf("back after %s, error event %t", took, sawError)
		}
		pid, _ = strconv.Atoi(back.ev.GetDetails()["haproxy_pid"])
		lbEventually(t, 5*time.Second, "served after the restart", func() error { _, err := get(); return err })

		// A worker killed: the master stops (haproxy's exit-on-failure) and is restarted too.
		workers := haproxytest.ChildrenOf(pid)
		if len(workers) == 0 {
			t.Fatalf("master %d has no worker", pid)
		}
		killed = time.Now()
		if err := unix.Kill(workers[0], unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		back = e.status.waitFor(t, lb.Id, killed, 10*time.Second, "ACTIVE after kill -9 of the worker", func(ev *nsv1.StatusEvent) bool {
			return ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetDetails()["haproxy_pid"] != strconv.Itoa(pid)
		})
		t.Logf("kill -9 worker %d -> ACTIVE with pid %s: %s", workers[0], back.ev.GetDetails()["haproxy_pid"], back.at.Sub(killed))
		if back.at.Sub(killed) > 2*time.Second {
			t.Errorf("back after %s", back.at.Sub(killed))
		}
		pid, _ = strconv.Atoi(back.ev.GetDetails()["haproxy_pid"])
		lbEventually(t, 5*time.Second, "served after the second restart", func() error { _, err := get(); return err })
	})

	t.Run("restart of a converged agent leaves haproxy alone", func(t *testing.T) {
		reloads, err := haproxytest.Reloads(e.paths(lb.Id).Master)
		if err != nil {
			t.Fatal(err)
		}
		stopAgent()
		restarted := time.Now()
		stopAgent = e.startAgent()
		e.status.waitBeats(t, 4, restarted) // the LB actor adopted the instance and read stats meanwhile
		if n := e.status.count(lb.Id, restarted); n != 0 {
			t.Errorf("restarted agent published %d load balancer statuses: %v", n, e.status.since(lb.Id, restarted))
		}
		after, err := haproxytest.Reloads(e.paths(lb.Id).Master)
		if err != nil || after != reloads || !haproxytest.Alive(pid) {
			t.Errorf("haproxy touched by the restart: reloads %d -> %d (%v), pid %d alive %t", reloads, after, err, pid, haproxytest.Alive(pid))
		}
		if _, err := get(); err != nil {
			t.Error(err)
		}
	})

	t.Run("forged event with a newline in url_path", func(t *testing.T) {
		forged := e.newLB()
		forged.VipAddress = "192.0.2.101"
		forged.Pools[0].Healthmonitor.UrlPath = "/healthz\n    stats enable"
		if _, err := e.pub.Apply(ctx, &nsv1.Topology{Loadbalancers: []*nsv1.LoadBalancer{forged}}); err == nil || !strings.Contains(err.Error(), "url_path") {
			t.Fatalf("apply accepted the load balancer: %v", err)
		}
		msg, err := streams.EncodeDesired(streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, forged, "forger"))
		if err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		ev := e.status.waitFor(t, forged.Id, sent, 10*time.Second, "forged load balancer ERROR", func(ev *nsv1.StatusEvent) bool {
			return ev.GetPhase() == nsv1.Phase_PHASE_ERROR
		})
		t.Logf("forged event -> %s %q", streams.PhaseName(ev.ev.GetPhase()), ev.ev.GetReason())
		if !strings.Contains(ev.ev.GetReason(), "url_path") {
			t.Errorf("reason %q does not name url_path", ev.ev.GetReason())
		}
		for _, p := range []string{e.paths(forged.Id).Dir, filepath.Join("/run/netns", haproxy.Namespace(forged.Id))} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists for the forged load balancer (%v)", p, err)
			}
		}

		// A forged update of the running load balancer: ERROR, and its config stays as it was.
		running, err := os.ReadFile(e.paths(lb.Id).Config)
		if err != nil {
			t.Fatal(err)
		}
		bad := proto.Clone(lb).(*nsv1.LoadBalancer)
		bad.Pools[0].Healthmonitor.UrlPath = "/x\n    stats enable"
		if msg, err = streams.EncodeDesired(streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_UPDATED, bad, "forger")); err != nil {
			t.Fatal(err)
		}
		sent = time.Now()
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		e.status.waitFor(t, lb.Id, sent, 10*time.Second, "forged update ERROR", func(ev *nsv1.StatusEvent) bool {
			return ev.GetPhase() == nsv1.Phase_PHASE_ERROR && strings.Contains(ev.GetReason(), "url_path")
		})
		if now, err := os.ReadFile(e.paths(lb.Id).Config); err != nil || string(now) != string(running) {
			t.Errorf("the forged update changed the config on disk (%v)", err)
		}
		if _, err := get(); err != nil {
			t.Errorf("the load balancer stopped serving after a forged update: %v", err)
		}
	})

	t.Run("delete: process, namespace and VIP port gone", func(t *testing.T) {
		workers := haproxytest.ChildrenOf(pid)
		start := time.Now()
		if _, err := e.pub.Delete(ctx, streams.KindLoadBalancer, lb.Id); err != nil {
			t.Fatal(err)
		}
		gone := e.status.waitFor(t, lb.Id, start, 30*time.Second, "DELETED", func(ev *nsv1.StatusEvent) bool {
			return ev.GetPhase() == nsv1.Phase_PHASE_DELETED
		})
		t.Logf("delete -> DELETED: %s", gone.at.Sub(start))
		for _, p := range append(workers, pid) {
			if haproxytest.Alive(p) {
				t.Errorf("haproxy process %d still runs", p)
			}
		}
		if _, err := os.Stat(filepath.Join("/run/netns", haproxy.Namespace(lb.Id))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left (%v)", haproxy.Namespace(lb.Id), err)
		}
		if out, err := exec.Command("ip", "-n", e.hostNS, "link", "show", links.TapName(lb.VipPortId)).CombinedOutput(); err == nil {
			t.Errorf("VIP port device left: %s", out)
		}
		if _, err := os.Stat(e.paths(lb.Id).Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state directory left (%v)", err)
		}
		quick := haproxytest.Client(e.vm("client"), time.Second)
		if _, err := haproxytest.Get(quick, "http://"+lbVIP+"/"); err == nil {
			t.Error("the VIP still answers")
		}
	})
}

// load is a client loop: workers sending requests through the VIP, one connection each.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	done       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(clientNS string, workers int) *load {
	l := &load{done: make(chan struct{})}
	for range workers {
		client := haproxytest.Client(clientNS, 5*time.Second)
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				default:
				}
				if _, err := haproxytest.Get(client, "http://"+lbVIP+"/"); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) stop() (ok, failed int64, errs []string) {
	close(l.done)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}
