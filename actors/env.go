package actors

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Env is what every actor of one agent shares: read-only configuration and the narrow
// interfaces to the kernel and the status stream.
type Env struct {
	Config    *config.Config
	Dataplane links.Dataplane
	Reporter  Reporter
	Log       zerolog.Logger
	// OpTimeout bounds one dataplane call, so a wedged kernel call cannot freeze an actor.
	OpTimeout time.Duration
	// Backoff paces retries of failed converges.
	Backoff Backoff
	// LastStatus is the status each object had in the status stream when the agent started
	// (key kind/id), so a restarted agent does not re-publish what is already known.
	LastStatus map[string]*nsv1.StatusEvent
	// Objects builds the actors of pluggable kinds (load balancers, taps, trunks).
	Objects map[streams.Kind]ObjectProducer
	// Observers build the host-wide actors (the firewall).
	Observers []ObserverProducer
}

func (e *Env) opContext() (context.Context, context.CancelFunc) {
	d := e.OpTimeout
	if d <= 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(context.Background(), d)
}

func (e *Env) tracker(kind, id string) *statusTracker {
	t := &statusTracker{host: e.Config.Host, kind: kind, id: id, rep: e.Reporter}
	t.seed(e.LastStatus[kind+"/"+id])
	return t
}
