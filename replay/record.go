package replay

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netsource/netsource/streams"
)

// Stream is one of the two netsource streams.
type Stream uint8

// The streams a history holds.
const (
	Desired Stream = 1 // NETSOURCE_DESIRED
	Status  Stream = 2 // NETSOURCE_STATUS
)

func (s Stream) String() string {
	switch s {
	case Desired:
		return "desired"
	case Status:
		return "status"
	}
	return "unknown"
}

// name is the JetStream stream name.
func (s Stream) name() string {
	if s == Status {
		return streams.StatusStream
	}
	return streams.DesiredStream
}

// root is the subject filter of everything the stream holds.
func (s Stream) root() string {
	if s == Status {
		return streams.StatusRoot + ".>"
	}
	return streams.DesiredRoot + ".>"
}

// Record is one stored message of either stream, as the replay tool sees it: the time and
// sequence it had when it was first stored, whatever server or file it is read from now.
type Record struct {
	Stream  Stream
	Subject string
	Seq     uint64
	Time    time.Time
	// Header is what the message carries. From a server that includes JetStream's publish
	// preconditions and the replay tool's own Ns-Replay-* headers, which Writer and Import
	// leave out (see storedHeader); a file has none of them. Nil when the query said
	// NoHeaders and the source could skip them.
	Header nats.Header
	Data   []byte
}

// Msg converts a desired record into the shape the streams package folds into state.
func (r *Record) Msg() streams.Msg {
	return streams.Msg{Subject: r.Subject, Seq: r.Seq, Time: r.Time, Header: r.Header, Data: r.Data}
}

// Headers that the replay tool itself sets when it imports a history: the time (and, for
// status messages, the sequence) the message had in the history it came from. Readers
// report those instead of what the importing server assigned, and export leaves them out,
// so export → import → export gives the same file.
const (
	HeaderReplayTime = "Ns-Replay-Time"
	HeaderReplaySeq  = "Ns-Replay-Seq"
)

// storedHeader reports whether a header belongs in a replay record. JetStream's publish
// preconditions (Nats-Expected-*) are stored with the message but were checked when it was
// stored; re-applying them on import would make a partial history unimportable.
func storedHeader(name string) bool {
	return !strings.HasPrefix(name, "Nats-Expected-") && name != HeaderReplayTime && name != HeaderReplaySeq
}

// originOf returns the history time and sequence a message carries from an import, or the
// given ones.
func originOf(h nats.Header, seq uint64, t time.Time) (uint64, time.Time) {
	if v := h.Get(HeaderReplayTime); v != "" {
		if ot, err := time.Parse(time.RFC3339Nano, v); err == nil {
			t = ot
		}
	}
	if v := h.Get(HeaderReplaySeq); v != "" {
		if os, err := strconv.ParseUint(v, 10, 64); err == nil {
			seq = os
		}
	}
	return seq, t
}

// Bound is one end of a range of history: a desired stream sequence or a time. The zero
// Bound is open.
type Bound struct {
	Seq  uint64
	Time time.Time
}

// IsZero reports whether the bound is open.
func (b Bound) IsZero() bool { return b.Seq == 0 && b.Time.IsZero() }

func (b Bound) String() string {
	switch {
	case b.Seq > 0:
		return "seq " + strconv.FormatUint(b.Seq, 10)
	case !b.Time.IsZero():
		return b.Time.UTC().Format(time.RFC3339Nano)
	}
	return "open"
}

// ParseBound accepts a desired stream sequence (digits) or an RFC 3339 time; "" is open.
func ParseBound(s string) (Bound, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Bound{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n == 0 {
			return Bound{}, fmt.Errorf("sequence %q: sequences start at 1", s)
		}
		return Bound{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Bound{}, fmt.Errorf("%q is neither a sequence number nor an RFC 3339 time (2026-11-21T10:00:00Z)", s)
	}
	return Bound{Time: t}, nil
}

// Range selects the messages of one stream: every condition that is set must hold.
type Range struct {
	FromSeq, ToSeq uint64    // 0: open
	From, To       time.Time // zero: open
}

// contains reports whether a record is in the range.
func (r *Range) contains(seq uint64, t time.Time) bool {
	return (r.FromSeq == 0 || seq >= r.FromSeq) && (r.ToSeq == 0 || seq <= r.ToSeq) &&
		(r.From.IsZero() || !t.Before(r.From)) && (r.To.IsZero() || !t.After(r.To))
}

// past reports whether a record lies beyond the end of the range; since both sequences
// and stored times grow along a stream, nothing after it can be in the range either.
func (r *Range) past(seq uint64, t time.Time) bool {
	return (r.ToSeq > 0 && seq > r.ToSeq) || (!r.To.IsZero() && t.After(r.To))
}

// empty reports a range that can hold nothing (e.g. from a time after its end).
func (r *Range) empty() bool {
	return (r.FromSeq > 0 && r.ToSeq > 0 && r.FromSeq > r.ToSeq) ||
		(!r.From.IsZero() && !r.To.IsZero() && r.From.After(r.To))
}

// Query says what to read: per stream a range (nil: do not read that stream) and subject
// filters (NATS wildcards; empty: everything of the selected streams).
type Query struct {
	Desired  *Range
	Status   *Range
	Subjects []string
	// NoHeaders: the caller does not look at Record.Header, so a file need not decode it.
	NoHeaders bool
}

func (q *Query) rangeOf(s Stream) *Range {
	if s == Status {
		return q.Status
	}
	return q.Desired
}

// filtersFor returns the server-side filters for one stream (nil: the stream is not read)
// and whether records must also be matched client-side against q.Subjects.
func (q *Query) filtersFor(s Stream) ([]string, bool) {
	if q.rangeOf(s) == nil || q.rangeOf(s).empty() {
		return nil, false
	}
	root := s.root()
	if len(q.Subjects) == 0 {
		return []string{root}, false
	}
	var within []string
	for _, f := range q.Subjects {
		switch {
		case subjectSubset(f, root):
			within = append(within, f)
		case subjectsOverlap(f, root):
			return []string{root}, true // partly this stream's: read it all, match here
		}
	}
	if len(within) == 0 {
		return nil, false
	}
	// Overlapping filters are refused by the server: keep only the widest.
	var out []string
	for i, f := range within {
		covered := false
		for j, g := range within {
			if i != j && subjectSubset(f, g) && (!subjectSubset(g, f) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, f)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if subjectsOverlap(out[i], out[j]) {
				return []string{root}, true
			}
		}
	}
	return out, false
}

// matches reports whether subject is selected by q.Subjects.
func (q *Query) matches(subject string) bool {
	if len(q.Subjects) == 0 {
		return true
	}
	return slices.ContainsFunc(q.Subjects, func(f string) bool { return subjectMatch(f, subject) })
}

// subjectMatch reports whether a literal subject matches a NATS filter.
func subjectMatch(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range f {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// subjectSubset reports whether every subject matching a also matches b.
func subjectSubset(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range at {
		if i >= len(bt) {
			return false
		}
		switch bt[i] {
		case ">":
			return true
		case "*":
			if t == ">" {
				return false
			}
		default:
			if t != bt[i] {
				return false
			}
		}
	}
	return len(at) == len(bt)
}

// subjectsOverlap reports whether some subject matches both filters.
func subjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != "*" && bt[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}
