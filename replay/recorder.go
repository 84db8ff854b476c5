package replay

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/netsource/netsource/nodes/links"
)

// Op is one dataplane call and the kernel writes it made.
type Op struct {
	// Call is the call with its spec on one line: "ensure-port <id> tap3d4e5f60-00 bridge
	// brq6a0e4b8e-1c mtu 1450 up veth ns-3d4e5f60-00@vm1 mac fa:16:3e:00:00:01 ...".
	Call string `json:"call"`
	// Writes are the simulated kernel writes ("create tap3d4e5f60-00", "set-master ..."),
	// in order; known only when the recorder wraps a links.Fake.
	Writes []string `json:"writes,omitempty"`
	// Error is what the call returned.
	Error string `json:"error,omitempty"`
}

// Recorder is a links.Dataplane that records every call it passes on (Mutations, a
// counter read, is not recorded). Wrapping a *links.Fake, it also records each simulated
// kernel write, through the Fake's FailOn hook, under the call that made it; writes of
// calls that overlap (concurrent actors) are recorded as ops of their own, so the
// attribution is exact only when calls do not overlap, as in the simulator.
type Recorder struct {
	inner links.Dataplane

	mu       sync.Mutex
	ops      []Op
	open     int // index of the only call in progress
	inflight int
	taken    int // ops already returned by Take
}

var _ links.Dataplane = (*Recorder)(nil)

// NewRecorder wraps inner. Pass a *links.Fake before its first use: its FailOn hook is
// chained, not replaced.
func NewRecorder(inner links.Dataplane) *Recorder {
	r := &Recorder{inner: inner, open: -1}
	if f, ok := inner.(*links.Fake); ok {
		prev := f.FailOn
		f.FailOn = func(op, name string) error {
			r.write(op + " " + name)
			if prev != nil {
				return prev(op, name)
			}
			return nil
		}
	}
	return r
}

func (r *Recorder) write(w string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight == 1 && r.open >= 0 {
		r.ops[r.open].Writes = append(r.ops[r.open].Writes, w)
		return
	}
	r.ops = append(r.ops, Op{Call: "(write of overlapping calls)", Writes: []string{w}})
}

func (r *Recorder) begin(call string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, Op{Call: call})
	r.inflight++
	r.open = -1
	if r.inflight == 1 {
		r.open = len(r.ops) - 1
	}
	return len(r.ops) - 1
}

func (r *Recorder) end(i int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.ops[i].Error = stableText(err.Error())
	}
	r.inflight--
	r.open = -1
}

// Ops returns every op recorded so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Take returns the ops recorded since the previous Take.
func (r *Recorder) Take() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Op(nil), r.ops[r.taken:]...)
	r.taken = len(r.ops)
	return out
}

// EnsureNetwork implements links.Dataplane.
func (r *Recorder) EnsureNetwork(ctx context.Context, spec links.NetworkSpec) error {
	i := r.begin("ensure-network " + networkText(spec))
	err := r.inner.EnsureNetwork(ctx, spec)
	r.end(i, err)
	return err
}

// DeleteNetwork implements links.Dataplane.
func (r *Recorder) DeleteNetwork(ctx context.Context, spec links.NetworkSpec) error {
	i := r.begin("delete-network " + networkText(spec))
	err := r.inner.DeleteNetwork(ctx, spec)
	r.end(i, err)
	return err
}

// EnsurePort implements links.Dataplane.
func (r *Recorder) EnsurePort(ctx context.Context, spec links.PortSpec) (links.PortState, error) {
	i := r.begin("ensure-port " + portText(spec, true))
	st, err := r.inner.EnsurePort(ctx, spec)
	r.end(i, err)
	return st, err
}

// DeletePort implements links.Dataplane.
func (r *Recorder) DeletePort(ctx context.Context, spec links.PortSpec) error {
	i := r.begin("delete-port " + portText(spec, false))
	err := r.inner.DeletePort(ctx, spec)
	r.end(i, err)
	return err
}

// SetFDB implements links.Dataplane.
func (r *Recorder) SetFDB(ctx context.Context, dev string, entries []links.FDBEntry) error {
	parts := []string{"set-fdb", dev}
	for _, e := range entries {
		parts = append(parts, e.MAC.String()+"@"+ipText(e.Dst))
	}
	if len(entries) == 0 {
		parts = append(parts, "(none)")
	}
	i := r.begin(strings.Join(parts, " "))
	err := r.inner.SetFDB(ctx, dev, entries)
	r.end(i, err)
	return err
}

// Inventory implements links.Dataplane.
func (r *Recorder) Inventory(ctx context.Context) ([]links.Device, error) {
	i := r.begin("inventory")
	devs, err := r.inner.Inventory(ctx)
	r.end(i, err)
	return devs, err
}

// DeleteDevice implements links.Dataplane.
func (r *Recorder) DeleteDevice(ctx context.Context, name string) error {
	i := r.begin("delete-device " + name)
	err := r.inner.DeleteDevice(ctx, name)
	r.end(i, err)
	return err
}

// Watch implements links.Dataplane.
func (r *Recorder) Watch(ctx context.Context) (<-chan links.LinkEvent, error) {
	i := r.begin("watch")
	ch, err := r.inner.Watch(ctx)
	r.end(i, err)
	return ch, err
}

// Mutations implements links.Dataplane (not recorded).
func (r *Recorder) Mutations() uint64 { return r.inner.Mutations() }

// networkText prints a network spec on one line.
func networkText(s links.NetworkSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s bridge %s", s.ID, s.Bridge)
	if s.External {
		b.WriteString(" external")
	}
	if s.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", s.MTU)
	}
	u := s.Uplink
	switch u.Kind {
	case links.UplinkPhysical:
		fmt.Fprintf(&b, " uplink physical %s", u.Device)
	case links.UplinkVLAN:
		fmt.Fprintf(&b, " uplink vlan %s", s.UplinkDevice())
	case links.UplinkVXLAN:
		v := u.VXLAN
		fmt.Fprintf(&b, " uplink vxlan %s vni %d", s.UplinkDevice(), v.VNI)
		if v.Local != nil {
			fmt.Fprintf(&b, " local %s", v.Local)
		}
		if v.Group != nil {
			fmt.Fprintf(&b, " group %s", v.Group)
		}
		if v.Dev != "" {
			fmt.Fprintf(&b, " dev %s", v.Dev)
		}
		if v.Port != 0 {
			fmt.Fprintf(&b, " port %d", v.Port)
		}
		if v.TTL != 0 {
			fmt.Fprintf(&b, " ttl %d", v.TTL)
		}
		if v.TOS != 0 {
			fmt.Fprintf(&b, " tos %d", v.TOS)
		}
		if v.Learning {
			b.WriteString(" learning")
		} else {
			b.WriteString(" nolearning")
		}
	}
	return b.String()
}

// portText prints a port spec on one line; full adds what only EnsurePort uses.
func portText(s links.PortSpec, full bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s bridge %s", s.ID, s.Device, s.Bridge)
	if full {
		if s.MTU != 0 {
			fmt.Fprintf(&b, " mtu %d", s.MTU)
		}
		if s.AdminUp {
			b.WriteString(" up")
		} else {
			b.WriteString(" down")
		}
	}
	if s.Binding == links.BindingTap {
		b.WriteString(" tap")
		return b.String()
	}
	fmt.Fprintf(&b, " veth %s@%s", s.Peer.Name, s.Peer.Netns)
	if !full {
		return b.String()
	}
	if s.Peer.MAC != nil {
		fmt.Fprintf(&b, " mac %s", s.Peer.MAC)
	}
	if len(s.Peer.Addresses) > 0 {
		addrs := make([]string, len(s.Peer.Addresses))
		for i, a := range s.Peer.Addresses {
			addrs[i] = a.String()
		}
		fmt.Fprintf(&b, " addrs %s", strings.Join(addrs, ","))
	}
	if len(s.Peer.Routes) > 0 {
		routes := make([]string, len(s.Peer.Routes))
		for i, rt := range s.Peer.Routes {
			dst := "default"
			if rt.Dst != nil {
				if ones, _ := rt.Dst.Mask.Size(); ones > 0 {
					dst = rt.Dst.String()
				}
			}
			routes[i] = dst + " via " + ipText(rt.Via)
		}
		fmt.Fprintf(&b, " routes %s", strings.Join(routes, ","))
	}
	return b.String()
}

func ipText(ip net.IP) string {
	if ip == nil {
		return "-"
	}
	return ip.String()
}
