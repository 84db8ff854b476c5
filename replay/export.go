package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/streams"
)

// Export writes the records q selects to w as a replay file and returns how many it wrote.
func Export(ctx context.Context, src Source, q Query, w io.Writer) (int, error) {
	fw, err := NewWriter(w)
	if err != nil {
		return 0, err
	}
	n := 0
	err = src.Scan(ctx, q, func(r *Record) error {
		n++
		return fw.Write(r)
	})
	if err != nil {
		return n, err
	}
	return n, fw.Flush()
}

// ImportResult says what Import stored.
type ImportResult struct {
	Desired, Status           int
	FirstDesired, LastDesired uint64 // desired sequences stored (0 when none)
}

// Import stores a history into a server whose streams are empty, in history order.
//
// Desired messages keep their sequences, because status events and operators refer to
// desired versions by sequence: the desired records must therefore be contiguous (an export
// without --subjects), and when they start above 1 the empty stream is first moved to that
// sequence (a purge up to it). Status messages get new sequences; they and desired
// messages carry the history's time (and status sequence) in Ns-Replay-* headers, which
// every replay reader reports instead of the server's, so export → import → export gives
// the same file.
func Import(ctx context.Context, js jetstream.JetStream, src Source) (ImportResult, error) {
	var res ImportResult
	if err := streams.EnsureStreams(ctx, js, streams.Config{}); err != nil {
		return res, err
	}
	desired, err := js.Stream(ctx, streams.DesiredStream)
	if err != nil {
		return res, err
	}
	var next uint64 // the sequence the desired stream gives the next message
	for _, name := range []string{streams.DesiredStream, streams.StatusStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return res, fmt.Errorf("import: %w", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return res, fmt.Errorf("import: %w", err)
		}
		if info.State.Msgs > 0 {
			return res, fmt.Errorf("import needs an empty server: %s holds %d messages", name, info.State.Msgs)
		}
		if name == streams.DesiredStream {
			next = info.State.LastSeq + 1
		}
	}
	// At most this many publishes wait for their acknowledgement: below the client's
	// default limit of 4000, so the client never stalls.
	pending := make(chan pendingAck, 1024)
	ackErr := make(chan error, 1)
	go func() {
		var first error
		for p := range pending {
			select {
			case ack := <-p.future.Ok():
				if first == nil && p.seq > 0 && ack.Sequence != p.seq {
					first = fmt.Errorf("import: %s stored as sequence %d, want %d", p.subject, ack.Sequence, p.seq)
				}
			case err := <-p.future.Err():
				if first == nil {
					first = fmt.Errorf("import: publish %s: %w", p.subject, err)
				}
			}
		}
		ackErr <- first
	}()
	scanErr := src.Scan(ctx, Query{Desired: &Range{}, Status: &Range{}}, func(r *Record) error {
		msg := nats.NewMsg(r.Subject)
		msg.Data = r.Data
		for k, v := range r.Header {
			if storedHeader(k) {
				msg.Header[k] = v
			}
		}
		msg.Header.Set(HeaderReplayTime, r.Time.UTC().Format(time.RFC3339Nano))
		var want uint64
		if r.Stream == Desired {
			if res.Desired == 0 && r.Seq > next {
				// An empty stream starts at the history's first sequence.
				if err := desired.Purge(ctx, jetstream.WithPurgeSequence(r.Seq)); err != nil {
					return fmt.Errorf("import: start %s at sequence %d: %w", streams.DesiredStream, r.Seq, err)
				}
				next = r.Seq
			}
			if r.Seq != next {
				return fmt.Errorf("import: desired message %d (%s) follows %d: the desired history must be contiguous "+
					"(export without --subjects) so that versions keep their sequences", r.Seq, r.Subject, next-1)
			}
			want = next
			next++
			if res.Desired == 0 {
				res.FirstDesired = r.Seq
			}
			res.LastDesired = r.Seq
			res.Desired++
		} else {
			msg.Header.Set(HeaderReplaySeq, strconv.FormatUint(r.Seq, 10))
			res.Status++
		}
		f, err := js.PublishMsgAsync(msg, jetstream.WithExpectStream(r.Stream.name()))
		for attempt := 0; errors.Is(err, jetstream.ErrTooManyStalledMsgs) && attempt < 100; attempt++ {
			// A client configured with a smaller window: let it drain, then go on.
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			f, err = js.PublishMsgAsync(msg, jetstream.WithExpectStream(r.Stream.name()))
		}
		if err != nil {
			return fmt.Errorf("import: publish %s: %w", r.Subject, err)
		}
		select {
		case pending <- pendingAck{future: f, seq: want, subject: r.Subject}:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	close(pending)
	if err := <-ackErr; err != nil && scanErr == nil {
		scanErr = err
	}
	return res, scanErr
}

type pendingAck struct {
	future  jetstream.PubAckFuture
	seq     uint64 // desired sequence the message must get (0: any)
	subject string
}
