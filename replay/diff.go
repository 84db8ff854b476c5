package replay

import (
	"context"
	"slices"
	"strings"
	"time"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Problems an object can have, from desired state against the latest status.
const (
	ProblemNoStatus     = "no status"     // no agent reported the object at all
	ProblemLagging      = "lagging"       // the latest status is for an older desired version
	ProblemError        = "error"         // the agent is at the current version, in ERROR
	ProblemNotConverged = "not converged" // at the current version, not in the wanted phase yet
	ProblemNoDesired    = "no desired"    // a status for an object the desired stream never had there
)

// DiffOptions selects what Diff looks at.
type DiffOptions struct {
	// Host restricts the report to one agent's objects and heartbeat ("" for all).
	Host string
	// Now is when heartbeats are judged; zero means the source's Now.
	Now time.Time
}

// DiffReport is desired state against the latest status.
type DiffReport struct {
	AsOf    time.Time   `json:"as_of"`
	Host    string      `json:"host,omitempty"`
	Objects []Problem   `json:"objects"`
	Agents  []LateAgent `json:"late_agents"`
	Checked Checked     `json:"checked"`
}

// Problem is one object on one host that is not where desired state wants it.
type Problem struct {
	Kind       streams.Kind `json:"kind"`
	ID         string       `json:"id"`
	Host       string       `json:"host"`
	Problem    string       `json:"problem"`
	DesiredSeq uint64       `json:"desired_seq,omitempty"`
	Change     string       `json:"change,omitempty"`
	Want       []string     `json:"want,omitempty"`
	StatusSeq  uint64       `json:"status_seq,omitempty"`
	Phase      string       `json:"phase,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	StatusTime *time.Time   `json:"status_time,omitempty"`
}

// LateAgent is an agent whose last heartbeat is older than three report intervals.
type LateAgent struct {
	Host           string    `json:"host"`
	LastHeartbeat  time.Time `json:"last_heartbeat"`
	Age            string    `json:"age"`
	ReportInterval string    `json:"report_interval"`
	AppliedSeq     uint64    `json:"applied_seq"`
}

// Checked counts what the report looked at.
type Checked struct {
	Objects  int `json:"objects"`
	Statuses int `json:"statuses"`
	Agents   int `json:"agents"`
}

type statusKey struct {
	host string
	kind streams.Kind
	id   string
}

type latestStatus struct {
	ev      *nsv1.StatusEvent
	at      time.Time
	matched bool
}

// Diff compares the current desired state with the latest status of every object and the
// latest heartbeat of every agent.
func Diff(ctx context.Context, src Source, o DiffOptions) (*DiffReport, error) {
	now := o.Now
	if now.IsZero() {
		var err error
		if now, err = src.Now(ctx); err != nil {
			return nil, err
		}
	}
	desired, err := lastAll(ctx, src, Desired)
	if err != nil {
		return nil, err
	}
	statusRecs, err := lastAll(ctx, src, Status)
	if err != nil {
		return nil, err
	}
	rep := &DiffReport{AsOf: now, Host: o.Host, Objects: []Problem{}, Agents: []LateAgent{}}
	statuses := map[statusKey]*latestStatus{}
	byObject := map[string][]statusKey{} // kind/id -> hosts that reported it
	for _, r := range statusRecs {
		t := strings.Split(r.Subject, ".")
		if len(t) < 4 || (o.Host != "" && t[2] != o.Host) {
			continue
		}
		if streams.IsAgentSubject(r.Subject) {
			hb, err := streams.DecodeHeartbeat(r.Data)
			if err != nil {
				continue
			}
			rep.Checked.Agents++
			interval := hb.GetReportInterval().AsDuration()
			if age := now.Sub(r.Time); interval > 0 && age > 3*interval {
				rep.Agents = append(rep.Agents, LateAgent{Host: t[2], LastHeartbeat: r.Time, Age: age.Round(time.Second).String(),
					ReportInterval: interval.String(), AppliedSeq: hb.GetAppliedSeq()})
			}
			continue
		}
		if len(t) != 5 {
			continue
		}
		ev, err := streams.DecodeStatus(r.Data)
		if err != nil {
			continue
		}
		rep.Checked.Statuses++
		k := statusKey{host: t[2], kind: streams.Kind(t[3]), id: t[4]}
		statuses[k] = &latestStatus{ev: ev, at: r.Time}
		byObject[t[3]+"/"+t[4]] = append(byObject[t[3]+"/"+t[4]], k)
	}
	msgs := make([]streams.Msg, 0, len(desired))
	for _, r := range desired {
		msgs = append(msgs, r.Msg())
	}
	state := streams.NewState(msgs)
	for _, rec := range state.Records() {
		addr := rec.Address
		if addr.Kind == "" || (addr.Kind.HostScoped() && o.Host != "" && addr.Host != o.Host) {
			continue
		}
		rep.Checked.Objects++
		var want []nsv1.Phase
		change := "undecodable"
		if rec.Event != nil {
			change = streams.ChangeName(rec.Event.GetChange())
			if unusable(rec) == "" {
				want = wantPhases(rec.Event)
			} else {
				change = "invalid"
			}
		}
		tombstone := change == "deleted"
		base := Problem{Kind: addr.Kind, ID: addr.ID, DesiredSeq: rec.Seq, Change: change}
		for _, p := range want {
			base.Want = append(base.Want, streams.PhaseName(p))
		}
		if !addr.Kind.HostScoped() {
			for _, k := range byObject[string(addr.Kind)+"/"+addr.ID] {
				st := statuses[k]
				st.matched = true
				if p, bad := judge(base, k.host, st, want); bad {
					rep.Objects = append(rep.Objects, p)
				}
			}
			continue
		}
		st := statuses[statusKey{host: addr.Host, kind: addr.Kind, id: addr.ID}]
		if st == nil {
			if !tombstone {
				p := base
				p.Host, p.Problem = addr.Host, ProblemNoStatus
				rep.Objects = append(rep.Objects, p)
			}
			continue
		}
		st.matched = true
		if p, bad := judge(base, addr.Host, st, want); bad {
			rep.Objects = append(rep.Objects, p)
		}
	}
	for k, st := range statuses {
		if !st.matched {
			p := Problem{Kind: k.kind, ID: k.id, Host: k.host, Problem: ProblemNoDesired}
			fillStatus(&p, st)
			rep.Objects = append(rep.Objects, p)
		}
	}
	slices.SortFunc(rep.Objects, func(a, b Problem) int {
		if c := compareStrings(a.Host, b.Host); c != 0 {
			return c
		}
		if c := compareStrings(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	slices.SortFunc(rep.Agents, func(a, b LateAgent) int { return compareStrings(a.Host, b.Host) })
	return rep, nil
}

// judge compares one host's latest status with the desired version.
func judge(base Problem, host string, st *latestStatus, want []nsv1.Phase) (Problem, bool) {
	p := base
	p.Host = host
	fillStatus(&p, st)
	switch ev := st.ev; {
	case ev.GetDesiredSeq() < base.DesiredSeq:
		p.Problem = ProblemLagging
	case ev.GetPhase() == nsv1.Phase_PHASE_ERROR:
		p.Problem = ProblemError
	case !slices.Contains(want, ev.GetPhase()):
		p.Problem = ProblemNotConverged
	default:
		return p, false
	}
	return p, true
}

func fillStatus(p *Problem, st *latestStatus) {
	t := st.at
	p.StatusSeq, p.Phase, p.Reason, p.StatusTime = st.ev.GetDesiredSeq(), streams.PhaseName(st.ev.GetPhase()), st.ev.GetReason(), &t
}
