// Package tc is the tap-flow mirror of hosts with the Linux bridge mechanism: a taas.Mirror
// made of tc clsact + u32 + mirred on the source port's device, so tap flows do not force a
// mechanism.
//
// A port's host-side device (tap<id>) sees the VM's traffic reversed: what the VM sends
// enters the host through the device's ingress, what the VM receives leaves through its
// egress. So, with TaaS's directions (from the VM's point of view):
//
//	OUT (VM → network)  = ingress of tap<source>: filter on the clsact ingress hook
//	IN  (network → VM)  = egress of tap<source>:  filter on the clsact egress hook
//	BOTH                = both filters
//
// Each filter is a match-all u32 with `mirred egress mirror dev tap<service>`: the copy is
// transmitted out of the service port's host-side device, i.e. delivered to the service
// VM, and never enters a bridge. (tc flower and matchall are missing on the development
// kernel; u32 and mirred are there, see DESIGN.md.) Unlike TaaS's OVS flows, the copy
// includes broadcast and multicast frames of the IN direction, since it is taken from the
// device itself rather than matched by destination MAC.
//
// Ownership: a tap flow's filters sit at priorities derived from its id (even on ingress,
// the next odd one on egress), in the range 0xc000-0xefff, on devices netsource owns
// (tap*); DeleteFlow removes exactly those. Only
// tap services on the same host can be reached (ErrRemoteUnsupported otherwise): remote
// mirroring needs the openvswitch mechanism's tunnels.
package tc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/taas"
)

// Priority range of netsource's mirror filters.
const (
	prioBase  = 0xc000
	prioRange = 0x3000
)

// Mirror programs tap flows with tc in one network namespace.
type Mirror struct {
	log       zerolog.Logger
	ns        netns.NsHandle
	h         *netlink.Handle
	mu        sync.Mutex // one change of a device's filters at a time
	mutations atomic.Uint64
}

var _ taas.Mirror = (*Mirror)(nil)

// New opens rtnetlink in the named namespace ("" for the current one).
func New(netnsName string, log zerolog.Logger) (*Mirror, error) {
	var ns netns.NsHandle
	var err error
	if netnsName != "" {
		ns, err = netns.GetFromName(netnsName)
	} else {
		ns, err = netns.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", netnsName, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open netlink in netns %q: %w", netnsName, err)
	}
	return &Mirror{log: log.With().Str("mirror", "tc").Logger(), ns: ns, h: h}, nil
}

// Close releases the netlink handle.
func (m *Mirror) Close() {
	m.h.Close()
	_ = m.ns.Close()
}

// Mutations implements taas.Mirror.
func (m *Mirror) Mutations() uint64 { return m.mutations.Load() }

// Prios are the tc priorities of a tap flow's filters on the ingress and the egress hook.
// They differ because a dump of one clsact hook lists the other hook's filters as well,
// under the requested parent: a priority must say which hook a filter is on.
func Prios(flowID string) (ingress, egress uint16) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(flowID))
	p := uint16(prioBase + (h.Sum32()%(prioRange/2))*2)
	return p, p + 1
}

func (m *Mirror) lookup(name string) (netlink.Link, error) {
	l, err := m.h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	return l, nil
}

// EnsureService implements taas.Mirror. Nothing is programmed for a service: the sources'
// filters deliver to its device. It only checks the port is plugged.
func (m *Mirror) EnsureService(_ context.Context, s taas.Service) error {
	l, err := m.lookup(s.Device)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("tap service %s: port %s (%s): %w", s.ID, s.PortID, s.Device, taas.ErrPortMissing)
	}
	return nil
}

// DeleteService implements taas.Mirror (nothing to remove).
func (m *Mirror) DeleteService(context.Context, taas.Service) error { return nil }

// EnsureFlow implements taas.Mirror.
func (m *Mirror) EnsureFlow(_ context.Context, f taas.Flow) error {
	if !f.Local {
		return fmt.Errorf("tap flow %s: %w", f.ID, taas.ErrRemoteUnsupported)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	src, err := m.lookup(f.SourceDevice)
	if err == nil && src == nil {
		err = fmt.Errorf("source port %s (%s): %w", f.SourcePortID, f.SourceDevice, taas.ErrPortMissing)
	}
	if err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	dst, err := m.lookup(f.ServiceDevice)
	if err == nil && dst == nil {
		err = fmt.Errorf("tap service port %s: %w", f.ServiceDevice, taas.ErrPortMissing)
	}
	if err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	if err := m.ensureClsact(src); err != nil {
		return fmt.Errorf("tap flow %s: %w", f.ID, err)
	}
	in, out := Prios(f.ID)
	var errs []error
	for _, hook := range []struct {
		parent uint32
		prio   uint16
		want   bool
	}{{netlink.HANDLE_MIN_INGRESS, in, f.Direction.Out()}, {netlink.HANDLE_MIN_EGRESS, out, f.Direction.In()}} {
		errs = append(errs, m.ensureFilter(src, hook.parent, hook.prio, dst, hook.want))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tap flow %s on %s: %w", f.ID, f.SourceDevice, err)
	}
	return nil
}

// DeleteFlow implements taas.Mirror: the flow's filters go; the clsact qdisc stays.
func (m *Mirror) DeleteFlow(_ context.Context, f taas.Flow) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	src, err := m.lookup(f.SourceDevice)
	if err != nil || src == nil {
		return err // the device is gone, and its filters with it
	}
	in, out := Prios(f.ID)
	errs := []error{
		m.ensureFilter(src, netlink.HANDLE_MIN_INGRESS, in, nil, false),
		m.ensureFilter(src, netlink.HANDLE_MIN_EGRESS, out, nil, false),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tap flow %s on %s: %w", f.ID, f.SourceDevice, err)
	}
	return nil
}

func (m *Mirror) ensureClsact(l netlink.Link) error {
	qdiscs, err := m.h.QdiscList(l)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			return nil
		}
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0),
		Parent: netlink.HANDLE_CLSACT}}
	m.mutations.Add(1)
	if err := m.h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureFilter makes the filters at prio on a hook exactly one u32 mirroring to dst (want)
// or none.
func (m *Mirror) ensureFilter(src netlink.Link, parent uint32, prio uint16, dst netlink.Link, want bool) error {
	filters, err := m.h.FilterList(src, parent)
	if err != nil {
		return fmt.Errorf("list filters of %s: %w", src.Attrs().Name, err)
	}
	// A u32 filter lists as its hash table (no actions) plus its node (the actions).
	present, nodes, ok := false, 0, false
	for _, f := range filters {
		if f.Attrs().Priority != prio {
			continue
		}
		present = true
		if u, isU32 := f.(*netlink.U32); isU32 && len(u.Actions) == 0 {
			continue
		}
		nodes++
		if want && mirrorsTo(f, dst.Attrs().Index) {
			ok = true
		}
	}
	if ok && nodes == 1 {
		return nil
	}
	if present {
		// One u32 filter at a priority appears as its hash table plus its node: deleting by
		// priority removes them all.
		del := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: src.Attrs().Index, Parent: parent, Priority: prio,
			Protocol: unix.ETH_P_ALL}}
		m.mutations.Add(1)
		if err := m.h.FilterDel(del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete filter prio %#x: %w", prio, err)
		}
	}
	if !want {
		return nil
	}
	add := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: src.Attrs().Index, Parent: parent, Priority: prio, Protocol: unix.ETH_P_ALL},
		Actions: []netlink.Action{&netlink.MirredAction{ActionAttrs: netlink.ActionAttrs{Action: netlink.TC_ACT_PIPE},
			MirredAction: netlink.TCA_EGRESS_MIRROR, Ifindex: dst.Attrs().Index}},
	}
	m.mutations.Add(1)
	if err := m.h.FilterAdd(add); err != nil {
		return fmt.Errorf("add mirror filter prio %#x to %s: %w", prio, dst.Attrs().Name, err)
	}
	m.log.Debug().Str("device", src.Attrs().Name).Str("to", dst.Attrs().Name).Uint16("prio", prio).Msg("mirror filter added")
	return nil
}

func mirrorsTo(f netlink.Filter, ifindex int) bool {
	u, ok := f.(*netlink.U32)
	if !ok {
		return false
	}
	for _, a := range u.Actions {
		if mr, ok := a.(*netlink.MirredAction); ok && mr.Ifindex == ifindex && mr.MirredAction == netlink.TCA_EGRESS_MIRROR {
			return true
		}
	}
	return false
}
