package links

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFakeConvergence(t *testing.T) {
	const (
		brBlue  = "bridge brq6a0e4b8e-1c mtu 1450 up"
		brGreen = "bridge brq7b1f5c9f-2d mtu 1500 up"
		eth1    = "device eth1 mtu 1500 up"
		eth2    = "device eth2 mtu 1500 up"
		eth2br  = "device eth2 master brq7b1f5c9f-2d mtu 1500 up"
		tap     = "tun tap5f600000-11 master brq7b1f5c9f-2d mtu 1500 up"
		vxMcast = "vxlan vxlan-1001 vni 1001 local 198.18.0.1 group 239.1.1.1 dev eth1 port 4789 learning master brq6a0e4b8e-1c mtu 1450 up"
		vxUcast = "vxlan vxlan-1001 vni 1001 local 198.18.0.1 dev eth1 port 4789 nolearning master brq6a0e4b8e-1c mtu 1450 up"
		vethA   = "veth tap3d4e0000-11 master brq6a0e4b8e-1c mtu 1450 up peer ns-3d4e0000-11@vm1 mac fa:16:3e:00:00:01 mtu 1450 up addrs 192.0.2.11/24 routes default via 192.0.2.1"
		vethA2  = "veth tap3d4e0000-11 master brq6a0e4b8e-1c mtu 1450 up peer ns-3d4e0000-11@vm1 mac fa:16:3e:00:00:01 mtu 1450 up addrs 192.0.2.12/24,203.0.113.12/24 routes 198.51.100.0/24 via 192.0.2.1,default via 192.0.2.254"
		fdb3    = "fdb vxlan-1001 00:00:00:00:00:00 dst 198.18.0.3"
		fdbVM3  = "fdb vxlan-1001 fa:16:3e:00:00:02 dst 198.18.0.3"
	)
	wants := map[string]string{
		"local bridge":           lines(brBlue, eth1, eth2),
		"vxlan multicast uplink": lines(brBlue, eth1, eth2, vxMcast),
		"flat network":           lines(brBlue, brGreen, eth1, eth2br, vxMcast),
		"veth port":              lines(brBlue, brGreen, eth1, eth2br, "netns vm1", vethA, vxMcast),
		"tap port":               lines(brBlue, brGreen, eth1, eth2br, "netns vm1", tap, vethA, vxMcast),
		"veth admin down drops routes": lines(brBlue, brGreen, eth1, eth2br, "netns vm1", tap,
			"veth tap3d4e0000-11 master brq6a0e4b8e-1c mtu 1450 down peer ns-3d4e0000-11@vm1 mac fa:16:3e:00:00:01 mtu 1450 down addrs 192.0.2.11/24", vxMcast),
		"veth new addresses and routes":      lines(brBlue, brGreen, eth1, eth2br, "netns vm1", tap, vethA2, vxMcast),
		"vxlan to unicast mode recreates it": lines(brBlue, brGreen, eth1, eth2br, "netns vm1", tap, vethA2, vxUcast),
		"fdb flood list and unicast": lines(brBlue, brGreen, eth1, eth2br,
			"fdb vxlan-1001 00:00:00:00:00:00 dst 198.18.0.2", fdb3, "fdb vxlan-1001 fa:16:3e:00:00:02 dst 198.18.0.2",
			"netns vm1", tap, vethA2, vxUcast),
		"fdb shrinks and moves":                  lines(brBlue, brGreen, eth1, eth2br, fdb3, fdbVM3, "netns vm1", tap, vethA2, vxUcast),
		"delete veth port removes its namespace": lines(brBlue, brGreen, eth1, eth2br, fdb3, fdbVM3, tap, vxUcast),
		"delete tap port unplugs it":             lines(brBlue, brGreen, eth1, eth2br, fdb3, fdbVM3, "tun tap5f600000-11 mtu 1500 up", vxUcast),
		"delete networks":                        lines(eth1, eth2, "tun tap5f600000-11 mtu 1500 up"),
	}

	f := NewFake()
	f.AddDevice("eth1", "device")
	f.AddDevice("eth2", "device")
	ctx := t.Context()
	for _, s := range scenario("vm1") {
		want, ok := wants[s.name]
		if !ok {
			t.Fatalf("no expected dump for step %q", s.name)
		}
		if err := s.apply(ctx, f, f); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(f.Dump(), want); diff != "" {
			t.Fatalf("%s: dump mismatch (-got +want):\n%s", s.name, diff)
		}
		unchanged(t, f, s.name, func() error { return s.apply(ctx, f, f) })
	}
}

// TestFakeConvergesInAnyOrder applies one desired state in random orders, repeatedly: the
// result is always the same and a second full pass changes nothing.
func TestFakeConvergesInAnyOrder(t *testing.T) {
	blue := vxlanNet(netBlue, 1001, underlayA, nil, "eth1")
	green := flatNet(netGreen, "eth2")
	networks := []NetworkSpec{blue, green, localNet("8c2a6d00-3e9f-4c77-9d51-4b3b6e3a2c03")}
	ports := []PortSpec{
		vethPort(portA, blue, "vm1", "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1"),
		vethPort(portB, blue, "vm2", "fa:16:3e:00:00:02", "192.0.2.12/24", "192.0.2.1"),
		tapPort(portTap, green),
	}
	var want string
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 0))
		f := NewFake()
		f.AddDevice("eth1", "device")
		f.AddDevice("eth2", "device")
		f.AddTapDevice(TapName(portTap))
		apply := func() {
			for _, i := range rng.Perm(len(networks)) {
				if err := f.EnsureNetwork(t.Context(), networks[i]); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			for _, i := range rng.Perm(len(ports)) {
				if _, err := f.EnsurePort(t.Context(), ports[i]); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
		}
		apply()
		got := f.Dump()
		if want == "" {
			want = got
		}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Fatalf("seed %d: dump differs from seed 0 (-got +want):\n%s", seed, diff)
		}
		before := f.Mutations()
		apply()
		if d := f.Mutations() - before; d != 0 {
			t.Fatalf("seed %d: second pass made %d changes", seed, d)
		}
	}
}

func TestFakeDeleteMissingIsNil(t *testing.T) {
	f := NewFake()
	ctx := t.Context()
	blue := vxlanNet(netBlue, 1001, underlayA, nil, "")
	a := vethPort(portA, blue, "vm1", "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	for name, err := range map[string]error{
		"network":  f.DeleteNetwork(ctx, blue),
		"veth":     f.DeletePort(ctx, a),
		"tap":      f.DeletePort(ctx, tapPort(portTap, blue)),
		"device":   f.DeleteDevice(ctx, "tap0"),
		"flat net": f.DeleteNetwork(ctx, flatNet(netGreen, "eth9")),
	} {
		if err != nil {
			t.Errorf("delete missing %s: %v", name, err)
		}
	}
	if m := f.Mutations(); m != 0 {
		t.Errorf("deleting nothing made %d changes", m)
	}
}

func TestFakeBridgeFull(t *testing.T) {
	f := NewFake()
	ctx := t.Context()
	net := localNet(netBlue)
	if err := f.EnsureNetwork(ctx, net); err != nil {
		t.Fatal(err)
	}
	port := func(i int) PortSpec {
		p := tapPort(fmt.Sprintf("%08d-0000", i), net)
		f.AddTapDevice(p.Device)
		return p
	}
	for i := range MaxBridgePorts {
		if _, err := f.EnsurePort(ctx, port(i)); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	_, err := f.EnsurePort(ctx, port(MaxBridgePorts))
	if !errors.Is(err, ErrBridgeFull) {
		t.Fatalf("port %d: got %v, want ErrBridgeFull", MaxBridgePorts, err)
	}
	before := f.Mutations()
	veth := vethPort(portA, net, "vm1", "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	if _, err := f.EnsurePort(ctx, veth); !errors.Is(err, ErrBridgeFull) {
		t.Fatalf("veth port: got %v, want ErrBridgeFull", err)
	}
	if d := f.Mutations() - before; d != 0 {
		t.Errorf("a port that cannot be plugged made %d changes (veth pair, namespace)", d)
	}
	if _, err := f.EnsurePort(ctx, port(0)); err != nil {
		t.Errorf("re-ensuring a plugged port of a full bridge: %v", err)
	}
}

func TestFakeTapAppearsAndVanishes(t *testing.T) {
	f := NewFake()
	ctx := t.Context()
	net := localNet(netBlue)
	tap := tapPort(portTap, net)
	if err := f.EnsureNetwork(ctx, net); err != nil {
		t.Fatal(err)
	}
	if _, err := f.EnsurePort(ctx, tap); !errors.Is(err, ErrDeviceMissing) {
		t.Fatalf("tap not created yet: got %v, want ErrDeviceMissing", err)
	}
	events, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.AddTapDevice(tap.Device)
	st, err := f.EnsurePort(ctx, tap)
	if err != nil || !st.OperUp || st.Ifindex == 0 {
		t.Fatalf("plug tap: %+v, %v", st, err)
	}
	f.RemoveDevice(tap.Device)
	want := LinkEvent{Name: tap.Device, Ifindex: st.Ifindex, Deleted: true, Up: true, Master: net.Bridge}
	timeout := time.After(time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Deleted {
				if diff := cmp.Diff(ev, want); diff != "" {
					t.Fatalf("delete event (-got +want):\n%s", diff)
				}
				return
			}
		case <-timeout:
			t.Fatal("no delete event")
		}
	}
}

func TestFakeWatchClosesWithContext(t *testing.T) {
	f := NewFake()
	ctx, cancel := context.WithCancel(t.Context())
	events, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range events { //nolint:revive // drain until closed
	}
}

func TestFakeVLAN(t *testing.T) {
	ctx := t.Context()
	spec := vlanNet(netBlue, "eth1", 100)
	f := NewFake()
	f.AddDevice("eth1", "device")
	if err := f.EnsureNetwork(ctx, spec); err != nil {
		t.Fatal(err)
	}
	want := lines("bridge brq6a0e4b8e-1c mtu 1450 up", "device eth1 mtu 1500 up",
		"vlan eth1.100 link eth1 id 100 master brq6a0e4b8e-1c mtu 1450 up")
	if diff := cmp.Diff(f.Dump(), want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}

	f = NewFake()
	f.NoVLAN = true
	f.AddDevice("eth1", "device")
	if err := f.EnsureNetwork(ctx, spec); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "802.1Q") {
		t.Errorf("kernel without vlan: got %v, want ErrNotSupported naming 802.1Q", err)
	}
}

func TestFakeFailOnIsReportedAndRecovered(t *testing.T) {
	ctx := t.Context()
	f := NewFake()
	boom := errors.New("boom")
	f.FailOn = func(op, name string) error {
		if op == OpSetMaster && name == "vxlan-1001" {
			return boom
		}
		return nil
	}
	spec := vxlanNet(netBlue, 1001, underlayA, mcastGrp, "")
	err := f.EnsureNetwork(ctx, spec)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "vxlan-1001") {
		t.Fatalf("got %v, want the injected error naming vxlan-1001", err)
	}
	f.FailOn = nil
	if err := f.EnsureNetwork(ctx, spec); err != nil {
		t.Fatal(err)
	}
	want := lines("bridge brq6a0e4b8e-1c mtu 1450 up",
		"vxlan vxlan-1001 vni 1001 local 198.18.0.1 group 239.1.1.1 port 4789 learning master brq6a0e4b8e-1c mtu 1450 up")
	if diff := cmp.Diff(f.Dump(), want); diff != "" {
		t.Errorf("after recovery (-got +want):\n%s", diff)
	}
}

func TestFakeVXLANMTUAboveUnderlay(t *testing.T) {
	f := NewFake()
	f.AddDevice("eth1", "device")
	spec := vxlanNet(netBlue, 1001, underlayA, mcastGrp, "eth1")
	spec.MTU = 1500
	if err := f.EnsureNetwork(t.Context(), spec); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("got %v, want an MTU error", err)
	}
	if strings.Contains(f.Dump(), "vxlan-1001") {
		t.Error("vxlan device left behind")
	}
}

func TestFakeOwnership(t *testing.T) {
	ctx := t.Context()
	f := NewFake()
	f.AddDevice("eth1", "device")
	f.AddNetns("vm1")
	if err := f.DeleteDevice(ctx, "eth1"); err == nil {
		t.Error("DeleteDevice removed a host interface")
	}
	blue := localNet(netBlue)
	a := vethPort(portA, blue, "vm1", "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	if err := f.EnsureNetwork(ctx, blue); err != nil {
		t.Fatal(err)
	}
	if _, err := f.EnsurePort(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := f.DeletePort(ctx, a); err != nil {
		t.Fatal(err)
	}
	inv, err := f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantInv := []Device{{Name: blue.Bridge, Kind: "bridge", Ifindex: 3}}
	if diff := cmp.Diff(inv, wantInv); diff != "" {
		t.Errorf("inventory (-got +want):\n%s", diff)
	}
	want := lines("bridge brq6a0e4b8e-1c mtu 1450 up", "device eth1 mtu 1500 up", "netns vm1 foreign")
	if diff := cmp.Diff(f.Dump(), want); diff != "" {
		t.Errorf("a namespace netsource did not create must stay (-got +want):\n%s", diff)
	}
}

func TestSpecValidation(t *testing.T) {
	bad := []NetworkSpec{
		{ID: "no-bridge"},
		{ID: "long", Bridge: "brq-much-too-long-name"},
		{ID: "vni", Bridge: "brq1", Uplink: Uplink{Kind: UplinkVXLAN}},
		{ID: "vid", Bridge: "brq1", Uplink: Uplink{Kind: UplinkVLAN, Device: "eth1", VLANID: 4095}},
		{ID: "group", Bridge: "brq1", Uplink: Uplink{Kind: UplinkVXLAN, VXLAN: VXLAN{VNI: 1, Group: underlayB}}},
	}
	for _, s := range bad {
		if err := NewFake().EnsureNetwork(t.Context(), s); err == nil {
			t.Errorf("network %s: accepted an invalid spec", s.ID)
		}
	}
	p := vethPort(portA, localNet(netBlue), "../x", "fa:16:3e:00:00:01", "192.0.2.11/24", "192.0.2.1")
	if _, err := NewFake().EnsurePort(t.Context(), p); err == nil {
		t.Error("accepted netns name ../x")
	}
}

// TestFakeConcurrentUse drives one Fake from several goroutines with a watcher attached
// (run with -race).
func TestFakeConcurrentUse(t *testing.T) {
	f := NewFake()
	ctx := t.Context()
	blue := localNet(netBlue)
	if err := f.EnsureNetwork(ctx, blue); err != nil {
		t.Fatal(err)
	}
	events, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range events {
		}
	}()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			p := vethPort(fmt.Sprintf("%08x-0000", i), blue, fmt.Sprintf("vm%d", i%3),
				fmt.Sprintf("fa:16:3e:00:00:%02x", i), fmt.Sprintf("192.0.2.%d/24", 10+i), "192.0.2.1")
			_, err := f.EnsurePort(ctx, p)
			if err == nil {
				_ = f.Dump()
				err = f.DeletePort(ctx, p)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if diff := cmp.Diff(f.Dump(), lines("bridge brq6a0e4b8e-1c mtu 1450 up")); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

func TestRouteText(t *testing.T) {
	for _, tc := range []struct {
		r    Route
		want string
	}{
		{Route{Via: mustIP("192.0.2.1")}, "default via 192.0.2.1"},
		{Route{Dst: mustPrefix("0.0.0.0/0"), Via: mustIP("192.0.2.1")}, "default via 192.0.2.1"},
		{Route{Dst: mustPrefix("198.51.100.7/26"), Via: mustIP("192.0.2.1")}, "198.51.100.0/26 via 192.0.2.1"},
		{Route{Dst: mustPrefix("203.0.113.0/24")}, "203.0.113.0/24"},
	} {
		if got := routeText(tc.r); got != tc.want {
			t.Errorf("routeText(%v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}
