package ops

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time               { return c.t }
func (c *clock) add(d time.Duration)          { c.t = c.t.Add(d) }
func newClock() *clock                        { return &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)} }
func ms(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func statusMsg(t *testing.T, seq uint64, at time.Time, ev *nsv1.StatusEvent) streams.Msg {
	t.Helper()
	subject, err := streams.StatusSubject(ev.Host, streams.Kind(ev.Kind), ev.Id)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Time == nil {
		ev.Time = timestamppb.New(at)
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return streams.Msg{Subject: subject, Seq: seq, Time: at, Data: data}
}

func heartbeatMsg(t *testing.T, seq uint64, at time.Time, host string, interval time.Duration, starting bool) streams.Msg {
	t.Helper()
	subject, err := streams.AgentSubject(host)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&nsv1.AgentHeartbeat{Host: host, Binary: "netsource-agent", StartFlag: starting,
		ReportInterval: durationpb.New(interval), Time: timestamppb.New(at), Counts: map[string]uint32{"port": 2, "kernel_mutations": 9},
		AppliedSeq: 41, Lag: 3, Configurations: &nsv1.AgentConfigurations{Mechanism: "linuxbridge", TunnelingIp: "198.18.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return streams.Msg{Subject: subject, Seq: seq, Time: at, Data: data}
}

func desiredMsg(t *testing.T, seq uint64, spec streams.Spec) streams.Msg {
	t.Helper()
	m, err := streams.EncodeDesired(streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED, spec, "test"))
	if err != nil {
		t.Fatal(err)
	}
	return streams.Msg{Subject: m.Subject, Seq: seq, Data: m.Data}
}

const portID = "3d4e5f60-0000-4000-8000-000000000001"

func TestFleetFoldsStatusHeartbeatsAndNames(t *testing.T) {
	c := newClock()
	f := NewFleet(Options{Now: c.now})
	f.ApplyDesired(desiredMsg(t, 7, &nsv1.Port{Id: portID, Name: "web1", Host: "hostA"}))
	f.ApplyStatus(heartbeatMsg(t, 1, c.t, "hostA", 2*time.Second, false))
	f.ApplyStatus(statusMsg(t, 2, c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_BUILD,
		Reason: "converging", DesiredSeq: 7}))
	c.add(40 * time.Millisecond)
	f.ApplyStatus(statusMsg(t, 3, c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE,
		Reason: "plugged", DesiredSeq: 7, Convergence: ms(40 * time.Millisecond)}))
	f.ApplyStatus(streams.Msg{Subject: "ns.status.hostA.port.x", Data: []byte("\xff garbage")})

	v := f.Snapshot()
	if len(v.Hosts) != 1 || v.Hosts[0].State != "up" || v.Hosts[0].DownAfterMs != 6000 || v.Hosts[0].TunnelIP != "198.18.0.1" {
		t.Fatalf("hosts: %+v", v.Hosts)
	}
	if len(v.Objects) != 1 {
		t.Fatalf("objects: %+v", v.Objects)
	}
	o := v.Objects[0]
	if o.Name != "web1" || o.Phase != "ACTIVE" || o.DesiredSeq != 7 || o.ConvergenceMs == nil || *o.ConvergenceMs != 40 {
		t.Fatalf("object: %+v", o)
	}
	var phases []string
	for _, e := range v.Feed {
		phases = append(phases, e.Phase)
	}
	if diff := cmp.Diff(phases, []string{"BUILD", "ACTIVE"}); diff != "" {
		t.Fatalf("feed (-got +want):\n%s", diff)
	}
	if len(v.Latency) != 1 || v.Latency[0].Ms != 40 || v.Latency[0].Kind != "port" {
		t.Fatalf("latency: %+v", v.Latency)
	}
}

func TestFleetHostDownAfterThreeIntervals(t *testing.T) {
	c := newClock()
	f := NewFleet(Options{Now: c.now})
	f.StatusCaughtUp()
	f.ApplyStatus(heartbeatMsg(t, 1, c.t, "hostA", 300*time.Millisecond, true))
	for _, step := range []struct {
		after time.Duration
		want  string
	}{{0, "starting"}, {899 * time.Millisecond, "starting"}, {2 * time.Millisecond, "down"}} {
		c.add(step.after)
		if got := f.Snapshot().Hosts[0].State; got != step.want {
			t.Fatalf("%s after the heartbeat: state %s, want %s", c.t.Sub(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), got, step.want)
		}
	}
	f.ApplyStatus(heartbeatMsg(t, 2, c.t, "hostA", 300*time.Millisecond, false))
	if got := f.Snapshot().Hosts[0].State; got != "up" {
		t.Fatalf("after a new heartbeat: %s", got)
	}
}

// During the replay a heartbeat's age is its stream time's; live, its arrival time's.
func TestFleetReplayUsesStreamTime(t *testing.T) {
	c := newClock()
	f := NewFleet(Options{Now: c.now})
	f.ApplyStatus(heartbeatMsg(t, 1, c.t.Add(-time.Hour), "old", time.Second, false))
	f.StatusCaughtUp()
	f.ApplyStatus(heartbeatMsg(t, 2, c.t.Add(-time.Hour), "skewed", time.Second, false))
	got := map[string]string{}
	for _, h := range f.Snapshot().Hosts {
		got[h.Host] = h.State
	}
	if diff := cmp.Diff(got, map[string]string{"old": "down", "skewed": "up"}); diff != "" {
		t.Fatalf("states (-got +want):\n%s", diff)
	}
}

func TestFleetDropsOldDeletedObjects(t *testing.T) {
	c := newClock()
	f := NewFleet(Options{Now: c.now, DeletedTTL: time.Minute})
	f.StatusCaughtUp()
	f.ApplyStatus(statusMsg(t, 1, c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_DELETED}))
	if n := len(f.Snapshot().Objects); n != 1 {
		t.Fatalf("fresh DELETED object: %d objects", n)
	}
	c.add(61 * time.Second)
	if n := len(f.Snapshot().Objects); n != 0 {
		t.Fatalf("DELETED object after its TTL: %d objects", n)
	}
}

func TestFleetSubscriptionOrderAndSlowReader(t *testing.T) {
	c := newClock()
	f := NewFleet(Options{Now: c.now, FeedSize: 3})
	f.ApplyStatus(statusMsg(t, 1, c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_BUILD}))
	snap, sub := f.Subscribe(2)
	defer sub.Close()
	if !snap.Full || len(snap.Objects) != 1 {
		t.Fatalf("snapshot: %+v", snap)
	}
	f.ApplyStatus(statusMsg(t, 2, c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE}))
	v := <-sub.C
	if v.Full || v.Version != snap.Version+1 || v.Objects[0].Phase != "ACTIVE" {
		t.Fatalf("increment: %+v after snapshot v%d", v, snap.Version)
	}
	// A reader that does not keep up is dropped rather than blocking the fleet.
	for i := range 5 {
		f.ApplyStatus(statusMsg(t, uint64(3+i), c.t, &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_DOWN}))
	}
	n := 0
	for range sub.C {
		n++
	}
	if n != 2 {
		t.Fatalf("slow reader got %d views before being dropped, want its buffer (2)", n)
	}
	if got := len(f.Snapshot().Feed); got != 3 {
		t.Fatalf("feed holds %d events, want FeedSize 3", got)
	}
}
