package agent_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// Helpers of the host-agent benchmarks (bench_linux_test.go): one host namespace per
// benchmark with an embedded JetStream server, agents run in-process on a counting
// netlink dataplane, and a status watcher that timestamps every status the agent stores.

const (
	benchHost   = "bench"
	benchNetID  = "7b1f5c9f-2d8e-4b66-8c40-3a2b5d1f0b01"
	benchSubnet = "1d6e2f30-4b5c-4d6e-9f70-8b9cad0e1f30"
	benchCIDR   = "198.18.0.0/15" // room for every port of the largest benchmark
	benchGW     = "198.18.0.1"
	// benchTimeout bounds every wait of one benchmark step.
	benchTimeout = 5 * time.Minute
)

// benchEnv is one benchmark's host: a namespace named <prefix>-host, VM namespaces named
// <prefix>-vm<n> (the agent creates them for veth bindings), and optionally a JetStream
// server and a status watcher.
type benchEnv struct {
	tb     testing.TB
	prefix string
	netns  string
	srv    *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	pub    *streams.Publisher
	watch  *statusWatch
	log    zerolog.Logger
}

// requireRootTB is requireRoot for benchmarks.
func requireRootTB(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces, veth pairs and bridges (run with sudo)")
	}
}

// newBenchNetns creates the host namespace and registers the removal of every namespace
// (and netsource ownership marker) with the benchmark's prefix, also when it fails.
func newBenchNetns(tb testing.TB) *benchEnv {
	tb.Helper()
	requireRootTB(tb)
	prefix := fmt.Sprintf("nsbm%04x", rand.IntN(0xffff))
	e := &benchEnv{tb: tb, prefix: prefix, netns: prefix + "-host",
		log: zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)}
	tb.Cleanup(func() { removeNamespaces(tb, prefix) })
	for _, args := range [][]string{
		{"ip", "netns", "add", e.netns},
		{"ip", "-n", e.netns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return e
}

// removeNamespaces deletes the named namespaces with prefix and netsource's markers of them.
func removeNamespaces(tb testing.TB, prefix string) {
	entries, _ := os.ReadDir("/run/netns")
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), prefix) {
			if err := netns.DeleteNamed(ent.Name()); err != nil {
				tb.Errorf("remove netns %s: %v", ent.Name(), err)
			}
		}
	}
	markers, _ := filepath.Glob(filepath.Join(links.DefaultMarkerDir, prefix+"*"))
	for _, m := range markers {
		_ = os.Remove(m)
	}
}

// newBenchEnv is newBenchNetns plus an embedded JetStream server (listening on TCP, as a
// real agent's server would), a publisher and a status watcher.
func newBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	e := newBenchNetns(tb)
	e.srv = natstest.StartAt(tb, tb.TempDir(), "127.0.0.1:-1")
	e.nc, e.js = e.srv.Connect()
	e.pub = streams.NewPublisher(e.js, "bench")
	e.watch = newStatusWatch(tb, e.nc, benchHost)
	return e
}

func (e *benchEnv) config() *config.Config {
	off := false
	cfg := &config.Config{Host: benchHost, Netns: e.netns} // without a server: only to build specs
	if e.srv != nil {
		cfg.NATS = e.srv.NS.ClientURL()
	}
	cfg.VXLAN.EnableVXLAN = &off
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		e.tb.Fatal(err)
	}
	return cfg
}

// benchAgent is one agent.Run in-process.
type benchAgent struct {
	dp       *countingDataplane
	released chan struct{} // closed once dp (and with it the agent's state) is garbage
	started  time.Time
	ready    chan struct{} // closed by Options.Ready
	readyAt  time.Time
	stop     func() // cancels Run, waits for it, closes the dataplane; idempotent
}

// startAgent runs an agent on its own netlink dataplane (wrapped for counting) and waits
// until it has loaded the desired state.
func (e *benchEnv) startAgent(ctx context.Context) *benchAgent {
	e.tb.Helper()
	nl, err := links.New(e.netns, e.log)
	if err != nil {
		e.tb.Fatal(err)
	}
	a := &benchAgent{dp: newCountingDataplane(nl), ready: make(chan struct{}), released: make(chan struct{})}
	runtime.AddCleanup(a.dp, func(released chan struct{}) { close(released) }, a.released)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.tb.Errorf("agent: %v", err)
			}
			nl.Close()
		})
	}
	e.tb.Cleanup(a.stop)
	a.started = time.Now()
	go func() {
		done <- agent.Run(runCtx, e.config(), agent.Options{Dataplane: a.dp, Ready: func() {
			a.readyAt = time.Now()
			close(a.ready)
		}}, e.log)
	}()
	select {
	case <-a.ready:
	case err := <-done:
		done <- err
		e.tb.Fatalf("agent ended before it was ready: %v", err)
	case <-ctx.Done():
		e.tb.Fatalf("agent not ready: %v", ctx.Err())
	}
	return a
}

// waitReleased waits until none of a stopped agent's state is reachable any more, which
// takes a moment after agent.Run returns. Three facts, because each covers another
// retainer: the garbage collector found the agent's dataplane unreachable (released is
// benchAgent.released; the caller must drop its own references to the agent first; every
// actor holds the Env that holds the dataplane); no protoactor goroutine runs (the
// dead-letter throttle keeps one for a second after the dead letters of the shutdown, and
// with it the actor system and its 3.5 MB process registry); and the server is down to
// clients connections (Run drains its connection asynchronously, and the subscription
// handlers reference the actor system).
func (e *benchEnv) waitReleased(ctx context.Context, released <-chan struct{}, clients int) {
	e.tb.Helper()
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 1<<20)
	gone := false
	for {
		runtime.GC()
		select {
		case <-released:
			gone = true
		default:
		}
		n := runtime.Stack(buf, true)
		if gone && e.srv.NS.NumClients() <= clients && !strings.Contains(string(buf[:n]), "github.com/asynkron/protoactor-go/") {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			e.tb.Fatalf("the stopped agent's state is still reachable (dataplane collected: %t, clients: %d): %v",
				gone, e.srv.NS.NumClients(), ctx.Err())
		}
	}
}

// benchNetwork is the "local" network every benchmark port is on (no uplink: the agent
// creates a bridge with the first port and removes it after the last).
func benchNetwork() *nsv1.Network {
	return &nsv1.Network{Id: benchNetID, Name: "bench", NetworkType: "local", Mtu: 1500,
		Subnets: []*nsv1.Subnet{{Id: benchSubnet, Cidr: benchCIDR, GatewayIp: benchGW, IpVersion: 4}}}
}

// benchPortID is the id of port n. Device names are tap+id[:11], so the number is in the
// first 8 characters.
func benchPortID(n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)
}

// benchPort is port n: a veth binding into its own VM namespace <prefix>-vm<n>, with
// address 198.18.0.0+n+1 and the gateway as default route.
func (e *benchEnv) benchPort(n int) *nsv1.Port {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.BigEndian.Uint32(net.ParseIP("198.18.0.0").To4())+uint32(n)+1)
	return &nsv1.Port{Id: benchPortID(n), NetworkId: benchNetID, Host: benchHost,
		MacAddress: fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", n>>16&0xff, n>>8&0xff, n&0xff),
		FixedIps:   []*nsv1.FixedIP{{SubnetId: benchSubnet, IpAddress: ip.String()}},
		Binding:    &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("%s-vm%d", e.prefix, n)}}
}

// deletePorts publishes the tombstones of ports (with 16 writers, as apply does) and waits
// until the agent reports every one DELETED.
func (e *benchEnv) deletePorts(ctx context.Context, ports []*nsv1.Port, seqs map[string]uint64) {
	e.tb.Helper()
	after := time.Now()
	tomb := make(map[string]uint64, len(ports))
	var mu sync.Mutex
	err := runParallel(16, len(ports), func(i int) error {
		p := ports[i]
		ack, err := e.pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_DELETED, p, ""), seqs[p.GetId()])
		mu.Lock()
		tomb[p.GetId()] = ack.Seq
		mu.Unlock()
		return err
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	if _, err := e.watch.waitAll(ctx, streams.KindPort, tomb, nsv1.Phase_PHASE_DELETED, after); err != nil {
		e.tb.Fatal(err)
	}
}

// runParallel runs fn(0..n-1) on workers goroutines and joins the errors.
func runParallel(workers, n int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// statusWatch timestamps every status the host stores, from a core NATS subscription on
// the host's status subjects: a subscriber sees a message as the server stores it, without
// the delivery delay of a JetStream consumer.
type statusWatch struct {
	mu       sync.Mutex
	events   map[string][]statusSeen // kind/id -> in arrival order
	received int
	changed  chan struct{}
}

type statusSeen struct {
	phase nsv1.Phase
	seq   uint64
	at    time.Time
}

func newStatusWatch(tb testing.TB, nc *nats.Conn, host string) *statusWatch {
	tb.Helper()
	w := &statusWatch{events: map[string][]statusSeen{}, changed: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(streams.StatusRoot+"."+host+".*.*", func(m *nats.Msg) {
		at := time.Now()
		t := strings.Split(m.Subject, ".")
		if len(t) != 5 {
			return
		}
		ev, err := streams.DecodeStatus(m.Data)
		if err != nil {
			return
		}
		w.mu.Lock()
		key := t[3] + "/" + t[4]
		w.events[key] = append(w.events[key], statusSeen{phase: ev.GetPhase(), seq: ev.GetDesiredSeq(), at: at})
		w.received++
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the interest is registered before anything is published
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// reached returns when kind/id first reached phase at desired sequence minSeq or later,
// received after after.
func (w *statusWatch) reached(kind streams.Kind, id string, phase nsv1.Phase, minSeq uint64, after time.Time) (time.Time, bool) {
	for _, s := range w.events[string(kind)+"/"+id] {
		if s.phase == phase && s.seq >= minSeq && !s.at.Before(after) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// waitAll waits until every object of seqs (id -> desired sequence) reached phase, and
// returns when each did.
func (w *statusWatch) waitAll(ctx context.Context, kind streams.Kind, seqs map[string]uint64, phase nsv1.Phase,
	after time.Time) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	out := make(map[string]time.Time, len(seqs))
	for {
		w.mu.Lock()
		for id, seq := range seqs {
			if _, ok := out[id]; ok {
				continue
			}
			if at, ok := w.reached(kind, id, phase, seq, after); ok {
				out[id] = at
			}
		}
		w.mu.Unlock()
		if len(out) == len(seqs) {
			return out, nil
		}
		select {
		case <-w.changed:
		case <-ctx.Done():
			return out, fmt.Errorf("%d of %d %ss reached %s: %w; last statuses: %s", len(out), len(seqs), kind,
				streams.PhaseName(phase), ctx.Err(), w.missing(kind, seqs, out))
		}
	}
}

// missing describes the last status of a few objects that did not reach the phase.
func (w *statusWatch) missing(kind streams.Kind, seqs map[string]uint64, done map[string]time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range seqs {
		if _, ok := done[id]; ok {
			continue
		}
		last := "none"
		if ev := w.events[string(kind)+"/"+id]; len(ev) > 0 {
			l := ev[len(ev)-1]
			last = fmt.Sprintf("%s@%d", streams.PhaseName(l.phase), l.seq)
		}
		out = append(out, id+" "+last)
		if len(out) == 3 {
			break
		}
	}
	return strings.Join(out, ", ")
}

// total returns the number of status events received so far.
func (w *statusWatch) total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.received
}

// count returns how many statuses of kind/id were received.
func (w *statusWatch) count(kind streams.Kind, id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events[string(kind)+"/"+id])
}

// forget drops what was recorded (so it does not count as agent memory).
func (w *statusWatch) forget() {
	w.mu.Lock()
	w.events = map[string][]statusSeen{}
	w.mu.Unlock()
}

// countingDataplane wraps the netlink dataplane and records, per port, how often the agent
// ensured it and when that first succeeded: the agent publishes nothing when a restart
// changes nothing, so this is how a benchmark sees a restart converge.
type countingDataplane struct {
	links.Dataplane
	mu              sync.Mutex
	ports           map[string]*portCalls
	portCalls       int
	networkCalls    int
	networkOK       time.Time
	inventoryDone   time.Time
	portsOK         int
	lastFirstPortOK time.Time
	lastCall        time.Time // of EnsurePort or EnsureNetwork
	changed         chan struct{}
}

type portCalls struct {
	calls int
	// okStart and okEnd bracket the first successful EnsurePort.
	okStart, okEnd time.Time
}

func newCountingDataplane(dp links.Dataplane) *countingDataplane {
	return &countingDataplane{Dataplane: dp, ports: map[string]*portCalls{}, changed: make(chan struct{}, 1)}
}

func (c *countingDataplane) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *countingDataplane) EnsurePort(ctx context.Context, spec links.PortSpec) (links.PortState, error) {
	begin := time.Now()
	st, err := c.Dataplane.EnsurePort(ctx, spec)
	now := time.Now()
	c.mu.Lock()
	pc := c.ports[spec.ID]
	if pc == nil {
		pc = &portCalls{}
		c.ports[spec.ID] = pc
	}
	pc.calls++
	c.portCalls++
	c.lastCall = now
	first := err == nil && pc.okEnd.IsZero()
	if first {
		pc.okStart, pc.okEnd = begin, now
		c.portsOK++
		c.lastFirstPortOK = now
	}
	c.mu.Unlock()
	if first {
		c.notify()
	}
	return st, err
}

func (c *countingDataplane) EnsureNetwork(ctx context.Context, spec links.NetworkSpec) error {
	err := c.Dataplane.EnsureNetwork(ctx, spec)
	now := time.Now()
	c.mu.Lock()
	c.networkCalls++
	c.lastCall = now
	if err == nil && c.networkOK.IsZero() {
		c.networkOK = now
	}
	c.mu.Unlock()
	c.notify()
	return err
}

func (c *countingDataplane) Inventory(ctx context.Context) ([]links.Device, error) {
	devs, err := c.Dataplane.Inventory(ctx)
	c.mu.Lock()
	if c.inventoryDone.IsZero() {
		c.inventoryDone = time.Now()
	}
	c.mu.Unlock()
	c.notify()
	return devs, err
}

// calls returns the EnsurePort and EnsureNetwork calls made so far.
func (c *countingDataplane) calls() (ports, networks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.portCalls, c.networkCalls
}

// waitFirstPass waits until the network and the given number of ports were ensured
// successfully and the orphan inventory ran, and returns when the last of these happened.
func (c *countingDataplane) waitFirstPass(ctx context.Context, ports int) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	for {
		c.mu.Lock()
		done := c.portsOK >= ports && !c.networkOK.IsZero() && !c.inventoryDone.IsZero()
		last := c.lastFirstPortOK
		for _, t := range []time.Time{c.networkOK, c.inventoryDone} {
			if t.After(last) {
				last = t
			}
		}
		okPorts := c.portsOK
		c.mu.Unlock()
		if done {
			return last, nil
		}
		select {
		case <-c.changed:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%d of %d ports ensured: %w", okPorts, ports, ctx.Err())
		}
	}
}

// firstEnsure returns when the first successful EnsurePort of port id began and ended.
func (c *countingDataplane) firstEnsure(id string) (begin, end time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc := c.ports[id]
	if pc == nil || pc.okEnd.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	return pc.okStart, pc.okEnd, true
}

// waitIdle waits until the agent has not ensured anything for quiet, and returns the time of
// its last ensure. The agent has no "idle" signal: after the last port is ACTIVE it still
// handles the kernel's link events of its own changes, which re-run EnsurePort; this is
// the one place the benchmarks poll.
func (c *countingDataplane) waitIdle(ctx context.Context, quiet time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	tick := time.NewTicker(quiet / 10)
	defer tick.Stop()
	for {
		c.mu.Lock()
		last := c.lastCall
		c.mu.Unlock()
		if time.Since(last) >= quiet {
			return last, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return last, fmt.Errorf("agent still busy: %w", ctx.Err())
		}
	}
}

// forget drops the per-port records (so they do not count as agent memory).
func (c *countingDataplane) forget() {
	c.mu.Lock()
	c.ports = map[string]*portCalls{}
	c.mu.Unlock()
}

// percentileMS is the nearest-rank percentile of durations, in milliseconds.
func percentileMS(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	rank = min(max(rank, 0), len(s)-1)
	return inMS(s[rank])
}

func inMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// liveHeap returns the bytes and the number of live heap objects after a full collection
// (HeapAlloc and HeapObjects right after runtime.GC count live objects only). HeapInuse is
// not used: it counts whole spans, so a delta also measures how fragmented the spans freed
// by a previous agent are, which swung the per-port figure by ±6 KB between runs.
func liveHeap() (bytes, objects uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.HeapObjects
}

// breakdown splits publish → ACTIVE latencies of ports into where the time went.
type breakdown struct {
	total  []time.Duration // publish → ACTIVE status received
	wait   []time.Duration // publish → the successful EnsurePort began (stream delivery, actors, bridge, queueing)
	kernel []time.Duration // that EnsurePort call
	report []time.Duration // EnsurePort returned → ACTIVE status received (status publishing)
}

// add records one port published at start that reached ACTIVE at active.
func (b *breakdown) add(dp *countingDataplane, id string, start, active time.Time) {
	b.total = append(b.total, active.Sub(start))
	if begin, end, ok := dp.firstEnsure(id); ok {
		b.wait = append(b.wait, begin.Sub(start))
		b.kernel = append(b.kernel, end.Sub(begin))
		b.report = append(b.report, active.Sub(end))
	}
}

func (b *breakdown) reportTo(tb *testing.B) {
	tb.ReportMetric(percentileMS(b.total, 50), "p50-ms")
	tb.ReportMetric(percentileMS(b.total, 99), "p99-ms")
	tb.ReportMetric(percentileMS(b.wait, 50), "wait-p50-ms")
	tb.ReportMetric(percentileMS(b.kernel, 50), "kernel-p50-ms")
	tb.ReportMetric(percentileMS(b.report, 50), "report-p50-ms")
}
