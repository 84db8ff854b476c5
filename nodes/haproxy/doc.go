// Package haproxy is netsource's contract with haproxy on one host: one haproxy instance per
// load balancer, in the load balancer's namespace qlbaas-<id>, as Neutron's LBaaS v2 haproxy
// namespace driver ran them.
//
// Actors never run haproxy themselves. They hand a load balancer graph to a Driver:
//
//   - Render turns the graph into haproxy 2.6 configuration (a pure function: the golden
//     files in testdata show every protocol, algorithm, persistence and monitor type). It
//     re-checks every value that reaches the config, whoever validated it before, and
//     refuses rather than write anything doubtful (ErrInvalidConfig).
//   - Ensure starts, reloads or leaves alone the instance so it runs exactly that config;
//     the same graph twice changes nothing, also across an agent restart (the running
//     haproxy is adopted from its pid file when its command line and namespace match).
//   - Delete stops haproxy by PID (never by name), deletes the namespace and the state
//     directory; Prune does that for instances nobody wants any more.
//   - Stats reads `show stat` from the stats socket; MemberStatus and Statuses map it to
//     Neutron's operating statuses.
//   - Announce sends gratuitous ARP for the VIP.
//
// Manager is the real implementation (Linux: haproxy in master-worker mode under
// `ip netns exec`); Fake is the in-memory one the actor tests share. Both render with the
// same Render.
//
// # Files
//
// Each instance has a directory <state_dir>/<lb id> (mode 700) with haproxy.cfg,
// haproxy.pid (the master), haproxy.sock (stats, level admin), master.sock (master CLI),
// notify.sock (haproxy's READY=1 notifications) and server-state (health state carried
// across reloads). The directory is what marks an instance as this agent's: orphan pruning
// never touches a qlbaas-* namespace without one, since several agents may share a machine.
//
// # Concurrency
//
// Every method is safe for concurrent use; operations on one instance are serialized,
// different instances proceed in parallel.
package haproxy
