package links

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The tc BPF half of VLANModeTCBPF. Two classifiers in direct-action mode, written with
// cilium/ebpf's assembler (no compiler needed) and attached as cls_bpf filters to clsact
// qdiscs, which keep them after netsource exits:
//
//   - on the twin's ingress (priority 1, handle 1), what the VM sends from Name:
//     push tag VLANID, redirect to the egress of Parent.
//   - on Parent's ingress (priority and handle VLANID, one per VLAN interface), frames
//     tagged VLANID: pop the tag, redirect to the egress of the twin, so they arrive on
//     Name. Anything else goes on (TC_ACT_UNSPEC): the next filter, then the stack.
//
// Each filter carries a name that says what it does ("netsource-vlan101-to-vt-xxx"), and
// its program encodes the redirect target's ifindex, so the program tag the kernel reports
// (a hash of the instructions) tells whether an attached filter is the wanted one without
// loading anything.

// tc verdicts (include/uapi/linux/pkt_cls.h).
const (
	tcActUnspec = -1 // TC_ACT_UNSPEC: no verdict, the next filter or the stack decides
	tcActShot   = 2  // TC_ACT_SHOT: drop
)

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h); the verifier rewrites the loads
// into reads of struct sk_buff.
const (
	skbVLANPresent = 20 // __u32 vlan_present
	skbVLANTCI     = 24 // __u32 vlan_tci
	skbVLANProto   = 28 // __u32 vlan_proto, a __be16
)

// vidMask is the VLAN ID in a TCI (the rest is priority and DEI).
const vidMask = 0x0fff

// Filter slots: the twin has one filter; Parent one per VLAN, at priority = handle = VLAN ID.
const (
	twinFilterPrio   = 1
	twinFilterHandle = 1
)

// ethP8021Q is htons(ETH_P_8021Q) as a register holds a __be16 on this host: the protocol
// argument of bpf_skb_vlan_push and the value __sk_buff.vlan_proto reads as.
var ethP8021Q = int32(binary.NativeEndian.Uint16([]byte{0x81, 0x00}))

// pushProgram tags what arrives on the twin with vid and sends it out of Parent:
//
//	r2 = htons(ETH_P_8021Q)
//	r3 = vid
//	r0 = bpf_skb_vlan_push(skb, r2, r3)    // the tag goes into the skb's metadata
//	if r0 != 0 goto drop
//	r1 = parentIfindex
//	r2 = 0                                 // egress
//	r0 = bpf_redirect(r1, r2)              // TC_ACT_REDIRECT
//	exit
//	drop: r0 = TC_ACT_SHOT; exit
func pushProgram(vid, parentIfindex int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R2, ethP8021Q),
		asm.Mov.Imm(asm.R3, int32(vid)),
		asm.FnSkbVlanPush.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, int32(parentIfindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	}
}

// popProgram takes frames tagged vid off Parent and sends them out of the twin (into Name).
// At tc ingress the kernel has already moved an 802.1Q tag into the skb's metadata
// (skb_vlan_untag in __netif_receive_skb_core):
//
//	r6 = skb
//	r2 = skb->vlan_present;  if r2 == 0 goto pass
//	r2 = skb->vlan_proto;    if r2 != htons(ETH_P_8021Q) goto pass
//	r2 = skb->vlan_tci & 0xfff; if r2 != vid goto pass
//	r0 = bpf_skb_vlan_pop(r6); if r0 != 0 goto drop
//	r0 = bpf_redirect(twinIfindex, 0)      // egress of the twin: arrives on Name
//	exit
//	pass: r0 = TC_ACT_UNSPEC; exit         // untagged and other VLANs carry on
//	drop: r0 = TC_ACT_SHOT; exit
func popProgram(vid, twinIfindex int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbVLANPresent, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R6, skbVLANProto, asm.Word),
		asm.JNE.Imm(asm.R2, ethP8021Q, "pass"),
		asm.LoadMem(asm.R2, asm.R6, skbVLANTCI, asm.Word),
		asm.And.Imm(asm.R2, vidMask),
		asm.JNE.Imm(asm.R2, int32(vid), "pass"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSkbVlanPop.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, int32(twinIfindex)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	}
}

// programTags are the tags a kernel may give insns (bpf_prog_calc_tag): the first 8 bytes
// of the SHA-256 of the instructions since Linux 6.18, of their SHA-1 before. (The kernel
// zeroes map references first; these programs have none.)
func programTags(insns asm.Instructions) ([]string, error) {
	var raw bytes.Buffer
	if err := insns.Marshal(&raw, hostOrder()); err != nil {
		return nil, err
	}
	s256, s1 := sha256.Sum256(raw.Bytes()), sha1.Sum(raw.Bytes())
	return []string{hex.EncodeToString(s256[:8]), hex.EncodeToString(s1[:8])}, nil
}

// hostOrder is binary.NativeEndian as one of the two orders asm knows.
func hostOrder() binary.ByteOrder {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return binary.LittleEndian
	}
	return binary.BigEndian
}

// removeMemlock lifts RLIMIT_MEMLOCK once per process for kernels that still charge BPF
// memory to it (before 5.11); on newer ones it does nothing.
var removeMemlock = sync.OnceValue(rlimit.RemoveMemlock)

// tcFilter is one cls_bpf filter netsource wants on a device's ingress.
type tcFilter struct {
	link   netlink.Link
	prio   uint16
	handle uint32
	name   string // TCA_BPF_NAME, see vlanFilterName
	prog   string // program name (at most 15 characters)
	insns  asm.Instructions
}

func (f tcFilter) attrs() netlink.FilterAttrs {
	return netlink.FilterAttrs{
		LinkIndex: f.link.Attrs().Index,
		Parent:    netlink.HANDLE_MIN_INGRESS,
		Handle:    f.handle,
		Priority:  f.prio,
		Protocol:  unix.ETH_P_ALL,
	}
}

// vlanFilterName names a filter by the VLAN it handles and the device it redirects to.
func vlanFilterName(vid int, target string) string {
	return fmt.Sprintf("netsource-vlan%d-to-%s", vid, target)
}

// parseVLANFilterName is the inverse of vlanFilterName; ok is false for other names.
func parseVLANFilterName(name string) (vid int, target string, ok bool) {
	rest, found := strings.CutPrefix(name, "netsource-vlan")
	if !found {
		return 0, "", false
	}
	id, target, found := strings.Cut(rest, "-to-")
	if !found {
		return 0, "", false
	}
	vid, err := strconv.Atoi(id)
	return vid, target, err == nil
}

// ensureClsact adds the clsact qdisc to l unless it has one.
func (n *Netlink) ensureClsact(h *netlink.Handle, l netlink.Link) error {
	ok, err := hasClsact(h, l)
	if err != nil || ok {
		return err
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	err = n.write(opQdiscAdd, l.Attrs().Name, func() error { return h.QdiscAdd(q) })
	if err != nil && !errors.Is(err, unix.EEXIST) { // added meanwhile by a concurrent call
		return fmt.Errorf("add clsact qdisc to %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// hasClsact reports whether l has a clsact qdisc (which holds its ingress filters).
func hasClsact(h *netlink.Handle, l netlink.Link) (bool, error) {
	qs, err := retryDump(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// ingressFilters lists the filters on l's ingress, without the per-priority entries the
// kernel dumps before the filters themselves (handle 0). No clsact qdisc: none.
func ingressFilters(h *netlink.Handle, l netlink.Link) ([]netlink.Filter, error) {
	ok, err := hasClsact(h, l)
	if err != nil || !ok {
		return nil, err
	}
	all, err := retryDump(func() ([]netlink.Filter, error) { return h.FilterList(l, netlink.HANDLE_MIN_INGRESS) })
	if err != nil {
		return nil, fmt.Errorf("list ingress filters of %s: %w", l.Attrs().Name, err)
	}
	var out []netlink.Filter
	for _, f := range all {
		if f.Attrs().Handle != 0 {
			out = append(out, f)
		}
	}
	return out, nil
}

// ensureFilter attaches f (with a clsact qdisc) unless a filter with the same name and
// program is in its slot already; a different bpf filter there is replaced. A filter of
// another kind in the slot is left alone and reported.
func (n *Netlink) ensureFilter(h *netlink.Handle, f tcFilter) error {
	dev := f.link.Attrs().Name
	tags, err := programTags(f.insns)
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.name, err)
	}
	if err := n.ensureClsact(h, f.link); err != nil {
		return err
	}
	have, err := ingressFilters(h, f.link)
	if err != nil {
		return err
	}
	for _, g := range have {
		a := g.Attrs()
		if a.Priority != f.prio || a.Handle != f.handle {
			continue
		}
		b, ok := g.(*netlink.BpfFilter)
		if !ok {
			return fmt.Errorf("ingress of %s: priority %d holds a %s filter", dev, f.prio, g.Type())
		}
		if b.Name == f.name && slices.Contains(tags, b.Tag) && b.DirectAction && a.Protocol == unix.ETH_P_ALL {
			return nil
		}
	}
	if err := removeMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit for bpf: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         f.prog,
		Type:         ebpf.SchedCLS,
		Instructions: f.insns,
		License:      "", // none of the helpers used is GPL-only
	})
	if err != nil {
		return fmt.Errorf("load bpf program %s for %s: %w", f.prog, dev, err)
	}
	defer prog.Close() // the filter holds its own reference
	bf := &netlink.BpfFilter{FilterAttrs: f.attrs(), Fd: prog.FD(), Name: f.name, DirectAction: true}
	if err := n.write(opFilterReplace, dev, func() error { return h.FilterReplace(bf) }); err != nil {
		return fmt.Errorf("attach filter %s to ingress of %s: %w", f.name, dev, err)
	}
	return nil
}

// deleteVLANFilters removes the VLAN filters on l's ingress that drop reports true for.
func (n *Netlink) deleteVLANFilters(h *netlink.Handle, l netlink.Link, drop func(vid int, target string) bool) error {
	have, err := ingressFilters(h, l)
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range have {
		b, ok := g.(*netlink.BpfFilter)
		if !ok {
			continue
		}
		vid, target, ok := parseVLANFilterName(b.Name)
		if !ok || !drop(vid, target) {
			continue
		}
		err := n.write(opFilterDel, l.Attrs().Name, func() error { return h.FilterDel(b) })
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete filter %s from ingress of %s: %w", b.Name, l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}
