package ops

import (
	"sort"
	"sync"
	"time"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// DownAfterIntervals is how many report intervals without a heartbeat make a host down.
const DownAfterIntervals = 3

// defaultReportInterval is assumed for a heartbeat that does not say its interval.
const defaultReportInterval = 10 * time.Second

// Options configures a Fleet; zero values take the defaults.
type Options struct {
	// FeedSize is how many recent status events are kept (default 200).
	FeedSize int
	// LatencySize is how many convergence samples are kept (default 500).
	LatencySize int
	// DeletedTTL is how long a DELETED object stays in views (default 2 minutes).
	DeletedTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Notice, if set, is called once with each notice the fleet starts showing (see
	// View.Notice), e.g. to log it.
	Notice func(string)
}

func (o Options) withDefaults() Options {
	if o.FeedSize <= 0 {
		o.FeedSize = 200
	}
	if o.LatencySize <= 0 {
		o.LatencySize = 500
	}
	if o.DeletedTTL <= 0 {
		o.DeletedTTL = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// HostView is one agent as its last heartbeat describes it.
type HostView struct {
	Host string `json:"host"`
	// State is up, starting (up, first full sync not reported yet) or down.
	State            string            `json:"state"`
	AgeMs            int64             `json:"age_ms"`
	ReportIntervalMs int64             `json:"report_interval_ms"`
	DownAfterMs      int64             `json:"down_after_ms"`
	Seen             time.Time         `json:"seen"`
	Time             time.Time         `json:"time"`
	StartedAt        time.Time         `json:"started_at"`
	AgentType        string            `json:"agent_type,omitempty"`
	Version          string            `json:"version,omitempty"`
	Mechanism        string            `json:"mechanism,omitempty"`
	TunnelIP         string            `json:"tunnel_ip,omitempty"`
	Counts           map[string]uint32 `json:"counts,omitempty"`
	AppliedSeq       uint64            `json:"applied_seq"`
	Lag              uint64            `json:"lag"`
	Devices          uint32            `json:"devices"`
}

// Down reports whether the host missed DownAfterIntervals heartbeats.
func (h HostView) Down() bool { return h.State == "down" }

// ObjectView is the latest status of one object on one host.
type ObjectView struct {
	Host          string            `json:"host"`
	Kind          string            `json:"kind"`
	ID            string            `json:"id"`
	Name          string            `json:"name,omitempty"`
	Phase         string            `json:"phase"`
	Reason        string            `json:"reason,omitempty"`
	DesiredSeq    uint64            `json:"desired_seq"`
	ConvergenceMs *float64          `json:"convergence_ms,omitempty"`
	Time          time.Time         `json:"time"`
	Seen          time.Time         `json:"seen"`
	Seq           uint64            `json:"seq"`
	Details       map[string]string `json:"details,omitempty"`
}

// Key identifies the object on its host.
func (o ObjectView) Key() string { return o.Host + "/" + o.Kind + "/" + o.ID }

// LatencySample is one convergence duration.
type LatencySample struct {
	Host  string    `json:"host"`
	Kind  string    `json:"kind"`
	ID    string    `json:"id"`
	Phase string    `json:"phase"`
	Ms    float64   `json:"ms"`
	At    time.Time `json:"at"`
}

// View is a snapshot (Full) or an increment: the hosts and objects that changed, the
// status events and convergence samples to append. Version orders views; an increment
// whose version is not above a snapshot's is already in it. Notice, in every view, says
// what the views lack: object names when the desired stream may not be read (the dashboard
// role); it is empty when nothing is missing.
type View struct {
	Full    bool            `json:"full"`
	Version uint64          `json:"v"`
	Now     time.Time       `json:"now"`
	Ready   bool            `json:"ready"`
	Notice  string          `json:"notice,omitempty"`
	Hosts   []HostView      `json:"hosts,omitempty"`
	Objects []ObjectView    `json:"objects,omitempty"`
	Feed    []ObjectView    `json:"feed,omitempty"`
	Latency []LatencySample `json:"latency,omitempty"`
}

type hostEntry struct {
	hb   *nsv1.AgentHeartbeat
	seen time.Time
}

// Fleet is the folded status stream. Use NewFleet.
type Fleet struct {
	opts Options

	mu       sync.Mutex
	hosts    map[string]*hostEntry
	objects  map[string]*ObjectView
	names    map[string]string // kind/id -> name from desired state
	feed     []ObjectView      // oldest first
	latency  []LatencySample   // oldest first
	version  uint64
	subs     map[*Subscription]struct{}
	statusUp bool // the status replay is done
	namesUp  bool // the desired replay is done (or names are unavailable)
	notice   string
	ready    chan struct{}
}

// NewFleet returns an empty fleet.
func NewFleet(o Options) *Fleet {
	return &Fleet{
		opts: o.withDefaults(), hosts: map[string]*hostEntry{}, objects: map[string]*ObjectView{},
		names: map[string]string{}, subs: map[*Subscription]struct{}{}, ready: make(chan struct{}),
	}
}

// Ready is closed once the status and desired streams were replayed up to the moment the
// fleet started following them.
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

func (f *Fleet) isReadyLocked() bool { return f.statusUp && f.namesUp }

// StatusCaughtUp marks the status replay as done.
func (f *Fleet) StatusCaughtUp() { f.caughtUp(&f.statusUp) }

// DesiredCaughtUp marks the desired replay as done.
func (f *Fleet) DesiredCaughtUp() { f.caughtUp(&f.namesUp) }

func (f *Fleet) caughtUp(flag *bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *flag {
		return
	}
	*flag = true
	if f.isReadyLocked() {
		close(f.ready)
		f.publishLocked(View{Ready: true})
	}
}

// NamesUnavailable marks the desired replay as done without names: objects show by id only,
// and every view carries reason as its Notice. Only the first call counts.
func (f *Fleet) NamesUnavailable(reason string) {
	f.mu.Lock()
	if f.notice != "" {
		f.mu.Unlock()
		return
	}
	f.notice = reason
	if !f.namesUp {
		f.namesUp = true
		if f.isReadyLocked() {
			close(f.ready)
		}
	}
	f.publishLocked(View{})
	f.mu.Unlock()
	if f.opts.Notice != nil {
		f.opts.Notice(reason)
	}
}

// ApplyStatus folds one message of the status stream (a heartbeat or a status event).
// Messages that are neither are ignored.
func (f *Fleet) ApplyStatus(m streams.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.opts.Now()
	seen := m.Time
	if f.statusUp || seen.IsZero() {
		seen = now // live: the arrival time, independent of other clocks
	}
	if streams.IsAgentSubject(m.Subject) {
		hb, err := streams.DecodeHeartbeat(m.Data)
		if err != nil || hb.GetHost() == "" {
			return
		}
		f.hosts[hb.GetHost()] = &hostEntry{hb: hb, seen: seen}
		f.publishLocked(View{Hosts: []HostView{f.hostViewLocked(hb.GetHost(), now)}})
		return
	}
	ev, err := streams.DecodeStatus(m.Data)
	if err != nil || ev.GetHost() == "" || ev.GetKind() == "" || ev.GetId() == "" {
		return
	}
	o := ObjectView{
		Host: ev.GetHost(), Kind: ev.GetKind(), ID: ev.GetId(), Name: f.names[ev.GetKind()+"/"+ev.GetId()],
		Phase: streams.PhaseName(ev.GetPhase()), Reason: ev.GetReason(), DesiredSeq: ev.GetDesiredSeq(),
		Seen: seen, Seq: m.Seq, Details: ev.GetDetails(),
	}
	if ev.GetTime() != nil {
		o.Time = ev.GetTime().AsTime()
	} else {
		o.Time = seen
	}
	v := View{}
	if ev.GetConvergence() != nil {
		ms := float64(ev.GetConvergence().AsDuration()) / float64(time.Millisecond)
		o.ConvergenceMs = &ms
		s := LatencySample{Host: o.Host, Kind: o.Kind, ID: o.ID, Phase: o.Phase, Ms: ms, At: o.Time}
		f.latency = appendBounded(f.latency, s, f.opts.LatencySize)
		v.Latency = []LatencySample{s}
	}
	f.objects[o.Key()] = &o
	f.feed = appendBounded(f.feed, o, f.opts.FeedSize)
	v.Objects, v.Feed = []ObjectView{o}, []ObjectView{o}
	f.publishLocked(v)
}

// ApplyDesired takes the object's name from one message of the desired stream.
func (f *Fleet) ApplyDesired(m streams.Msg) {
	addr, err := streams.ParseDesiredSubject(m.Subject)
	if err != nil {
		return
	}
	ev, err := streams.DecodeDesired(m.Data)
	if err != nil {
		return
	}
	named, ok := streams.SpecOf(ev).(interface{ GetName() string })
	if !ok {
		return
	}
	name := named.GetName()
	key := string(addr.Kind) + "/" + addr.ID
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names[key] == name {
		return
	}
	f.names[key] = name
	var changed []ObjectView
	for _, o := range f.objects {
		if o.Kind == string(addr.Kind) && o.ID == addr.ID {
			o.Name = name
			changed = append(changed, *o)
		}
	}
	if len(changed) > 0 {
		sortObjects(changed)
		f.publishLocked(View{Objects: changed})
	}
}

func appendBounded[T any](s []T, v T, limit int) []T {
	s = append(s, v)
	if len(s) > limit {
		s = append(s[:0:0], s[len(s)-limit:]...)
	}
	return s
}

func (f *Fleet) hostViewLocked(host string, now time.Time) HostView {
	e := f.hosts[host]
	hb := e.hb
	interval := hb.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = defaultReportInterval
	}
	age := now.Sub(e.seen)
	v := HostView{
		Host: host, AgeMs: age.Milliseconds(), ReportIntervalMs: interval.Milliseconds(),
		DownAfterMs: (DownAfterIntervals * interval).Milliseconds(), Seen: e.seen,
		AgentType: hb.GetAgentType(), Version: hb.GetVersion(), Mechanism: hb.GetConfigurations().GetMechanism(),
		TunnelIP: hb.GetConfigurations().GetTunnelingIp(), Counts: hb.GetCounts(), AppliedSeq: hb.GetAppliedSeq(),
		Lag: hb.GetLag(), Devices: hb.GetConfigurations().GetDevices(),
	}
	if hb.GetTime() != nil {
		v.Time = hb.GetTime().AsTime()
	}
	if hb.GetStartedAt() != nil {
		v.StartedAt = hb.GetStartedAt().AsTime()
	}
	switch {
	case age > DownAfterIntervals*interval:
		v.State = "down"
	case hb.GetStartFlag():
		v.State = "starting"
	default:
		v.State = "up"
	}
	return v
}

// Snapshot returns the whole current view: hosts by name, objects by host, kind and id
// (DELETED ones only while younger than DeletedTTL), the feed and latency samples oldest
// first.
func (f *Fleet) Snapshot() View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshotLocked()
}

func (f *Fleet) snapshotLocked() View {
	now := f.opts.Now()
	v := View{Full: true, Version: f.version, Now: now, Ready: f.isReadyLocked(), Notice: f.notice,
		Hosts: make([]HostView, 0, len(f.hosts)), Objects: make([]ObjectView, 0, len(f.objects)),
		Feed: append([]ObjectView{}, f.feed...), Latency: append([]LatencySample{}, f.latency...)}
	for h := range f.hosts {
		v.Hosts = append(v.Hosts, f.hostViewLocked(h, now))
	}
	sort.Slice(v.Hosts, func(i, j int) bool { return v.Hosts[i].Host < v.Hosts[j].Host })
	for key, o := range f.objects {
		if o.Phase == "DELETED" && now.Sub(o.Seen) > f.opts.DeletedTTL {
			delete(f.objects, key)
			continue
		}
		v.Objects = append(v.Objects, *o)
	}
	sortObjects(v.Objects)
	return v
}

func sortObjects(objs []ObjectView) {
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.ID < b.ID
	})
}

// Subscription delivers the fleet's changes. C is closed when the subscriber fell behind
// or Close was called.
type Subscription struct {
	C     <-chan View
	c     chan View
	fleet *Fleet
}

// Subscribe returns the current snapshot and a subscription to every later change, with
// nothing lost or repeated in between. buffer bounds the changes held for a slow reader.
func (f *Fleet) Subscribe(buffer int) (View, *Subscription) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan View, buffer)
	s := &Subscription{C: c, c: c, fleet: f}
	f.subs[s] = struct{}{}
	return f.snapshotLocked(), s
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	if _, ok := s.fleet.subs[s]; ok {
		delete(s.fleet.subs, s)
		close(s.c)
	}
}

func (f *Fleet) publishLocked(v View) {
	f.version++
	v.Version, v.Now, v.Ready, v.Notice = f.version, f.opts.Now(), f.isReadyLocked(), f.notice
	for s := range f.subs {
		select {
		case s.c <- v:
		default: // fell behind: drop it; it reconnects to a fresh snapshot
			delete(f.subs, s)
			close(s.c)
		}
	}
}
