package ovs

import (
	"context"
	"fmt"

	"github.com/netsource/netsource/nodes/links"
)

// ensureSubPort plugs a trunk sub-port (links.BindingSubPort): its patch pair on br-int,
// the flows joining the pair to the parent's port, and for a veth-bound parent the VLAN
// interface in the VM namespace. The parent must be plugged first.
func (d *Dataplane) ensureSubPort(ctx context.Context, spec links.PortSpec, lvid int) (links.PortState, error) {
	db, err := d.snapshot(ctx)
	if err != nil {
		return links.PortState{}, err
	}
	if p, _ := db.portOn(BrInt, spec.SubPort.ParentDevice); p == nil {
		return links.PortState{}, fmt.Errorf("plug sub-port %s (VLAN %d): parent %s is not on %s: %w",
			spec.ID, spec.SubPort.VLANID, spec.SubPort.ParentDevice, BrInt, links.ErrDeviceMissing)
	}
	if t := subPortTxn(db, spec, lvid); len(t) > 0 {
		if err := d.commit(ctx, t); err != nil {
			return links.PortState{}, fmt.Errorf("plug sub-port %s (%s/%s) into %s: %w", spec.ID, spec.Device, TwinName(spec.ID), BrInt, err)
		}
	}
	if err := d.sync(ctx); err != nil {
		return links.PortState{}, err
	}
	if spec.Peer.Netns != "" {
		_, changed, err := links.EnsureVLANInterface(links.GuestVLAN(spec))
		if changed {
			d.mutations.Add(1)
		}
		if err != nil {
			return links.PortState{}, fmt.Errorf("plug sub-port %s: %w", spec.ID, err)
		}
	}
	return links.PortState{OperUp: spec.AdminUp}, nil
}

// deleteSubPort removes a sub-port's patch pair, its flows and its VLAN interface in the VM
// namespace (and the namespace when netsource made it and nothing is left in it).
func (d *Dataplane) deleteSubPort(ctx context.Context, spec links.PortSpec) error {
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	var t txn
	for _, name := range []string{spec.Device, TwinName(spec.ID)} {
		if p := db.Ports[name]; p != nil && p.Bridge == BrInt {
			t.add("--if-exists", "del-port", BrInt, name)
		}
	}
	if err := d.commit(ctx, t); err != nil {
		return err
	}
	if err := d.sync(ctx); err != nil {
		return err
	}
	if spec.Peer.Netns == "" {
		return nil
	}
	if err := links.DeleteVLANInterface(spec.Peer.Netns, spec.SubPort.ParentPeer, spec.Peer.Name, spec.SubPort.VLANID); err != nil {
		return err
	}
	return d.nl.DeletePeerNetnsIfEmpty(spec.Peer.Netns)
}
