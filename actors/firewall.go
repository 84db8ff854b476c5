package actors

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/firewall"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// The firewall observer converges netsource's nftables tables (nodes/firewall) to the
// security groups and anti-spoofing of every port on this host. It is one host-wide actor
// because a rule change, or a member joining a remote group, concerns many ports at once.
//
// What it learns:
//   - local ports, security groups, and the devices of other local objects (load-balancer
//     VIPs pass unfiltered) from *Observed;
//   - members of remote groups on other hosts from other agents' port status
//     (*RemotePortStatus): an ACTIVE or DOWN port carries PortL2 with its security groups and
//     fixed IPs; DELETED removes it; BUILD and ERROR keep what was known. The agent starts
//     the status follower whenever an observer is registered; when that follower has
//     delivered the statuses stored at start, the agent sends a *RemotePortStatus with a nil
//     Status (remote caught up).
//
// Coalescing: every change marks the state dirty and, if none is queued, sends the actor a
// flush message. The mailbox is FIFO, so the flush runs after every message already queued:
// a burst of events (a topology applied at once, a full sync) becomes one transaction.
// Nothing is applied before the desired state and the remote members are both caught up, so
// a restarted agent rebuilds exactly the tables it left (the kernel keeps filtering
// meanwhile). A failed transaction changes nothing in the kernel; the actor reports ERROR
// on the security groups and retries with backoff.
//
// Status: one event per security group and host (kind secgroup), ACTIVE with the ports that
// use it here (details ports, port_ids), or ERROR with the reason; a rule change, or a port
// joining or leaving the group, re-converges every affected port in one transaction and
// publishes the group's new status.

// FirewallObserver returns the producer of the firewall observer over fw.
func FirewallObserver(fw firewall.Firewall) ObserverProducer {
	return func(env *Env) actor.Actor { return newFirewallActor(env, fw) }
}

type (
	// fwFlush applies the pending changes (a self-message after the queued burst).
	fwFlush struct{}
	// fwRemoteTimeout ends the wait for remote members when the follower never catches up.
	fwRemoteTimeout struct{}
)

// remoteWaitLimit bounds the wait for the remote port status follower after the desired
// state is known; after it the firewall applies with the remote members it has.
const remoteWaitLimit = 10 * time.Second

type fwGroup struct {
	spec     *nsv1.SecurityGroup
	seq      uint64
	received time.Time
}

type fwMember struct {
	groups []string
	ips    []string
}

type firewallActor struct {
	env     *Env
	fw      firewall.Firewall
	log     zerolog.Logger
	ports   map[string]*nsv1.Port // local ports by id
	groups  map[string]*fwGroup   // security groups by id
	devices map[string][]string   // kind/id of other local objects -> their unfiltered devices
	remote  map[string]fwMember   // host/port id -> member of groups on another host
	status  map[string]*statusTracker

	caughtUp, remoteCaughtUp bool
	dirty, flushQueued       bool
	applied                  bool // at least one successful Apply
	failures, gen            int
}

func newFirewallActor(env *Env, fw firewall.Firewall) *firewallActor {
	return &firewallActor{env: env, fw: fw, log: env.Log.With().Str("actor", "firewall").Logger(),
		ports: map[string]*nsv1.Port{}, groups: map[string]*fwGroup{}, devices: map[string][]string{},
		remote: map[string]fwMember{}, status: map[string]*statusTracker{}}
}

// Receive never lets a panic escape: a restarted observer has lost the desired state (the
// supervisor does not replay it), and applying without it would open every port. The
// kernel keeps the last tables instead.
func (a *firewallActor) Receive(ctx actor.Context) {
	defer func() {
		if r := recover(); r != nil {
			a.log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).Msgf("firewall recovered from %T", ctx.Message())
		}
	}()
	switch m := ctx.Message().(type) {
	case *Observed:
		a.onObserved(ctx, m)
	case *RemotePortStatus:
		a.onRemote(ctx, m.Status)
	case *CaughtUp:
		if !a.caughtUp {
			a.caughtUp = true
			if !a.remoteCaughtUp {
				self, root := ctx.Self(), ctx.ActorSystem().Root
				time.AfterFunc(remoteWaitLimit, func() { root.Send(self, &fwRemoteTimeout{}) })
			}
			a.markDirty(ctx)
		}
	case *fwRemoteTimeout:
		if !a.remoteCaughtUp {
			a.log.Warn().Dur("waited", remoteWaitLimit).Msg("remote port status not caught up; applying with the members known so far")
			a.remoteCaughtUp = true
			a.markDirty(ctx)
		}
	case *Resync:
		a.verify(ctx)
	case *fwFlush:
		a.flushQueued = false
		if a.dirty {
			a.apply(ctx)
		}
	case *retry:
		if m.gen == a.gen {
			a.apply(ctx)
		}
	}
}

func (a *firewallActor) markDirty(ctx actor.Context) {
	a.dirty = true
	if !a.flushQueued {
		a.flushQueued = true
		ctx.Send(ctx.Self(), &fwFlush{})
	}
}

func (a *firewallActor) onObserved(ctx actor.Context, m *Observed) {
	switch s := m.Spec.(type) {
	case *nsv1.Port:
		if m.Deleted {
			delete(a.ports, m.ID)
		} else {
			a.ports[m.ID] = s
		}
	case *nsv1.SecurityGroup:
		if m.Deleted {
			delete(a.groups, m.ID)
			if t := a.status[m.ID]; t != nil || a.knewGroup(m.ID) {
				a.tracker(m.ID).report(nsv1.Phase_PHASE_DELETED, "deleted", m.Seq, time.Time{}, nil, nil)
				delete(a.status, m.ID)
			}
		} else {
			a.groups[m.ID] = &fwGroup{spec: s, seq: m.Seq, received: m.Received}
		}
	case *nsv1.Network:
		return // networks do not change the firewall
	default:
		key := string(m.Kind) + "/" + m.ID
		if devs := DevicesOf(m.Spec); !m.Deleted && len(devs) > 0 {
			a.devices[key] = devs
		} else if _, ok := a.devices[key]; ok {
			delete(a.devices, key)
		} else {
			return
		}
	}
	a.markDirty(ctx)
}

// knewGroup: the status stream has a live status of this group from this host.
func (a *firewallActor) knewGroup(id string) bool {
	ev := a.env.LastStatus[string(streams.KindSecGroup)+"/"+id]
	return ev != nil && ev.GetPhase() != nsv1.Phase_PHASE_DELETED
}

func (a *firewallActor) onRemote(ctx actor.Context, ev *nsv1.StatusEvent) {
	if ev == nil { // the follower delivered every status stored at start
		if !a.remoteCaughtUp {
			a.remoteCaughtUp = true
			a.markDirty(ctx)
		}
		return
	}
	if ev.GetHost() == a.env.Config.Host || ev.GetKind() != string(streams.KindPort) {
		return // local members come from the desired ports
	}
	key := ev.GetHost() + "/" + ev.GetId()
	old, had := a.remote[key]
	switch ev.GetPhase() {
	case nsv1.Phase_PHASE_ACTIVE, nsv1.Phase_PHASE_DOWN:
		l2 := ev.GetPortL2()
		if l2 == nil {
			return
		}
		m := fwMember{groups: slices.Clone(l2.GetSecurityGroups()), ips: slices.Clone(l2.GetIpAddresses())}
		if had && slices.Equal(old.groups, m.groups) && slices.Equal(old.ips, m.ips) {
			return
		}
		a.remote[key] = m
	case nsv1.Phase_PHASE_DELETED:
		if !had {
			return
		}
		delete(a.remote, key)
	default:
		return // BUILD and ERROR keep what was known
	}
	if len(old.groups) > 0 || len(a.remote[key].groups) > 0 {
		a.markDirty(ctx)
	}
}

func (a *firewallActor) verify(ctx actor.Context) {
	if !a.applied {
		return
	}
	opCtx, cancel := a.env.opContext()
	defer cancel()
	if err := a.fw.Verify(opCtx); err != nil {
		if errors.Is(err, firewall.ErrDrift) {
			a.log.Warn().Err(err).Msg("firewall tables drifted; replacing them")
			a.markDirty(ctx)
			return
		}
		a.log.Warn().Err(err).Msg("firewall verify failed")
	}
}

// ruleset builds the firewall's desired state from what the actor knows.
func (a *firewallActor) ruleset() (*firewall.Ruleset, map[string][]string) {
	rs := &firewall.Ruleset{Groups: map[string]firewall.Group{}, Members: map[string][]netip.Addr{}}
	users := map[string][]string{} // group id -> filtered local ports using it
	for _, id := range fwSortedKeys(a.ports) {
		p := a.ports[id]
		dev := links.TapName(id)
		if !p.IsPortSecurityEnabled() || strings.HasPrefix(p.GetDeviceOwner(), "network:") {
			rs.Open = append(rs.Open, dev) // as Neutron: no filtering, and trusted network ports
			continue
		}
		fp := firewall.Port{ID: id, Device: dev, Groups: slices.Clone(p.GetSecurityGroups())}
		macs := []string{strings.ToLower(p.GetMacAddress())}
		for _, ip := range p.GetFixedIps() {
			fp.Addrs = append(fp.Addrs, fwParseAddr(ip.GetIpAddress()))
		}
		for _, pair := range p.GetAllowedAddressPairs() {
			fp.Addrs = append(fp.Addrs, fwParseAddr(pair.GetIpAddress()))
			if mac := strings.ToLower(pair.GetMacAddress()); mac != "" && !slices.Contains(macs, mac) {
				macs = append(macs, mac)
			}
		}
		fp.MACs = macs
		rs.Ports = append(rs.Ports, fp)
		for _, g := range slices.Compact(slices.Sorted(slices.Values(fp.Groups))) {
			users[g] = append(users[g], id)
		}
	}
	for _, key := range fwSortedKeys(a.devices) {
		rs.Open = append(rs.Open, a.devices[key]...)
	}
	remoteGroups := map[string]bool{}
	for id, g := range a.groups {
		fg := firewall.Group{ID: id}
		for _, r := range g.spec.GetRules() {
			fg.Rules = append(fg.Rules, firewall.Rule{ID: r.GetId(), Direction: r.GetDirection(), Ethertype: r.GetEthertype(),
				Protocol: r.GetProtocol(), PortMin: r.PortRangeMin, PortMax: r.PortRangeMax,
				RemoteIPPrefix: r.GetRemoteIpPrefix(), RemoteGroupID: r.GetRemoteGroupId()})
			if r.GetRemoteGroupId() != "" {
				remoteGroups[r.GetRemoteGroupId()] = true
			}
		}
		rs.Groups[id] = fg
	}
	// Members of remote groups: local ports from their desired state, ports on other hosts
	// from their agents' status. Sorted, so that an unchanged membership compares equal.
	add := func(groups, ips []string) {
		for _, g := range groups {
			if !remoteGroups[g] {
				continue
			}
			for _, ip := range ips {
				if addr, err := netip.ParseAddr(ip); err == nil {
					rs.Members[g] = append(rs.Members[g], addr.Unmap())
				}
			}
		}
	}
	for _, p := range a.ports {
		var ips []string
		for _, ip := range p.GetFixedIps() {
			ips = append(ips, ip.GetIpAddress())
		}
		add(p.GetSecurityGroups(), ips)
	}
	for _, m := range a.remote {
		add(m.groups, m.ips)
	}
	for g, addrs := range rs.Members {
		slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
		rs.Members[g] = slices.Compact(addrs)
	}
	return rs, users
}

func fwParseAddr(s string) netip.Prefix {
	p, err := firewall.ParseAddr(s)
	if err != nil {
		return netip.Prefix{} // invalid: the port fails closed and the problem is reported
	}
	return p
}

func (a *firewallActor) apply(ctx actor.Context) {
	if !a.caughtUp || !a.remoteCaughtUp {
		return // the whole desired state is not known yet; the kernel keeps what it has
	}
	a.gen++
	rs, users := a.ruleset()
	opCtx, cancel := a.env.opContext()
	start := time.Now()
	ch, err := a.fw.Apply(opCtx, rs)
	cancel()
	if err != nil {
		a.failures++
		delay := a.env.Backoff.Delay(a.failures)
		a.log.Warn().Err(err).Int("attempt", a.failures).Dur("retry_in", delay).Msg("firewall apply failed")
		for _, id := range fwSortedKeys(a.groups) {
			g := a.groups[id]
			a.tracker(id).report(nsv1.Phase_PHASE_ERROR, "firewall transaction failed: "+err.Error(), g.seq, g.received,
				map[string]string{"ports": fmt.Sprint(len(users[id]))}, nil)
		}
		scheduleRetry(ctx, delay, a.gen)
		return
	}
	a.failures, a.dirty, a.applied = 0, false, true
	if ch.Ops > 0 {
		a.log.Info().Bool("full", ch.Full).Int("ops", ch.Ops).Int("ports", len(rs.Ports)).Dur("took", time.Since(start)).Msg("firewall applied")
	}
	a.report(ch.Problems, users)
}

// report publishes each security group's status on this host.
func (a *firewallActor) report(problems []firewall.Problem, users map[string][]string) {
	byGroup := map[string][]string{}
	portGroups := map[string][]string{}
	for _, p := range a.ports {
		portGroups[p.GetId()] = p.GetSecurityGroups()
	}
	for _, p := range problems {
		a.log.Warn().Err(p).Msg("firewall problem")
		switch {
		case p.Group != "":
			byGroup[p.Group] = append(byGroup[p.Group], p.Error())
		case p.Port != "":
			for _, g := range portGroups[p.Port] {
				byGroup[g] = append(byGroup[g], p.Error()+" (the port drops all traffic)")
			}
		}
	}
	for _, id := range fwSortedKeys(a.groups) {
		g := a.groups[id]
		ports := users[id]
		details := map[string]string{"ports": fmt.Sprint(len(ports)), "rules": fmt.Sprint(len(g.spec.GetRules()))}
		if len(ports) > 0 {
			details["port_ids"] = strings.Join(ports, ",")
		}
		if errs := byGroup[id]; len(errs) > 0 {
			a.tracker(id).report(nsv1.Phase_PHASE_ERROR, strings.Join(errs, "; "), g.seq, g.received, details, nil)
			continue
		}
		var reason string
		switch len(ports) {
		case 0:
			reason = "no port on this host uses it"
		case 1:
			reason = "applied to port " + ports[0]
		default:
			reason = fmt.Sprintf("applied to %d ports", len(ports))
			if len(ports) <= 3 {
				reason += ": " + strings.Join(ports, ", ")
			}
		}
		a.tracker(id).report(nsv1.Phase_PHASE_ACTIVE, reason, g.seq, g.received, details, nil)
	}
}

func (a *firewallActor) tracker(id string) *statusTracker {
	t := a.status[id]
	if t == nil {
		t = a.env.tracker(string(streams.KindSecGroup), id)
		a.status[id] = t
	}
	return t
}

func fwSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
