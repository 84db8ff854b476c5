package actors

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Trunks (VLAN-aware VMs). A trunk's sub-ports are ports like any other: each keeps its
// own actor, status, network, security groups and l2population entries. What the trunk
// changes is how a sub-port is plugged: the supervisor gives each sub-port's actor a
// TrunkAttachment (trunk, VLAN, the parent port's spec), and PortSpec turns it into a
// links.BindingSubPort, which each mechanism's Dataplane carries on the parent's device
// (an 802.1Q sub-interface on Linux bridges, VLAN translation on the parent's br-int port
// on Open vSwitch). Adding or removing a sub-port therefore re-drives only that port.
//
// The trunk actor plumbs nothing. It follows the phases of its parent and sub-ports and
// publishes the trunk's status: ACTIVE when the parent and every sub-port are plugged,
// DEGRADED when some sub-ports failed, ERROR when the parent failed or is not in the
// desired state, BUILD while they converge; the details list every sub-port's VLAN, port
// and phase.

// TrunkAttachment tells a port's actor that the port is a sub-port of a trunk on this host.
type TrunkAttachment struct {
	TrunkID string
	VLANID  int
	// Parent is the parent port's spec; nil while the parent is not in this host's
	// desired state.
	Parent *nsv1.Port
}

// same reports whether two attachments plug the sub-port the same way.
func (a *TrunkAttachment) same(b *TrunkAttachment) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.TrunkID != b.TrunkID || a.VLANID != b.VLANID || (a.Parent == nil) != (b.Parent == nil) {
		return false
	}
	return a.Parent == nil || a.Parent.GetId() == b.Parent.GetId() &&
		a.Parent.GetBinding().GetType() == b.Parent.GetBinding().GetType() &&
		a.Parent.GetBinding().GetNetns() == b.Parent.GetBinding().GetNetns()
}

// Messages of trunks.
type (
	// trunkDesired is the latest desired version of a trunk (deleted: its tombstone).
	trunkDesired struct {
		seq      uint64
		received time.Time
		trunk    *nsv1.Trunk
		deleted  bool
		caughtUp bool // the whole desired state is known: the trunk may be judged
	}
	// portPhase: a port's actor published a new phase (port -> supervisor).
	portPhase struct {
		id     string
		phase  nsv1.Phase
		reason string
	}
	// memberPhase is the phase of one of a trunk's ports (supervisor -> trunk); phase
	// UNSPECIFIED: the port is not in this host's desired state.
	memberPhase struct {
		id     string
		phase  nsv1.Phase
		reason string
	}
	// trunkGone: a deleted trunk reported DELETED; the supervisor stops its actor.
	trunkGone struct{ id string }
)

type trunkActor struct {
	id      string
	log     zerolog.Logger
	status  *statusTracker
	desired *trunkDesired
	members map[string]memberPhase // port id -> phase
}

func newTrunkActor(env *Env, id string) actor.Actor {
	return &trunkActor{id: id, log: env.Log.With().Str("trunk", id).Logger(),
		status: env.tracker(string(streams.KindTrunk), id), members: map[string]memberPhase{}}
}

func (a *trunkActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *trunkDesired:
		a.desired = m
	case *memberPhase:
		a.members[m.id] = *m
	case *resync:
	default:
		return
	}
	a.report(ctx)
}

func (a *trunkActor) report(ctx actor.Context) {
	d := a.desired
	if d == nil || !d.caughtUp && !d.deleted {
		return
	}
	if d.deleted {
		a.status.report(nsv1.Phase_PHASE_DELETED, "sub-ports detached", d.seq, d.received, nil, nil)
		ctx.Send(ctx.Parent(), &trunkGone{id: a.id})
		return
	}
	phase, reason, details := trunkStatus(d.trunk, a.members)
	since := d.received
	if phase == nsv1.Phase_PHASE_BUILD {
		since = time.Time{}
	}
	if phase != a.status.phase || reason != a.status.reason {
		a.log.Debug().Str("phase", phase.String()).Str("reason", reason).Msg("trunk status")
	}
	a.status.report(phase, reason, d.seq, since, details, nil)
}

// trunkStatus judges a trunk from its ports' phases. The reason is deterministic (a
// restarted agent computes the same one and publishes nothing).
func trunkStatus(tr *nsv1.Trunk, members map[string]memberPhase) (nsv1.Phase, string, map[string]string) {
	parent := members[tr.GetPortId()]
	details := map[string]string{"parent": tr.GetPortId(), "sub_ports": fmt.Sprint(len(tr.GetSubPorts()))}
	if !tr.IsAdminStateUp() {
		details["admin_state_up"] = "false"
	}
	subs := append([]*nsv1.SubPort(nil), tr.GetSubPorts()...)
	sort.Slice(subs, func(i, j int) bool { return subs[i].GetSegmentationId() < subs[j].GetSegmentationId() })
	var failed, waiting []string
	for _, sp := range subs {
		m := members[sp.GetPortId()]
		vid := sp.GetSegmentationId()
		details[fmt.Sprintf("vlan.%d", vid)] = fmt.Sprintf("%s %s", sp.GetPortId(), phaseName(m.phase))
		switch m.phase {
		case nsv1.Phase_PHASE_ACTIVE, nsv1.Phase_PHASE_DOWN:
		case nsv1.Phase_PHASE_ERROR, nsv1.Phase_PHASE_UNSPECIFIED, nsv1.Phase_PHASE_DELETED:
			failed = append(failed, fmt.Sprintf("VLAN %d (port %s): %s", vid, sp.GetPortId(), memberReason(m)))
		default:
			waiting = append(waiting, fmt.Sprintf("VLAN %d", vid))
		}
	}
	switch parent.phase {
	case nsv1.Phase_PHASE_ERROR, nsv1.Phase_PHASE_UNSPECIFIED, nsv1.Phase_PHASE_DELETED:
		return nsv1.Phase_PHASE_ERROR, fmt.Sprintf("parent port %s: %s", tr.GetPortId(), memberReason(parent)), details
	case nsv1.Phase_PHASE_ACTIVE, nsv1.Phase_PHASE_DOWN:
	default:
		return nsv1.Phase_PHASE_BUILD, fmt.Sprintf("waiting for parent port %s", tr.GetPortId()), details
	}
	switch {
	case len(failed) > 0:
		return nsv1.Phase_PHASE_DEGRADED, fmt.Sprintf("%d of %d sub-ports failed: %s", len(failed), len(subs), strings.Join(failed, "; ")), details
	case len(waiting) > 0:
		return nsv1.Phase_PHASE_BUILD, "waiting for sub-ports " + strings.Join(waiting, ", "), details
	case parent.phase == nsv1.Phase_PHASE_DOWN:
		return nsv1.Phase_PHASE_DOWN, fmt.Sprintf("parent port %s is down: %s", tr.GetPortId(), parent.reason), details
	}
	reason := fmt.Sprintf("parent port %s and %d sub-ports plugged", tr.GetPortId(), len(subs))
	if !tr.IsAdminStateUp() {
		// As in Neutron, a disabled trunk is locked, not cut off: its ports keep forwarding.
		reason += "; admin_state_up is false (disabled)"
	}
	return nsv1.Phase_PHASE_ACTIVE, reason, details
}

func memberReason(m memberPhase) string {
	switch {
	case m.phase == nsv1.Phase_PHASE_UNSPECIFIED:
		return "not in the desired state of this host"
	case m.phase == nsv1.Phase_PHASE_DELETED:
		return "deleted"
	}
	return m.reason
}

func phaseName(p nsv1.Phase) string {
	if p == nsv1.Phase_PHASE_UNSPECIFIED {
		return "MISSING"
	}
	return strings.TrimPrefix(p.String(), "PHASE_")
}

// The supervisor's side of trunks: which ports are sub-ports, and the phases trunks follow.

type trunkEntry struct {
	id       string
	seq      uint64
	received time.Time
	spec     *nsv1.Trunk
	deleted  bool
	pid      *actor.PID
}

// memberIDs lists a trunk's ports: the parent first, then the sub-ports.
func memberIDs(tr *nsv1.Trunk) []string {
	if tr == nil {
		return nil
	}
	ids := []string{tr.GetPortId()}
	for _, sp := range tr.GetSubPorts() {
		ids = append(ids, sp.GetPortId())
	}
	return ids
}

func (h *hostSupervisor) onTrunk(ctx actor.Context, tr *nsv1.Trunk, deleted bool, seq uint64, received time.Time) {
	e := h.trunks[tr.GetId()]
	if e == nil {
		if deleted && !h.knew(streams.KindTrunk, tr.GetId()) {
			return
		}
		e = &trunkEntry{id: tr.GetId()}
		h.trunks[e.id] = e
		id := e.id
		e.pid = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newTrunkActor(h.env, id) }))
		h.children[e.pid.Id] = childRef{kind: streams.KindTrunk, id: id}
	}
	var before, after []string
	if !e.deleted {
		before = memberIDs(e.spec)
	}
	if !deleted {
		after = memberIDs(tr)
	}
	e.seq, e.received, e.spec, e.deleted = seq, received, tr, deleted
	h.indexTrunk(e.id, before, after)
	h.sendTrunk(ctx, e)
	h.reattach(ctx, append(before, memberIDs(tr)...))
}

// indexTrunk records that trunk id now holds the ports after instead of before, so that
// a port's trunks are found without scanning every trunk (ports' events and phases are
// the hot path).
func (h *hostSupervisor) indexTrunk(id string, before, after []string) {
	for _, p := range before {
		delete(h.memberOf[p], id)
		if len(h.memberOf[p]) == 0 {
			delete(h.memberOf, p)
		}
	}
	for _, p := range after {
		if h.memberOf[p] == nil {
			h.memberOf[p] = map[string]bool{}
		}
		h.memberOf[p][id] = true
	}
}

// trunksOf lists the live trunks that hold a port, as parent or sub-port, by id.
func (h *hostSupervisor) trunksOf(portID string) []*trunkEntry {
	ids := make([]string, 0, len(h.memberOf[portID]))
	for id := range h.memberOf[portID] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*trunkEntry, 0, len(ids))
	for _, id := range ids {
		out = append(out, h.trunks[id])
	}
	return out
}

// sendTrunk gives a trunk's actor its desired version and its ports' phases. Until the
// whole desired state is known the actor only listens: a restarted agent must not publish
// a trunk as BUILD because its ports' events come later in the stream.
func (h *hostSupervisor) sendTrunk(ctx actor.Context, e *trunkEntry) {
	ctx.Send(e.pid, &trunkDesired{seq: e.seq, received: e.received, trunk: e.spec, deleted: e.deleted, caughtUp: h.caughtUp})
	if e.deleted {
		return
	}
	for _, id := range memberIDs(e.spec) {
		ctx.Send(e.pid, h.memberPhaseOf(id))
	}
}

// memberPhaseOf is the last known phase of a local port: what its actor said, else what
// the status stream said when the agent started (the actor's own starting point).
func (h *hostSupervisor) memberPhaseOf(id string) *memberPhase {
	p := h.ports[id]
	if p == nil || p.deleted {
		return &memberPhase{id: id}
	}
	if ph, ok := h.portPhases[id]; ok {
		return &memberPhase{id: id, phase: ph.phase, reason: ph.reason}
	}
	if ev := h.env.LastStatus[portKey(id)]; ev != nil && ev.GetDesiredSeq() == p.seq {
		return &memberPhase{id: id, phase: ev.GetPhase(), reason: ev.GetReason()}
	}
	return &memberPhase{id: id, phase: nsv1.Phase_PHASE_PENDING, reason: "not converged yet"}
}

// attachmentOf says whether a port is a sub-port of a trunk on this host, and how.
func (h *hostSupervisor) attachmentOf(portID string) *TrunkAttachment {
	for _, t := range h.trunksOf(portID) {
		for _, sp := range t.spec.GetSubPorts() {
			if sp.GetPortId() != portID {
				continue
			}
			att := &TrunkAttachment{TrunkID: t.id, VLANID: int(sp.GetSegmentationId())}
			if p := h.ports[t.spec.GetPortId()]; p != nil && !p.deleted {
				att.Parent = p.spec
			}
			return att
		}
	}
	return nil
}

// setAttached remembers what a sub-port's actor was told (ports on no trunk are not kept).
func (h *hostSupervisor) setAttached(portID string, att *TrunkAttachment) {
	if att == nil {
		delete(h.attached, portID)
		return
	}
	h.attached[portID] = att
}

// subPortsOf lists the sub-ports of the trunks whose parent is portID.
func (h *hostSupervisor) subPortsOf(portID string) []string {
	var out []string
	for _, t := range h.trunksOf(portID) {
		if t.spec.GetPortId() == portID {
			out = append(out, memberIDs(t.spec)[1:]...)
		}
	}
	return out
}

// reattach re-drives the ports among ids whose trunk attachment changed.
func (h *hostSupervisor) reattach(ctx actor.Context, ids []string) {
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		att := h.attachmentOf(id)
		old := h.attached[id]
		h.setAttached(id, att)
		if e := h.ports[id]; e != nil && !e.deleted && !att.same(old) {
			ctx.Send(e.pid, &portDesired{seq: e.seq, received: e.received, port: e.spec, trunk: att})
		}
	}
}

// reattachChildrenOf re-drives the sub-ports of trunks whose parent is portID (the parent
// appeared, changed its binding or went).
func (h *hostSupervisor) reattachChildrenOf(ctx actor.Context, portID string) {
	h.reattach(ctx, h.subPortsOf(portID))
}

func (h *hostSupervisor) onPortPhase(ctx actor.Context, m *portPhase) {
	h.portPhases[m.id] = *m
	h.tellTrunks(ctx, m.id, memberPhase{id: m.id, phase: m.phase, reason: m.reason})
}

// tellTrunks sends a port's phase to the trunks it belongs to.
func (h *hostSupervisor) tellTrunks(ctx actor.Context, portID string, m memberPhase) {
	for _, t := range h.trunksOf(portID) {
		ctx.Send(t.pid, &m)
	}
}

func (h *hostSupervisor) onTrunkGone(ctx actor.Context, id string) {
	e := h.trunks[id]
	if e == nil || !e.deleted {
		return
	}
	ctx.Stop(e.pid)
	delete(h.children, e.pid.Id)
	delete(h.trunks, id)
}
