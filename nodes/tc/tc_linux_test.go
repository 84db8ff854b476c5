package tc_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/taas"
	"github.com/netsource/netsource/nodes/tc"
)

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrivilegedTCMirrorIsIdempotent programs a tap flow's filters on a device, changes its
// direction, and removes it, checking the filters after each step and that repeating a
// step changes nothing.
func TestPrivilegedTCMirrorIsIdempotent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and veth pairs")
	}
	ns := fmt.Sprintf("nstc%04x-host", rand.IntN(0xffff))
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	for _, dev := range []string{"tapsrc", "tapsvc"} {
		run(t, "ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", dev+"-vm")
	}
	m, err := tc.New(ns, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	flow := taas.Flow{ID: "f1", TapID: 3900, Local: true, ServiceDevice: "tapsvc", SourceDevice: "tapsrc", Direction: taas.DirectionBoth}
	filters := func(hook string) string {
		return run(t, "tc", "-n", ns, "filter", "show", "dev", "tapsrc", hook)
	}
	step := func(what string, fn func() error, ingress, egress bool) {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		before := m.Mutations()
		if err := fn(); err != nil {
			t.Fatalf("%s again: %v", what, err)
		}
		if d := m.Mutations() - before; d != 0 {
			t.Fatalf("%s again made %d mutations", what, d)
		}
		in, out := tc.Prios(flow.ID)
		for hook, want := range map[string]bool{"ingress": ingress, "egress": egress} {
			prio := map[string]uint16{"ingress": in, "egress": out}[hook]
			out := filters(hook)
			has := strings.Contains(out, "mirred (Egress Mirror to device tapsvc)") && strings.Contains(out, fmt.Sprintf("pref %d", prio))
			if has != want {
				t.Fatalf("%s: %s filters (want mirror: %t):\n%s", what, hook, want, out)
			}
		}
	}
	step("BOTH", func() error { return m.EnsureFlow(ctx, flow) }, true, true)
	flow.Direction = taas.DirectionIn
	step("IN", func() error { return m.EnsureFlow(ctx, flow) }, false, true)
	flow.Direction = taas.DirectionOut
	step("OUT", func() error { return m.EnsureFlow(ctx, flow) }, true, false)
	step("delete", func() error { return m.DeleteFlow(ctx, flow) }, false, false)

	if err := m.EnsureFlow(ctx, taas.Flow{ID: "f2", SourceDevice: "tapsrc", Direction: taas.DirectionOut}); !errors.Is(err, taas.ErrRemoteUnsupported) {
		t.Fatalf("remote service: %v", err)
	}
	if err := m.EnsureFlow(ctx, taas.Flow{ID: "f3", Local: true, SourceDevice: "tapgone", ServiceDevice: "tapsvc",
		Direction: taas.DirectionOut}); !errors.Is(err, taas.ErrPortMissing) {
		t.Fatalf("missing source: %v", err)
	}
}
