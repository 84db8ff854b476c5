package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runServer runs `netsource server` until the returned stop is called.
func runServer(t *testing.T, store, listen string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := startCommand(ctx, "server", "--store", store, "--listen", listen, "--log-level", "error")
	// Up means: accepting clients and holding the streams (created right after start).
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := runCLI(t, "nats://"+listen, "get", "networks")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on %s not up: %v", listen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}
}

func TestServerKeepsDataAcrossRestarts(t *testing.T) {
	store, listen := t.TempDir(), freePort(t)
	url := "nats://" + listen
	stop := runServer(t, store, listen)
	if out, err := runCLI(t, url, "apply", "-f", "../../examples/topology.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	stop()
	stop = runServer(t, store, listen)
	defer stop()
	out, err := runCLI(t, url, "get", "networks")
	if err != nil || !strings.Contains(out, "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01") {
		t.Fatalf("after restart, get networks: %v\n%s", err, out)
	}
	out, err = runCLI(t, url, "apply", "-f", "../../examples/topology.yaml")
	if err != nil || strings.Count(out, "unchanged") != 10 {
		t.Fatal(fmt.Errorf("re-apply after restart: %v\n%s", err, out))
	}
}
