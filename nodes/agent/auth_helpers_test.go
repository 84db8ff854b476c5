package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/nodes/agent"
	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/nodes/links"
	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

// These tests run agent.Run in-process on the recording dataplane (links.Fake): no root,
// no kernel, real JetStream servers.

// syncBuffer collects an agent's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fakeAgent struct {
	fake  *links.Fake
	logs  *syncBuffer
	ready chan struct{}
	stop  func()
}

// fakeAgentConfig is an agent of host on the servers at url with VXLAN off (or on with
// l2population, which makes it follow every host's port status).
func fakeAgentConfig(t *testing.T, host, url string, l2pop bool) *config.Config {
	t.Helper()
	cfg := &config.Config{Host: host, NATS: url}
	on := l2pop
	cfg.VXLAN.EnableVXLAN = &on
	if l2pop {
		cfg.VXLAN.LocalIP = "198.18.0.1"
		cfg.VXLAN.L2Population = true
	}
	cfg.Agent.ReportInterval.Duration = 200 * time.Millisecond
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startFakeAgent runs an agent until the test ends (or stop) and waits until it has
// loaded the desired state.
func startFakeAgent(t *testing.T, cfg *config.Config, opts agent.Options) *fakeAgent {
	t.Helper()
	a := &fakeAgent{fake: links.NewFake(), logs: &syncBuffer{}, ready: make(chan struct{})}
	opts.Dataplane = a.fake
	opts.Ready = func() { close(a.ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := zerolog.New(a.logs).Level(zerolog.WarnLevel)
	go func() { done <- agent.Run(ctx, cfg, opts, log) }()
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent %s: %v", cfg.Host, err)
			}
		})
	}
	t.Cleanup(a.stop)
	select {
	case <-a.ready:
	case err := <-done:
		done <- err
		t.Fatalf("agent %s ended before it was ready: %v\n%s", cfg.Host, err, a.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("agent %s not ready after 30s\n%s", cfg.Host, a.logs)
	}
	return a
}

// waitFact polls ok until it returns nil: for facts no event announces (a dump, a counter
// in the next heartbeat).
func waitFact(t *testing.T, timeout time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastHeartbeat is host's latest heartbeat.
func lastHeartbeat(ctx context.Context, js jetstream.JetStream, host string) (*nsv1.AgentHeartbeat, error) {
	subject, _ := streams.AgentSubject(host)
	msgs, err := streams.LoadLast(ctx, js, streams.StatusStream, subject)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("no heartbeat of %s yet", host)
	}
	return streams.DecodeHeartbeat(msgs[0].Data)
}

// lastStatusMsg is the latest message on an object's status subject.
func lastStatusMsg(ctx context.Context, js jetstream.JetStream, host string, kind streams.Kind, id string) (*streams.Msg, *nsv1.StatusEvent, error) {
	subject, _ := streams.StatusSubject(host, kind, id)
	msgs, err := streams.LoadLast(ctx, js, streams.StatusStream, subject)
	if err != nil {
		return nil, nil, err
	}
	if len(msgs) == 0 {
		return nil, nil, fmt.Errorf("no status on %s", subject)
	}
	ev, err := streams.DecodeStatus(msgs[0].Data)
	return &msgs[0], ev, err
}

// Test objects: ids whose first 11 characters differ (device names use them).
func authNetID(n int) string  { return fmt.Sprintf("%08x-0000-4000-8000-00000000a000", 0xa0000000+n) }
func authPortID(n int) string { return fmt.Sprintf("%08x-0000-4000-8000-00000000b000", 0xb0000000+n) }
func authSubnetID(n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-00000000c000", 0xc0000000+n)
}

func authNetwork(n int) *nsv1.Network {
	return &nsv1.Network{Id: authNetID(n), Name: fmt.Sprintf("net%d", n), NetworkType: "local", Mtu: 1450,
		Subnets: []*nsv1.Subnet{{Id: authSubnetID(n), Cidr: "192.0.2.0/24", GatewayIp: "192.0.2.1", IpVersion: 4}}}
}

// authPort is port p of network n in version v: its address and admin state follow v, so
// the final dump shows which version was applied last.
func authPort(host string, n, p, v int) *nsv1.Port {
	up := v%4 != 3
	return &nsv1.Port{Id: authPortID(n*1000 + p), NetworkId: authNetID(n), Host: host,
		MacAddress: fmt.Sprintf("fa:16:3e:00:%02x:%02x", n, p),
		FixedIps:   []*nsv1.FixedIP{{SubnetId: authSubnetID(n), IpAddress: fmt.Sprintf("192.0.2.%d", 10+v)}},
		Binding:    &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("vm-%d-%d", n, p)}, AdminStateUp: &up}
}

// portLine is the dump line of a port's veth, or "".
func portLine(dump, portID string) string {
	prefix := "veth " + links.TapName(portID) + " "
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
