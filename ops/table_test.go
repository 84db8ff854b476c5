package ops

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

func tableFleet(t *testing.T) (*Fleet, *clock) {
	c := newClock()
	f := NewFleet(Options{Now: c.now})
	f.ApplyStatus(heartbeatMsg(t, 1, c.t, "hostA", 2*time.Second, false))
	f.ApplyStatus(heartbeatMsg(t, 2, c.t.Add(-10*time.Second), "hostB", 2*time.Second, false))
	f.ApplyDesired(desiredMsg(t, 1, &nsv1.Port{Id: portID, Name: "web1", Host: "hostA"}))
	f.ApplyStatus(statusMsg(t, 3, c.t.Add(-5*time.Second), &nsv1.StatusEvent{Host: "hostA", Kind: "port", Id: portID,
		Phase: nsv1.Phase_PHASE_ACTIVE, Reason: "device tap3d4e5f60-00 plugged into brq6a0e4b8e-1c", DesiredSeq: 1}))
	f.ApplyStatus(statusMsg(t, 4, c.t.Add(-3*time.Second), &nsv1.StatusEvent{Host: "hostB", Kind: "network",
		Id: "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01", Phase: nsv1.Phase_PHASE_ERROR, Reason: "vxlan network on host hostB,\nwhose enable_vxlan is false"}))
	f.StatusCaughtUp()
	f.DesiredCaughtUp()
	return f, c
}

func TestRenderTable(t *testing.T) {
	f, _ := tableFleet(t)
	var b strings.Builder
	if err := RenderTable(&b, f.Snapshot(), TableOptions{Source: "nats://127.0.0.1:4222"}); err != nil {
		t.Fatal(err)
	}
	want := `netsource watch · nats://127.0.0.1:4222 · 12:00:00 · 2 hosts (1 down) · 2 objects: 1 ERROR, 1 ACTIVE

HOST   STATE  HEARTBEAT  INTERVAL  APPLIED  LAG  OBJECTS
hostA  up     0ms ago    2s        41       3    port 2
hostB  down   10s ago    2s        41       3    port 2

KIND     NAME  ID                                    HOST   PHASE   AGE  REASON
network        6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01  hostB  ERROR   3s   vxlan network on host hostB, whose enable_vxlan is false
port     web1  3d4e5f60-0000-4000-8000-000000000001  hostA  ACTIVE  5s   device tap3d4e5f60-00 plugged into brq6a0e4b8e-1c
`
	if diff := cmp.Diff(b.String(), want); diff != "" {
		t.Fatalf("table (-got +want):\n%s", diff)
	}
}

func TestRenderTableFiltersClipsAndColours(t *testing.T) {
	f, _ := tableFleet(t)
	var b strings.Builder
	err := RenderTable(&b, f.Snapshot(), TableOptions{Width: 60, Height: 8, Color: true, Filter: Filter{Host: "hostA"}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "hostB") {
		t.Fatalf("--host hostA shows hostB:\n%s", out)
	}
	if !strings.Contains(out, "\x1b[32mACTIVE\x1b[0m") || !strings.Contains(out, "\x1b[32mup\x1b[0m") {
		t.Fatalf("no colour on phase and state:\n%q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		plain := strings.NewReplacer("\x1b[0m", "", "\x1b[1m", "", "\x1b[32m", "").Replace(line)
		if n := len([]rune(plain)); n > 60 {
			t.Fatalf("line of %d runes in a 60-column terminal: %q", n, plain)
		}
	}
	// 6 lines of title and hosts, the objects' header, then rows or the "more" line.
	for height, want := range map[int]string{9: "port     web1", 8: "… 2 more objects"} {
		b.Reset()
		if err := RenderTable(&b, f.Snapshot(), TableOptions{Height: height}); err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(b.String(), "\n"); !strings.Contains(b.String(), want) || lines > height {
			t.Fatalf("%d-line terminal: %d lines, want %q in:\n%s", height, lines, want, b.String())
		}
	}
}

func TestFormatAge(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 850 * time.Millisecond: "850ms", 12 * time.Second: "12s",
		5 * time.Minute: "5m", 3 * time.Hour: "3h", 72 * time.Hour: "3d"} {
		if got := FormatAge(d); got != want {
			t.Errorf("FormatAge(%s) = %s, want %s", d, got, want)
		}
	}
}
