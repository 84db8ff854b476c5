package links

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// socketTimeout bounds every netlink request, so a wedged kernel call cannot freeze the
// calling actor for good.
const socketTimeout = 5 * time.Second

// dumpAttempts is how often a dump interrupted by a concurrent change (NLM_F_DUMP_INTR,
// netlink.ErrDumpInterrupted) is retried before giving up.
const dumpAttempts = 5

// Netlink is the Dataplane of one network namespace, spoken to over rtnetlink.
//
// Its sockets are opened inside the namespace (netlink.NewHandleAt), so it can be used from
// any goroutine without switching threads; see jetstream-protoactor.md 5.8. Namespaces of
// veth peers are reached the same way, with a short-lived handle per call: a cached handle
// would keep a deleted namespace alive.
type Netlink struct {
	log zerolog.Logger
	ns  netns.NsHandle // the agent namespace, kept open for Watch subscriptions
	h   *netlink.Handle
	raw *nl.SocketHandle // requests netlink.Handle lacks (bridge STP and forward delay)

	// nsMu serialises creating and deleting peer namespaces with creating veth pairs into
	// them, so DeletePort never removes a namespace another port is being plugged into.
	nsMu sync.Mutex
	// markerDir records the peer namespaces netsource created (one empty file per name);
	// only those are deleted when their last port goes.
	markerDir string

	mutations atomic.Uint64
}

var _ Dataplane = (*Netlink)(nil)

// DefaultMarkerDir is where Netlink records the peer namespaces it created.
const DefaultMarkerDir = "/run/netsource/netns"

// New opens rtnetlink inside the named network namespace (/run/netns/<netnsName>), or in
// the caller's current namespace when netnsName is "". Close releases it.
func New(netnsName string, log zerolog.Logger) (*Netlink, error) {
	ns, err := openNetns(netnsName)
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", netnsName, err)
	}
	n := &Netlink{
		log:       log.With().Str("netns", netnsName).Logger(),
		ns:        ns,
		markerDir: DefaultMarkerDir,
	}
	if err := n.openSockets(); err != nil {
		n.Close()
		return nil, fmt.Errorf("open netlink in netns %q: %w", netnsName, err)
	}
	return n, nil
}

func (n *Netlink) openSockets() error {
	h, err := newHandle(n.ns)
	if err != nil {
		return err
	}
	n.h = h
	s, err := nl.GetNetlinkSocketAt(n.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	tv := unix.NsecToTimeval(socketTimeout.Nanoseconds())
	_ = s.SetSendTimeout(&tv)    // only stores the value; cannot fail
	_ = s.SetReceiveTimeout(&tv) // idem
	n.raw = &nl.SocketHandle{Socket: s}
	return nil
}

// newHandle opens a route-family handle inside ns with the socket timeout set.
func newHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := h.SetSocketTimeout(socketTimeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// openNetns opens a named namespace, or the calling thread's one for "".
func openNetns(name string) (netns.NsHandle, error) {
	if name != "" {
		return netns.GetFromName(name)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return netns.Get()
}

// Close releases the sockets and the namespace handle.
func (n *Netlink) Close() {
	if n.h != nil {
		n.h.Close()
	}
	if n.raw != nil {
		n.raw.Close()
	}
	if n.ns.IsOpen() {
		_ = n.ns.Close()
	}
}

// Mutations counts the netlink writes issued so far (accepted or refused by the kernel),
// including creating and deleting peer namespaces.
func (n *Netlink) Mutations() uint64 { return n.mutations.Load() }

// write issues one kernel change: it is counted and logged whatever the outcome.
func (n *Netlink) write(op, device string, fn func() error) error {
	n.mutations.Add(1)
	err := fn()
	n.log.Debug().Str("op", op).Str("device", device).Err(err).Msg("netlink write")
	return err
}

// retryDump runs a dump again when the kernel reports it was interrupted by a concurrent
// change (the results are then possibly inconsistent).
func retryDump[T any](dump func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := dump()
		if errors.Is(err, netlink.ErrDumpInterrupted) && attempt < dumpAttempts {
			continue
		}
		return v, err
	}
}

// lookup returns the named link of h's namespace, or nil when there is none.
func lookup(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	return l, nil
}

// mustLookup is lookup of a link that was just created.
func mustLookup(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := lookup(h, name)
	if err == nil && l == nil {
		err = fmt.Errorf("look up %s: vanished right after creation", name)
	}
	return l, err
}

// linkWant is the wanted state of a device's generic attributes.
type linkWant struct {
	mtu    int          // 0: leave as is
	master netlink.Link // bridge to enslave to; nil: leave as is
	up     bool
}

// ensureLink converges MTU, bridge membership and admin state of a link in h's namespace,
// in that order: a port joins the bridge at its final MTU and only then comes up.
func (n *Netlink) ensureLink(h *netlink.Handle, l netlink.Link, w linkWant) error {
	a := l.Attrs()
	if w.mtu != 0 && a.MTU != w.mtu {
		if err := n.write(OpSetMTU, a.Name, func() error { return h.LinkSetMTU(l, w.mtu) }); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", w.mtu, a.Name, err)
		}
	}
	if w.master != nil && a.MasterIndex != w.master.Attrs().Index {
		if err := n.enslave(h, l, w.master); err != nil {
			return err
		}
	}
	if up := a.Flags&net.FlagUp != 0; up != w.up {
		op, set := OpSetDown, h.LinkSetDown
		if w.up {
			op, set = OpSetUp, h.LinkSetUp
		}
		if err := n.write(op, a.Name, func() error { return set(l) }); err != nil {
			return fmt.Errorf("set %s %s: %w", a.Name, upDown(w.up), err)
		}
	}
	return nil
}

// enslave plugs l into bridge br. A full bridge answers EXFULL ("exchange full", from
// find_portno in net/bridge/br_if.c), which is reported as ErrBridgeFull. Asking the kernel
// beats counting first: a count is a dump of every link in the namespace, which made
// plugging N ports O(N²).
func (n *Netlink) enslave(h *netlink.Handle, l, br netlink.Link) error {
	name, bridge := l.Attrs().Name, br.Attrs().Name
	err := n.write(OpSetMaster, name, func() error { return h.LinkSetMaster(l, br) })
	switch {
	case errors.Is(err, unix.EXFULL):
		return fmt.Errorf("plug %s into %s: %w", name, bridge, ErrBridgeFull)
	case err != nil:
		return fmt.Errorf("enslave %s to %s: %w", name, bridge, err)
	}
	return nil
}

// release takes l out of its bridge.
func (n *Netlink) release(l netlink.Link) error {
	name := l.Attrs().Name
	if err := n.write(OpNoMaster, name, func() error { return n.h.LinkSetNoMaster(l) }); err != nil {
		return fmt.Errorf("release %s from its bridge: %w", name, err)
	}
	return nil
}

// deleteLink deletes the named link of the agent namespace; missing is nil.
func (n *Netlink) deleteLink(name string) error {
	l, err := lookup(n.h, name)
	if err != nil || l == nil {
		return err
	}
	return n.deleteFound(l)
}

func (n *Netlink) deleteFound(l netlink.Link) error {
	name := l.Attrs().Name
	err := n.write(OpDelete, name, func() error { return n.h.LinkDel(l) })
	if err != nil && !errors.Is(err, unix.ENODEV) { // gone meanwhile is fine
		return fmt.Errorf("delete %s %s: %w", l.Type(), name, err)
	}
	return nil
}

// Inventory implements Dataplane: the links of the namespace with netsource's names.
func (n *Netlink) Inventory(ctx context.Context) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := retryDump(n.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("inventory: list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Device
	for _, l := range links {
		a := l.Attrs()
		if IsOwnedName(a.Name) {
			out = append(out, Device{Name: a.Name, Kind: kindOf(l), Master: names[a.MasterIndex], Ifindex: a.Index})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// kindOf is the kernel's link kind ("tun" where the netlink package says "tuntap").
func kindOf(l netlink.Link) string {
	if t := l.Type(); t != "tuntap" {
		return t
	}
	return "tun"
}

// DeleteDevice implements Dataplane. It refuses devices netsource does not own by name
// (or VLAN sub-interfaces), so a pruning mistake cannot remove a host interface.
func (n *Netlink) DeleteDevice(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := lookup(n.h, name)
	if err != nil || l == nil {
		return err
	}
	if !deletable(name, kindOf(l)) {
		return fmt.Errorf("delete device %s: a %s device netsource does not own", name, kindOf(l))
	}
	return n.deleteFound(l)
}
