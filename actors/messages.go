package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Messages the agent wiring sends to the HostSupervisor.
type (
	// DesiredMsg is one message of the desired stream.
	DesiredMsg struct{ Msg streams.Msg }
	// CaughtUp says that every desired message stored at start has been delivered: the
	// whole desired state is known, so orphans can be pruned.
	CaughtUp struct{}
	// Resync re-drives every child (the periodic resync).
	Resync struct{}
	// LinkEventMsg is a kernel link change in the agent's namespace.
	LinkEventMsg struct{ Event links.LinkEvent }
	// RemotePortStatus is a port status published by another agent (l2population).
	RemotePortStatus struct{ Status *nsv1.StatusEvent }
	// GetCounts asks the supervisor for its Counts (RequestFuture).
	GetCounts struct{}
)

// NetworkState tells a network's users (ports, load balancers) whether its plumbing on this
// host is ready.
type NetworkState struct {
	Network *nsv1.Network // nil: unknown network
	Spec    links.NetworkSpec
	Ready   bool
	Reason  string // why not ready
	Final   bool   // not ready and will not be without a new event (ERROR rather than BUILD)
}

// Counts is what the heartbeat tells about the host.
type Counts struct {
	ByKind     map[string]uint32
	AppliedSeq uint64
	Devices    uint32
	Synced     bool
}

// Messages between the supervisor and its children.
type (
	// portDesired is the latest desired version of a port (deleted: its tombstone).
	portDesired struct {
		seq      uint64
		received time.Time
		port     *nsv1.Port
		deleted  bool
		trunk    *TrunkAttachment // a sub-port of a trunk on this host; nil otherwise
	}
	// networkDesired is the latest desired version of a network and whether local ports
	// need it on this host.
	networkDesired struct {
		seq      uint64
		received time.Time
		network  *nsv1.Network // nil when deleted
		needed   bool
	}
	// networkConverged reports a network's outcome to the supervisor.
	networkConverged struct {
		id     string
		spec   links.NetworkSpec
		ready  bool
		reason string
		final  bool
	}
	// fdbEntries are the l2population forwarding entries of a VXLAN network.
	fdbEntries struct{ entries []links.FDBEntry }
	// portGone: a port's devices are removed; the supervisor stops its actor.
	portGone struct{ id string }
	// childFailed: a child panicked (from BackoffStrategy).
	childFailed struct {
		child  *actor.PID
		reason any
	}
	// childRestarted: a child was restarted and needs its state again.
	childRestarted struct{ child *actor.PID }
	// resync re-drives one child.
	resync struct{}
	// retry re-drives a child after a failed converge; stale generations are ignored.
	retry struct{ gen int }
	// recheck re-drives a port once after a burst of link events.
	recheck struct{}
	// linkEvent forwards a kernel event to the owning child.
	linkEvent struct{ event links.LinkEvent }
)
