// Package ops is what operators read the status stream through: a Fleet folds heartbeats
// (ns.status.<host>.agent) and status events (ns.status.<host>.<kind>.<id>) into the state of
// every agent and object, with recent events and convergence samples; `netsource watch`
// renders it as a live terminal table (RenderTable) and `netsource dashboard` serves it as a
// web page with live updates over server-sent events (Dashboard).
//
// # Usage
//
//	fleet := ops.NewFleet(ops.Options{})
//	go ops.Follow(ctx, js, fleet, ops.Scope{})   // fills the fleet until ctx ends
//	http.ListenAndServe(addr, ops.NewDashboard(fleet).Handler())
//
// Object names come from the desired stream (the last event of each object), so the
// tables can say "web1" rather than only a UUID. A user that may not read it (the
// dashboard role, read-only on status) sees objects by id, and every View carries a
// Notice saying why.
//
// # Liveness
//
// An agent sends a heartbeat every report interval and says which interval in the
// heartbeat. A host is down when its last heartbeat is older than DownAfterIntervals (3)
// intervals, as Neutron's agent_down_time is a multiple of report_interval. During the
// initial replay the age is measured from the message's stream time; afterwards from its
// arrival, so a dashboard never depends on the agents' clocks.
//
// # Concurrency
//
// Fleet is safe for concurrent use. Subscribers get every change as a View; a subscriber
// that falls behind is dropped (its channel is closed) and reconnects to a fresh snapshot,
// so one slow browser never holds up the stream reader.
package ops
