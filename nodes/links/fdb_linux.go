package links

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetFDB implements Dataplane with `bridge fdb` semantics on the vxlan device itself
// (NTF_SELF, NUD_PERMANENT, NDA_DST = remote VTEP), as Neutron's l2population does:
//
//   - the all-zero MAC (and multicast MACs) take a list of destinations, the head-end
//     replication list, built with "append" (NLM_F_APPEND);
//   - a unicast MAC has one destination, set with "replace", which also moves it;
//   - permanent entries not in entries are deleted, one destination at a time.
//
// In multicast mode the device's own default destination (00:00:00:00:00:00 dst <group>)
// is part of its configuration, not of the forwarding table, and is left alone. Learned
// (non-permanent) entries are the kernel's and are not touched either.
func (n *Netlink) SetFDB(ctx context.Context, vxlanDevice string, entries []FDBEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := n.setFDB(vxlanDevice, entries); err != nil {
		return fmt.Errorf("set fdb of %s: %w", vxlanDevice, err)
	}
	return nil
}

func (n *Netlink) setFDB(device string, entries []FDBEntry) error {
	want, order, err := wantedFDB(entries)
	if err != nil {
		return err
	}
	l, err := lookup(n.h, device)
	if err == nil && l == nil {
		err = ErrDeviceMissing
	}
	if err != nil {
		return err
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Errorf("a %s device has no vxlan forwarding table", l.Type())
	}
	have, err := n.permanentFDB(vx)
	if err != nil {
		return err
	}
	// Add first, then delete: traffic keeps a path while a MAC moves.
	var errs []error
	added := false
	listed := map[string]bool{} // MACs that already have one of their wanted destinations
	for _, k := range order {
		if _, ok := have[k]; ok {
			listed[k.mac] = true
		}
	}
	for _, k := range order {
		if _, ok := have[k]; ok {
			continue
		}
		e := want[k]
		appendDst := appendsFDB(e.MAC) || listed[k.mac]
		errs = append(errs, n.addFDB(vx, e, appendDst))
		listed[k.mac], added = true, true
	}
	if added { // a replace may have moved a stale entry: look again
		if have, err = n.permanentFDB(vx); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; !ok {
			errs = append(errs, n.delFDB(vx, have[k]))
		}
	}
	return errors.Join(errs...)
}

// permanentFDB lists the permanent forwarding entries of the vxlan device itself.
func (n *Netlink) permanentFDB(vx *netlink.Vxlan) (map[fdbKey]netlink.Neigh, error) {
	list, err := retryDump(func() ([]netlink.Neigh, error) { return n.h.NeighList(vx.Index, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	out := map[fdbKey]netlink.Neigh{}
	for _, e := range list {
		if e.Flags&netlink.NTF_SELF == 0 || e.State&netlink.NUD_PERMANENT == 0 ||
			len(e.HardwareAddr) != 6 || e.IP == nil || e.IP.IsUnspecified() {
			continue
		}
		if ipEqual(e.IP, vx.Group) && appendsFDB(e.HardwareAddr) {
			continue // the multicast group default destination
		}
		out[keyOf(e.HardwareAddr, e.IP)] = e
	}
	return out, nil
}

func fdbNeigh(index int, mac net.HardwareAddr, dst net.IP) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		HardwareAddr: mac,
		IP:           dst,
	}
}

func (n *Netlink) addFDB(vx *netlink.Vxlan, e FDBEntry, appendDst bool) error {
	nb := fdbNeigh(vx.Index, e.MAC, e.Dst)
	op, mode := "replace", n.h.NeighSet
	if appendDst {
		op, mode = "append", n.h.NeighAppend
	}
	if err := n.write(OpFDBAdd, vx.Name, func() error { return mode(nb) }); err != nil {
		return fmt.Errorf("%s %s dst %s: %w", op, e.MAC, e.Dst, err)
	}
	return nil
}

func (n *Netlink) delFDB(vx *netlink.Vxlan, e netlink.Neigh) error {
	nb := fdbNeigh(vx.Index, e.HardwareAddr, e.IP)
	err := n.write(OpFDBDel, vx.Name, func() error { return n.h.NeighDel(nb) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete %s dst %s: %w", e.HardwareAddr, e.IP, err)
	}
	return nil
}
