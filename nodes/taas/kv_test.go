package taas_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/taas"
	"github.com/netsource/netsource/streams/natstest"
)

// TestKVAllocatesUniqueIDsAcrossHosts: two agents allocate 50 tap ids each at the same
// time; every id is different, each agent sees the other's through the watch, the 101st
// service finds none left, and a released id is reused.
func TestKVAllocatesUniqueIDsAcrossHosts(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dirs := map[string]*taas.KV{}
	for _, host := range []string{"hostA", "hostB"} {
		_, js := srv.Connect()
		d, err := taas.NewKV(ctx, js, host, 0, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		dirs[host] = d
	}
	var (
		mu  sync.Mutex
		ids = map[int]string{}
		wg  sync.WaitGroup
	)
	errs := make(chan error, 100)
	for host, d := range dirs {
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				svc := fmt.Sprintf("%s-svc%02d", host, i)
				info, err := d.Allocate(ctx, taas.ServiceInfo{ServiceID: svc, Host: host, PortID: "p-" + svc})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, dup := ids[info.TapID]; dup {
					errs <- fmt.Errorf("tap id %d given to %s and %s", info.TapID, other, svc)
				}
				ids[info.TapID] = svc
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(ids) != 100 {
		t.Fatalf("%d distinct ids, want 100", len(ids))
	}
	if _, err := dirs["hostA"].Allocate(ctx, taas.ServiceInfo{ServiceID: "one-too-many", Host: "hostA"}); !errors.Is(err, taas.ErrExhausted) {
		t.Fatalf("101st allocation: %v, want ErrExhausted", err)
	}
	// Idempotent, and visible on the other host.
	again, err := dirs["hostA"].Allocate(ctx, taas.ServiceInfo{ServiceID: "hostA-svc07", Host: "hostA", PortID: "p-hostA-svc07"})
	if err != nil || ids[again.TapID] != "hostA-svc07" {
		t.Fatalf("allocate again: %v %v", again, err)
	}
	waitLookup(t, dirs["hostB"], "hostA-svc07", true)
	// hostB cannot release hostA's service; hostA can, and the id is then reused.
	if err := dirs["hostB"].Release(ctx, "hostA-svc07"); err != nil {
		t.Fatal(err)
	}
	waitLookup(t, dirs["hostA"], "hostA-svc07", true)
	if err := dirs["hostA"].Release(ctx, "hostA-svc07"); err != nil {
		t.Fatal(err)
	}
	waitLookup(t, dirs["hostB"], "hostA-svc07", false)
	reused, err := dirs["hostB"].Allocate(ctx, taas.ServiceInfo{ServiceID: "late", Host: "hostB"})
	if err != nil || reused.TapID != again.TapID {
		t.Fatalf("after release: %v %v, want tap id %d", reused, err, again.TapID)
	}
}

func waitLookup(t *testing.T, d taas.Directory, svc string, present bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := d.Lookup(svc); ok == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup %s: present=%t not reached", svc, present)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMemoryDirectory(t *testing.T) {
	d := taas.NewMemory()
	ctx := context.Background()
	var changed []string
	cancel := d.Subscribe(func(s string) { changed = append(changed, s) })
	defer cancel()
	a, _ := d.Allocate(ctx, taas.ServiceInfo{ServiceID: "a"})
	b, _ := d.Allocate(ctx, taas.ServiceInfo{ServiceID: "b"})
	a2, _ := d.Allocate(ctx, taas.ServiceInfo{ServiceID: "a"})
	if a.TapID != taas.FirstTapID || b.TapID != taas.FirstTapID+1 || a2 != a {
		t.Fatalf("allocations: %v %v %v", a, b, a2)
	}
	_ = d.Release(ctx, "a")
	c, _ := d.Allocate(ctx, taas.ServiceInfo{ServiceID: "c"})
	if c.TapID != taas.FirstTapID {
		t.Fatalf("released id not reused: %v", c)
	}
	if fmt.Sprint(changed) != "[a b a c]" {
		t.Fatalf("notifications: %v", changed)
	}
}
