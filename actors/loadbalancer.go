package actors

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/netsource/netsource/nodes/haproxy"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/topology"
)

// LoadBalancerOptions configure the load-balancer actors of one agent.
type LoadBalancerOptions struct {
	// Driver runs the haproxy instances.
	Driver haproxy.Driver
	// StatsInterval is how often each running instance's stats socket is read for member
	// and listener statuses (default DefaultStatsInterval).
	StatsInterval time.Duration
}

// DefaultStatsInterval paces the stats polling: a member that fails its checks is reported
// within delay × max_retries plus this.
const DefaultStatsInterval = 500 * time.Millisecond

func (o LoadBalancerOptions) statsInterval() time.Duration {
	if o.StatsInterval <= 0 {
		return DefaultStatsInterval
	}
	return o.StatsInterval
}

// LoadBalancerActors returns the producer of the load balancer kind: one actor per load
// balancer scheduled to this host, owning its namespace qlbaas-<id>, its VIP port and its
// haproxy instance.
func LoadBalancerActors(o LoadBalancerOptions) ObjectProducer {
	return func(env *Env, id string) actor.Actor { return newLBActor(env, o, id) }
}

// LoadBalancerOrphans returns the observer that, once the whole desired state is known
// (CaughtUp), deletes the haproxy instances of the state directory whose load balancer is
// not desired on this host any more (deleted while the agent was down, or moved).
func LoadBalancerOrphans(o LoadBalancerOptions) ObserverProducer {
	return func(env *Env) actor.Actor {
		return &lbOrphans{env: env, driver: o.Driver, desired: map[string]bool{},
			log: env.Log.With().Str("actor", "lb-orphans").Logger()}
	}
}

// Messages of the load balancer actor.
type (
	// lbExited: the haproxy master exited.
	lbExited struct{ proc *haproxy.Proc }
	// lbStats is one reading of the stats socket; token names the poller.
	lbStats struct {
		token int
		stats *haproxy.Stats
		err   error
	}
)

// lbActor converges one load balancer (reference 3.4 to 3.8): deployable or not as Neutron
// decides; the VIP port plugged into the network's bridge as a veth whose peer lives in
// qlbaas-<id>; gratuitous ARP; haproxy started, reloaded or left alone; its exit noticed and
// repaired; statuses read from the stats socket and published when they change.
type lbActor struct {
	env     *Env
	opts    LoadBalancerOptions
	id      string
	log     zerolog.Logger
	status  *lbStatus
	desired *ObjectDesired
	network *NetworkState

	applied   *nsv1.LoadBalancer // the graph haproxy runs
	plugged   *links.PortSpec    // the VIP as last ensured
	proc      *haproxy.Proc      // the running master
	hash      string
	ifindex   int    // VIP host-side ifindex the last announcement was for
	undeploy  string // reason the instance was last undeployed for ("" while deployed or unknown)
	ops       map[string]string
	crashes   []time.Time
	failures  int
	gen       int
	pollStop  chan struct{}
	pollToken int
	announce  context.CancelFunc
	stop      chan struct{} // closed when the actor stops: ends its watchers
}

func newLBActor(env *Env, o LoadBalancerOptions, id string) *lbActor {
	a := &lbActor{env: env, opts: o, id: id, log: env.Log.With().Str("loadbalancer", id).Logger(), stop: make(chan struct{})}
	a.status = &lbStatus{host: env.Config.Host, id: id, rep: env.Reporter}
	a.status.seed(env.LastStatus[string(streams.KindLoadBalancer)+"/"+id])
	a.ops = map[string]string{}
	for k, v := range a.status.details {
		if isOpsKey(k) {
			a.ops[k] = v // kept until the first stats reading, so a restart republishes nothing
		}
	}
	return a
}

func isOpsKey(k string) bool {
	return k == "operating_status" || strings.HasPrefix(k, "member:") || strings.HasPrefix(k, "pool:") ||
		strings.HasPrefix(k, "listener:")
}

func (a *lbActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *ObjectDesired:
		if a.desired == nil || m.Seq != a.desired.Seq {
			a.failures, a.crashes = 0, nil
		}
		a.desired = m
		a.converge(ctx)
	case *NetworkState:
		a.network = m
		a.converge(ctx)
	case *resync:
		a.converge(ctx)
	case *retry:
		if m.gen == a.gen {
			a.converge(ctx)
		}
	case *lbExited:
		a.onExited(ctx, m.proc)
	case *lbStats:
		a.onStats(m)
	case *actor.Stopping, *actor.Restarting:
		a.stopPoller()
		a.cancelAnnounce()
		select {
		case <-a.stop:
		default:
			close(a.stop)
		}
	}
}

// undeployable says why Neutron would not deploy lb (reference 3.4 deployable()), or "".
func undeployable(lb *nsv1.LoadBalancer) string {
	if !lb.IsAdminStateUp() {
		return "admin_state_up is false: haproxy stopped, VIP unplugged"
	}
	if len(lb.GetListeners()) == 0 {
		return "no listeners: haproxy cannot run without a bind"
	}
	for _, l := range lb.GetListeners() {
		if l.IsAdminStateUp() {
			return ""
		}
	}
	return "no listener is admin_state_up: haproxy stopped, VIP unplugged"
}

func (a *lbActor) converge(ctx actor.Context) {
	d := a.desired
	if d == nil {
		return
	}
	a.gen++
	lb, _ := d.Spec.(*nsv1.LoadBalancer)
	if d.Deleted {
		a.remove(ctx, lb)
		return
	}
	// Checked again here, whatever the publisher and the supervisor did: an event that
	// bypassed them must not reach haproxy. The running instance keeps its last good config.
	if d.Invalid != "" {
		a.report(nsv1.Phase_PHASE_ERROR, d.Invalid+"; the running config is kept", d.Seq, d.Received)
		return
	}
	if lb == nil {
		a.report(nsv1.Phase_PHASE_ERROR, fmt.Sprintf("event at seq %d carries no load balancer", d.Seq), d.Seq, d.Received)
		return
	}
	if err := topology.ValidateLoadBalancer(string(streams.KindLoadBalancer), lb); err != nil {
		a.report(nsv1.Phase_PHASE_ERROR, fmt.Sprintf("invalid load balancer at seq %d, no config written: %v", d.Seq, err), d.Seq, d.Received)
		return
	}
	if a.status.seq != d.Seq && a.status.phase != nsv1.Phase_PHASE_BUILD {
		a.report(nsv1.Phase_PHASE_BUILD, "converging", d.Seq, time.Time{})
	}
	if reason := undeployable(lb); reason != "" {
		a.undeployTo(ctx, lb, nsv1.Phase_PHASE_DOWN, reason)
		return
	}
	switch {
	case a.network == nil:
		return // BUILD until the network's plumbing is known
	case !a.network.Ready && a.network.Final:
		a.report(nsv1.Phase_PHASE_ERROR, a.network.Reason, d.Seq, d.Received)
		return
	case !a.network.Ready:
		return
	case !a.network.Network.IsAdminStateUp():
		a.undeployTo(ctx, lb, nsv1.Phase_PHASE_DOWN, fmt.Sprintf("network %s admin_state_up is false", lb.GetVipNetworkId()))
		return
	}
	spec, err := a.vipSpec(lb)
	if err != nil {
		a.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.Seq, d.Received)
		return
	}
	a.deploy(ctx, lb, spec)
}

func (a *lbActor) deploy(ctx actor.Context, lb *nsv1.LoadBalancer, spec links.PortSpec) {
	d := a.desired
	opCtx, cancel := a.env.opContext()
	defer cancel()
	if old := a.plugged; old != nil && (old.Device != spec.Device || old.Peer.Name != spec.Peer.Name) {
		if err := a.env.Dataplane.DeletePort(opCtx, *old); err != nil {
			a.fail(ctx, fmt.Errorf("unplug previous VIP %s: %w", old.Device, err))
			return
		}
		a.plugged = nil
	}
	port, err := a.env.Dataplane.EnsurePort(opCtx, spec)
	if err != nil {
		a.fail(ctx, fmt.Errorf("plug VIP: %w", err))
		return
	}
	a.plugged, a.undeploy = &spec, ""
	vips := []net.IP{parseIP(lb.GetVipAddress())}
	st, err := a.opts.Driver.Ensure(opCtx, haproxy.Instance{ID: a.id, LB: lb, Device: spec.Peer.Name, Addresses: vips})
	switch {
	case errors.Is(err, haproxy.ErrInvalidConfig):
		// The same graph would fail the same way: no retry until a new version.
		a.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.Seq, d.Received)
		return
	case err != nil:
		a.fail(ctx, err)
		return
	}
	a.failures = 0
	a.applied, a.hash = lb, st.Hash
	if st.Action != haproxy.ActionUnchanged {
		a.log.Info().Str("action", string(st.Action)).Int("pid", st.Proc.PID).Uint64("seq", d.Seq).Msg("haproxy converged")
	}
	if st.Proc != a.proc {
		a.proc = st.Proc
		a.watch(ctx, st.Proc)
	}
	if port.Ifindex != a.ifindex {
		// A new VIP device (first plug, or re-created): routers and clients may hold the
		// previous MAC of the VIP in their ARP caches (reference 3.5 step 6).
		a.sendGARP(spec.Peer, vips)
		a.ifindex = port.Ifindex
	}
	a.startPoller(ctx)
	// The reason does not say "restarted": a restarted agent could not know it, and would
	// republish. The ERROR status before this one says why haproxy was restarted.
	reason := fmt.Sprintf("haproxy serving %d listener(s) on %s", countUp(lb), lb.GetVipAddress())
	a.report(nsv1.Phase_PHASE_ACTIVE, reason, d.Seq, d.Received)
}

func countUp(lb *nsv1.LoadBalancer) int {
	n := 0
	for _, l := range lb.GetListeners() {
		if l.IsAdminStateUp() {
			n++
		}
	}
	return n
}

// vipSpec is the VIP port: a veth tap<vip port[:11]> on the network's bridge whose peer
// ns-<vip port[:11]> in qlbaas-<id> holds the VIP with the subnet's prefix, the subnet's
// host routes and a default route via the gateway (or the 0.0.0.0/0 host route), and the
// network's MTU, exactly as a veth-bound port gets them.
func (a *lbActor) vipSpec(lb *nsv1.LoadBalancer) (links.PortSpec, error) {
	portID := vipPortID(lb)
	port := &nsv1.Port{Id: portID, NetworkId: lb.GetVipNetworkId(), MacAddress: vipMAC(portID).String(),
		FixedIps: []*nsv1.FixedIP{{SubnetId: lb.GetVipSubnetId(), IpAddress: lb.GetVipAddress()}},
		Binding:  &nsv1.Binding{Type: "veth", Netns: haproxy.Namespace(lb.GetId())}}
	spec, err := PortSpec(port, a.network.Network, a.network.Spec, nil)
	if err != nil {
		return spec, fmt.Errorf("VIP port: %w", err)
	}
	return spec, nil
}

// vipPortID names the VIP devices; without vip_port_id the load balancer's id does.
func vipPortID(lb *nsv1.LoadBalancer) string {
	if id := lb.GetVipPortId(); id != "" {
		return id
	}
	return lb.GetId()
}

// vipMAC derives a stable MAC for the VIP from its port id, with OpenStack's fa:16:3e
// prefix: the load balancer graph does not carry the port's MAC, and a stable one keeps
// neighbours' ARP caches valid across re-plugs and agent restarts.
func vipMAC(portID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(portID))
	return net.HardwareAddr{0xfa, 0x16, 0x3e, sum[0], sum[1], sum[2]}
}

// removalSpec is the VIP port to remove: what was plugged, or what lb would have plugged.
func (a *lbActor) removalSpec(lb *nsv1.LoadBalancer) links.PortSpec {
	if a.plugged != nil {
		return *a.plugged
	}
	portID := vipPortID(lb)
	spec := links.PortSpec{ID: portID, Device: links.TapName(portID), Bridge: links.BridgeName(lb.GetVipNetworkId()),
		Binding: links.BindingVeth, Peer: links.VethPeer{Netns: haproxy.Namespace(a.id), Name: links.PeerName(portID)}}
	if a.network != nil && a.network.Spec.Bridge != "" {
		spec.Bridge = a.network.Spec.Bridge
	}
	return spec
}

// undeployTo stops haproxy, removes the namespace and the VIP port, and reports phase.
func (a *lbActor) undeployTo(ctx actor.Context, lb *nsv1.LoadBalancer, phase nsv1.Phase, reason string) bool {
	d := a.desired
	if a.undeploy == reason && a.proc == nil && a.plugged == nil {
		a.report(phase, reason, d.Seq, d.Received) // already undeployed: no kernel call
		return true
	}
	a.stopPoller()
	a.cancelAnnounce()
	opCtx, cancel := a.env.opContext()
	defer cancel()
	if err := a.opts.Driver.Delete(opCtx, a.id); err != nil {
		a.fail(ctx, fmt.Errorf("stop haproxy: %w", err))
		return false
	}
	a.proc, a.applied, a.hash = nil, nil, ""
	if lb != nil {
		if err := a.env.Dataplane.DeletePort(opCtx, a.removalSpec(lb)); err != nil {
			a.fail(ctx, fmt.Errorf("unplug VIP: %w", err))
			return false
		}
	}
	a.plugged, a.ifindex, a.undeploy, a.failures = nil, 0, reason, 0
	if lb != nil && phase != nsv1.Phase_PHASE_DELETED {
		a.ops = haproxy.Statuses(lb, nil)
	} else {
		a.ops = map[string]string{}
	}
	a.report(phase, reason, d.Seq, d.Received)
	return true
}

func (a *lbActor) remove(ctx actor.Context, lb *nsv1.LoadBalancer) {
	if !a.undeployTo(ctx, lb, nsv1.Phase_PHASE_DELETED, "deleted: haproxy stopped, namespace and VIP port removed") {
		return
	}
	ctx.Send(ctx.Parent(), &ObjectGone{Kind: streams.KindLoadBalancer, ID: a.id})
}

func (a *lbActor) fail(ctx actor.Context, err error) {
	a.failures++
	delay := a.env.Backoff.Delay(a.failures)
	a.log.Warn().Err(err).Int("attempt", a.failures).Dur("retry_in", delay).Msg("load balancer converge failed")
	a.report(nsv1.Phase_PHASE_ERROR, err.Error(), a.desired.Seq, a.desired.Received)
	scheduleRetry(ctx, delay, a.gen)
}

// watch tells the actor when p exits.
func (a *lbActor) watch(ctx actor.Context, p *haproxy.Proc) {
	self, root, stop := ctx.Self(), ctx.ActorSystem().Root, a.stop
	go func() {
		select {
		case <-p.Done():
			root.Send(self, &lbExited{proc: p})
		case <-stop:
		}
	}()
}

// onExited restarts a haproxy that died on its own (reference 4.3: Neutron did not notice
// for years): at once the first time, then with backoff if it keeps dying.
func (a *lbActor) onExited(ctx actor.Context, p *haproxy.Proc) {
	if p != a.proc || a.desired == nil || a.desired.Deleted {
		return // stopped on purpose, or replaced already
	}
	a.proc = nil
	a.stopPoller()
	now := time.Now()
	recent := a.crashes[:0]
	for _, t := range a.crashes {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	a.crashes = append(recent, now)
	a.log.Error().Int("pid", p.PID).AnErr("exit", p.Err()).Int("recent_exits", len(a.crashes)).Msg("haproxy exited unexpectedly; restarting")
	a.report(nsv1.Phase_PHASE_ERROR, fmt.Sprintf("haproxy pid %d exited unexpectedly (%v); restarting", p.PID, p.Err()),
		a.desired.Seq, time.Time{})
	if len(a.crashes) == 1 {
		a.converge(ctx)
		return
	}
	scheduleRetry(ctx, a.env.Backoff.Delay(len(a.crashes)-1), a.gen)
}

// startPoller reads the stats socket every StatsInterval from a goroutine (the actor stays
// free) and sends each reading to the actor.
func (a *lbActor) startPoller(ctx actor.Context) {
	if a.pollStop != nil {
		return
	}
	a.pollToken++
	token, stop := a.pollToken, make(chan struct{})
	a.pollStop = stop
	self, root := ctx.Self(), ctx.ActorSystem().Root
	driver, id, every := a.opts.Driver, a.id, a.opts.statsInterval()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			c, cancel := context.WithTimeout(context.Background(), max(every, 2*time.Second))
			st, err := driver.Stats(c, id)
			cancel()
			select {
			case <-stop:
				return
			default:
			}
			root.Send(self, &lbStats{token: token, stats: st, err: err})
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}

func (a *lbActor) stopPoller() {
	if a.pollStop != nil {
		close(a.pollStop)
		a.pollStop = nil
	}
}

func (a *lbActor) onStats(m *lbStats) {
	if m.token != a.pollToken || a.pollStop == nil || a.applied == nil {
		return
	}
	if m.err != nil {
		a.log.Debug().Err(m.err).Msg("stats socket not readable")
		return
	}
	ops := haproxy.Statuses(a.applied, m.stats)
	if maps.Equal(ops, a.ops) {
		return
	}
	a.ops = ops
	a.report(a.status.phase, a.status.reason, a.status.seq, time.Time{})
}

// sendGARP announces the VIP in the background; a later announcement or an undeploy
// cancels the rest of this one.
func (a *lbActor) sendGARP(peer links.VethPeer, vips []net.IP) {
	count := 0
	if n := a.env.Config.HAProxy.SendGratuitousARP; n != nil {
		count = *n
	}
	if count <= 0 {
		return
	}
	a.cancelAnnounce()
	c, cancel := context.WithTimeout(context.Background(), time.Duration(count+1)*time.Second)
	a.announce = cancel
	if err := a.opts.Driver.Announce(c, peer.Netns, peer.Name, vips, count); err != nil {
		a.log.Warn().Err(err).Msg("gratuitous ARP for the VIP failed")
	}
}

func (a *lbActor) cancelAnnounce() {
	if a.announce != nil {
		a.announce()
		a.announce = nil
	}
}

// report publishes the status with details: where the instance lives, what runs, and the
// Neutron provisioning and operating statuses of the load balancer, its listeners, pools
// and members.
func (a *lbActor) report(phase nsv1.Phase, reason string, seq uint64, since time.Time) {
	details := map[string]string{"namespace": haproxy.Namespace(a.id)}
	if a.plugged != nil {
		details["vip_device"] = a.plugged.Peer.Name
	}
	if lb, ok := a.specOf(); ok {
		details["vip_address"] = lb.GetVipAddress()
	}
	running := a.proc != nil && !a.proc.Exited()
	if running {
		details["haproxy_pid"] = fmt.Sprint(a.proc.PID)
		if len(a.hash) >= 12 {
			details["config"] = a.hash[:12]
		}
	}
	for k, v := range a.ops {
		details[k] = v
	}
	operating := a.ops["operating_status"]
	switch phase {
	case nsv1.Phase_PHASE_ACTIVE:
		details["provisioning_status"] = "ACTIVE"
		if operating == "" {
			operating = haproxy.Online
		}
	case nsv1.Phase_PHASE_BUILD:
		details["provisioning_status"] = "PENDING_UPDATE"
		if a.applied == nil {
			details["provisioning_status"] = "PENDING_CREATE"
		}
	case nsv1.Phase_PHASE_DOWN:
		details["provisioning_status"], operating = "ACTIVE", haproxy.Offline
	case nsv1.Phase_PHASE_ERROR:
		details["provisioning_status"] = "ERROR"
	case nsv1.Phase_PHASE_DELETED:
		details["provisioning_status"], operating = "DELETED", haproxy.Offline
	}
	if !running && phase != nsv1.Phase_PHASE_DOWN && phase != nsv1.Phase_PHASE_DELETED {
		operating = haproxy.Offline
		if phase == nsv1.Phase_PHASE_ERROR {
			operating = haproxy.Error
		}
	}
	details["operating_status"] = operating
	a.status.report(phase, reason, seq, since, details)
}

func (a *lbActor) specOf() (*nsv1.LoadBalancer, bool) {
	if a.desired == nil {
		return nil, false
	}
	lb, ok := a.desired.Spec.(*nsv1.LoadBalancer)
	return lb, ok && lb != nil
}

// lbStatus publishes a load balancer's status when the phase, the reason, the desired
// version or any detail (a member's status) changed. At start it is seeded with the last
// published status, so a restarted agent whose instances run on publishes nothing.
type lbStatus struct {
	host, id string
	rep      Reporter
	phase    nsv1.Phase
	reason   string
	seq      uint64
	details  map[string]string
}

func (s *lbStatus) seed(ev *nsv1.StatusEvent) {
	if ev != nil {
		s.phase, s.reason, s.seq = ev.GetPhase(), ev.GetReason(), ev.GetDesiredSeq()
		s.details = maps.Clone(ev.GetDetails())
	}
}

func (s *lbStatus) report(phase nsv1.Phase, reason string, seq uint64, since time.Time, details map[string]string) {
	if phase == s.phase && reason == s.reason && seq == s.seq && maps.Equal(details, s.details) {
		return
	}
	s.phase, s.reason, s.seq, s.details = phase, reason, seq, details
	ev := &nsv1.StatusEvent{
		Host: s.host, Kind: string(streams.KindLoadBalancer), Id: s.id, Phase: phase, Reason: reason, DesiredSeq: seq,
		Time: timestamppb.Now(), Details: maps.Clone(details),
	}
	if !since.IsZero() {
		ev.Convergence = durationpb.New(time.Since(since))
	}
	s.rep.Report(ev)
}

// lbOrphans prunes, once, the haproxy instances nobody desires.
type lbOrphans struct {
	env     *Env
	driver  haproxy.Driver
	desired map[string]bool
	pruned  bool
	log     zerolog.Logger
}

func (o *lbOrphans) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *Observed:
		if m.Kind != streams.KindLoadBalancer {
			return
		}
		if m.Deleted {
			delete(o.desired, m.ID)
		} else {
			o.desired[m.ID] = true
		}
	case *CaughtUp:
		if o.pruned {
			return
		}
		o.pruned = true
		opCtx, cancel := o.env.opContext()
		defer cancel()
		pruned, err := o.driver.Prune(opCtx, func(id string) bool { return o.desired[id] })
		for _, id := range pruned {
			o.log.Info().Str("loadbalancer", id).Msg("removed orphan haproxy instance, its namespace and state")
		}
		if err != nil {
			o.log.Error().Err(err).Msg("orphan haproxy pruning failed")
		}
	}
}
