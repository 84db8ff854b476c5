package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Simulator runs one host's actor tree (actors.HostProps, the agent's own code) over a
// recording dataplane: a links.Fake behind a Recorder, and a RecordingReporter for status.
//
// # Determinism
//
// The agent's actors run concurrently; the simulator makes them run one at a time, in an
// order that depends only on the input. Every actor of the tree gets a dispatcher that does
// not start a goroutine but puts the actor's mailbox run on one run queue, keyed by the
// actor's place in the tree (the supervisor first, then children in the order they were
// spawned); Feed drains that queue on the calling goroutine, lowest key first. Each run
// processes its mailbox in arrival order, so this is one of the schedules the concurrent
// agent can take, chosen canonically. The queue being empty is the quiescence fact that
// ends a step: no actor has a message left, and every dataplane call and status report the
// event caused has happened. A mailbox middleware counts messages posted and processed as
// a second check: after the drain the count must be zero (it is not when a child crashed
// and waits, suspended, for its restart).
//
// Retries after failures and restarts after crashes are timers in the agent; the simulator
// gives them a backoff far beyond any simulation, so a failed call is shown once and not
// repeated. Link events are not simulated: nobody but the actors touches the fake, and the
// agent re-converges on a link event only when the kernel diverged from what it wanted.
type Simulator struct {
	sched    *scheduler
	system   *actor.ActorSystem
	host     *actor.PID
	fake     *links.Fake
	rec      *Recorder
	rep      *actors.RecordingReporter
	inflight atomic.Int64
	reported int
	cfg      *config.Config
}

// never is a backoff no simulation outlives.
const never = 10 * 365 * 24 * time.Hour

// NewSimulator starts an actor tree for cfg's host (cfg gets its defaults in place). Devices
// the host has from outside (the mapped physical interfaces and bridges, and underlay, the
// device holding the VXLAN local_ip, when VXLAN is on) are added to the fake first.
func NewSimulator(cfg *config.Config, underlay string) (*Simulator, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulated agent configuration: %w", err)
	}
	fake := links.NewFake()
	for _, dev := range sortedValues(cfg.PhysicalInterfaceMappings) {
		fake.AddDevice(dev, "device")
	}
	for _, br := range sortedValues(cfg.BridgeMappings) {
		fake.AddDevice(br, "bridge")
	}
	if cfg.VXLAN.Enabled() && underlay != "" {
		fake.AddDevice(underlay, "device")
		cfg.VXLAN.Device = underlay
	}
	s := &Simulator{sched: &scheduler{}, fake: fake, rep: actors.NewRecordingReporter(), cfg: cfg}
	s.rec = NewRecorder(fake)
	env := &actors.Env{Config: cfg, Dataplane: s.rec, Reporter: s.rep, Log: zerolog.Nop(), OpTimeout: time.Minute,
		Backoff: actors.Backoff{Base: never, Max: never}, Objects: map[streams.Kind]actors.ObjectProducer{}}
	s.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	host, err := s.system.Root.SpawnNamed(s.instrument(actors.HostProps(env)), "host-"+cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("spawn simulated host supervisor: %w", err)
	}
	s.host = host
	if err := s.drain(); err != nil {
		return nil, err
	}
	return s, nil
}

// instrument gives an actor's props the simulator's dispatcher and counting mailbox, and
// the spawn middleware that does the same for the actor's children.
func (s *Simulator) instrument(props *actor.Props) *actor.Props {
	return props.Configure(
		actor.WithDispatcher(&keyedDispatcher{sched: s.sched, key: s.sched.newKey()}),
		actor.WithMailbox(actor.Unbounded(&mailboxCounter{n: &s.inflight})),
		actor.WithSpawnMiddleware(func(next actor.SpawnFunc) actor.SpawnFunc {
			return func(sys *actor.ActorSystem, id string, p *actor.Props, parent actor.SpawnerContext) (*actor.PID, error) {
				return next(sys, id, s.instrument(p), parent)
			}
		}),
	)
}

// drain runs actors until none has work: the step's quiescence.
func (s *Simulator) drain() error {
	s.sched.drain()
	if n := s.inflight.Load(); n != 0 {
		return fmt.Errorf("%w: %d messages wait in suspended actors (a child crashed; the agent would restart it after backoff)", ErrNotQuiescent, n)
	}
	return nil
}

// ErrNotQuiescent: after a step some messages could not be processed.
var ErrNotQuiescent = errors.New("actor tree not quiescent")

// StepResult is what one input made the host do.
type StepResult struct {
	Ops      []Op         `json:"ops"`
	Statuses []StepStatus `json:"statuses,omitempty"`
	Note     string       `json:"note,omitempty"`
}

// StepStatus is one status report (without times and details, which vary between runs).
type StepStatus struct {
	Kind       string `json:"kind"`
	ID         string `json:"id"`
	Phase      string `json:"phase"`
	Reason     string `json:"reason"`
	DesiredSeq uint64 `json:"desired_seq"`
}

func (s *Simulator) send(msg any) StepResult {
	s.system.Root.Send(s.host, msg)
	var res StepResult
	if err := s.drain(); err != nil {
		res.Note = err.Error()
	}
	res.Ops = s.rec.Take()
	events := s.rep.Events()
	for _, ev := range events[s.reported:] {
		res.Statuses = append(res.Statuses, StepStatus{Kind: ev.GetKind(), ID: ev.GetId(), Phase: streams.PhaseName(ev.GetPhase()),
			Reason: stableText(ev.GetReason()), DesiredSeq: ev.GetDesiredSeq()})
	}
	s.reported = len(events)
	return res
}

// CaughtUp tells the tree the desired state is loaded, as the agent does when its reader
// has delivered what was stored at start (orphan pruning runs).
func (s *Simulator) CaughtUp() StepResult { return s.send(&actors.CaughtUp{}) }

// Desired feeds one desired message.
func (s *Simulator) Desired(m streams.Msg) StepResult { return s.send(&actors.DesiredMsg{Msg: m}) }

// RemotePort feeds another agent's port status (l2population).
func (s *Simulator) RemotePort(ev *nsv1.StatusEvent) StepResult {
	return s.send(&actors.RemotePortStatus{Status: ev})
}

// Dump is the fake dataplane's state as sorted lines (links.Fake.Dump).
func (s *Simulator) Dump() string { return s.fake.Dump() }

// Close stops the tree.
func (s *Simulator) Close() {
	s.system.Root.Poison(s.host)
	s.sched.drain()
	s.system.Shutdown()
}

// scheduler is the simulator's single run queue.
type scheduler struct {
	mu    sync.Mutex
	ready []task
	keys  uint64
}

type task struct {
	key uint64
	run func()
}

func (q *scheduler) newKey() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.keys++
	return q.keys
}

func (q *scheduler) push(key uint64, run func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ready = append(q.ready, task{key: key, run: run})
}

// pop takes the ready task with the lowest key.
func (q *scheduler) pop() func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ready) == 0 {
		return nil
	}
	best := 0
	for i, t := range q.ready {
		if t.key < q.ready[best].key {
			best = i
		}
	}
	run := q.ready[best].run
	q.ready = slices.Delete(q.ready, best, best+1)
	return run
}

func (q *scheduler) drain() {
	for run := q.pop(); run != nil; run = q.pop() {
		run()
	}
}

// keyedDispatcher queues an actor's mailbox runs under its key instead of starting a
// goroutine (protoactor schedules at most one run per mailbox at a time).
type keyedDispatcher struct {
	sched *scheduler
	key   uint64
}

func (d *keyedDispatcher) Schedule(fn func()) { d.sched.push(d.key, fn) }
func (d *keyedDispatcher) Throughput() int    { return 300 }

// mailboxCounter counts messages posted to and processed by the tree's mailboxes.
type mailboxCounter struct{ n *atomic.Int64 }

func (c *mailboxCounter) MailboxStarted()       {}
func (c *mailboxCounter) MessagePosted(any)     { c.n.Add(1) }
func (c *mailboxCounter) MessageReceived(any)   { c.n.Add(-1) }
func (c *mailboxCounter) MailboxEmpty()         {}
func sortedValues(m map[string]string) []string { return slices.Sorted(maps.Values(m)) }

// SimOptions configures Simulate.
type SimOptions struct {
	Host string
	// To ends the history (a desired sequence or a time; open: all of it).
	To Bound
	// Config is the simulated agent's configuration. Nil: the host's last heartbeat up to
	// To (its mappings, tunnel IP and l2population), else VXLAN off and no mappings.
	Config *config.Config
	// Underlay names the device holding the VXLAN local_ip in the fake (default eth1).
	Underlay string
}

// Simulation is the outcome of Simulate.
type Simulation struct {
	Host       string `json:"host"`
	To         string `json:"to"`
	ConfigFrom string `json:"config_from"`
	Config     string `json:"config"`
	Steps      []Step `json:"steps"`
	Dump       string `json:"dump"`
}

// Step is one input and what the host did with it.
type Step struct {
	Input   string    `json:"input"` // start | desired | remote-status
	Seq     uint64    `json:"seq,omitempty"`
	Time    time.Time `json:"time,omitzero"`
	Subject string    `json:"subject,omitempty"`
	Kind    string    `json:"kind,omitempty"`
	ID      string    `json:"id,omitempty"`
	Host    string    `json:"host,omitempty"`
	Change  string    `json:"change,omitempty"`
	Phase   string    `json:"phase,omitempty"` // remote status
	StepResult
}

// Simulate runs a host's actor tree over the host's desired history (its own subjects,
// every network and security group) from the start, as an agent that was running all
// along saw it: caught up on an empty stream, then one event at a time. With l2population
// on, other agents' port status events are fed too, merged by time.
func Simulate(ctx context.Context, src Source, o SimOptions) (*Simulation, error) {
	filters, err := streams.HostFilters(o.Host)
	if err != nil {
		return nil, err
	}
	sim := &Simulation{Host: o.Host, To: o.To.String()}
	cfg := o.Config
	if cfg != nil {
		sim.ConfigFrom = "configuration given"
		cfg.Host = o.Host
	} else {
		hb, at, err := lastHeartbeat(ctx, src, o.Host, o.To)
		if err != nil {
			return nil, err
		}
		cfg = ConfigFromHeartbeat(o.Host, hb)
		sim.ConfigFrom = "defaults (no heartbeat from " + o.Host + ")"
		if hb != nil {
			sim.ConfigFrom = "heartbeat of " + o.Host + " at " + at.UTC().Format(time.RFC3339Nano)
		}
	}
	underlay := o.Underlay
	if underlay == "" {
		underlay = "eth1"
	}
	s, err := NewSimulator(cfg, underlay)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	sim.Config = configText(s.cfg)
	subjects := filters
	l2pop := s.cfg.VXLAN.Enabled() && s.cfg.VXLAN.L2Population
	streamsRead := []Stream{Desired}
	if l2pop {
		subjects = append(subjects, streams.StatusFilter("", streams.KindPort))
		streamsRead = append(streamsRead, Status)
	}
	q, err := Select(ctx, src, streamsRead, subjects, Bound{}, o.To)
	if err != nil {
		return nil, err
	}
	q.NoHeaders = true
	sim.Steps = append(sim.Steps, Step{Input: "start", StepResult: s.CaughtUp()})
	err = src.Scan(ctx, q, func(r *Record) error {
		if r.Stream == Status {
			ev, err := streams.DecodeStatus(r.Data)
			if err != nil || ev.GetHost() == o.Host {
				return nil
			}
			sim.Steps = append(sim.Steps, Step{Input: "remote-status", Seq: r.Seq, Time: r.Time, Subject: r.Subject,
				Kind: ev.GetKind(), ID: ev.GetId(), Host: ev.GetHost(), Phase: streams.PhaseName(ev.GetPhase()), StepResult: s.RemotePort(ev)})
			return nil
		}
		st := Step{Input: "desired", Seq: r.Seq, Time: r.Time, Subject: r.Subject, Change: "undecodable"}
		if addr, err := streams.ParseDesiredSubject(r.Subject); err == nil {
			st.Kind, st.ID, st.Host = string(addr.Kind), addr.ID, addr.Host
		}
		if ev, err := streams.DecodeDesired(r.Data); err == nil {
			st.Change = streams.ChangeName(ev.GetChange())
		}
		st.StepResult = s.Desired(r.Msg())
		sim.Steps = append(sim.Steps, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("simulate %s: %w", o.Host, err)
	}
	sim.Dump = s.Dump()
	return sim, nil
}

// lastHeartbeat finds a host's last heartbeat up to a bound.
func lastHeartbeat(ctx context.Context, src Source, host string, to Bound) (*nsv1.AgentHeartbeat, time.Time, error) {
	subject, err := streams.AgentSubject(host)
	if err != nil {
		return nil, time.Time{}, err
	}
	q, err := Select(ctx, src, []Stream{Status}, []string{subject}, Bound{}, to)
	if err != nil {
		return nil, time.Time{}, err
	}
	q.NoHeaders = true
	var last *Record
	err = src.Scan(ctx, q, func(r *Record) error {
		last = r
		return nil
	})
	if err != nil || last == nil {
		return nil, time.Time{}, err
	}
	hb, err := streams.DecodeHeartbeat(last.Data)
	if err != nil {
		return nil, time.Time{}, nil
	}
	return hb, last.Time, nil
}

// ConfigFromHeartbeat rebuilds the options an agent reported in its heartbeat: mechanism,
// mappings, VXLAN tunnel IP and l2population (VXLAN group, port, TTL and TOS are not
// reported and take their defaults). A nil heartbeat gives VXLAN off and no mappings.
func ConfigFromHeartbeat(host string, hb *nsv1.AgentHeartbeat) *config.Config {
	c := hb.GetConfigurations()
	cfg := &config.Config{Host: host, Mechanism: c.GetMechanism(),
		PhysicalInterfaceMappings: c.GetInterfaceMappings(), BridgeMappings: c.GetBridgeMappings()}
	if ip := c.GetTunnelingIp(); ip != "" {
		cfg.VXLAN.LocalIP, cfg.VXLAN.L2Population = ip, c.GetL2Population()
	} else {
		off := false
		cfg.VXLAN.EnableVXLAN = &off
	}
	return cfg
}

func configText(c *config.Config) string {
	parts := []string{c.Mechanism}
	if c.VXLAN.Enabled() {
		v := "vxlan local_ip " + c.VXLAN.LocalIP
		if c.VXLAN.L2Population {
			v += " l2population"
		} else {
			v += " group " + c.VXLAN.VXLANGroup
		}
		if c.VXLAN.Device != "" {
			v += " underlay " + c.VXLAN.Device
		}
		parts = append(parts, v)
	} else {
		parts = append(parts, "vxlan off")
	}
	mapping := func(name string, m map[string]string) {
		if len(m) == 0 {
			return
		}
		var kv []string
		for k, v := range m {
			kv = append(kv, k+":"+v)
		}
		slices.Sort(kv)
		parts = append(parts, name+" "+strings.Join(kv, ","))
	}
	mapping("physical_interface_mappings", c.PhysicalInterfaceMappings)
	mapping("bridge_mappings", c.BridgeMappings)
	return strings.Join(parts, ", ")
}
