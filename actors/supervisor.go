package actors

import (
	"fmt"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// HostProps returns the props of a HostSupervisor whose children restart with backoff.
func HostProps(env *Env) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return newHostSupervisor(env) },
		actor.WithSupervisor(&BackoffStrategy{Backoff: env.Backoff, Window: time.Minute}))
}

type netEntry struct {
	id       string
	seq      uint64
	received time.Time
	spec     *nsv1.Network // nil: unknown or deleted
	deleted  bool
	pid      *actor.PID
	users    map[string]bool // kind/id of the local ports and objects on this network
	state    *NetworkState   // last plumbing outcome, sent to users
	fdb      []links.FDBEntry
	devices  []string // bridge and uplink device, for link events
}

type portEntry struct {
	id        string
	seq       uint64
	received  time.Time
	spec      *nsv1.Port
	deleted   bool
	pid       *actor.PID
	networkID string
}

type childRef struct {
	kind streams.Kind
	id   string
}

// hostSupervisor owns the host's children and routes desired events to them.
type hostSupervisor struct {
	env        *Env
	log        zerolog.Logger
	networks   map[string]*netEntry
	ports      map[string]*portEntry
	secgroups  map[string]*nsv1.SecurityGroup
	unhandled  map[string]uint64 // kind/id of kinds this agent does not build yet
	children   map[string]childRef
	devices    map[string]string    // port device name -> port id
	objects    map[string]*objEntry // pluggable kinds, by kind/id
	trunks     map[string]*trunkEntry
	attached   map[string]*TrunkAttachment // sub-port id -> what its actor was told
	memberOf   map[string]map[string]bool  // port id -> ids of the live trunks holding it
	portPhases map[string]portPhase        // last phase of each local port, for trunks
	observers  []*actor.PID
	remote     map[string]*nsv1.StatusEvent
	errors     map[string]*statusTracker // objects reported by the supervisor itself
	caughtUp   bool
	appliedSeq uint64
}

func newHostSupervisor(env *Env) *hostSupervisor {
	return &hostSupervisor{
		env: env, log: env.Log.With().Str("actor", "host").Logger(),
		networks: map[string]*netEntry{}, ports: map[string]*portEntry{}, secgroups: map[string]*nsv1.SecurityGroup{},
		unhandled: map[string]uint64{}, children: map[string]childRef{}, devices: map[string]string{},
		remote: map[string]*nsv1.StatusEvent{}, errors: map[string]*statusTracker{}, objects: map[string]*objEntry{},
		trunks: map[string]*trunkEntry{}, attached: map[string]*TrunkAttachment{}, memberOf: map[string]map[string]bool{}, portPhases: map[string]portPhase{},
	}
}

// Receive never lets a panic escape: restarting the supervisor would stop every child.
func (h *hostSupervisor) Receive(ctx actor.Context) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).Msgf("supervisor recovered from %T", ctx.Message())
		}
	}()
	switch m := ctx.Message().(type) {
	case *actor.Started:
		h.spawnObservers(ctx)
	case *DesiredMsg:
		h.onDesired(ctx, m.Msg)
	case *CaughtUp:
		h.onCaughtUp(ctx)
		h.tellObservers(ctx, m)
	case *Resync:
		for _, child := range ctx.Children() {
			ctx.Send(child, &resync{})
		}
		h.tellObservers(ctx, m)
	case *LinkEventMsg:
		h.onLinkEvent(ctx, m.Event)
		h.tellObservers(ctx, m)
	case *RemotePortStatus:
		h.onRemotePort(ctx, m.Status)
		h.tellObservers(ctx, m)
	case *ObjectGone:
		h.onObjectGone(ctx, m)
	case *GetCounts:
		ctx.Respond(h.counts())
	case *networkConverged:
		h.onNetworkConverged(ctx, m)
	case *portGone:
		h.onPortGone(ctx, m.id)
	case *portPhase:
		h.onPortPhase(ctx, m)
	case *trunkGone:
		h.onTrunkGone(ctx, m.id)
	case *childFailed:
		h.onChildFailed(m)
	case *childRestarted:
		h.onChildRestarted(ctx, m.child)
	}
}

// report publishes a status for an object the supervisor judges itself (undecodable or
// invalid events, kinds not built yet).
func (h *hostSupervisor) report(kind streams.Kind, id string, phase nsv1.Phase, reason string, seq uint64) {
	key := string(kind) + "/" + id
	t, ok := h.errors[key]
	if !ok {
		t = h.env.tracker(string(kind), id)
		h.errors[key] = t
	}
	t.report(phase, reason, seq, time.Time{}, nil, nil)
}

func (h *hostSupervisor) onDesired(ctx actor.Context, m streams.Msg) {
	h.appliedSeq = max(h.appliedSeq, m.Seq)
	addr, err := streams.ParseDesiredSubject(m.Subject)
	if err != nil || streams.CheckToken("id", addr.ID) != nil {
		h.log.Warn().Str("subject", m.Subject).Uint64("seq", m.Seq).Msg("ignoring message on a subject outside the desired scheme")
		return
	}
	if addr.Host != "" && addr.Host != h.env.Config.Host {
		h.log.Warn().Str("subject", m.Subject).Msg("ignoring desired event for another host")
		return
	}
	ev, err := streams.DecodeDesired(m.Data)
	if err != nil {
		h.log.Warn().Err(err).Str("subject", m.Subject).Uint64("seq", m.Seq).Msg("undecodable desired event")
		h.report(addr.Kind, addr.ID, nsv1.Phase_PHASE_ERROR, fmt.Sprintf("event at seq %d: %v", m.Seq, err), m.Seq)
		return
	}
	if got, err := streams.AddressOf(ev); err != nil || got != addr {
		h.report(addr.Kind, addr.ID, nsv1.Phase_PHASE_ERROR,
			fmt.Sprintf("event at seq %d is about %s %s on %q, not what its subject %s names", m.Seq, got.Kind, got.ID, got.Host, m.Subject), m.Seq)
		return
	}
	deleted := ev.GetChange() == nsv1.ChangeKind_CHANGE_KIND_DELETED
	if !deleted {
		if err := streams.ValidateSpec(streams.SpecOf(ev)); err != nil {
			reason := fmt.Sprintf("invalid event at seq %d: %v", m.Seq, err)
			if e := h.objects[string(addr.Kind)+"/"+addr.ID]; e != nil && !e.deleted {
				// The object's actor publishes its status: it reports the error at this
				// version and keeps what runs (a second reporter would be overwritten by the
				// actor's next status for the older version).
				ctx.Send(e.pid, &ObjectDesired{Seq: m.Seq, Received: time.Now(), Spec: streams.SpecOf(ev), Invalid: reason})
				return
			}
			h.report(addr.Kind, addr.ID, nsv1.Phase_PHASE_ERROR, reason, m.Seq)
			return
		}
	}
	received := time.Now()
	spec := streams.SpecOf(ev)
	h.tellObservers(ctx, &Observed{Kind: addr.Kind, ID: addr.ID, Seq: m.Seq, Received: received, Spec: spec, Deleted: deleted})
	switch s := spec.(type) {
	case *nsv1.Network:
		h.onNetwork(ctx, s, deleted, m.Seq, received)
	case *nsv1.Port:
		h.onPort(ctx, s, deleted, m.Seq, received)
	case *nsv1.Trunk:
		h.onTrunk(ctx, s, deleted, m.Seq, received)
	case *nsv1.SecurityGroup:
		if deleted {
			delete(h.secgroups, s.GetId())
		} else {
			h.secgroups[s.GetId()] = s
		}
	default:
		if h.onObject(ctx, addr.Kind, s, deleted, m.Seq, received) {
			return
		}
		key := string(addr.Kind) + "/" + addr.ID
		if deleted {
			delete(h.unhandled, key)
			h.report(addr.Kind, addr.ID, nsv1.Phase_PHASE_DELETED, "deleted", m.Seq)
			return
		}
		h.unhandled[key] = m.Seq
		h.report(addr.Kind, addr.ID, nsv1.Phase_PHASE_PENDING,
			fmt.Sprintf("%s objects are not built by this agent version yet", addr.Kind), m.Seq)
	}
}

func (h *hostSupervisor) network(id string) *netEntry {
	e, ok := h.networks[id]
	if !ok {
		e = &netEntry{id: id, users: map[string]bool{}}
		h.networks[id] = e
	}
	return e
}

func (h *hostSupervisor) onNetwork(ctx actor.Context, n *nsv1.Network, deleted bool, seq uint64, received time.Time) {
	e := h.network(n.GetId())
	e.seq, e.received, e.deleted = seq, received, deleted
	e.spec = n
	if deleted {
		e.spec = nil
	}
	h.driveNetwork(ctx, e)
	if e.pid == nil {
		h.tellPorts(ctx, e, h.pendingState(e))
	}
}

// needed: the network has local users and a spec.
func (e *netEntry) needed() bool { return e.spec != nil && len(e.users) > 0 }

// driveNetwork sends the network actor its desired state, spawning it when first needed.
func (h *hostSupervisor) driveNetwork(ctx actor.Context, e *netEntry) {
	if e.pid == nil {
		if !e.needed() {
			return
		}
		id := e.id
		e.pid = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newNetworkActor(h.env, id) }))
		h.children[e.pid.Id] = childRef{kind: streams.KindNetwork, id: id}
		if e.fdb != nil {
			ctx.Send(e.pid, &fdbEntries{entries: e.fdb})
		}
	}
	ctx.Send(e.pid, &networkDesired{seq: e.seq, received: e.received, network: e.spec, needed: e.needed()})
}

// pendingState is what ports learn about a network that has no plumbing yet.
func (h *hostSupervisor) pendingState(e *netEntry) *NetworkState {
	if e.spec != nil {
		return &NetworkState{Network: e.spec, Reason: "creating bridge " + links.BridgeName(e.id)}
	}
	reason := fmt.Sprintf("network %s is not in the desired state", e.id)
	if e.deleted {
		reason = fmt.Sprintf("network %s was deleted", e.id)
	}
	return &NetworkState{Reason: reason, Final: h.caughtUp || e.deleted}
}

func (h *hostSupervisor) tellPorts(ctx actor.Context, e *netEntry, st *NetworkState) {
	for key := range e.users {
		if pid := h.userPID(key); pid != nil {
			ctx.Send(pid, st)
		}
	}
}

// userPID finds the actor of a network user by its kind/id key.
func (h *hostSupervisor) userPID(key string) *actor.PID {
	kind, id, _ := strings.Cut(key, "/")
	if streams.Kind(kind) == streams.KindPort {
		if p := h.ports[id]; p != nil {
			return p.pid
		}
		return nil
	}
	if o := h.objects[key]; o != nil {
		return o.pid
	}
	return nil
}

func (h *hostSupervisor) onNetworkConverged(ctx actor.Context, m *networkConverged) {
	e := h.networks[m.id]
	if e == nil {
		return
	}
	e.devices = []string{m.spec.Bridge}
	if dev := m.spec.UplinkDevice(); dev != "" {
		e.devices = append(e.devices, dev)
	}
	st := &NetworkState{Network: e.spec, Spec: m.spec, Ready: m.ready && e.spec != nil, Reason: m.reason, Final: m.final}
	if st.Network == nil {
		st = h.pendingState(e)
	}
	if old := e.state; old != nil && old.Ready == st.Ready && old.Reason == st.Reason && old.Final == st.Final &&
		old.Network == st.Network && equalSpec(old.Spec, st.Spec) {
		return
	}
	e.state = st
	h.tellPorts(ctx, e, st)
	if !e.needed() && !m.ready && e.pid != nil && e.spec == nil {
		// A deleted network with no ports left: its actor has cleaned up.
		ctx.Stop(e.pid)
		delete(h.children, e.pid.Id)
		delete(h.networks, e.id)
	}
}

func (h *hostSupervisor) onPort(ctx actor.Context, p *nsv1.Port, deleted bool, seq uint64, received time.Time) {
	e := h.ports[p.GetId()]
	if e == nil {
		if deleted && !h.knew(streams.KindPort, p.GetId()) {
			return // a tombstone of a port this host never had: nothing to remove
		}
		e = &portEntry{id: p.GetId()}
		h.ports[e.id] = e
		h.spawnPort(ctx, e)
	}
	if !deleted && e.networkID != "" && e.networkID != p.GetNetworkId() {
		h.leaveNetwork(ctx, e)
	}
	e.seq, e.received, e.spec, e.deleted = seq, received, p, deleted
	att := h.attachmentOf(p.GetId())
	h.setAttached(p.GetId(), att)
	ctx.Send(e.pid, &portDesired{seq: seq, received: received, port: p, deleted: deleted, trunk: att})
	h.reattachChildrenOf(ctx, p.GetId())
	if deleted {
		return
	}
	if e.networkID != p.GetNetworkId() {
		e.networkID = p.GetNetworkId()
		n := h.network(e.networkID)
		n.users[portKey(e.id)] = true
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

func portKey(id string) string { return string(streams.KindPort) + "/" + id }

func (h *hostSupervisor) spawnPort(ctx actor.Context, e *portEntry) {
	id := e.id
	e.pid = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newPortActor(h.env, id) }))
	h.children[e.pid.Id] = childRef{kind: streams.KindPort, id: id}
	h.devices[links.TapName(id)] = id
}

func (h *hostSupervisor) leaveNetwork(ctx actor.Context, e *portEntry) {
	n := h.networks[e.networkID]
	e.networkID = ""
	if n == nil {
		return
	}
	delete(n.users, portKey(e.id))
	if len(n.users) == 0 {
		h.driveNetwork(ctx, n)
	}
}

func (h *hostSupervisor) onPortGone(ctx actor.Context, id string) {
	e := h.ports[id]
	if e == nil || !e.deleted {
		return // re-created meanwhile: its actor already has the new spec
	}
	h.leaveNetwork(ctx, e)
	ctx.Stop(e.pid)
	delete(h.children, e.pid.Id)
	delete(h.devices, links.TapName(id))
	delete(h.ports, id)
	delete(h.attached, id)
	delete(h.portPhases, id)
	h.tellTrunks(ctx, id, memberPhase{id: id})
}

func (h *hostSupervisor) onChildFailed(m *childFailed) {
	ref, ok := h.children[m.child.Id]
	if !ok {
		return
	}
	h.log.Error().Str("kind", string(ref.kind)).Str("id", ref.id).Interface("panic", m.reason).Msg("child crashed; restarting with backoff")
	seq := uint64(0)
	if ref.kind == streams.KindPort && h.ports[ref.id] != nil {
		seq = h.ports[ref.id].seq
	} else if n := h.networks[ref.id]; ref.kind == streams.KindNetwork && n != nil {
		seq = n.seq
	} else if t := h.trunks[ref.id]; ref.kind == streams.KindTrunk && t != nil {
		seq = t.seq
	}
	h.report(ref.kind, ref.id, nsv1.Phase_PHASE_ERROR, fmt.Sprintf("actor crashed: %v; restarting", m.reason), seq)
}

// onChildRestarted re-sends a restarted child what it needs: its state died with it.
func (h *hostSupervisor) onChildRestarted(ctx actor.Context, child *actor.PID) {
	ref, ok := h.children[child.Id]
	if !ok {
		return
	}
	delete(h.errors, string(ref.kind)+"/"+ref.id)
	switch ref.kind {
	case "observer":
		h.log.Warn().Msg("observer restarted; it resynchronises on the next resync")
	default:
		h.resendObject(ctx, child, string(ref.kind)+"/"+ref.id)
	case streams.KindTrunk:
		if e := h.trunks[ref.id]; e != nil {
			h.sendTrunk(ctx, e)
		}
	case streams.KindPort:
		if e := h.ports[ref.id]; e != nil {
			ctx.Send(child, &portDesired{seq: e.seq, received: e.received, port: e.spec, deleted: e.deleted, trunk: h.attached[e.id]})
			if n := h.networks[e.networkID]; n != nil {
				st := n.state
				if st == nil {
					st = h.pendingState(n)
				}
				ctx.Send(child, st)
			}
		}
	case streams.KindNetwork:
		if e := h.networks[ref.id]; e != nil {
			if e.fdb != nil {
				ctx.Send(child, &fdbEntries{entries: e.fdb})
			}
			ctx.Send(child, &networkDesired{seq: e.seq, received: e.received, network: e.spec, needed: e.needed()})
		}
	}
}

// onCaughtUp runs once the whole desired state is known: ports whose network never came
// are in error, and devices netsource owns that nothing desires are removed.
func (h *hostSupervisor) onCaughtUp(ctx actor.Context) {
	if h.caughtUp {
		return
	}
	h.caughtUp = true
	for _, t := range h.trunks {
		h.sendTrunk(ctx, t)
	}
	for _, n := range h.networks {
		if n.spec == nil {
			h.tellPorts(ctx, n, h.pendingState(n))
		}
	}
	h.pruneOrphans()
}

func (h *hostSupervisor) pruneOrphans() {
	wanted := map[string]bool{}
	for id, p := range h.ports {
		if !p.deleted {
			wanted[links.TapName(id)] = true
		}
	}
	for _, o := range h.objects {
		if !o.deleted {
			for _, dev := range DevicesOf(o.spec) {
				wanted[dev] = true
			}
		}
	}
	for _, n := range h.networks {
		if n.needed() {
			if spec, err := NetworkSpec(h.env.Config, n.spec); err == nil {
				wanted[spec.Bridge] = true
				if dev := spec.UplinkDevice(); dev != "" {
					wanted[dev] = true
				}
			}
		}
	}
	opCtx, cancel := h.env.opContext()
	defer cancel()
	devices, err := h.env.Dataplane.Inventory(opCtx)
	if err != nil {
		h.log.Error().Err(err).Msg("orphan pruning: inventory failed")
		return
	}
	for _, d := range devices {
		// Tap devices belong to the hypervisor that made them; only what netsource creates is pruned.
		if wanted[d.Name] || d.Kind == "tun" || d.Kind == "tap" {
			continue
		}
		h.log.Info().Str("device", d.Name).Str("kind", d.Kind).Msg("removing orphan device")
		if err := h.env.Dataplane.DeleteDevice(opCtx, d.Name); err != nil {
			h.log.Error().Err(err).Str("device", d.Name).Msg("orphan pruning failed")
		}
	}
}

func (h *hostSupervisor) onLinkEvent(ctx actor.Context, ev links.LinkEvent) {
	if id, ok := h.devices[ev.Name]; ok {
		if p := h.ports[id]; p != nil {
			ctx.Send(p.pid, &linkEvent{event: ev})
		}
		// A trunk parent's device carries its sub-ports: they re-check too.
		for _, subID := range h.subPortsOf(id) {
			if p := h.ports[subID]; p != nil {
				ctx.Send(p.pid, &linkEvent{event: ev})
			}
		}
		return
	}
	for _, n := range h.networks {
		if n.pid != nil && slices.Contains(n.devices, ev.Name) {
			ctx.Send(n.pid, &linkEvent{event: ev})
			return
		}
	}
}

// onRemotePort folds another agent's port status into the l2population forwarding
// entries of the port's network.
func (h *hostSupervisor) onRemotePort(ctx actor.Context, ev *nsv1.StatusEvent) {
	if ev.GetHost() == h.env.Config.Host || !h.env.Config.VXLAN.L2Population {
		return
	}
	key := ev.GetHost() + "/" + ev.GetId()
	old := h.remote[key]
	if ev.GetPhase() == nsv1.Phase_PHASE_ACTIVE && ev.GetPortL2().GetTunnelIp() != "" {
		h.remote[key] = ev
	} else if ev.GetPhase() == nsv1.Phase_PHASE_DELETED || ev.GetPhase() == nsv1.Phase_PHASE_DOWN {
		delete(h.remote, key)
	} else {
		return // BUILD/ERROR keep what was known
	}
	for _, netID := range []string{old.GetPortL2().GetNetworkId(), ev.GetPortL2().GetNetworkId()} {
		if netID != "" {
			h.updateFDB(ctx, h.network(netID))
		}
	}
}

func (h *hostSupervisor) updateFDB(ctx actor.Context, n *netEntry) {
	var entries []links.FDBEntry
	flood := map[string]bool{}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, ev := range h.remote {
		l2 := ev.GetPortL2()
		if l2.GetNetworkId() != n.id {
			continue
		}
		vtep := parseIP(l2.GetTunnelIp())
		mac, err := net.ParseMAC(l2.GetMacAddress())
		if vtep == nil || err != nil {
			continue
		}
		entries = append(entries, links.FDBEntry{MAC: mac, Dst: vtep})
		if !flood[vtep.String()] {
			flood[vtep.String()] = true
			entries = append(entries, links.FDBEntry{MAC: zero, Dst: vtep})
		}
	}
	sortFDB(entries)
	if fdbEqual(entries, n.fdb) && n.fdb != nil {
		return
	}
	if entries == nil {
		entries = []links.FDBEntry{}
	}
	n.fdb = entries
	if n.pid != nil {
		ctx.Send(n.pid, &fdbEntries{entries: entries})
	}
}

func fdbEqual(a, b []links.FDBEntry) bool {
	return slices.EqualFunc(a, b, func(x, y links.FDBEntry) bool {
		return x.MAC.String() == y.MAC.String() && x.Dst.Equal(y.Dst)
	})
}

func (h *hostSupervisor) counts() *Counts {
	c := &Counts{ByKind: map[string]uint32{}, AppliedSeq: h.appliedSeq, Synced: h.caughtUp}
	for _, p := range h.ports {
		if !p.deleted {
			c.ByKind[string(streams.KindPort)]++
			c.Devices++
		}
	}
	for _, n := range h.networks {
		if n.spec != nil {
			c.ByKind[string(streams.KindNetwork)]++
		}
	}
	c.ByKind[string(streams.KindSecGroup)] = uint32(len(h.secgroups))
	for _, t := range h.trunks {
		if !t.deleted {
			c.ByKind[string(streams.KindTrunk)]++
		}
	}
	for _, o := range h.objects {
		if !o.deleted {
			c.ByKind[string(o.kind)]++
		}
	}
	for key := range h.unhandled {
		kind, _, _ := strings.Cut(key, "/")
		c.ByKind[kind]++
	}
	return c
}
