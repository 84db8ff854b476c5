package actors

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// networkActor converges one network's plumbing on this host: the bridge and its uplink
// while local ports need it, nothing once they are gone (as Neutron creates the bridge with
// the first port and, here, removes it after the last one). In l2population mode it also
// owns the VXLAN device's forwarding entries.
type networkActor struct {
	env      *Env
	id       string
	log      zerolog.Logger
	status   *statusTracker
	desired  *networkDesired
	plumbed  *links.NetworkSpec // what was last ensured, nil when nothing is
	fdb      []links.FDBEntry
	fdbSet   bool
	failures int
	gen      int
}

func newNetworkActor(env *Env, id string) actor.Actor {
	return &networkActor{env: env, id: id, log: env.Log.With().Str("network", id).Logger(),
		status: env.tracker(string(streams.KindNetwork), id)}
}

func (a *networkActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *networkDesired:
		if a.desired == nil || a.desired.seq != m.seq || a.desired.needed != m.needed {
			a.failures = 0
		}
		a.desired = m
		a.converge(ctx)
	case *fdbEntries:
		a.fdb, a.fdbSet = m.entries, true
		a.converge(ctx)
	case *resync:
		a.converge(ctx)
	case *retry:
		if m.gen == a.gen {
			a.converge(ctx)
		}
	case *linkEvent:
		if m.event.Deleted {
			a.log.Info().Str("device", m.event.Name).Msg("network device deleted outside netsource")
			a.converge(ctx)
		}
	}
}

func (a *networkActor) converge(ctx actor.Context) {
	d := a.desired
	if d == nil {
		return
	}
	a.gen++
	if d.network == nil || !d.needed {
		a.unplumb(ctx)
		return
	}
	spec, err := NetworkSpec(a.env.Config, d.network)
	if err != nil {
		// A configuration mismatch: nothing to retry until the event or the config changes.
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.seq, d.received, nil, nil)
		a.tell(ctx, spec, false, err.Error(), true)
		return
	}
	if a.status.seq != d.seq && a.status.phase != nsv1.Phase_PHASE_BUILD {
		a.status.report(nsv1.Phase_PHASE_BUILD, "creating "+spec.Bridge, d.seq, time.Time{}, nil, nil)
	}
	opCtx, cancel := a.env.opContext()
	defer cancel()
	if err := a.env.Dataplane.EnsureNetwork(opCtx, spec); err != nil {
		a.fail(ctx, spec, fmt.Errorf("plumb network: %w", err))
		return
	}
	if a.fdbSet && spec.Uplink.Kind == links.UplinkVXLAN && !spec.Uplink.VXLAN.Learning {
		if err := a.env.Dataplane.SetFDB(opCtx, spec.UplinkDevice(), a.fdb); err != nil {
			a.fail(ctx, spec, fmt.Errorf("l2population forwarding entries: %w", err))
			return
		}
	}
	a.failures = 0
	a.plumbed = &spec
	details := map[string]string{"bridge": spec.Bridge}
	if dev := spec.UplinkDevice(); dev != "" {
		details["uplink"] = dev
	}
	phase, reason := nsv1.Phase_PHASE_ACTIVE, "bridge "+spec.Bridge+" ready"
	if !d.network.IsAdminStateUp() {
		phase, reason = nsv1.Phase_PHASE_DOWN, "admin_state_up is false"
	}
	a.status.report(phase, reason, d.seq, d.received, details, nil)
	a.tell(ctx, spec, true, "", false)
}

func equalSpec(a, b links.NetworkSpec) bool {
	return a.Bridge == b.Bridge && a.External == b.External && a.MTU == b.MTU && a.Uplink.Kind == b.Uplink.Kind &&
		a.Uplink.Device == b.Uplink.Device && a.Uplink.VLANID == b.Uplink.VLANID && a.Uplink.VXLAN.VNI == b.Uplink.VXLAN.VNI &&
		a.Uplink.VXLAN.Group.Equal(b.Uplink.VXLAN.Group) && a.Uplink.VXLAN.Local.Equal(b.Uplink.VXLAN.Local) &&
		a.Uplink.VXLAN.Port == b.Uplink.VXLAN.Port && a.Uplink.VXLAN.Learning == b.Uplink.VXLAN.Learning
}

func (a *networkActor) unplumb(ctx actor.Context) {
	d := a.desired
	if a.plumbed == nil {
		// Nothing was ensured by this actor; make sure nothing is left (e.g. after a restart).
		spec := links.NetworkSpec{ID: a.id, Bridge: links.BridgeName(a.id)}
		if d.network != nil {
			if s, err := NetworkSpec(a.env.Config, d.network); err == nil {
				spec = s
			}
		}
		a.plumbed = &spec
	}
	opCtx, cancel := a.env.opContext()
	err := a.env.Dataplane.DeleteNetwork(opCtx, *a.plumbed)
	cancel()
	if err != nil {
		a.fail(ctx, *a.plumbed, fmt.Errorf("remove network plumbing: %w", err))
		return
	}
	a.failures = 0
	reason := "no local ports: bridge removed"
	if d.network == nil {
		reason = "network deleted"
	}
	a.status.report(nsv1.Phase_PHASE_DELETED, reason, d.seq, d.received, nil, nil)
	a.tell(ctx, *a.plumbed, false, reason, false)
}

func (a *networkActor) tell(ctx actor.Context, spec links.NetworkSpec, ready bool, reason string, final bool) {
	ctx.Send(ctx.Parent(), &networkConverged{id: a.id, spec: spec, ready: ready, reason: reason, final: final})
}

func (a *networkActor) fail(ctx actor.Context, spec links.NetworkSpec, err error) {
	a.failures++
	delay := a.env.Backoff.Delay(a.failures)
	a.log.Warn().Err(err).Int("attempt", a.failures).Dur("retry_in", delay).Msg("network converge failed")
	a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), a.desired.seq, a.desired.received, nil, nil)
	a.tell(ctx, spec, false, err.Error(), false)
	scheduleRetry(ctx, delay, a.gen)
}

// sortFDB orders entries so equal sets compare equal.
func sortFDB(entries []links.FDBEntry) {
	slices.SortFunc(entries, func(x, y links.FDBEntry) int {
		if c := compareStrings(x.MAC.String(), y.MAC.String()); c != 0 {
			return c
		}
		return compareStrings(x.Dst.String(), y.Dst.String())
	})
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
