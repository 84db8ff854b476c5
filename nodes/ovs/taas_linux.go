package ovs

import (
	"context"
	"fmt"
	"strings"

	"github.com/netsource/netsource/nodes/taas"
)

var _ taas.Mirror = (*Dataplane)(nil)

func recordable(what, s string) error {
	if s == "" || strings.ContainsAny(s, ",= \"\\") {
		return fmt.Errorf("%s %q cannot be recorded", what, s)
	}
	return nil
}

// EnsureService implements taas.Mirror: what br-tap receives with the service's tap id,
// from this host's br-int or from the tunnels, is delivered to the service port, and the
// service's host answers the source hosts' discovery (see doc.go).
func (d *Dataplane) EnsureService(ctx context.Context, s taas.Service) error {
	if err := recordable("tap service id", s.ID); err != nil {
		return err
	}
	if s.TapID < taas.FirstTapID || s.TapID >= taas.EndTapID {
		return fmt.Errorf("tap service %s: tap id %d outside %d-%d", s.ID, s.TapID, taas.FirstTapID, taas.EndTapID-1)
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	if db.ofport(BrInt, s.Device) == 0 {
		return fmt.Errorf("tap service %s: port %s (%s) on %s: %w", s.ID, s.PortID, s.Device, BrInt, taas.ErrPortMissing)
	}
	want := svcRecord{ID: s.ID, TapID: s.TapID, Device: s.Device}
	d.mu.Lock()
	have, ok := d.m.svcs[s.ID]
	d.mu.Unlock()
	if !ok || have != want {
		if err := d.setRecord(ctx, want.key(), want.value()); err != nil {
			return fmt.Errorf("tap service %s: %w", s.ID, err)
		}
		d.mu.Lock()
		d.m.svcs[s.ID] = want
		d.mu.Unlock()
	}
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("tap service %s: %w", s.ID, err)
	}
	return nil
}

// DeleteService implements taas.Mirror: every flow the service's tap id installed on this
// host goes with its record.
func (d *Dataplane) DeleteService(ctx context.Context, s taas.Service) error {
	d.mu.Lock()
	have, ok := d.m.svcs[s.ID]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if err := d.setRecord(ctx, have.key(), ""); err != nil {
		return fmt.Errorf("tap service %s: %w", s.ID, err)
	}
	d.mu.Lock()
	delete(d.m.svcs, s.ID)
	d.mu.Unlock()
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("tap service %s: %w", s.ID, err)
	}
	return nil
}

// EnsureFlow implements taas.Mirror: copies of the source port's traffic (OUT: what it
// sends, matched by its OpenFlow port; IN: what is sent to it, matched by its MAC as TaaS
// does) go to br-tap tagged with the tap id; br-tap returns them to br-int when the service
// is on this host and sends them to br-tun otherwise.
func (d *Dataplane) EnsureFlow(ctx context.Context, f taas.Flow) error {
	if err := recordable("tap flow id", f.ID); err != nil {
		return err
	}
	if f.TapID < taas.FirstTapID || f.TapID >= taas.EndTapID {
		return fmt.Errorf("tap flow %s: tap id %d outside %d-%d", f.ID, f.TapID, taas.FirstTapID, taas.EndTapID-1)
	}
	if !f.Local && d.cfg.LocalIP == nil {
		return fmt.Errorf("tap flow %s: the tap service is on another host and this host has no tunnels (vxlan.local_ip): %w",
			f.ID, taas.ErrRemoteUnsupported)
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	_, iface := db.portOn(BrInt, f.SourceDevice)
	if iface == nil || iface.OFPort <= 0 {
		return fmt.Errorf("tap flow %s: source port %s (%s) on %s: %w", f.ID, f.SourcePortID, f.SourceDevice, BrInt, taas.ErrPortMissing)
	}
	if f.Direction.In() && normMAC(iface.ExternalIDs["attached-mac"]) == "" {
		return fmt.Errorf("tap flow %s: source port %s has no attached-mac in OVS; IN mirroring matches its MAC", f.ID, f.SourcePortID)
	}
	want := flowRecord{ID: f.ID, TapID: f.TapID, Dir: f.Direction, Device: f.SourceDevice}
	d.mu.Lock()
	have, ok := d.m.flows[f.ID]
	d.mu.Unlock()
	if !ok || have != want {
		if err := d.setRecord(ctx, want.key(), want.value()); err != nil {
			return fmt.Errorf("tap flow %s: %w", f.ID, err)
		}
		d.mu.Lock()
		d.m.flows[f.ID] = want
		d.mu.Unlock()
	}
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	return nil
}

// DeleteFlow implements taas.Mirror.
func (d *Dataplane) DeleteFlow(ctx context.Context, f taas.Flow) error {
	d.mu.Lock()
	have, ok := d.m.flows[f.ID]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if err := d.setRecord(ctx, have.key(), ""); err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	d.mu.Lock()
	delete(d.m.flows, f.ID)
	d.mu.Unlock()
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	return nil
}
