package replay

import (
	"context"
	"fmt"
	"slices"
	"time"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Timeline is the history of one object: its desired events and the status events of
// every host about it, merged in time order, and per desired version how long it took to
// converge.
type Timeline struct {
	Kind     streams.Kind `json:"kind"`
	ID       string       `json:"id"`
	Hosts    []string     `json:"hosts"`
	Entries  []Entry      `json:"entries"`
	Versions []Version    `json:"versions"`
}

// Entry is one desired or status event of a timeline.
type Entry struct {
	Time    time.Time `json:"time"`
	Stream  string    `json:"stream"`
	Host    string    `json:"host,omitempty"`
	Subject string    `json:"subject"`
	Seq     uint64    `json:"seq"`
	// Desired events: the change, who published it, what changed since the previous
	// version (every set field for the first), and why agents refuse it, if they do.
	Change    string        `json:"change,omitempty"`
	Publisher string        `json:"publisher,omitempty"`
	Changes   []FieldChange `json:"changes,omitempty"`
	Error     string        `json:"error,omitempty"`
	// Status events.
	Phase      string `json:"phase,omitempty"`
	Reason     string `json:"reason,omitempty"`
	DesiredSeq uint64 `json:"desired_seq,omitempty"`
}

// Version is one desired version and its convergence.
type Version struct {
	Seq       uint64    `json:"seq"`
	Host      string    `json:"host,omitempty"`
	Change    string    `json:"change"`
	Time      time.Time `json:"time"`
	Publisher string    `json:"publisher,omitempty"`
	// Want lists the phases that mean the version is reached (ACTIVE; DOWN when
	// administratively down; DELETED for a tombstone, and for a network on a host with no
	// local ports).
	Want  []string `json:"want"`
	Error string   `json:"error,omitempty"`
	// Converged has, per host, the first status that reached this version or a later one.
	// A host-scoped object is only looked at on the version's host.
	Converged []Convergence `json:"converged"`
	// Pending describes the last status of the version's host when it never converged.
	Pending string `json:"pending,omitempty"`
}

// Convergence is the moment one host reached a version: desired published → status.
type Convergence struct {
	Host  string    `json:"host"`
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
	After string    `json:"after"`
	// Seq is the desired version the status reports; above the version's own sequence
	// when the host went straight to a later one.
	Seq uint64 `json:"seq"`
}

// ObjectTimeline reads one object's history (on every host: a moved port shows both).
func ObjectTimeline(ctx context.Context, src Source, kind streams.Kind, id string) (*Timeline, error) {
	desiredFilter, err := streams.ObjectFilter(kind, id)
	if err != nil {
		return nil, err
	}
	statusFilter := streams.StatusRoot + ".*." + string(kind) + "." + id
	recs, err := scanAll(ctx, src, Query{Desired: &Range{}, Status: &Range{}, Subjects: []string{desiredFilter, statusFilter}, NoHeaders: true})
	if err != nil {
		return nil, fmt.Errorf("timeline of %s %s: %w", kind, id, err)
	}
	tl := &Timeline{Kind: kind, ID: id}
	hosts := map[string]bool{}
	var prev streams.Spec
	type versionInfo struct {
		v    *Version
		want []nsv1.Phase
	}
	var versions []versionInfo
	bySeq := map[uint64]int{}
	for _, r := range recs {
		e := Entry{Time: r.Time, Stream: r.Stream.String(), Subject: r.Subject, Seq: r.Seq}
		if r.Stream == Status {
			ev, err := streams.DecodeStatus(r.Data)
			if err != nil {
				e.Error = stableText(err.Error())
			} else {
				e.Host, e.Phase, e.Reason, e.DesiredSeq = ev.GetHost(), streams.PhaseName(ev.GetPhase()), ev.GetReason(), ev.GetDesiredSeq()
			}
			if e.Host != "" {
				hosts[e.Host] = true
			}
			tl.Entries = append(tl.Entries, e)
			continue
		}
		addr, _ := streams.ParseDesiredSubject(r.Subject)
		e.Host = addr.Host
		rec := streams.NewState([]streams.Msg{r.Msg()}).Get(r.Subject)
		v := &Version{Seq: r.Seq, Host: addr.Host, Time: r.Time, Change: "undecodable"}
		var want []nsv1.Phase
		if rec.Event != nil {
			e.Change, e.Publisher = streams.ChangeName(rec.Event.GetChange()), rec.Event.GetPublisher()
			v.Change, v.Publisher = e.Change, e.Publisher
			spec := streams.SpecOf(rec.Event)
			e.Changes = DiffMessages(prev, spec)
			prev = spec
		}
		if reason := unusable(rec); reason != "" {
			e.Error, v.Error = reason, reason
		} else {
			want = wantPhases(rec.Event)
		}
		for _, p := range want {
			v.Want = append(v.Want, streams.PhaseName(p))
		}
		if addr.Host != "" {
			hosts[addr.Host] = true
		}
		bySeq[r.Seq] = len(versions)
		versions = append(versions, versionInfo{v: v, want: want})
		tl.Entries = append(tl.Entries, e)
	}
	for _, vi := range versions {
		v := vi.v
		reached := map[string]bool{}
		var last *Entry
		for i := range tl.Entries {
			e := &tl.Entries[i]
			if e.Stream != Status.String() || e.Phase == "" || e.Time.Before(v.Time) {
				continue
			}
			if kind.HostScoped() && e.Host != v.Host {
				continue
			}
			last = e
			if reached[e.Host] || e.DesiredSeq < v.Seq {
				continue
			}
			target := vi
			if j, ok := bySeq[e.DesiredSeq]; ok {
				target = versions[j]
			}
			if slices.ContainsFunc(target.want, func(p nsv1.Phase) bool { return streams.PhaseName(p) == e.Phase }) {
				reached[e.Host] = true
				v.Converged = append(v.Converged, Convergence{Host: e.Host, Phase: e.Phase, At: e.Time,
					After: e.Time.Sub(v.Time).String(), Seq: e.DesiredSeq})
			}
		}
		slices.SortFunc(v.Converged, func(a, b Convergence) int { return compareStrings(a.Host, b.Host) })
		if len(v.Converged) == 0 && kind.HostScoped() {
			if last == nil {
				v.Pending = "no status from " + v.Host + " since"
			} else {
				v.Pending = fmt.Sprintf("last status %s for seq %d: %s", last.Phase, last.DesiredSeq, last.Reason)
			}
		}
		tl.Versions = append(tl.Versions, *v)
	}
	for h := range hosts {
		tl.Hosts = append(tl.Hosts, h)
	}
	slices.Sort(tl.Hosts)
	if len(tl.Entries) == 0 {
		return nil, fmt.Errorf("timeline of %s %s: %w", kind, id, streams.ErrNotFound)
	}
	return tl, nil
}

// wantPhases lists the phases that mean an agent reached a desired event.
func wantPhases(ev *nsv1.DesiredEvent) []nsv1.Phase {
	if ev.GetChange() == nsv1.ChangeKind_CHANGE_KIND_DELETED {
		return []nsv1.Phase{nsv1.Phase_PHASE_DELETED}
	}
	up := true
	if a, ok := streams.SpecOf(ev).(interface{ IsAdminStateUp() bool }); ok {
		up = a.IsAdminStateUp()
	}
	phase := nsv1.Phase_PHASE_ACTIVE
	if !up {
		phase = nsv1.Phase_PHASE_DOWN
	}
	if _, ok := streams.SpecOf(ev).(*nsv1.Network); ok {
		// A host with no local port on the network removes its bridge: reached, too.
		return []nsv1.Phase{phase, nsv1.Phase_PHASE_DELETED}
	}
	return []nsv1.Phase{phase}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
