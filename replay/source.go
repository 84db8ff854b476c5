package replay

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Source is a history to read: a live server (Live) or a replay file (File). Both give the
// same answers for the same history; that is what lets an operator debug offline.
type Source interface {
	// Scan calls fn for every record q selects, each stream in sequence order, the two
	// streams merged by time (desired first on equal times). An error from fn stops the
	// scan and is returned.
	Scan(ctx context.Context, q Query, fn func(*Record) error) error
	// Last calls fn with the last record of every subject of one stream that matches the
	// filters (all of the stream when none), in no particular order.
	Last(ctx context.Context, s Stream, filters []string, fn func(*Record) error) error
	// SeqTime resolves a desired sequence to a time: with atOrAfter, the time of the first
	// desired message whose sequence is at least seq, otherwise of the last one whose
	// sequence is at most seq. ok is false when there is no such message.
	SeqTime(ctx context.Context, seq uint64, atOrAfter bool) (t time.Time, ok bool, err error)
	// Now is the moment "current" questions (is a heartbeat late?) are answered at: the
	// wall clock for a live server, the newest record for a file (its history stops there).
	Now(ctx context.Context) (time.Time, error)
}

// Select turns command-line bounds into a query over the given streams. A sequence bound
// is a desired stream sequence; status messages, which have their own sequences, are cut at
// that desired message's time.
func Select(ctx context.Context, src Source, ss []Stream, subjects []string, from, to Bound) (Query, error) {
	q := Query{Subjects: subjects}
	for _, s := range ss {
		r := &Range{From: from.Time, To: to.Time}
		if s == Desired {
			r.FromSeq, r.ToSeq = from.Seq, to.Seq
		} else {
			if from.Seq > 0 {
				t, ok, err := src.SeqTime(ctx, from.Seq, true)
				if err != nil {
					return q, err
				}
				r.From = t
				if !ok {
					r.FromSeq, r.ToSeq = 2, 1 // nothing at or after that sequence
				}
			}
			if to.Seq > 0 {
				t, ok, err := src.SeqTime(ctx, to.Seq, false)
				if err != nil {
					return q, err
				}
				r.To = t
				if !ok {
					r.FromSeq, r.ToSeq = 2, 1 // nothing at or before that sequence
				}
			}
		}
		if s == Desired {
			q.Desired = r
		} else {
			q.Status = r
		}
	}
	return q, nil
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop")

// mergeByTime runs two ordered producers and hands their records to fn in time order,
// taking a's record first on equal times. Each producer's own order is kept.
func mergeByTime(parent context.Context, a, b func(ctx context.Context, emit func(*Record) error) error, fn func(*Record) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	type feed struct {
		ch   chan *Record
		errc chan error
	}
	start := func(p func(ctx context.Context, emit func(*Record) error) error) feed {
		f := feed{ch: make(chan *Record, 1024), errc: make(chan error, 1)}
		go func() {
			defer close(f.ch)
			f.errc <- p(ctx, func(r *Record) error {
				select {
				case f.ch <- r:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
		return f
	}
	fa, fb := start(a), start(b)
	ra, oka := <-fa.ch
	rb, okb := <-fb.ch
	var err error
	for (oka || okb) && err == nil {
		if oka && (!okb || !rb.Time.Before(ra.Time)) {
			err = fn(ra)
			ra, oka = <-fa.ch
		} else {
			err = fn(rb)
			rb, okb = <-fb.ch
		}
	}
	cancel()
	// Drain, so that the producers see the cancellation and finish.
	for range fa.ch {
	}
	for range fb.ch {
	}
	errA, errB := <-fa.errc, <-fb.errc
	if err != nil {
		return err
	}
	for _, e := range []error{errA, errB} {
		if e != nil && !errors.Is(e, context.Canceled) {
			return e
		}
	}
	return parent.Err()
}

// scanAll is Scan into a slice (small histories: one object, tests).
func scanAll(ctx context.Context, src Source, q Query) ([]*Record, error) {
	var out []*Record
	err := src.Scan(ctx, q, func(r *Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// lastAll is Last into a slice.
func lastAll(ctx context.Context, src Source, s Stream, filters ...string) ([]*Record, error) {
	var out []*Record
	err := src.Last(ctx, s, filters, func(r *Record) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the last %s messages: %w", s, err)
	}
	return out, nil
}
