package actors

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// portActor converges one port: its device on the network's bridge, MTU, admin state, and
// for veth bindings the peer in the VM namespace.
type portActor struct {
	env     *Env
	id      string
	log     zerolog.Logger
	status  *statusTracker
	desired *portDesired
	network *NetworkState
	wasUp   bool   // the port reached ACTIVE/DOWN with its device present at least once
	repair  string // set when the device was deleted outside netsource: the status says so
	// recheckQueued: a re-check for non-delete link events is already in the mailbox.
	recheckQueued bool
	// failures counts consecutive failed converges; gen invalidates scheduled retries.
	failures, gen int
	// plugged is the spec last handed to EnsurePort: when the port's plumbing changes kind
	// (it joins or leaves a trunk, moves to another VLAN), that is what gets removed.
	plugged *links.PortSpec
	// replugged: the old plumbing was removed for a new one, which is not there yet.
	replugged bool
	// notified is the phase and reason last told to the supervisor (trunks follow them).
	notified portPhase
}

func newPortActor(env *Env, id string) actor.Actor {
	return &portActor{env: env, id: id, log: env.Log.With().Str("port", id).Logger(),
		status: env.tracker(string(streams.KindPort), id)}
}

func (a *portActor) Receive(ctx actor.Context) {
	a.receive(ctx)
	if now := (portPhase{id: a.id, phase: a.status.phase, reason: a.status.reason}); now != a.notified && now.phase != nsv1.Phase_PHASE_UNSPECIFIED {
		a.notified = now
		ctx.Send(ctx.Parent(), &now)
	}
}

func (a *portActor) receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *portDesired:
		if a.desired == nil || m.seq != a.desired.seq {
			a.failures, a.repair = 0, ""
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
	case *linkEvent:
		if m.event.Name != links.TapName(a.id) {
			// The parent port's device (this is a trunk sub-port): re-check once.
			if !a.recheckQueued {
				a.recheckQueued = true
				ctx.Send(ctx.Self(), &recheck{})
			}
			return
		}
		if !a.diverged(m.event) {
			return
		}
		a.log.Debug().Str("device", m.event.Name).Bool("deleted", m.event.Deleted).Msg("link event shows divergence")
		if !m.event.Deleted {
			// Late events of our own changes also look diverged (a new veth reports "down, no
			// master" after it is plugged): one re-check after the queued events, not one each.
			if !a.recheckQueued {
				a.recheckQueued = true
				ctx.Send(ctx.Self(), &recheck{})
			}
			return
		}
		// Only a deletion is surely someone else's doing, and only then does the status say so.
		if a.status.phase == nsv1.Phase_PHASE_ACTIVE || a.status.phase == nsv1.Phase_PHASE_DOWN {
			a.repair = fmt.Sprintf("device %s was deleted outside netsource; re-created", m.event.Name)
		}
		a.converge(ctx)
	case *recheck:
		a.recheckQueued = false
		a.converge(ctx)
	}
}

// diverged reports whether a kernel event shows the device is not as wanted.
func (a *portActor) diverged(ev links.LinkEvent) bool {
	if a.desired == nil || a.desired.deleted || a.network == nil || !a.network.Ready {
		return ev.Deleted
	}
	wantUp := a.desired.port.IsAdminStateUp() && a.network.Network.IsAdminStateUp()
	return ev.Deleted || ev.Master != a.network.Spec.Bridge || ev.Up != wantUp || a.status.phase != nsv1.Phase_PHASE_ACTIVE && wantUp
}

func (a *portActor) converge(ctx actor.Context) {
	d := a.desired
	if d == nil {
		return
	}
	a.gen++
	if d.deleted {
		a.remove(ctx)
		return
	}
	if a.status.seq != d.seq {
		a.status.report(nsv1.Phase_PHASE_BUILD, "converging", d.seq, time.Time{}, nil, nil)
	}
	// Waiting for the network is part of BUILD and not reported on its own: after a restart
	// the port waits for its network again, and a converged port must not flap.
	switch {
	case a.network == nil:
		return
	case !a.network.Ready && a.network.Final:
		a.status.report(nsv1.Phase_PHASE_ERROR, a.network.Reason, d.seq, d.received, nil, nil)
		return
	case !a.network.Ready:
		return
	}
	if t := d.trunk; t != nil && t.Parent == nil {
		a.status.report(nsv1.Phase_PHASE_BUILD, fmt.Sprintf("waiting for the parent port of trunk %s", t.TrunkID), d.seq, time.Time{}, nil, nil)
		return
	}
	spec, err := PortSpec(d.port, a.network.Network, a.network.Spec, d.trunk)
	if err != nil {
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.seq, d.received, nil, nil)
		return
	}
	details := map[string]string{"device": spec.Device, "bridge": spec.Bridge}
	if spec.Peer.Netns != "" {
		details["netns"] = spec.Peer.Netns
	}
	if spec.Binding == links.BindingSubPort {
		details["trunk"], details["parent"], details["vlan"] = spec.SubPort.TrunkID, spec.SubPort.ParentID, fmt.Sprint(spec.SubPort.VLANID)
	}
	if err := a.unplugOld(spec); err != nil {
		a.fail(ctx, err, details)
		return
	}
	opCtx, cancel := a.env.opContext()
	state, err := a.env.Dataplane.EnsurePort(opCtx, spec)
	cancel()
	switch {
	case errors.Is(err, links.ErrDeviceMissing):
		// A tap binding waits for the hypervisor; the link watcher wakes us when it appears.
		a.failures = 0
		if a.wasUp || a.status.phase == nsv1.Phase_PHASE_ACTIVE && !a.replugged {
			a.status.report(nsv1.Phase_PHASE_DOWN, fmt.Sprintf("device %s disappeared", spec.Device), d.seq, d.received, details, nil)
		} else {
			a.status.report(nsv1.Phase_PHASE_BUILD, fmt.Sprintf("waiting for device %s", spec.Device), d.seq, time.Time{}, details, nil)
		}
	case errors.Is(err, links.ErrBridgeFull):
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.seq, d.received, details, nil)
	case errors.Is(err, links.ErrNotSupported):
		// Will not heal without another kernel or another desired state: no retries.
		a.failures = 0
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.seq, d.received, details, nil)
	case err != nil:
		a.fail(ctx, err, details)
	default:
		a.failures = 0
		a.wasUp, a.replugged = true, false
		details["ifindex"] = fmt.Sprint(state.Ifindex)
		phase, reason := nsv1.Phase_PHASE_ACTIVE, "device "+spec.Device+" plugged into "+spec.Bridge
		if !spec.AdminUp {
			phase, reason = nsv1.Phase_PHASE_DOWN, "admin_state_up is false"
			if !a.network.Network.IsAdminStateUp() {
				reason = "network admin_state_up is false"
			}
		}
		if a.repair != "" && spec.Binding == links.BindingVeth && phase == nsv1.Phase_PHASE_ACTIVE {
			reason = a.repair // kept until the next desired version, so later converges stay quiet
		}
		a.status.report(phase, reason, d.seq, d.received, details, a.l2())
	}
}

// l2 is what other agents learn about this port (l2population, remote groups).
func (a *portActor) l2() *nsv1.PortL2 {
	p := a.desired.port
	l2 := &nsv1.PortL2{NetworkId: p.GetNetworkId(), MacAddress: p.GetMacAddress(), SecurityGroups: p.GetSecurityGroups()}
	for _, ip := range p.GetFixedIps() {
		l2.IpAddresses = append(l2.IpAddresses, ip.GetIpAddress())
	}
	if a.env.Config.VXLAN.Enabled() {
		l2.TunnelIp = a.env.Config.VXLAN.LocalIP
	}
	return l2
}

func (a *portActor) fail(ctx actor.Context, err error, details map[string]string) {
	a.failures++
	delay := a.env.Backoff.Delay(a.failures)
	reason := err.Error()
	if strings.TrimSpace(reason) == "" {
		reason = "converge failed"
	}
	a.log.Warn().Err(err).Int("attempt", a.failures).Dur("retry_in", delay).Msg("port converge failed")
	a.status.report(nsv1.Phase_PHASE_ERROR, reason, a.desired.seq, a.desired.received, details, nil)
	scheduleRetry(ctx, delay, a.gen)
}

// unplugOld removes the port's previous plumbing when the new spec plugs it another way:
// a port joining or leaving a trunk, a sub-port moving to another VLAN or parent.
func (a *portActor) unplugOld(spec links.PortSpec) error {
	old := a.plugged
	a.plugged = &spec
	// A tap binding made nothing (the device is someone else's) and the new plumbing takes
	// the device over: this is also how a restarted agent meets a sub-port whose trunk event
	// comes later in the stream than the port's, and it must change nothing then.
	if old == nil || old.Binding == links.BindingTap || old.Binding == spec.Binding && old.SubPort == spec.SubPort &&
		(spec.Binding != links.BindingSubPort || old.Peer.Netns == spec.Peer.Netns) {
		return nil
	}
	a.log.Info().Str("device", old.Device).Msg("port plugged another way now; removing the old plumbing")
	opCtx, cancel := a.env.opContext()
	defer cancel()
	if err := a.env.Dataplane.DeletePort(opCtx, *old); err != nil {
		a.plugged = old
		return fmt.Errorf("remove the previous plumbing of port %s: %w", a.id, err)
	}
	a.wasUp, a.replugged = false, true // its device is gone because it is plugged another way, not by accident
	return nil
}

// removalSpec is what DeletePort needs to remove the port's devices: what was plugged, or
// after a restart what the last desired version says.
func (a *portActor) removalSpec() links.PortSpec {
	if a.plugged != nil {
		return *a.plugged
	}
	d := a.desired
	spec := links.PortSpec{ID: a.id, Device: links.TapName(a.id), Bridge: links.BridgeName(d.port.GetNetworkId())}
	if a.network != nil && a.network.Spec.Bridge != "" {
		spec.Bridge = a.network.Spec.Bridge
	}
	switch t := d.trunk; {
	case t != nil && t.Parent != nil:
		spec.Binding = links.BindingSubPort
		spec.SubPort = links.SubPortOf{TrunkID: t.TrunkID, ParentID: t.Parent.GetId(), ParentDevice: links.TapName(t.Parent.GetId()), VLANID: t.VLANID}
		if b := t.Parent.GetBinding(); b.GetType() == "veth" {
			spec.Peer = links.VethPeer{Netns: b.GetNetns(), Name: links.PeerName(a.id)}
			spec.SubPort.ParentPeer = links.PeerName(t.Parent.GetId())
		}
	case d.port.GetBinding().GetType() == "veth":
		spec.Binding = links.BindingVeth
		spec.Peer = links.VethPeer{Netns: d.port.GetBinding().GetNetns(), Name: links.PeerName(a.id)}
	}
	return spec
}

func (a *portActor) remove(ctx actor.Context) {
	d := a.desired
	opCtx, cancel := a.env.opContext()
	err := a.env.Dataplane.DeletePort(opCtx, a.removalSpec())
	cancel()
	if err != nil {
		a.fail(ctx, fmt.Errorf("remove port devices: %w", err), nil)
		return
	}
	a.plugged = nil
	a.status.report(nsv1.Phase_PHASE_DELETED, "devices removed", d.seq, d.received, nil, nil)
	ctx.Send(ctx.Parent(), &portGone{id: a.id})
}

// scheduleRetry re-drives the calling actor after delay unless it converged meanwhile.
func scheduleRetry(ctx actor.Context, delay time.Duration, gen int) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	time.AfterFunc(delay, func() { root.Send(self, &retry{gen: gen}) })
}
