package agent

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/actors"
	"github.com/netsource/netsource/nodes/config"
)

// registerPlugins adds the actors of the kinds beyond networks and ports to env: one line
// per feature (env.Objects[kind] = producer, or env.Observers = append(...)), plus whatever
// driver the feature needs. The returned function releases those drivers when the agent
// stops. Features whose drivers are missing on this host must say so in an error here
// rather than fail later object by object.
func registerPlugins(ctx context.Context, cfg *config.Config, env *actors.Env, log zerolog.Logger) (func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	_ = ctx
	_ = cfg
	_ = log
	return closeAll, nil
}
