package ops

import (
	"context"
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

// Follow fills f from the status stream (last message per subject, then live) and takes
// object names from the desired stream, until ctx ends (then it returns nil) or a reader
// fails.
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
		errs <- streams.Follow(ctx, js, streams.StatusStream,
			streams.FollowOptions{Filters: scope.statusFilters(), CaughtUp: f.StatusCaughtUp}, f.ApplyStatus)
	}()
	go func() {
		errs <- streams.Follow(ctx, js, streams.DesiredStream,
			streams.FollowOptions{Filters: []string{streams.DesiredRoot + ".>"}, CaughtUp: f.DesiredCaughtUp}, f.ApplyDesired)
	}()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = fmt.Errorf("follow status: %w", err)
			cancel()
		}
	}
	return first
}
