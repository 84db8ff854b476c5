package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// netsourceBinary builds cmd/netsource once per test run.
func netsourceBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "netsource-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "netsource")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/netsource").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// agentProc is an agent running as its own process.
type agentProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startAgentProc(t *testing.T, url, host, netns string, extra ...string) *agentProc {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), host+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"agent", "--host", host, "--netns", netns, "--nats", url, "--report-interval", "500ms",
		"--log-level", "info"}, extra...)
	cmd := exec.Command(netsourceBinary(t), args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{t: t, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		if t.Failed() {
			out, _ := os.ReadFile(logFile)
			t.Logf("agent %s log:\n%s", host, out)
		}
	})
	return p
}

// signal stops the agent process by PID and waits for it.
func (p *agentProc) signal(sig syscall.Signal) { stopByPID(p.cmd, p.done, sig) }

// stopByPID sends sig to the process started as cmd, by its PID, and waits until done
// closes (up to 20 s, then SIGKILL).
func stopByPID(cmd *exec.Cmd, done <-chan struct{}, sig syscall.Signal) {
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// statusLog records every status event as it arrives, with its arrival time.
type statusLog struct {
	mu     sync.Mutex
	events []timedStatus
}

type timedStatus struct {
	at time.Time
	ev *nsv1.StatusEvent
}

func followStatus(t *testing.T, js jetstream.JetStream) *statusLog {
	t.Helper()
	l := &statusLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = streams.Follow(ctx, js, streams.StatusStream, streams.FollowOptions{Filters: []string{"ns.status.>"}, Start: streams.Start{New: true}},
			func(m streams.Msg) {
				now := time.Now()
				if streams.IsAgentSubject(m.Subject) {
					hb, err := streams.DecodeHeartbeat(m.Data)
					if err == nil {
						l.add(timedStatus{at: now, ev: &nsv1.StatusEvent{Kind: "agent", Host: hb.GetHost(),
							Details: map[string]string{"kernel_mutations": fmt.Sprint(hb.GetCounts()["kernel_mutations"]),
								"synced": fmt.Sprint(!hb.GetStartFlag())}}})
					}
					return
				}
				if ev, err := streams.DecodeStatus(m.Data); err == nil {
					l.add(timedStatus{at: now, ev: ev})
				}
			})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func (l *statusLog) add(s timedStatus) {
	l.mu.Lock()
	l.events = append(l.events, s)
	l.mu.Unlock()
}

// first returns the first event after from that matches.
func (l *statusLog) first(from time.Time, match func(*nsv1.StatusEvent) bool) (timedStatus, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.events {
		if !s.at.Before(from) && match(s.ev) {
			return s, true
		}
	}
	return timedStatus{}, false
}

func (l *statusLog) count(from time.Time, match func(*nsv1.StatusEvent) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.events {
		if !s.at.Before(from) && match(s.ev) {
			n++
		}
	}
	return n
}

func (l *statusLog) waitFor(t *testing.T, from time.Time, timeout time.Duration, what string, match func(*nsv1.StatusEvent) bool) timedStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s, ok := l.first(from, match); ok {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status event for %s within %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isPort(id string, phase nsv1.Phase) func(*nsv1.StatusEvent) bool {
	return func(ev *nsv1.StatusEvent) bool {
		return ev.GetKind() == "port" && ev.GetId() == id && ev.GetPhase() == phase
	}
}

// oneHost creates a host namespace and returns it with the test's namespace prefix.
func oneHost(t *testing.T) (prefix, host string) {
	t.Helper()
	prefix, hostA, _ := twoHosts(t)
	return prefix, hostA
}

func localNetwork() *nsv1.Network {
	return &nsv1.Network{Id: netID, Name: "local", NetworkType: "local", Mtu: 1500,
		Subnets: []*nsv1.Subnet{{Id: subnet, Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1", IpVersion: 4}}}
}

// manyPorts returns n veth ports on host whose ids differ in their first 11 characters.
func manyPorts(prefix, host string, n int) []*nsv1.Port {
	ports := make([]*nsv1.Port, n)
	for i := range ports {
		ports[i] = &nsv1.Port{Id: fmt.Sprintf("%08x-0000-4000-8000-000000000001", 0xa0000000+i), NetworkId: netID, Host: host,
			MacAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", i/256, i%256),
			FixedIps:   []*nsv1.FixedIP{{SubnetId: subnet, IpAddress: fmt.Sprintf("192.0.2.%d", 10+i)}},
			Binding:    &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("%s-vm%d", prefix, i)}}
	}
	return ports
}

// ipLinks lists the link names of a namespace. Only stdout counts: iproute2 may warn on
// stderr ("Peer netns reference is invalid.") while a peer's namespace id is being set up.
func ipLinks(t *testing.T, netns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", netns, "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip -n %s link show: %v", netns, err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasSuffix(f[0], ":") {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}

func TestPrivilegedKillDuringConvergeThenRestart(t *testing.T) {
	prefix, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ports := manyPorts(prefix, "hostA", 50)
	agentA := startAgentProc(t, url, "hostA", hostNS)
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports}); err != nil {
		t.Fatal(err)
	}
	// Kill -9 once the agent is part-way through.
	statuses.waitFor(t, time.Time{}, time.Minute, "first ACTIVE port", func(ev *nsv1.StatusEvent) bool {
		return ev.GetKind() == "port" && ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE
	})
	agentA.signal(syscall.SIGKILL)
	active := statuses.count(time.Time{}, func(ev *nsv1.StatusEvent) bool {
		return ev.GetKind() == "port" && ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE
	})
	t.Logf("killed the agent with %d of 50 ports ACTIVE", active)

	startAgentProc(t, url, "hostA", hostNS)
	for _, p := range ports {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly one device per port, one bridge, nothing else of ours; one peer per VM.
	var taps, bridges int
	for _, name := range ipLinks(t, hostNS) {
		switch {
		case strings.HasPrefix(name, "tap"):
			taps++
		case strings.HasPrefix(name, "brq"):
			bridges++
		}
	}
	if taps != 50 || bridges != 1 {
		t.Fatalf("after kill -9 and restart: %d tap devices and %d bridges, want 50 and 1", taps, bridges)
	}
	for i, p := range ports {
		names := ipLinks(t, p.Binding.Netns)
		if len(names) != 2 || names[1] != links.PeerName(p.Id) {
			t.Fatalf("vm %d has links %v, want lo and %s:\n%s", i, names, links.PeerName(p.Id),
				run(t, "ip", "-n", p.Binding.Netns, "-d", "link", "show"))
		}
	}
}

func TestPrivilegedRestartOfConvergedAgentChangesNothing(t *testing.T) {
	prefix, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	url := srv.NS.ClientURL()
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ports := manyPorts(prefix, "hostA", 20)
	first := startAgentProc(t, url, "hostA", hostNS)
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports}); err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
	before := ipLinks(t, hostNS)
	first.signal(syscall.SIGTERM)
	restarted := time.Now()
	startAgentProc(t, url, "hostA", hostNS)
	// Three heartbeats after the first full sync: the agent has re-checked everything.
	isSyncedBeat := func(ev *nsv1.StatusEvent) bool { return ev.GetKind() == "agent" && ev.GetDetails()["synced"] == "true" }
	var last timedStatus
	for range 3 {
		last = statuses.waitFor(t, last.at.Add(time.Nanosecond), 10*time.Second, "heartbeat after restart", isSyncedBeat)
		if last.at.Before(restarted) {
			continue
		}
		if m := last.ev.GetDetails()["kernel_mutations"]; m != "0" {
			t.Fatalf("restarted converged agent made %s kernel mutations", m)
		}
	}
	if n := statuses.count(restarted, func(ev *nsv1.StatusEvent) bool { return ev.GetKind() == "port" }); n != 0 {
		t.Fatalf("restarted converged agent published %d port status events", n)
	}
	if after := ipLinks(t, hostNS); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("links changed across restart:\n%v\n%v", before, after)
	}
}

func TestPrivilegedDevicesRemovedByHand(t *testing.T) {
	prefix, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	statuses := followStatus(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startAgentProc(t, srv.NS.ClientURL(), "hostA", hostNS)
	veth := manyPorts(prefix, "hostA", 1)[0]
	tap := &nsv1.Port{Id: "b1000000-0000-4000-8000-000000000001", NetworkId: netID, Host: "hostA", MacAddress: "fa:16:3e:00:10:01",
		Binding: &nsv1.Binding{Type: "tap"}}
	tapDev := links.TapName(tap.Id)
	if _, err := streams.NewPublisher(js, "test").Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: []*nsv1.Port{veth, tap}}); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: veth.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
		t.Fatal(err)
	}

	// A veth port's device deleted by hand comes back, with a status event, within 1 s.
	deleted := time.Now()
	run(t, "ip", "-n", hostNS, "link", "del", links.TapName(veth.Id))
	back := statuses.waitFor(t, deleted, time.Second, "veth re-created", func(ev *nsv1.StatusEvent) bool {
		return isPort(veth.Id, nsv1.Phase_PHASE_ACTIVE)(ev) && strings.Contains(ev.GetReason(), "re-created")
	})
	t.Logf("veth device re-created and reported %s after deletion", back.at.Sub(deleted).Round(time.Millisecond))

	// A tap binding whose device appears 2 s after the event: ACTIVE within 100 ms of it.
	time.Sleep(2 * time.Second) // the hypervisor is slow, on purpose: the test is about what happens when it finally acts
	if ev, _ := statuses.first(time.Time{}, isPort(tap.Id, nsv1.Phase_PHASE_ACTIVE)); ev.ev != nil {
		t.Fatal("tap port ACTIVE before its device exists")
	}
	created := time.Now()
	run(t, "ip", "-n", hostNS, "tuntap", "add", "dev", tapDev, "mode", "tap")
	up := statuses.waitFor(t, created, time.Second, "tap ACTIVE", isPort(tap.Id, nsv1.Phase_PHASE_ACTIVE))
	if d := up.at.Sub(created); d > 100*time.Millisecond {
		t.Errorf("tap port ACTIVE %s after its device appeared, want under 100ms", d)
	} else {
		t.Logf("tap port ACTIVE %s after its device appeared", d.Round(time.Millisecond))
	}

	// Removed by its owner: DOWN within 1 s; back: ACTIVE again.
	removed := time.Now()
	run(t, "ip", "-n", hostNS, "tuntap", "del", "dev", tapDev, "mode", "tap")
	statuses.waitFor(t, removed, time.Second, "tap DOWN", isPort(tap.Id, nsv1.Phase_PHASE_DOWN))
	readded := time.Now()
	run(t, "ip", "-n", hostNS, "tuntap", "add", "dev", tapDev, "mode", "tap")
	statuses.waitFor(t, readded, time.Second, "tap ACTIVE again", isPort(tap.Id, nsv1.Phase_PHASE_ACTIVE))
}

func TestPrivilegedBadEventsDoNotStopOthers(t *testing.T) {
	prefix, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startAgentProc(t, srv.NS.ClientURL(), "hostA", hostNS)
	const garbled = "c0000000-0000-4000-8000-000000000001"
	if _, err := js.Publish(ctx, "ns.desired.host.hostA.port."+garbled, []byte("not a protobuf \xff\xff")); err != nil {
		t.Fatal(err)
	}
	ports := manyPorts(prefix, "hostA", 3)
	lost := &nsv1.Port{Id: "d0000000-0000-4000-8000-000000000001", NetworkId: "d1111111-0000-4000-8000-000000000001", Host: "hostA",
		MacAddress: "fa:16:3e:00:20:01", Binding: &nsv1.Binding{Type: "tap"}}
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Apply(ctx, &nsv1.Topology{Networks: []*nsv1.Network{localNetwork()}, Ports: ports}); err != nil {
		t.Fatal(err)
	}
	// A port on a network nobody published cannot pass apply; write it as a raw event.
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, lost, "test"), 0); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{garbled: "undecodable", lost.Id: "is not in the desired state"} {
		ev, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: id, Phase: nsv1.Phase_PHASE_ERROR, AnyVersion: true})
		if err != nil || !strings.Contains(ev.GetReason(), want) {
			t.Fatalf("port %s: %v, reason %q, want it to say %q", id, err, ev.GetReason(), want)
		}
	}
	for _, p := range ports {
		if _, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: streams.KindPort, ID: p.Id, Phase: nsv1.Phase_PHASE_ACTIVE}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPrivilegedHeartbeat(t *testing.T) {
	_, hostNS := oneHost(t)
	srv := natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1")
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	startAgentProc(t, srv.NS.ClientURL(), "hostA", hostNS, "--local-ip", "198.18.0.1")
	var hb *nsv1.AgentHeartbeat
	err := streams.Follow(ctx, js, streams.StatusStream, streams.FollowOptions{Filters: []string{"ns.status.hostA.agent"}}, func(m streams.Msg) {
		if h, err := streams.DecodeHeartbeat(m.Data); err == nil && !h.GetStartFlag() && hb == nil {
			hb = h
			cancel()
		}
	})
	if err != nil || hb == nil {
		t.Fatalf("no heartbeat after the first full sync: %v", err)
	}
	c := hb.GetConfigurations()
	if hb.GetBinary() != "netsource-agent" || hb.GetHost() != "hostA" || hb.GetAgentType() != "Linux bridge agent" ||
		hb.GetTopic() != "N/A" || c.GetTunnelingIp() != "198.18.0.1" || len(c.GetTunnelTypes()) != 1 ||
		hb.GetReportInterval().AsDuration() != 500*time.Millisecond || hb.GetUuid() == "" || hb.GetStartedAt() == nil {
		t.Fatalf("heartbeat lacks agent_state fields: %v", hb)
	}
	if _, ok := hb.GetCounts()["kernel_mutations"]; !ok {
		t.Fatalf("heartbeat has no kernel_mutations count: %v", hb.GetCounts())
	}
}
