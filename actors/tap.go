package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/taas"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// Tap services and tap flows (TaaS) plug into the supervisor as pluggable kinds: one actor
// per object, built by the producers below.
//
// A tap service actor runs on the host of the service's port. It gets the service's tap id
// from the Directory (allocated once, without collisions, shared by every host) and asks
// the Mirror to deliver what arrives with that id to the port. A tap flow actor runs on the
// host of the source port. It looks the service's tap id and host up in the Directory,
// which tells it whenever a service appears, changes or goes, and asks the Mirror to copy
// the port's traffic of the flow's direction there: locally when the service's port is on
// the same host, over the tunnels otherwise. Both publish a status per object; the tap
// service's details carry its tap id.
//
// Waiting for a port that is not plugged yet, or for a tap service that has no tap id yet,
// is part of BUILD; the actor tries again after a short, capped backoff.

// TapDeps are the drivers of the tap actors: the host's Mirror and the Directory.
type TapDeps struct {
	Mirror    taas.Mirror
	Directory taas.Directory
	// LocalOnly, when set, says why the Directory knows this host's tap services only
	// (e.g. "the linuxbridge mechanism mirrors only to tap services on the same host"); a
	// flow waiting for its service says so.
	LocalOnly string
}

// TapServiceProducer builds tap service actors (Env.Objects[streams.KindTapService]).
func TapServiceProducer(deps TapDeps) ObjectProducer {
	return func(env *Env, id string) actor.Actor { return newTapServiceActor(env, deps, id) }
}

// TapFlowProducer builds tap flow actors (Env.Objects[streams.KindTapFlow]).
func TapFlowProducer(deps TapDeps) ObjectProducer {
	return func(env *Env, id string) actor.Actor { return newTapFlowActor(env, deps, id) }
}

// maxWait caps the retry delay while waiting for a port or a tap service: those appear
// without an event the tap actors would see.
const maxWait = 2 * time.Second

// tapBase is what both tap actors share: status, retries, logging.
type tapBase struct {
	env      *Env
	deps     TapDeps
	id       string
	kind     streams.Kind
	log      zerolog.Logger
	status   *statusTracker
	desired  *ObjectDesired
	failures int
	gen      int
}

func newTapBase(env *Env, deps TapDeps, kind streams.Kind, id string) tapBase {
	return tapBase{env: env, deps: deps, id: id, kind: kind,
		log:    env.Log.With().Str(string(kind), id).Logger(),
		status: env.tracker(string(kind), id)}
}

// onDesired records a new desired version; a new version resets the retry count. A
// version that failed validation is reported and not taken: what runs stays, and onDesired
// returns false (nothing to converge).
func (b *tapBase) onDesired(m *ObjectDesired) bool {
	if m.Invalid != "" {
		b.status.report(nsv1.Phase_PHASE_ERROR, m.Invalid+"; what runs is kept", m.Seq, m.Received, nil, nil)
		return false
	}
	if b.desired == nil || b.desired.Seq != m.Seq || b.desired.Deleted != m.Deleted {
		b.failures = 0
	}
	b.desired = m
	return true
}

// building reports BUILD once per desired version.
func (b *tapBase) building(reason string) {
	d := b.desired
	if b.status.seq != d.Seq {
		b.status.report(nsv1.Phase_PHASE_BUILD, reason, d.Seq, time.Time{}, nil, nil)
	}
}

// wait reports BUILD with reason and tries again soon.
func (b *tapBase) wait(ctx actor.Context, reason string, details map[string]string) {
	b.failures++
	b.status.report(nsv1.Phase_PHASE_BUILD, reason, b.desired.Seq, time.Time{}, details, nil)
	scheduleRetry(ctx, min(b.env.Backoff.Delay(b.failures), maxWait), b.gen)
}

// fail reports ERROR and retries with backoff.
func (b *tapBase) fail(ctx actor.Context, err error, details map[string]string) {
	b.failures++
	delay := b.env.Backoff.Delay(b.failures)
	b.log.Warn().Err(err).Int("attempt", b.failures).Dur("retry_in", delay).Msg("tap converge failed")
	b.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), b.desired.Seq, b.desired.Received, details, nil)
	scheduleRetry(ctx, delay, b.gen)
}

// gone reports DELETED and tells the supervisor.
func (b *tapBase) gone(ctx actor.Context, reason string) {
	b.failures = 0
	b.status.report(nsv1.Phase_PHASE_DELETED, reason, b.desired.Seq, b.desired.Received, nil, nil)
	ctx.Send(ctx.Parent(), &ObjectGone{Kind: b.kind, ID: b.id})
}

// tapServiceActor converges one tap service on the host of its port.
type tapServiceActor struct {
	tapBase
	applied *taas.Service // what the Mirror was last asked to ensure
}

func newTapServiceActor(env *Env, deps TapDeps, id string) actor.Actor {
	return &tapServiceActor{tapBase: newTapBase(env, deps, streams.KindTapService, id)}
}

func (a *tapServiceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *ObjectDesired:
		if a.onDesired(m) {
			a.converge(ctx)
		}
	case *Resync:
		a.converge(ctx)
	case *resync:
		a.converge(ctx)
	case *retry:
		if m.gen == a.gen {
			a.converge(ctx)
		}
	}
}

func (a *tapServiceActor) converge(ctx actor.Context) {
	d := a.desired
	if d == nil {
		return
	}
	a.gen++
	spec, ok := d.Spec.(*nsv1.TapService)
	if !ok {
		return
	}
	if d.Deleted {
		a.remove(ctx, spec)
		return
	}
	a.building("converging")
	opCtx, cancel := a.env.opContext()
	defer cancel()
	info, err := a.deps.Directory.Allocate(opCtx, taas.ServiceInfo{ServiceID: a.id, Host: a.env.Config.Host, PortID: spec.GetPortId()})
	if err != nil {
		a.fail(ctx, fmt.Errorf("allocate tap id: %w", err), nil)
		return
	}
	want := taas.Service{ID: a.id, TapID: info.TapID, PortID: spec.GetPortId(), Device: links.TapName(spec.GetPortId())}
	details := map[string]string{"tap_id": fmt.Sprint(want.TapID), "port_id": want.PortID, "device": want.Device}
	if a.applied != nil && *a.applied != want {
		if err := a.deps.Mirror.DeleteService(opCtx, *a.applied); err != nil {
			a.fail(ctx, fmt.Errorf("remove previous delivery to %s: %w", a.applied.Device, err), details)
			return
		}
		a.applied = nil
	}
	err = a.deps.Mirror.EnsureService(opCtx, want)
	switch {
	case errors.Is(err, taas.ErrPortMissing):
		a.wait(ctx, fmt.Sprintf("waiting for port %s (%s) to be plugged", want.PortID, want.Device), details)
	case err != nil:
		a.fail(ctx, err, details)
	default:
		a.failures = 0
		a.applied = &want
		a.status.report(nsv1.Phase_PHASE_ACTIVE, fmt.Sprintf("receiving mirrored traffic on %s (tap id %d)", want.Device, want.TapID),
			d.Seq, d.Received, details, nil)
	}
}

// remove stops delivery, then frees the tap id: the id is never reused while this host
// still delivers it.
func (a *tapServiceActor) remove(ctx actor.Context, spec *nsv1.TapService) {
	opCtx, cancel := a.env.opContext()
	defer cancel()
	s := taas.Service{ID: a.id, PortID: spec.GetPortId(), Device: links.TapName(spec.GetPortId())}
	if a.applied != nil {
		s = *a.applied
	} else if info, ok := a.deps.Directory.Lookup(a.id); ok {
		s.TapID = info.TapID
	}
	if err := a.deps.Mirror.DeleteService(opCtx, s); err != nil {
		a.fail(ctx, fmt.Errorf("remove tap service delivery: %w", err), nil)
		return
	}
	a.applied = nil
	if err := a.deps.Directory.Release(opCtx, a.id); err != nil {
		a.fail(ctx, err, nil)
		return
	}
	a.gone(ctx, "tap service removed and its tap id released")
}

// tapFlowActor converges one tap flow on the host of its source port.
type tapFlowActor struct {
	tapBase
	applied     *taas.Flow // what the Mirror was last asked to ensure
	unsubscribe func()
}

// tapServiceChanged: the Directory's entry of a tap service appeared, changed or went.
type tapServiceChanged struct{ serviceID string }

func newTapFlowActor(env *Env, deps TapDeps, id string) actor.Actor {
	return &tapFlowActor{tapBase: newTapBase(env, deps, streams.KindTapFlow, id)}
}

func (a *tapFlowActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		self, root := ctx.Self(), ctx.ActorSystem().Root
		a.unsubscribe = a.deps.Directory.Subscribe(func(serviceID string) {
			root.Send(self, &tapServiceChanged{serviceID: serviceID})
		})
	case *actor.Stopping, *actor.Restarting:
		// A restarted actor subscribes again in Started.
		if a.unsubscribe != nil {
			a.unsubscribe()
			a.unsubscribe = nil
		}
	case *ObjectDesired:
		if a.onDesired(m) {
			a.converge(ctx)
		}
	case *tapServiceChanged:
		if spec, ok := a.spec(); ok && spec.GetTapServiceId() == m.serviceID {
			a.failures = 0
			a.converge(ctx)
		}
	case *Resync:
		a.converge(ctx)
	case *resync:
		a.converge(ctx)
	case *retry:
		if m.gen == a.gen {
			a.converge(ctx)
		}
	}
}

func (a *tapFlowActor) spec() (*nsv1.TapFlow, bool) {
	if a.desired == nil {
		return nil, false
	}
	s, ok := a.desired.Spec.(*nsv1.TapFlow)
	return s, ok
}

func (a *tapFlowActor) converge(ctx actor.Context) {
	spec, ok := a.spec()
	if !ok {
		return
	}
	d := a.desired
	a.gen++
	if d.Deleted {
		a.remove(ctx, spec)
		return
	}
	a.building("converging")
	opCtx, cancel := a.env.opContext()
	defer cancel()
	dir, err := taas.ParseDirection(spec.GetDirection())
	if err != nil {
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.Seq, d.Received, nil, nil)
		return
	}
	info, found := a.deps.Directory.Lookup(spec.GetTapServiceId())
	if !found {
		// The service is gone (or not there yet): its tap id may go to another service, so
		// nothing may be mirrored with it any more.
		if a.applied != nil {
			if err := a.deps.Mirror.DeleteFlow(opCtx, *a.applied); err != nil {
				a.fail(ctx, fmt.Errorf("stop mirroring to a tap service without tap id: %w", err), nil)
				return
			}
			a.applied = nil
		}
		reason := fmt.Sprintf("waiting for tap service %s to get a tap id", spec.GetTapServiceId())
		if a.deps.LocalOnly != "" {
			reason = fmt.Sprintf("waiting for tap service %s on this host (%s)", spec.GetTapServiceId(), a.deps.LocalOnly)
		}
		a.wait(ctx, reason, nil)
		return
	}
	want := taas.Flow{
		ID: a.id, ServiceID: info.ServiceID, TapID: info.TapID, Local: info.Host == a.env.Config.Host,
		SourcePortID: spec.GetSourcePort(), SourceDevice: links.TapName(spec.GetSourcePort()),
		Direction: dir, VLANFilter: spec.GetVlanFilter(),
	}
	if want.Local {
		want.ServiceDevice = links.TapName(info.PortID)
	}
	mode := "remote, to host " + info.Host
	if want.Local {
		mode = "local, to " + want.ServiceDevice
	}
	details := map[string]string{"tap_id": fmt.Sprint(want.TapID), "direction": string(dir), "source_device": want.SourceDevice,
		"service_host": info.Host, "mode": mode}
	if want.VLANFilter != "" {
		details["vlan_filter"] = "not applied (as TaaS's OVS driver)"
	}
	if a.applied != nil && *a.applied != want {
		if err := a.deps.Mirror.DeleteFlow(opCtx, *a.applied); err != nil {
			a.fail(ctx, fmt.Errorf("remove previous mirroring: %w", err), details)
			return
		}
		a.applied = nil
	}
	err = a.deps.Mirror.EnsureFlow(opCtx, want)
	switch {
	case errors.Is(err, taas.ErrPortMissing):
		a.wait(ctx, fmt.Sprintf("waiting for source port %s (%s) to be plugged", want.SourcePortID, want.SourceDevice), details)
	case errors.Is(err, taas.ErrRemoteUnsupported):
		a.failures = 0
		a.status.report(nsv1.Phase_PHASE_ERROR, err.Error(), d.Seq, d.Received, details, nil)
	case err != nil:
		a.fail(ctx, err, details)
	default:
		a.failures = 0
		a.applied = &want
		a.status.report(nsv1.Phase_PHASE_ACTIVE,
			fmt.Sprintf("mirroring %s traffic of %s to tap service %s (tap id %d, %s)", dir, want.SourceDevice, want.ServiceID, want.TapID, mode),
			d.Seq, d.Received, details, nil)
	}
}

func (a *tapFlowActor) remove(ctx actor.Context, spec *nsv1.TapFlow) {
	opCtx, cancel := a.env.opContext()
	defer cancel()
	fl := taas.Flow{ID: a.id, ServiceID: spec.GetTapServiceId(), SourcePortID: spec.GetSourcePort(),
		SourceDevice: links.TapName(spec.GetSourcePort()), Direction: taas.Direction(spec.GetDirection())}
	if a.applied != nil {
		fl = *a.applied
	}
	if err := a.deps.Mirror.DeleteFlow(opCtx, fl); err != nil {
		a.fail(ctx, fmt.Errorf("remove mirroring: %w", err), nil)
		return
	}
	a.applied = nil
	a.gone(ctx, "mirroring removed")
}
