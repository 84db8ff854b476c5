package replay

import (
	"context"
	"fmt"
	"strings"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// StateResult is the desired state at one point of the history.
type StateResult struct {
	At Bound
	// State holds the last desired message of every subject up to At.
	State *streams.State
	// Events is how many desired messages were folded.
	Events int
	// Skipped lists objects whose last version cannot be applied (undecodable, invalid,
	// or on a subject that does not name it); agents report those ERROR. They are left
	// out of Topology.
	Skipped []Skipped

	skipped map[string]bool // by subject
}

// Skipped is an object left out of a state's topology, and why.
type Skipped struct {
	Kind    streams.Kind `json:"kind"`
	ID      string       `json:"id"`
	Host    string       `json:"host,omitempty"`
	Subject string       `json:"subject"`
	Seq     uint64       `json:"seq"`
	Reason  string       `json:"reason"`
}

// StateAt folds the desired history up to at (a sequence or a time; open: everything) into
// the last message per subject. Only the last message of each subject is decoded, so the
// cost per event is one map update.
func StateAt(ctx context.Context, src Source, at Bound) (*StateResult, error) {
	last := map[string]*Record{}
	events := 0
	keep := func(r *Record) error {
		events++
		if old, ok := last[r.Subject]; !ok || old.Seq < r.Seq {
			last[r.Subject] = r
		}
		return nil
	}
	var err error
	if at.IsZero() {
		err = src.Last(ctx, Desired, nil, keep)
	} else {
		err = src.Scan(ctx, Query{Desired: &Range{ToSeq: at.Seq, To: at.Time}, NoHeaders: true}, keep)
	}
	if err != nil {
		return nil, fmt.Errorf("desired state at %s: %w", at, err)
	}
	msgs := make([]streams.Msg, 0, len(last))
	for _, r := range last {
		msgs = append(msgs, r.Msg())
	}
	res := &StateResult{At: at, State: streams.NewState(msgs), Events: events, skipped: map[string]bool{}}
	for _, rec := range res.State.Records() {
		if reason := unusable(rec); reason != "" {
			res.Skipped = append(res.Skipped, Skipped{Kind: rec.Address.Kind, ID: rec.Address.ID, Host: rec.Address.Host,
				Subject: rec.Subject, Seq: rec.Seq, Reason: reason})
			res.skipped[rec.Subject] = true
		}
	}
	return res, nil
}

// unusable says why an agent would refuse a record ("" when it would not): the checks of
// the host supervisor, in its order.
func unusable(r *streams.Record) string {
	return stableText(unusableReason(r))
}

// stableText undoes the protobuf module's deliberate instability in error texts (it puts a
// no-break space instead of a space after "proto:" in some builds), so that the same history
// prints the same bytes from every build.
func stableText(s string) string { return strings.ReplaceAll(s, "\u00a0", " ") }

func unusableReason(r *streams.Record) string {
	if r.Err != nil {
		return r.Err.Error()
	}
	got, err := streams.AddressOf(r.Event)
	if err != nil {
		return err.Error()
	}
	if got != r.Address {
		return fmt.Sprintf("event is about %s %s on %q, not what its subject names", got.Kind, got.ID, got.Host)
	}
	if r.Event.GetChange() != nsv1.ChangeKind_CHANGE_KIND_DELETED {
		if err := streams.ValidateSpec(streams.SpecOf(r.Event)); err != nil {
			return "invalid: " + err.Error()
		}
	}
	return ""
}

// Topology is the state as a topology file that `netsource apply -f` accepts: every live
// object whose last version is usable, in subject order.
func (s *StateResult) Topology() *nsv1.Topology {
	t := &nsv1.Topology{}
	for _, r := range s.State.Records() {
		if r.Live() && !s.skipped[r.Subject] {
			streams.AddToTopology(t, streams.SpecOf(r.Event))
		}
	}
	return t
}
