package taas

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory Mirror. Ports are "plugged" with Plug; a service or flow whose port
// is not plugged fails with ErrPortMissing, and a remote flow fails with
// ErrRemoteUnsupported when LocalOnly is set (as the tc mirror does).
type Fake struct {
	mu        sync.Mutex
	plugged   map[string]bool // device names
	services  map[string]Service
	flows     map[string]Flow
	mutations uint64
	// LocalOnly makes EnsureFlow refuse tap services on other hosts.
	LocalOnly bool
}

var _ Mirror = (*Fake)(nil)

// NewFake returns a fake with nothing plugged.
func NewFake() *Fake {
	return &Fake{plugged: map[string]bool{}, services: map[string]Service{}, flows: map[string]Flow{}}
}

// Plug marks a port device as present (true) or gone (false).
func (f *Fake) Plug(device string, present bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plugged[device] = present
}

// EnsureService implements Mirror.
func (f *Fake) EnsureService(ctx context.Context, s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.plugged[s.Device] {
		return fmt.Errorf("tap service %s: port %s (%s): %w", s.ID, s.PortID, s.Device, ErrPortMissing)
	}
	if f.services[s.ID] != s {
		f.services[s.ID] = s
		f.mutations++
	}
	return ctx.Err()
}

// DeleteService implements Mirror.
func (f *Fake) DeleteService(ctx context.Context, s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[s.ID]; ok {
		delete(f.services, s.ID)
		f.mutations++
	}
	return ctx.Err()
}

// EnsureFlow implements Mirror.
func (f *Fake) EnsureFlow(ctx context.Context, fl Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.plugged[fl.SourceDevice] {
		return fmt.Errorf("tap flow %s: source port %s (%s): %w", fl.ID, fl.SourcePortID, fl.SourceDevice, ErrPortMissing)
	}
	if f.LocalOnly && !fl.Local {
		return fmt.Errorf("tap flow %s: %w", fl.ID, ErrRemoteUnsupported)
	}
	if f.flows[fl.ID] != fl {
		f.flows[fl.ID] = fl
		f.mutations++
	}
	return ctx.Err()
}

// DeleteFlow implements Mirror.
func (f *Fake) DeleteFlow(ctx context.Context, fl Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.flows[fl.ID]; ok {
		delete(f.flows, fl.ID)
		f.mutations++
	}
	return ctx.Err()
}

// Mutations implements Mirror.
func (f *Fake) Mutations() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mutations
}

// Dump prints the programmed state, one sorted line per object:
//
//	service <id> tap <tap id> -> <device>
//	flow <id> <direction> <source device> -> tap <tap id> [local <device>]
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, s := range f.services {
		lines = append(lines, fmt.Sprintf("service %s tap %d -> %s", s.ID, s.TapID, s.Device))
	}
	for _, fl := range f.flows {
		line := fmt.Sprintf("flow %s %s %s -> tap %d", fl.ID, fl.Direction, fl.SourceDevice, fl.TapID)
		if fl.Local {
			line += " local " + fl.ServiceDevice
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
