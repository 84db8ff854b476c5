// Package taas is netsource's contract for Tap-as-a-Service on one host: mirroring the
// traffic of a source port into a tap service port, on the same host or across hosts.
//
// The tap actors never touch OVS or tc themselves. They resolve a tap service's tap id
// through a Directory and call a Mirror, which is idempotent like every netsource
// dataplane contract:
//
//   - EnsureService and EnsureFlow compare what is wanted with what is programmed and
//     change only the difference; calling them again changes nothing (Mutations does not
//     move).
//   - DeleteService and DeleteFlow of something already gone return nil.
//
// Two Mirrors exist: the OVS one (nodes/ovs: the TaaS br-tap pipeline, local and remote
// mirroring over the tunnels) and the tc one (nodes/tc: clsact + u32 + mirred on the
// source port's device, local mirroring on Linux bridge hosts). Fake is an in-memory
// Mirror whose Dump prints the state as sorted text for tests.
//
// A Directory allocates each tap service's tap id (the TaaS taas_id: the mirror VLAN on
// br-int/br-tap and the tunnel key between hosts) without collisions, releases it when the
// service is deleted, and lets every host look it up. KV keeps it in a JetStream key-value
// bucket shared by all agents; Memory is the same contract inside one process (tests, and
// hosts whose mechanism mirrors only locally).
package taas

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Tap ids come from TaaS's default [taas] vlan_range_start..vlan_range_end: 3900 up to but
// not including 4000, so 100 tap services. VXLAN networks must not use these VNIs: the
// tunnel key of a mirrored frame is its tap id.
const (
	FirstTapID = 3900
	EndTapID   = 4000
)

// Direction is what a tap flow mirrors, as TaaS defines it from the VM's point of view.
type Direction string

// Directions.
const (
	// DirectionIn mirrors the traffic entering the VM (network → VM).
	DirectionIn Direction = "IN"
	// DirectionOut mirrors the traffic leaving the VM (VM → network).
	DirectionOut Direction = "OUT"
	// DirectionBoth mirrors both.
	DirectionBoth Direction = "BOTH"
)

// In reports whether d mirrors traffic entering the VM.
func (d Direction) In() bool { return d == DirectionIn || d == DirectionBoth }

// Out reports whether d mirrors traffic leaving the VM.
func (d Direction) Out() bool { return d == DirectionOut || d == DirectionBoth }

// ParseDirection accepts IN, OUT and BOTH (any case).
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(strings.ToUpper(s)); d {
	case DirectionIn, DirectionOut, DirectionBoth:
		return d, nil
	}
	return "", fmt.Errorf("direction %q: want IN, OUT or BOTH", s)
}

// Service is a tap service as a Mirror sees it on the host of its port.
type Service struct {
	ID     string // tap service id
	TapID  int    // from the Directory
	PortID string // the port that receives the copies
	Device string // its device on this host: tap<port id[:11]>
}

// Flow is a tap flow as a Mirror sees it on the host of its source port.
type Flow struct {
	ID            string
	ServiceID     string
	TapID         int    // the service's tap id, from the Directory
	Local         bool   // the service's port is on this host
	ServiceDevice string // the service port's device when Local
	SourcePortID  string
	SourceDevice  string // tap<source port id[:11]>
	Direction     Direction
	VLANFilter    string // accepted; not applied by the OVS or tc mirrors (as TaaS's OVS driver)
}

// Errors with a meaning for the tap actors. Mirrors wrap them with context.
var (
	// ErrPortMissing: a port the object needs is not plugged on this host yet; the actor
	// waits (BUILD) and tries again.
	ErrPortMissing = errors.New("port is not plugged on this host")
	// ErrRemoteUnsupported: the mirror cannot reach a tap service on another host (the tc
	// mirror of Linux bridge hosts mirrors locally only).
	ErrRemoteUnsupported = errors.New("mirroring to a tap service on another host needs the openvswitch mechanism")
	// ErrExhausted: every tap id is taken (TaaS's TapServiceLimitReached).
	ErrExhausted = fmt.Errorf("all %d tap ids (%d-%d) are in use", EndTapID-FirstTapID, FirstTapID, EndTapID-1)
	// ErrUnknownService: the Directory has no tap id for this service (yet).
	ErrUnknownService = errors.New("tap service has no tap id")
)

// Mirror programs mirroring on one host. Every method is safe for concurrent use.
type Mirror interface {
	// EnsureService makes the service's port receive what is mirrored with its tap id, from
	// this host and (OVS) from other hosts' tunnels. A port not plugged yet returns an error
	// wrapping ErrPortMissing.
	EnsureService(ctx context.Context, s Service) error
	// DeleteService removes everything EnsureService installed for s.
	DeleteService(ctx context.Context, s Service) error
	// EnsureFlow mirrors the source port's traffic of the flow's direction to its service.
	// A source port not plugged yet wraps ErrPortMissing.
	EnsureFlow(ctx context.Context, f Flow) error
	// DeleteFlow stops the flow's mirroring. Only ID (and for tc the devices) must be set:
	// a restarted agent deletes flows whose service is already gone.
	DeleteFlow(ctx context.Context, f Flow) error
	// Mutations counts the dataplane changes made so far.
	Mutations() uint64
}

// ServiceInfo is what the Directory knows about a tap service.
type ServiceInfo struct {
	ServiceID string `json:"service_id"`
	Host      string `json:"host"`
	PortID    string `json:"port_id"`
	TapID     int    `json:"tap_id"`
}

// Directory allocates tap ids and tells every host which service has which. Safe for
// concurrent use.
type Directory interface {
	// Allocate returns the service's tap id, allocating the lowest free one the first time.
	// Calling it again for the same service returns the same id (and updates host and port).
	Allocate(ctx context.Context, s ServiceInfo) (ServiceInfo, error)
	// Release frees the service's tap id. Releasing an unknown service is nil.
	Release(ctx context.Context, serviceID string) error
	// Lookup returns what is known about a service, from a local cache: it never blocks.
	Lookup(serviceID string) (ServiceInfo, bool)
	// Subscribe calls fn (on the directory's goroutine; fn must not block) with the id of
	// every service whose entry appears, changes or goes. cancel stops the calls.
	Subscribe(fn func(serviceID string)) (cancel func())
}
