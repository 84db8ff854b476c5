package links

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// netlink.Bridge (v1.3.1) models neither the forward delay nor the STP state, so both are
// read with RTM_GETLINK and set with RTM_NEWLINK (IFLA_LINKINFO / IFLA_INFO_DATA /
// IFLA_BR_*) on a raw socket of the agent namespace.
//
// A bridge created over netlink has STP off but a forward delay of 15 s (1500 in the
// kernel's clock_t units); Neutron's ensure_bridge sets 0 and disables STP, and so do we,
// also on bridges found in place.

// ensureNoSTP turns STP off, then sets the forward delay to 0: in that order, because with
// STP on the kernel refuses forward delays below 2 s (br_set_forward_delay, ERANGE).
func (n *Netlink) ensureNoSTP(br netlink.Link) error {
	name, index := br.Attrs().Name, br.Attrs().Index
	forwardDelay, stpState, err := n.bridgeSTP(index)
	if err != nil {
		return fmt.Errorf("bridge %s: read stp state: %w", name, err)
	}
	if stpState != 0 {
		if err := n.setBridgeAttr(name, index, nl.IFLA_BR_STP_STATE, 0); err != nil {
			return fmt.Errorf("bridge %s: disable stp: %w", name, err)
		}
	}
	if forwardDelay != 0 {
		if err := n.setBridgeAttr(name, index, nl.IFLA_BR_FORWARD_DELAY, 0); err != nil {
			return fmt.Errorf("bridge %s: set forward delay 0: %w", name, err)
		}
	}
	return nil
}

func (n *Netlink) rawRequest(msgType, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(msgType, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: n.raw}
	return req
}

// bridgeSTP returns IFLA_BR_FORWARD_DELAY and IFLA_BR_STP_STATE of bridge index.
func (n *Netlink) bridgeSTP(index int) (forwardDelay, stpState uint32, err error) {
	req := n.rawRequest(unix.RTM_GETLINK, 0)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, 0, err
	}
	if len(msgs) != 1 || len(msgs[0]) < unix.SizeofIfInfomsg {
		return 0, 0, fmt.Errorf("RTM_GETLINK of ifindex %d: %d answers", index, len(msgs))
	}
	data, err := nested(msgs[0][unix.SizeofIfInfomsg:], unix.IFLA_LINKINFO, nl.IFLA_INFO_DATA)
	if err != nil {
		return 0, 0, err
	}
	attrs, err := nl.ParseRouteAttr(data)
	if err != nil {
		return 0, 0, err
	}
	forwardDelay, stpState = 1, 1 // absent attributes count as "needs setting"
	for _, a := range attrs {
		switch a.Attr.Type & nl.NLA_TYPE_MASK {
		case nl.IFLA_BR_FORWARD_DELAY:
			forwardDelay = nl.NativeEndian().Uint32(a.Value)
		case nl.IFLA_BR_STP_STATE:
			stpState = nl.NativeEndian().Uint32(a.Value)
		}
	}
	return forwardDelay, stpState, nil
}

// nested walks a path of nested attribute types and returns the innermost value.
func nested(b []byte, path ...uint16) ([]byte, error) {
	for _, typ := range path {
		attrs, err := nl.ParseRouteAttr(b)
		if err != nil {
			return nil, err
		}
		found := false
		for _, a := range attrs {
			if a.Attr.Type&nl.NLA_TYPE_MASK == typ {
				b, found = a.Value, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("netlink attribute %d missing", typ)
		}
	}
	return b, nil
}

// setBridgeAttr sets one u32 IFLA_BR_* attribute of bridge index.
func (n *Netlink) setBridgeAttr(name string, index, attr int, value uint32) error {
	return n.write(OpSetSTP, name, func() error {
		req := n.rawRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(attr, nl.Uint32Attr(value))
		req.AddData(info)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
}
