// Package actors is the per-host actor tree of the netsource agent (protoactor-go).
//
//	host (HostSupervisor)      routes desired events, full sync, orphan pruning, l2population
//	├─ network-<id>            bridge and uplink (vxlan/vlan/flat) of one network
//	└─ port-<id>               tap or veth plug, MTU, admin state of one port
//
// The supervisor is the only reader of the desired stream. It folds every event into its
// view of the host's desired state and sends each child the latest spec of its object.
// Children converge level-triggered: they describe the wanted object to the links
// dataplane (an idempotent contract in nodes/links) and report status through a Reporter.
// They are re-driven on every change, on the periodic resync, and on kernel link events.
//
// # Concurrency
//
// Each actor processes one message at a time on its own goroutine, so blocking netlink
// calls serialize per object and run in parallel across objects. Children never share
// mutable state: the supervisor sends copies of what they need.
//
// # Failure
//
// A converge that fails reports ERROR with the reason and retries itself with capped
// exponential backoff. A child that panics is restarted by BackoffStrategy (capped
// exponential, with jitter, never giving up), reported ERROR, and re-sent its desired state;
// the other objects and the agent carry on.
package actors
