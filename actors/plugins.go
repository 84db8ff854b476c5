package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Kinds beyond networks and ports plug into the supervisor in two ways.
//
// An ObjectProducer (Env.Objects, by kind) builds one actor per object of its kind, as the
// supervisor does for ports: it receives *ObjectDesired for every version (Deleted for the
// tombstone; Invalid set for a version that failed validation), *NetworkState for the network NetworkOf names (the network's bridge exists on
// this host while such objects need it), *Resync, and after a crash the same messages again.
// When it has removed a deleted object it sends *ObjectGone to its parent.
//
// An ObserverProducer (Env.Observers) builds one host-wide actor that sees every accepted
// desired event (*Observed), other agents' port status (*RemotePortStatus), *CaughtUp,
// *Resync and kernel link events (*LinkEventMsg); the firewall, which needs all of a
// host's ports and security groups at once, is one.

// ObjectProducer builds the actor of one object of a pluggable kind.
type ObjectProducer func(env *Env, id string) actor.Actor

// ObserverProducer builds a host-wide observer actor.
type ObserverProducer func(env *Env) actor.Actor

// ObjectDesired is the latest desired version of one pluggable object.
type ObjectDesired struct {
	Seq      uint64
	Received time.Time
	Spec     streams.Spec
	Deleted  bool
	// Invalid, when set, says why this version was rejected (the supervisor's validation):
	// the actor reports ERROR with it at Seq and keeps running what it has.
	Invalid string
}

// ObjectGone tells the supervisor a deleted object's actor has cleaned up.
type ObjectGone struct {
	Kind streams.Kind
	ID   string
}

// Observed is one accepted desired event, for observers.
type Observed struct {
	Kind     streams.Kind
	ID       string
	Seq      uint64
	Received time.Time
	Spec     streams.Spec
	Deleted  bool
}

// NetworkOf is the network an object needs plumbed on this host ("" for none).
func NetworkOf(spec streams.Spec) string {
	switch s := spec.(type) {
	case *nsv1.Port:
		return s.GetNetworkId()
	case *nsv1.LoadBalancer:
		return s.GetVipNetworkId()
	}
	return ""
}

// DevicesOf lists the host devices an object of a pluggable kind owns besides its network's,
// so that orphan pruning at start leaves them alone. A load balancer's VIP is plugged like
// a port: a veth whose host side is tap + vip_port_id[:11] (tap + lb id[:11] without one).
func DevicesOf(spec streams.Spec) []string {
	if lb, ok := spec.(*nsv1.LoadBalancer); ok {
		if lb.GetVipPortId() != "" {
			return []string{links.TapName(lb.GetVipPortId())}
		}
		return []string{links.TapName(lb.GetId())} // no VIP port: the VIP is named after the LB
	}
	return nil
}

type objEntry struct {
	key       string
	kind      streams.Kind
	id        string
	seq       uint64
	received  time.Time
	spec      streams.Spec
	deleted   bool
	pid       *actor.PID
	networkID string
}

// onObject routes a desired event of a pluggable kind to its object's actor.
func (h *hostSupervisor) onObject(ctx actor.Context, kind streams.Kind, spec streams.Spec, deleted bool, seq uint64, received time.Time) bool {
	produce, ok := h.env.Objects[kind]
	if !ok {
		return false
	}
	id := spec.GetId()
	key := string(kind) + "/" + id
	e := h.objects[key]
	if e == nil {
		if deleted && !h.knew(kind, id) {
			return true
		}
		e = &objEntry{key: key, kind: kind, id: id}
		e.pid = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return produce(h.env, id) }))
		h.objects[key] = e
		h.children[e.pid.Id] = childRef{kind: kind, id: id}
	}
	e.seq, e.received, e.spec, e.deleted = seq, received, spec, deleted
	ctx.Send(e.pid, &ObjectDesired{Seq: seq, Received: received, Spec: spec, Deleted: deleted})
	if deleted {
		return true
	}
	if netID := NetworkOf(spec); netID != e.networkID {
		h.leaveObjectNetwork(ctx, e)
		if netID != "" {
			e.networkID = netID
			n := h.network(netID)
			n.users[key] = true
			if len(n.users) == 1 {
				h.driveNetwork(ctx, n)
			}
			st := n.state
			if st == nil {
				st = h.pendingState(n)
			}
			ctx.Send(e.pid, st)
		}
	}
	return true
}

func (h *hostSupervisor) leaveObjectNetwork(ctx actor.Context, e *objEntry) {
	n := h.networks[e.networkID]
	e.networkID = ""
	if n == nil {
		return
	}
	delete(n.users, e.key)
	if len(n.users) == 0 {
		h.driveNetwork(ctx, n)
	}
}

func (h *hostSupervisor) onObjectGone(ctx actor.Context, m *ObjectGone) {
	key := string(m.Kind) + "/" + m.ID
	e := h.objects[key]
	if e == nil || !e.deleted {
		return
	}
	h.leaveObjectNetwork(ctx, e)
	ctx.Stop(e.pid)
	delete(h.children, e.pid.Id)
	delete(h.objects, key)
}

// resendObject gives a restarted object actor its state again.
func (h *hostSupervisor) resendObject(ctx actor.Context, child *actor.PID, key string) {
	e := h.objects[key]
	if e == nil {
		return
	}
	ctx.Send(child, &ObjectDesired{Seq: e.seq, Received: e.received, Spec: e.spec, Deleted: e.deleted})
	if n := h.networks[e.networkID]; n != nil {
		st := n.state
		if st == nil {
			st = h.pendingState(n)
		}
		ctx.Send(child, st)
	}
}

// knew: the status stream says this host had the object when the agent started.
func (h *hostSupervisor) knew(kind streams.Kind, id string) bool {
	ev := h.env.LastStatus[string(kind)+"/"+id]
	return ev != nil && ev.GetPhase() != nsv1.Phase_PHASE_DELETED
}

// spawnObservers starts the host-wide observers.
func (h *hostSupervisor) spawnObservers(ctx actor.Context) {
	for i, produce := range h.env.Observers {
		pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return produce(h.env) }))
		h.observers = append(h.observers, pid)
		h.children[pid.Id] = childRef{kind: "observer", id: fmt.Sprint(i)}
	}
}

func (h *hostSupervisor) tellObservers(ctx actor.Context, msg any) {
	for _, pid := range h.observers {
		ctx.Send(pid, msg)
	}
}
