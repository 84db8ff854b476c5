package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/streams"
)

// Ports of the server processes of TestClusterLeaderKilledLosesNothing: six consecutive
// ports (three client, three route) from [24000, 26000), below the Linux ephemeral range and
// apart from this package's in-process cluster (20000-22000), cmd/netsource's cluster
// (22000-23800) and the streams package's (13000-19000).
const killClusterPorts = 24000

// serverProc is one `netsource server --cluster` process.
type serverProc struct {
	name, url, log string
	cmd            *exec.Cmd
	done           chan struct{}
}

// kill sends sig to the process by its PID and waits (up to 20 s, then SIGKILL) for it.
func (p *serverProc) kill(sig syscall.Signal) { stopByPID(p.cmd, p.done, sig) }

// freePortRun returns the first of n consecutive ports from a random start in
// [base, base+2000) that loopback listeners can take now.
func freePortRun(t *testing.T, base, n int) int {
	t.Helper()
	for range 200 {
		first := base + rand.IntN(2000-n)
		ok := true
		for i := range n {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first+i))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatalf("no %d free ports from %d", n, base)
	return 0
}

// startServerProcs starts three `netsource server --cluster` processes with authConf (the
// auth.conf of `netsource auth init`); they form one cluster and create the streams R3
// themselves. Every process is stopped when the test ends, by PID, and its log shown if the
// test failed.
func startServerProcs(t *testing.T, dir, authConf string) []*serverProc {
	t.Helper()
	const n = 3
	first := freePortRun(t, killClusterPorts, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", first+n+i))
	}
	var procs []*serverProc
	for i := range n {
		p := &serverProc{name: fmt.Sprintf("nskill-%d", i), url: fmt.Sprintf("nats://127.0.0.1:%d", first+i),
			log: filepath.Join(dir, fmt.Sprintf("server-%d.log", i)), done: make(chan struct{})}
		f, err := os.Create(p.log)
		if err != nil {
			t.Fatal(err)
		}
		p.cmd = exec.Command(netsourceBinary(t), "server", "--store", filepath.Join(dir, "store", p.name),
			"--listen", strings.TrimPrefix(p.url, "nats://"), "--auth", authConf, "--name", p.name,
			"--cluster", "nskill", "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", first+n+i), "--routes", strings.Join(routes, ","),
			"--log-level", "info")
		p.cmd.Stdout, p.cmd.Stderr = f, f
		// Should the test binary die (a -timeout panic skips the cleanups), so does the server:
		// Pdeathsig fires when the thread that started it exits, so that thread is kept
		// locked to the goroutine that waits for the process.
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error)
		go func() {
			runtime.LockOSThread()
			err := p.cmd.Start()
			started <- err
			if err == nil {
				_ = p.cmd.Wait()
			}
			f.Close()
			close(p.done)
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.kill(syscall.SIGTERM)
			if t.Failed() {
				out, _ := os.ReadFile(p.log)
				t.Logf("server %s (pid %d) log:\n%s", p.name, p.cmd.Process.Pid, out)
			}
		})
		procs = append(procs, p)
	}
	return procs
}

// streamInfo asks for a stream's info with a short deadline.
func streamInfo(ctx context.Context, js jetstream.JetStream, stream string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// TestClusterLeaderKilledLosesNothing is TestClusterLeaderLossLosesNothing with three real
// `netsource server --cluster` processes, started with the auth.conf of `netsource auth
// init`, which create R3 streams themselves; after 2,000 acknowledged appends the process
// leading NETSOURCE_DESIRED (to which publishers and agent are connected) gets SIGKILL: no
// leadership hand-over, an election among the other two instead. Same checks: every event
// once and in writer order, every ack at its sequence, the agent at the final state a fresh
// agent builds.
func TestClusterLeaderKilledLosesNothing(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	creds, authConf := initClusterAuth(t, dir)
	netsourceBinary(t) // build before timing anything
	t.Logf("binary built: %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	procs := startServerProcs(t, dir, authConf)
	byName := map[string]*serverProc{}
	var all []string
	for _, p := range procs {
		byName[p.name] = p
		all = append(all, p.url)
	}

	// The admin watches the cluster through any server.
	adminConn, err := nats.Connect(strings.Join(all, ","), append(clusterClientOptions(t, creds, "admin"),
		nats.RetryOnFailedConnect(true))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adminConn.Close)
	adminJS, _ := jetstream.New(adminConn)
	var leader *serverProc
	waitFact(t, 60*time.Second, "R3 streams with a leader and two current replicas", func() error {
		for _, stream := range []string{streams.DesiredStream, streams.StatusStream} {
			info, err := streamInfo(ctx, adminJS, stream)
			if err != nil {
				return err
			}
			if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("%s: R%d, cluster %+v", stream, info.Config.Replicas, info.Cluster)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return fmt.Errorf("%s: replica %s not current", stream, r.Name)
				}
			}
			if stream == streams.DesiredStream {
				leader = byName[info.Cluster.Leader]
			}
		}
		if leader == nil {
			return fmt.Errorf("leader is none of our processes")
		}
		return nil
	})
	// Everyone connects to the leader first, so its death forces every client to fail over.
	urls := []string{leader.url}
	var survivors []string
	for _, p := range procs {
		if p != leader {
			urls, survivors = append(urls, p.url), append(survivors, p.url)
		}
	}
	url := strings.Join(urls, ",")
	pubConn, err := nats.Connect(url, clusterClientOptions(t, creds, "publisher")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pubConn.Close)
	if got := pubConn.ConnectedServerName(); got != leader.name {
		t.Fatalf("publisher connected to %s, want the leader %s", got, leader.name)
	}
	pubJS, _ := jetstream.New(pubConn)
	pub := streams.NewPublisher(pubJS, "kill-test")
	a, cfg, sec := clusterAgent(t, creds, url)
	t.Logf("3 server processes up, streams R3, leader %s (pid %d), agent ready: %s", leader.name, leader.cmd.Process.Pid,
		time.Since(start).Round(time.Millisecond))

	// After the kill, the admin (moved to a survivor) notes when a new leader is elected.
	elected := make(chan string, 1)
	killed := make(chan time.Time, 1)
	go func() {
		var at time.Time
		select {
		case at = <-killed:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			if info, err := streamInfo(ctx, adminJS, streams.DesiredStream); err == nil && info.Cluster != nil && info.Cluster.Leader != "" &&
				info.Cluster.Leader != leader.name {
				elected <- fmt.Sprintf("%s after %s", info.Cluster.Leader, time.Since(at).Round(time.Millisecond))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	load := writeClusterLoad(t, ctx, pub, func() {
		leader.kill(syscall.SIGKILL) // by PID; returns once the process is gone
		killed <- time.Now()
	})
	var newLeader string
	select {
	case newLeader = <-elected:
	case <-time.After(30 * time.Second):
		newLeader = "(none seen)"
	}
	load.logSummary(t, fmt.Sprintf("%s (pid %d, %v)", leader.name, leader.cmd.Process.Pid, leader.cmd.ProcessState),
		newLeader, pubConn.ConnectedServerName())
	if ws, ok := leader.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the leader ended with %v, not by SIGKILL", leader.cmd.ProcessState)
	}

	// The stream, read whole through the survivors.
	rc, err := nats.Connect(strings.Join(survivors, ","), clusterClientOptions(t, creds, "admin")...)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rjs, _ := jetstream.New(rc)
	load.checkStream(t, ctx, rjs)
	if pubConn.Stats().Reconnects == 0 {
		t.Error("the publisher never reconnected")
	}
	load.checkAgent(t, a, cfg, sec)
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
}
