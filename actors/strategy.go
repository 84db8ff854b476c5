package actors

import (
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Backoff is a capped exponential delay with jitter: Base·2ⁿ, at most Max, plus up to 20%.
type Backoff struct {
	Base, Max time.Duration
}

// DefaultBackoff is used for failed converges and restarted children.
var DefaultBackoff = Backoff{Base: 200 * time.Millisecond, Max: 30 * time.Second}

// Delay returns the wait before attempt n (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

// BackoffStrategy restarts a panicking child after a capped exponential delay and never
// gives up. protoactor's own "exponential" strategy is linear and unbounded, and its default
// one stops a child after 10 failures in 10 s; neither fits an agent that must keep every
// object alive. Failures older than Window are forgotten.
type BackoffStrategy struct {
	Backoff Backoff
	Window  time.Duration
}

var _ actor.SupervisorStrategy = (*BackoffStrategy)(nil)

// HandleFailure tells the supervisor (childFailed), waits, restarts the child and tells the
// supervisor again (childRestarted) so it re-sends the child's state.
func (s *BackoffStrategy) HandleFailure(system *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, _ any) {
	if rs.NumberOfFailures(s.Window) == 0 {
		rs.Reset()
	}
	rs.Fail()
	parent := selfOf(supervisor)
	if parent != nil {
		system.Root.Send(parent, &childFailed{child: child, reason: reason})
	}
	time.AfterFunc(s.Backoff.Delay(rs.FailureCount()), func() {
		supervisor.RestartChildren(child)
		if parent != nil {
			system.Root.Send(parent, &childRestarted{child: child})
		}
	})
}

func selfOf(s actor.Supervisor) *actor.PID {
	if c, ok := s.(interface{ Self() *actor.PID }); ok {
		return c.Self()
	}
	return nil
}
