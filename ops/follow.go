package ops

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/streams"
)

// Scope narrows what Follow reads; the zero value reads every host and kind.
type Scope struct {
	Host string
	Kind streams.Kind
}

// statusFilters are non-overlapping status filters for the scope: the heartbeats of the
// scope's hosts plus their status events of the kind.
func (s Scope) statusFilters() []string {
	host := "*"
	if s.Host != "" {
		host = s.Host
	}
	if s.Kind == "" {
		return []string{streams.StatusRoot + "." + host + ".>"}
	}
	return []string{streams.StatusFilter(s.Host, s.Kind), streams.StatusRoot + "." + host + ".agent"}
}

// NamesRefused is the notice a fleet shows when its user may not read the desired stream.
const NamesRefused = "no object names: this user may not read " + streams.DesiredStream + " (objects show by id)"

// Follow fills f from the status stream (last message per subject, then live) and takes
// object names from the desired stream, until ctx ends (then it returns nil) or a reader
// fails. A user the server refuses the desired stream (the dashboard role, which is
// read-only on status) still gets every status: f shows objects by id and carries the
// NamesRefused notice.
func Follow(ctx context.Context, js jetstream.JetStream, f *Fleet, scope Scope) error {
	if scope.Host != "" {
		if err := streams.CheckToken("host", scope.Host); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() {
		err := streams.Follow(ctx, js, streams.StatusStream,
			streams.FollowOptions{Filters: scope.statusFilters(), CaughtUp: f.StatusCaughtUp}, f.ApplyStatus)
		if err != nil {
			err = fmt.Errorf("follow status: %w", err)
		}
		errs <- err
	}()
	go func() { errs <- followNames(ctx, js, f) }()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// followNames follows the desired stream into f's names. When the server refuses the
// request (the user's role may not read the desired stream), f goes on without names and
// followNames returns nil.
func followNames(ctx context.Context, js jetstream.JetStream, f *Fleet) error {
	readCtx, stop := streams.WithRefusal(ctx, js.Conn(), streams.DesiredStream)
	defer stop()
	err := streams.Follow(readCtx, js, streams.DesiredStream,
		streams.FollowOptions{Filters: []string{streams.DesiredRoot + ".>"}, CaughtUp: f.DesiredCaughtUp}, f.ApplyDesired)
	if errors.Is(context.Cause(readCtx), streams.ErrRefused) ||
		(err != nil && streams.IsRefused(js.Conn().LastError(), streams.DesiredStream)) {
		f.NamesUnavailable(NamesRefused)
		return nil
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow names: %w", err)
	}
	return nil
}
