package links

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestVLANTwinName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"ns-0123456789a", "vt-0123456789a"},
		{"ns-v101", "vt-v101"},
		{"eth0", "vt-eth0"},
		{"abcdefghijklmno", "vt-abcdefghijkl"},
	} {
		if got := VLANTwinName(tc.name); got != tc.want || len(got) > maxNameLen {
			t.Errorf("VLANTwinName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestVLANFilterName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vid    int
		target string
		ok     bool
	}{
		{vlanFilterName(101, "vt-v101"), 101, "vt-v101", true},
		{vlanFilterName(4094, "ns-0123456789a"), 4094, "ns-0123456789a", true},
		{"netsource-vlanx-to-a", 0, "", false},
		{"netsource-vlan7", 0, "", false},
		{"cilium", 0, "", false},
	} {
		vid, target, ok := parseVLANFilterName(tc.name)
		if ok != tc.ok || (ok && (vid != tc.vid || target != tc.target)) {
			t.Errorf("parseVLANFilterName(%q) = %d, %q, %t", tc.name, vid, target, ok)
		}
	}
}

func TestVLANInterfaceValidate(t *testing.T) {
	good := VLANInterface{Netns: "vm", Parent: "ns-p", Name: "ns-s", VLANID: 101}
	for _, tc := range []struct {
		what string
		edit func(*VLANInterface)
	}{
		{"vid 0", func(v *VLANInterface) { v.VLANID = 0 }},
		{"vid 4095", func(v *VLANInterface) { v.VLANID = 4095 }},
		{"no netns", func(v *VLANInterface) { v.Netns = "" }},
		{"netns path", func(v *VLANInterface) { v.Netns = "../x" }},
		{"name is parent", func(v *VLANInterface) { v.Name = v.Parent }},
		{"long name", func(v *VLANInterface) { v.Name = "ns-0123456789abc" }},
		{"short mac", func(v *VLANInterface) { v.MAC = net.HardwareAddr{2, 0} }},
		{"nil address", func(v *VLANInterface) { v.Addresses = []*net.IPNet{nil} }},
	} {
		v := good
		tc.edit(&v)
		if err := v.validate(); err == nil {
			t.Errorf("%s: accepted", tc.what)
		}
	}
	if err := good.validate(); err != nil {
		t.Error(err)
	}
}

// vlanSide is one end of the test trunk: a namespace whose device pa or pb carries VLANs.
type vlanSide struct {
	th     *testHost
	parent string
}

// subPort is a VLAN carried on the trunk, with its address on each side.
type subPort struct {
	name   string
	vid    int
	addrA  string
	addrB  string
	macEnd byte
}

func (s subPort) on(side vlanSide, addr string, vid int) VLANInterface {
	return VLANInterface{
		Netns: side.th.ns, Parent: side.parent, Name: s.name, VLANID: vid,
		MAC:       net.HardwareAddr{0x02, 0, 0, byte(vid >> 8), byte(vid), s.macEnd},
		Addresses: []*net.IPNet{mustPrefix(addr)}, MTU: 1400, Up: true,
	}
}

// Two "VMs" joined by a veth pair pa/pb (untagged 192.0.2.1 and .2) carry VLANs 101 and
// 102 as VLAN interfaces on pa and pb.
func TestPrivilegedVLANInterfaces(t *testing.T) {
	a := testNetns(t)
	b := a.peer("b")
	trunkPair(t, a, b)
	sideA, sideB := vlanSide{a, "pa"}, vlanSide{b, "pb"}
	subs := []subPort{
		{name: "ns-v101", vid: 101, addrA: "198.51.100.1/24", addrB: "198.51.100.2/24", macEnd: 1},
		{name: "ns-v102", vid: 102, addrA: "203.0.113.1/24", addrB: "203.0.113.2/24", macEnd: 2},
	}
	var mode string
	for _, s := range subs {
		for _, v := range []VLANInterface{s.on(sideA, s.addrA, s.vid), s.on(sideB, s.addrB, s.vid)} {
			mode = ensureVLAN(t, v)
			checkVLANInterface(t, v, mode)
		}
	}
	t.Logf("mode %s", mode)

	t.Run("traffic", func(t *testing.T) {
		for _, tc := range []struct {
			what, dst string
			vid       int // expected tag on the wire; 0 untagged
		}{
			{"untagged", "192.0.2.2", 0},
			{"vlan 101", "198.51.100.2", 101},
			{"vlan 102", "203.0.113.2", 102},
		} {
			t.Run(tc.what, func(t *testing.T) {
				seen := capture(t, b.ns, "pb", net.ParseIP(tc.dst), func() { ping(t, a.ns, tc.dst) })
				if len(seen) == 0 || slices.ContainsFunc(seen, func(v int) bool { return v != tc.vid }) {
					t.Errorf("frames to %s on pb carry tags %v, want all %d", tc.dst, seen, tc.vid)
				}
			})
		}
	})

	t.Run("mismatched vlan", func(t *testing.T) {
		s := subs[1]
		moved := s.on(sideB, s.addrB, 105)
		ensureVLAN(t, moved)
		if got, want := vlanFilters(t, b.h, "pb"), []string{
			vlanFilterName(101, "vt-v101"), vlanFilterName(105, "vt-v102"),
		}; mode == VLANModeTCBPF && !cmp.Equal(got, want) {
			t.Errorf("filters on pb: %v, want %v", got, want)
		}
		pingFails(t, a.ns, "203.0.113.2")
		ping(t, a.ns, "198.51.100.2") // the other VLAN is unaffected
		ensureVLAN(t, s.on(sideB, s.addrB, s.vid))
		ping(t, a.ns, "203.0.113.2")
	})

	t.Run("missing", func(t *testing.T) {
		for _, v := range []VLANInterface{
			{Netns: b.ns, Parent: "nope", Name: "ns-v103", VLANID: 103},
			{Netns: a.prefix + "-none", Parent: "pb", Name: "ns-v103", VLANID: 103},
		} {
			if _, _, err := EnsureVLANInterface(v); !errors.Is(err, ErrDeviceMissing) {
				t.Errorf("%+v: got %v, want ErrDeviceMissing", v, err)
			}
		}
		if err := DeleteVLANInterface(a.prefix+"-none", "pa", "ns-v101", 101); err != nil {
			t.Errorf("delete in a missing netns: %v", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		for _, s := range subs {
			for _, side := range []vlanSide{sideA, sideB} {
				for range 2 { // the second finds nothing to do
					if err := DeleteVLANInterface(side.th.ns, side.parent, s.name, s.vid); err != nil {
						t.Fatal(err)
					}
				}
				side.th.gone(s.name)
				side.th.gone(VLANTwinName(s.name))
				if ok, err := VLANInterfaceExists(side.th.ns, s.name); ok || err != nil {
					t.Errorf("VLANInterfaceExists(%s, %s) = %t, %v", side.th.ns, s.name, ok, err)
				}
			}
		}
		for _, side := range []vlanSide{sideA, sideB} {
			if got := vlanFilters(t, side.th.h, side.parent); len(got) > 0 {
				t.Errorf("filters left on %s: %v", side.parent, got)
			}
		}
		ping(t, a.ns, "192.0.2.2")
		pingFails(t, a.ns, "198.51.100.2")
	})
}

// trunkPair joins the host namespaces of a and b with a veth pair pa/pb, up, untagged
// 192.0.2.1/24 on pa and 192.0.2.2/24 on pb.
func trunkPair(t *testing.T, a, b *testHost) {
	t.Helper()
	nsB, err := netns.GetFromName(b.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	v := netlink.NewVeth(newAttrs("pa", 1500))
	v.PeerName, v.PeerNamespace = "pb", netlink.NsFd(nsB)
	if err := a.h.LinkAdd(v); err != nil {
		t.Fatalf("add veth pa/pb: %v", err)
	}
	for dev, end := range map[string]struct {
		th   *testHost
		addr string
	}{"pa": {a, "192.0.2.1/24"}, "pb": {b, "192.0.2.2/24"}} {
		end.th.addAddr(dev, end.addr)
		if err := end.th.h.LinkSetUp(end.th.link(dev)); err != nil {
			t.Fatal(err)
		}
	}
}

// ensureVLAN ensures v, which must change something, and then again, which must not.
func ensureVLAN(t *testing.T, v VLANInterface) string {
	t.Helper()
	mode, ch, err := EnsureVLANInterface(v)
	if err != nil {
		t.Fatal(err)
	}
	if !ch {
		t.Errorf("ensure %s vlan %d in %s: reported no change", v.Name, v.VLANID, v.Netns)
	}
	again, ch, err := EnsureVLANInterface(v)
	if err != nil || ch || again != mode {
		t.Errorf("second ensure %s vlan %d in %s: mode %s changed %t err %v, want mode %s, no change",
			v.Name, v.VLANID, v.Netns, again, ch, err, mode)
	}
	return mode
}

// checkVLANInterface compares the kernel's devices with v.
func checkVLANInterface(t *testing.T, v VLANInterface, mode string) {
	t.Helper()
	h := nsHandle(t, v.Netns)
	l := mustLink(t, h, v.Name)
	a := l.Attrs()
	if a.HardwareAddr.String() != v.MAC.String() || a.MTU != v.MTU || a.Flags&net.FlagUp == 0 {
		t.Errorf("%s: mac %s mtu %d flags %s, want %s %d up", v.Name, a.HardwareAddr, a.MTU, a.Flags, v.MAC, v.MTU)
	}
	addrs, err := globalAddrs(h, l)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keySet(addrs), map[string]bool{prefixKey(v.Addresses[0]): true}; !cmp.Equal(got, want) {
		t.Errorf("%s: addresses %v, want %v", v.Name, got, want)
	}
	switch mode {
	case VLANMode8021Q:
		if vl, ok := l.(*netlink.Vlan); !ok || vl.VlanId != v.VLANID {
			t.Errorf("%s: %s device, want vlan %d", v.Name, l.Type(), v.VLANID)
		}
	case VLANModeTCBPF:
		twin := mustLink(t, h, VLANTwinName(v.Name))
		if twin.Attrs().Flags&net.FlagUp == 0 || twin.Attrs().ParentIndex != a.Index {
			t.Errorf("twin %s: flags %s peer %d, want up, peer %d", twin.Attrs().Name, twin.Attrs().Flags, twin.Attrs().ParentIndex, a.Index)
		}
		if got := vlanFilters(t, h, v.Parent); !slices.Contains(got, vlanFilterName(v.VLANID, twin.Attrs().Name)) {
			t.Errorf("filters on %s: %v, want one for vlan %d", v.Parent, got, v.VLANID)
		}
	default:
		t.Errorf("mode %q", mode)
	}
}

// vlanFilters lists the names of netsource's VLAN filters on dev's ingress, sorted.
func vlanFilters(t *testing.T, h *netlink.Handle, dev string) []string {
	t.Helper()
	fs, err := ingressFilters(h, mustLink(t, h, dev))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok {
			if _, _, ok := parseVLANFilterName(b.Name); ok {
				names = append(names, b.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// capture runs during while reading the frames that arrive on dev of the named namespace
// with a packet socket, and returns the VLAN ID of each IPv4 frame to dst (0: untagged).
// The tag comes from PACKET_AUXDATA: at reception the kernel moves it into metadata.
func capture(t *testing.T, nsName, dev string, dst net.IP, during func()) []int {
	t.Helper()
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	fd, err := SocketIn(ns, unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	l := mustLink(t, nsHandle(t, nsName), dev)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var (
		wg   sync.WaitGroup
		seen []int
	)
	wg.Go(func() {
		buf, oob := make([]byte, 2048), make([]byte, 256)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				continue // timeout: look at stop again
			}
			if vid, ok := frameVLAN(buf[:n], oob[:oobn], dst); ok {
				seen = append(seen, vid)
			}
		}
	})
	during()
	close(stop)
	wg.Wait()
	return seen
}

// frameVLAN returns the VLAN ID of an IPv4 frame to dst (0: untagged); ok is false for
// other frames.
func frameVLAN(frame, oob []byte, dst net.IP) (vid int, ok bool) {
	const ethHdr, ipDst = 14, 16
	if len(frame) < ethHdr+ipDst+4 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP ||
		!net.IP(frame[ethHdr+ipDst:ethHdr+ipDst+4]).Equal(dst) {
		return 0, false
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
			return int(aux.Vlan_tci & vidMask), true
		}
		return 0, true
	}
	return 0, false
}

// htons is a 16-bit value in network byte order as a register holds it on this host.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
