package ovs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netsource/netsource/nodes/links"
)

// Ownership marks in external_ids: netsource=<what> on the interfaces, ports and bridges
// netsource created, netsource-host=<host> on a tunnel to that host.
const (
	extOwner     = "netsource"
	extHost      = "netsource-host"
	ownerPort    = "port"
	ownerTunnel  = "tunnel"
	ownerPatch   = "patch"
	ownerBridge  = "bridge"
	kindNetworkD = "ovs-network" // Inventory kind of a network's local VLAN record
	kindOVSPort  = "ovs-port"    // Inventory kind of a port record whose device is gone
)

// Config configures the OVS dataplane of one host.
type Config struct {
	Netns        string // the agent's namespace ("" for the current one); ovs-vswitchd runs there
	DB           string // ovsdb-server socket, e.g. unix:/run/openvswitch/db.sock
	RunDir       string // ovs-vswitchd's run directory (bridge management sockets)
	DatapathType string // "netdev" (userspace) or "system" (kernel module)
	LocalIP      net.IP // VXLAN tunnel endpoint; nil: no br-tun, no tunnels
	VXLANPort    int    // UDP port of the tunnels (0: 4789)
	L2Population bool   // flood VXLAN networks to the VTEPs SetFDB names only
	// VerifyAfter is how long a bridge's flows, once checked, are trusted to be as
	// programmed when the wanted flows did not change (0: 5 s; negative: always check).
	VerifyAfter time.Duration
	// Runner overrides the command runner (tests).
	Runner Runner
}

// Dataplane is the openvswitch mechanism: links.Dataplane for networks and ports on
// br-int/br-tun/physical bridges, and taas.Mirror for the TaaS pipeline on br-tap. See
// doc.go.
type Dataplane struct {
	cfg Config
	log zerolog.Logger
	run Runner

	ns netns.NsHandle
	h  *netlink.Handle // the agent namespace
	nl *links.Netlink  // the agent namespace through links: link events, veth ports, VM namespaces

	mu       sync.Mutex // guards the fields below
	m        model
	physSeen map[string]bool   // physical bridges whose flows netsource manages
	portNet  map[string]string // port device -> network key (NetworkSpec.Bridge), for link events

	syncs     coalescer           // flow syncs
	verified  map[string]verified // by bridge; guarded by syncs
	snapshots coalescer           // database reads
	lastSnap  *dbSnapshot
	exec      chan struct{} // bounds concurrent ovs-vsctl / ovs-ofctl processes

	mutations atomic.Uint64
}

var _ links.Dataplane = (*Dataplane)(nil)

// New connects to the OVS instance of cfg, creates br-int, br-tap and (with a LocalIP)
// br-tun with their patch ports when missing, loads the records of networks and taps
// netsource keeps in br-int's external_ids, and re-creates the static pipelines
// idempotently: flows that are already right are not touched, and flows netsource does not
// own never are. Close releases the netlink handles.
func New(ctx context.Context, cfg Config, log zerolog.Logger) (*Dataplane, error) {
	if cfg.DatapathType == "" {
		cfg.DatapathType = "netdev"
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = 4789
	}
	if cfg.VerifyAfter == 0 {
		cfg.VerifyAfter = 5 * time.Second
	}
	d := &Dataplane{cfg: cfg, log: log.With().Str("mechanism", "openvswitch").Logger(), run: cfg.Runner,
		physSeen: map[string]bool{}, portNet: map[string]string{},
		exec: make(chan struct{}, maxExec), verified: map[string]verified{}}
	if d.run == nil {
		d.run = ExecRunner{DB: cfg.DB, RunDir: cfg.RunDir}
	}
	var err error
	if cfg.Netns != "" {
		d.ns, err = netns.GetFromName(cfg.Netns)
	} else {
		d.ns, err = netns.Get()
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", cfg.Netns, err)
	}
	if d.h, err = netlink.NewHandleAt(d.ns); err != nil {
		d.Close()
		return nil, fmt.Errorf("open netlink in netns %q: %w", cfg.Netns, err)
	}
	if d.nl, err = links.New(cfg.Netns, log); err != nil {
		d.Close()
		return nil, err
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open vswitch database %s: %w", cfg.DB, err)
	}
	if err := d.ensureBridges(ctx, db); err != nil {
		d.Close()
		return nil, err
	}
	if db, err = d.snapshot(ctx); err != nil {
		d.Close()
		return nil, err
	}
	nets, svcs, flows := records(db.Bridges[BrInt].ExternalIDs)
	d.m = model{nets: nets, svcs: svcs, flows: flows, fdb: map[int]fdbState{}, tunneling: cfg.LocalIP != nil, l2pop: cfg.L2Population}
	for _, n := range nets {
		if n.Phys != "" {
			d.physSeen[n.Phys] = true
		}
	}
	if err := d.sync(ctx); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info().Int("networks", len(nets)).Int("tap_services", len(svcs)).Int("tap_flows", len(flows)).Msg("open vswitch ready")
	return d, nil
}

// Close releases the netlink handles. OVS state stays as it is.
func (d *Dataplane) Close() {
	if d.nl != nil {
		d.nl.Close()
	}
	if d.h != nil {
		d.h.Close()
	}
	if d.ns.IsOpen() {
		_ = d.ns.Close()
	}
}

// Mutations counts database transactions, flow bundles and netlink writes that changed
// something (or tried to).
func (d *Dataplane) Mutations() uint64 {
	n := d.mutations.Load()
	if d.nl != nil {
		n += d.nl.Mutations() // veth pairs and VM namespaces
	}
	return n
}

// maxExec bounds the OVS tool processes running at once: hundreds of actors converging
// together would otherwise open as many database connections.
const maxExec = 8

// tool runs one OVS command-line tool, at most maxExec at a time.
func (d *Dataplane) tool(ctx context.Context, stdin, name string, args ...string) (string, error) {
	select {
	case d.exec <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-d.exec }()
	return d.run.Run(ctx, stdin, name, args...)
}

// vsctl runs a read-only ovs-vsctl command.
func (d *Dataplane) vsctl(ctx context.Context, args ...string) (string, error) {
	return d.tool(ctx, "", "ovs-vsctl", args...)
}

// vsctlWrite runs one ovs-vsctl transaction that changes the database.
func (d *Dataplane) vsctlWrite(ctx context.Context, args ...string) error {
	d.mutations.Add(1)
	_, err := d.tool(ctx, "", "ovs-vsctl", args...)
	d.log.Debug().Strs("args", args).Err(err).Msg("ovs-vsctl write")
	return err
}

// snapshot reads the database. Concurrent callers share a read that started after they
// asked, so each sees every change made before its call (its own ones included).
func (d *Dataplane) snapshot(ctx context.Context) (*dbSnapshot, error) {
	var db *dbSnapshot
	err := d.snapshots.do(func() error {
		out, err := d.vsctl(ctx, snapshotArgs...)
		if err != nil {
			return err
		}
		snap, err := parseSnapshot(out)
		if err != nil {
			return err
		}
		d.lastSnap = snap
		return nil
	}, func() { db = d.lastSnap })
	return db, err
}

// coalescer runs an operation for many concurrent callers: a caller waits for a run that
// started after its call and gets that run's error. Runs never overlap.
type coalescer struct {
	mu      sync.Mutex
	reqGen  atomic.Uint64
	doneGen uint64
	lastErr error
}

// do runs op, or waits for a run that started after the call; read is called with the
// lock held after the run the caller shares (to copy its result).
func (c *coalescer) do(op func() error, read func()) error {
	req := c.reqGen.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doneGen < req {
		start := c.reqGen.Load()
		c.lastErr = op()
		c.doneGen = start
	}
	if read != nil {
		read()
	}
	return c.lastErr
}

// txn collects ovs-vsctl commands into one transaction.
type txn []string

func (t *txn) add(args ...string) {
	*t = append(*t, "--")
	*t = append(*t, args...)
}

func (d *Dataplane) commit(ctx context.Context, t txn) error {
	if len(t) == 0 {
		return nil
	}
	return d.vsctlWrite(ctx, t...)
}

// ensureBridges creates netsource's bridges and patch ports that are missing.
func (d *Dataplane) ensureBridges(ctx context.Context, db *dbSnapshot) error {
	var t txn
	bridge := func(name string) {
		if db.Bridges[name] == nil {
			t.add("add-br", name)
			t.add("set", "Bridge", name, "datapath_type="+d.cfg.DatapathType, "fail_mode=secure",
				"external_ids:"+extOwner+"="+ownerBridge)
		}
	}
	patch := func(br, name, peer string) {
		if p, i := db.portOn(br, name); p != nil && i != nil && i.Type == "patch" && i.Options["peer"] == peer {
			return
		}
		t.add("--may-exist", "add-port", br, name)
		t.add("set", "Interface", name, "type=patch", "options:peer="+peer, "external_ids:"+extOwner+"="+ownerPatch)
	}
	bridge(BrInt)
	bridge(BrTap)
	patch(BrInt, PatchIntToTap, PatchTapToInt)
	patch(BrTap, PatchTapToInt, PatchIntToTap)
	if d.cfg.LocalIP != nil {
		bridge(BrTun)
		patch(BrInt, PatchIntToTun, PatchTunToInt)
		patch(BrTun, PatchTunToInt, PatchIntToTun)
		patch(BrTun, PatchTunToTap, PatchTapToTun)
		patch(BrTap, PatchTapToTun, PatchTunToTap)
	}
	if err := d.commit(ctx, t); err != nil {
		return fmt.Errorf("create bridges: %w", err)
	}
	return nil
}

// sync makes the flows of every bridge netsource uses exactly what the model wants.
// Concurrent callers share a sync: one that started after the caller's change is enough.
func (d *Dataplane) sync(ctx context.Context) error {
	return d.syncs.do(func() error { return d.syncLocked(ctx) }, nil)
}

func (d *Dataplane) syncLocked(ctx context.Context) error {
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	m := d.m
	bridges := []string{BrInt, BrTap}
	if m.tunneling {
		bridges = append(bridges, BrTun)
	}
	for b := range d.physSeen {
		bridges = append(bridges, b)
	}
	want := buildFlows(&m, db)
	d.mu.Unlock()
	slices.Sort(bridges)
	var errs []error
	now := time.Now()
	for _, br := range bridges {
		if db.Bridges[br] == nil {
			continue
		}
		flows := want.list(br)
		text := bundle(nil, flows)
		// A bridge whose wanted flows did not change since they were checked a moment ago
		// is not dumped again: a burst of tap flows touches br-int only. A bridge is compared
		// with OVS again once VerifyAfter has passed (on the next change or the actors'
		// periodic resync), so flows removed by hand come back.
		// A bridge checked a moment ago whose wanted flows changed is not dumped either: what
		// it holds is what was then wanted, so the bundle is computed from that (a burst of
		// sub-ports or tap flows then costs one bundle each, not a dump and a bundle while
		// ovs-vswitchd is busy with the new ports).
		v, recent := d.verified[br]
		recent = recent && now.Sub(v.at) < d.cfg.VerifyAfter
		if recent && v.text == text {
			continue
		}
		var have []Flow
		at := now
		if recent {
			have, at = v.flows, v.at
		}
		if err := d.syncBridge(ctx, br, have, flows); err != nil {
			delete(d.verified, br)
			errs = append(errs, err)
			continue
		}
		d.verified[br] = verified{text: text, flows: flows, at: at}
	}
	return errors.Join(errs...)
}

// verified is what a bridge's netsource flows were last found or made to be, and when.
type verified struct {
	text  string
	flows []Flow
	at    time.Time // when OVS was last dumped: trust expires VerifyAfter later
}

// dumpFlows lists netsource's flows on a bridge (learned flows excluded).
func (d *Dataplane) dumpFlows(ctx context.Context, bridge string) ([]Flow, error) {
	out, err := d.tool(ctx, "", "ovs-ofctl", "-O", "OpenFlow14", "dump-flows", "--no-stats", "--no-names", bridge,
		fmt.Sprintf("cookie=%#x/%#x", cookiePrefix, cookieMask))
	if err != nil {
		return nil, err
	}
	return parseDump(out)
}

// syncBridge applies the difference between a bridge's netsource flows (have; nil: dump
// them) and want in one OpenFlow bundle (all or nothing).
func (d *Dataplane) syncBridge(ctx context.Context, bridge string, have, want []Flow) error {
	if have == nil {
		var err error
		if have, err = d.dumpFlows(ctx, bridge); err != nil {
			return fmt.Errorf("flows of %s: %w", bridge, err)
		}
	}
	dels, adds := diffFlows(have, want)
	if len(dels)+len(adds) == 0 {
		return nil
	}
	d.mutations.Add(1)
	if _, err := d.tool(ctx, bundle(dels, adds), "ovs-ofctl", "--bundle", "add-flows", bridge, "-"); err != nil {
		return fmt.Errorf("program %s (%d deletes, %d adds): %w", bridge, len(dels), len(adds), err)
	}
	if e := d.log.Trace(); e.Enabled() {
		e.Str("bridge", bridge).Str("bundle", bundle(dels, adds)).Msg("flows programmed")
	}
	d.log.Debug().Str("bridge", bridge).Int("deleted", len(dels)).Int("added", len(adds)).Msg("flows programmed")
	return nil
}

// setRecord writes (value != "") or removes a record in br-int's external_ids. Records
// are netsource's own bookkeeping: ovs-vswitchd has nothing to apply, so there is no wait
// for it (--no-wait).
func (d *Dataplane) setRecord(ctx context.Context, key, value string) error {
	if value == "" {
		return d.vsctlWrite(ctx, "--no-wait", "remove", "Bridge", BrInt, "external_ids", quote(key))
	}
	return d.vsctlWrite(ctx, "--no-wait", "set", "Bridge", BrInt, "external_ids:"+quote(key)+"="+quote(value))
}

// networkOf translates a NetworkSpec into a record (without local VLAN).
func networkOf(spec links.NetworkSpec) (netRecord, error) {
	r := netRecord{ID: spec.ID}
	u := spec.Uplink
	switch u.Kind {
	case links.UplinkNone:
		r.Type = typeLocal
	case links.UplinkPhysical:
		r.Type, r.Phys = typeFlat, u.Device
	case links.UplinkVLAN:
		r.Type, r.Phys, r.Seg = typeVLAN, u.Device, u.VLANID
		if u.VLANID < 1 || u.VLANID > 4094 {
			return r, fmt.Errorf("network %s: vlan id %d outside 1-4094", spec.ID, u.VLANID)
		}
	case links.UplinkVXLAN:
		r.Type, r.Seg = typeVXLAN, int(u.VXLAN.VNI)
		if u.VXLAN.VNI < 1 || u.VXLAN.VNI > 1<<24-1 {
			return r, fmt.Errorf("network %s: vni %d outside 1-16777215", spec.ID, u.VXLAN.VNI)
		}
	default:
		return r, fmt.Errorf("network %s: unknown uplink kind %d", spec.ID, u.Kind)
	}
	if spec.ID == "" || strings.ContainsAny(spec.ID, ",= \"") {
		return r, fmt.Errorf("network id %q cannot be recorded", spec.ID)
	}
	return r, nil
}

// EnsureNetwork implements links.Dataplane: the network gets a local VLAN (kept in br-int's
// external_ids, so a restart finds the same one), a provider network its physical bridge's
// patch ports to br-int, and the flows of its type.
func (d *Dataplane) EnsureNetwork(ctx context.Context, spec links.NetworkSpec) error {
	want, err := networkOf(spec)
	if err != nil {
		return err
	}
	if want.Type == typeVXLAN && d.cfg.LocalIP == nil {
		return fmt.Errorf("network %s: vxlan needs vxlan.local_ip (br-tun)", spec.ID)
	}
	if want.Phys != "" {
		if err := d.ensurePhysical(ctx, want.Phys); err != nil {
			return fmt.Errorf("network %s: %w", spec.ID, err)
		}
	}
	d.mu.Lock()
	have, ok := d.m.nets[spec.ID]
	if ok {
		want.LVID = have.LVID
	} else {
		used := map[int]bool{}
		for _, n := range d.m.nets {
			used[n.LVID] = true
		}
		for v := 1; v <= maxLocalVLAN; v++ {
			if !used[v] {
				want.LVID = v
				break
			}
		}
	}
	changed := want.LVID != 0 && (!ok || have != want)
	if changed {
		// Taken at once, under the lock that chose it: networks converge in parallel, and
		// two that both chose before either recorded would share a local VLAN.
		d.m.nets[spec.ID] = want
		if want.Phys != "" {
			d.physSeen[want.Phys] = true
		}
	}
	d.mu.Unlock()
	if want.LVID == 0 {
		return fmt.Errorf("network %s: all %d local VLANs are in use", spec.ID, maxLocalVLAN)
	}
	if changed {
		if err := d.setRecord(ctx, want.key(), want.value()); err != nil {
			d.mu.Lock()
			if ok {
				d.m.nets[spec.ID] = have
			} else {
				delete(d.m.nets, spec.ID)
			}
			d.mu.Unlock()
			return fmt.Errorf("network %s: record local VLAN %d: %w", spec.ID, want.LVID, err)
		}
	}
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("network %s: %w", spec.ID, err)
	}
	return nil
}

// ensurePhysical checks a physical bridge from bridge_mappings and links it to br-int.
func (d *Dataplane) ensurePhysical(ctx context.Context, bridge string) error {
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	if db.Bridges[bridge] == nil {
		return fmt.Errorf("OVS bridge %s of bridge_mappings does not exist (create it and add the physical interface)", bridge)
	}
	onInt, onPhys := physPatchNames(bridge)
	var t txn
	patch := func(br, name, peer string) {
		if p, i := db.portOn(br, name); p != nil && i != nil && i.Type == "patch" && i.Options["peer"] == peer {
			return
		}
		t.add("--may-exist", "add-port", br, name)
		t.add("set", "Interface", name, "type=patch", "options:peer="+peer, "external_ids:"+extOwner+"="+ownerPatch)
	}
	patch(BrInt, onInt, onPhys)
	patch(bridge, onPhys, onInt)
	if err := d.commit(ctx, t); err != nil {
		return fmt.Errorf("patch %s to %s: %w", bridge, BrInt, err)
	}
	return nil
}

// DeleteNetwork implements links.Dataplane: the network's flows and local VLAN go. The
// physical bridge and its patch ports stay (they belong to the physical network).
func (d *Dataplane) DeleteNetwork(ctx context.Context, spec links.NetworkSpec) error {
	return d.forgetNetwork(ctx, spec.ID)
}

func (d *Dataplane) forgetNetwork(ctx context.Context, id string) error {
	d.mu.Lock()
	r, ok := d.m.nets[id]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if err := d.setRecord(ctx, r.key(), ""); err != nil {
		return fmt.Errorf("network %s: forget local VLAN %d: %w", id, r.LVID, err)
	}
	d.mu.Lock()
	delete(d.m.nets, id)
	if r.Type == typeVXLAN {
		delete(d.m.fdb, r.Seg)
	}
	d.mu.Unlock()
	if err := d.sync(ctx); err != nil {
		return fmt.Errorf("network %s: %w", id, err)
	}
	return nil
}

// networkByKey finds the network whose NetworkSpec.Bridge is key.
func (d *Dataplane) networkByKey(key string) (netRecord, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.m.nets {
		if links.BridgeName(n.ID) == key {
			return n, true
		}
	}
	return netRecord{}, false
}

// EnsurePort implements links.Dataplane: the device (a veth made here, or a hypervisor's
// tap) is an access port of br-int tagged with its network's local VLAN, with the
// external_ids the OVS agent's consumers read (iface-id, attached-mac, iface-status).
func (d *Dataplane) EnsurePort(ctx context.Context, spec links.PortSpec) (links.PortState, error) {
	if err := ctx.Err(); err != nil {
		return links.PortState{}, err
	}
	n, ok := d.networkByKey(spec.Bridge)
	if !ok {
		return links.PortState{}, fmt.Errorf("plug port %s: network %s has no local VLAN on this host", spec.ID, spec.Bridge)
	}
	if spec.Binding == links.BindingSubPort {
		return d.ensureSubPort(ctx, spec, n.LVID)
	}
	var dev netlink.Link
	var err error
	switch spec.Binding {
	case links.BindingVeth:
		dev, err = d.ensureVeth(spec)
	default:
		dev, err = lookup(d.h, spec.Device)
		if err == nil && dev == nil {
			err = fmt.Errorf("tap %s: %w", spec.Device, links.ErrDeviceMissing)
		}
	}
	if err == nil {
		err = d.ensureLink(d.h, dev, spec.MTU, spec.AdminUp)
	}
	if err != nil {
		return links.PortState{}, fmt.Errorf("plug port %s (%s) into %s: %w", spec.ID, spec.Device, BrInt, err)
	}
	changed, err := d.plug(ctx, spec, n.LVID)
	if err != nil {
		return links.PortState{}, fmt.Errorf("plug port %s (%s) into %s: %w", spec.ID, spec.Device, BrInt, err)
	}
	d.mu.Lock()
	d.portNet[spec.Device] = spec.Bridge
	taps := len(d.m.flows)+len(d.m.svcs) > 0
	d.mu.Unlock()
	if changed && taps {
		// A re-plugged port has a new OpenFlow port number: mirror flows follow it.
		if err := d.sync(ctx); err != nil {
			return links.PortState{}, err
		}
	}
	if dev, err = lookup(d.h, spec.Device); err != nil || dev == nil {
		return links.PortState{}, fmt.Errorf("plug port %s: %s: %w", spec.ID, spec.Device, links.ErrDeviceMissing)
	}
	return links.PortState{Ifindex: dev.Attrs().Index, OperUp: dev.Attrs().OperState == netlink.OperUp}, nil
}

// plug makes the port's OVS records right; changed reports a write.
func (d *Dataplane) plug(ctx context.Context, spec links.PortSpec, lvid int) (bool, error) {
	db, err := d.snapshot(ctx)
	if err != nil {
		return false, err
	}
	want := map[string]string{"iface-id": spec.ID, "iface-status": "active", extOwner: ownerPort}
	if spec.Binding == links.BindingVeth && spec.Peer.MAC != nil {
		want["attached-mac"] = spec.Peer.MAC.String()
	}
	p, i := db.portOn(BrInt, spec.Device)
	var t txn
	switch {
	case db.Ports[spec.Device] != nil && p == nil:
		return false, fmt.Errorf("%s is a port of bridge %s", spec.Device, db.Ports[spec.Device].Bridge)
	case p != nil && i != nil && i.OFPort < 0:
		// OVS could not open the device (it was missing): add it again.
		t.add("del-port", BrInt, spec.Device)
		p, i = nil, nil
	}
	if p == nil {
		t.add("add-port", BrInt, spec.Device)
	}
	if p == nil || p.Tag != lvid {
		t.add("set", "Port", spec.Device, fmt.Sprintf("tag=%d", lvid))
	}
	var sets []string
	for _, k := range sortedKeys(want) {
		if i == nil || i.ExternalIDs[k] != want[k] {
			sets = append(sets, "external_ids:"+quote(k)+"="+quote(want[k]))
		}
	}
	if len(sets) > 0 {
		t.add(append([]string{"set", "Interface", spec.Device}, sets...)...)
	}
	if len(t) == 0 {
		return false, nil
	}
	return true, d.commit(ctx, t)
}

// DeletePort implements links.Dataplane: the port leaves br-int; a veth pair is deleted
// (and its namespace when netsource made it and it is empty), a tap stays.
func (d *Dataplane) DeletePort(ctx context.Context, spec links.PortSpec) error {
	if spec.Binding == links.BindingSubPort {
		if err := d.deleteSubPort(ctx, spec); err != nil {
			return fmt.Errorf("delete sub-port %s (%s): %w", spec.ID, spec.Device, err)
		}
		return nil
	}
	if err := d.unplug(ctx, spec.Device); err != nil {
		return fmt.Errorf("delete port %s (%s): %w", spec.ID, spec.Device, err)
	}
	d.mu.Lock()
	delete(d.portNet, spec.Device)
	d.mu.Unlock()
	if spec.Binding == links.BindingVeth {
		if err := d.deleteVeth(spec); err != nil {
			return fmt.Errorf("delete port %s (%s): %w", spec.ID, spec.Device, err)
		}
	}
	return nil
}

func (d *Dataplane) unplug(ctx context.Context, device string) error {
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	p := db.Ports[device]
	if p == nil || p.Bridge != BrInt {
		return nil
	}
	i := db.Interfaces[device]
	if i == nil || i.Type != "patch" || !strings.HasPrefix(i.Options["peer"], twinPrefix) {
		return d.vsctlWrite(ctx, "--if-exists", "del-port", BrInt, device)
	}
	// An orphaned trunk sub-port: its twin and the twin's flows go too.
	if err := d.vsctlWrite(ctx, "--if-exists", "del-port", BrInt, device, "--", "--if-exists", "del-port", BrInt, i.Options["peer"]); err != nil {
		return err
	}
	return d.sync(ctx)
}

// SetFDB implements links.Dataplane for l2population: vxlanDevice names the VNI
// (vxlan-<vni>); the tunnels to the entries' VTEPs are created, the network floods to the
// VTEPs of the all-zero MAC only and sends the other MACs straight to their VTEP.
func (d *Dataplane) SetFDB(ctx context.Context, vxlanDevice string, entries []links.FDBEntry) error {
	vni, err := strconv.Atoi(strings.TrimPrefix(vxlanDevice, links.VXLANPrefix))
	if err != nil {
		return fmt.Errorf("fdb of %s: not a vxlan-<vni> name", vxlanDevice)
	}
	st := fdbState{unicast: map[string]string{}}
	vteps := map[string]bool{}
	for _, e := range entries {
		if e.Dst == nil || len(e.MAC) != 6 {
			continue
		}
		ip := e.Dst.String()
		vteps[ip] = true
		if e.MAC.String() == "00:00:00:00:00:00" {
			st.flood = append(st.flood, ip)
		} else {
			st.unicast[e.MAC.String()] = ip
		}
	}
	slices.Sort(st.flood)
	for _, ip := range sortedKeys(vteps) {
		if err := d.ensureTunnel(ctx, "", net.ParseIP(ip)); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.m.fdb[vni] = st
	d.mu.Unlock()
	return d.sync(ctx)
}

// SetTunnelPeer makes a VXLAN tunnel to another host's tunnel endpoint (from its
// heartbeat). A host whose endpoint changed loses the tunnel to its old one. Tunnels are
// never removed otherwise: an agent that stops reporting may come back.
func (d *Dataplane) SetTunnelPeer(ctx context.Context, host string, ip net.IP) error {
	if d.cfg.LocalIP == nil || ip == nil || ip.Equal(d.cfg.LocalIP) {
		return nil
	}
	if err := d.ensureTunnel(ctx, host, ip); err != nil {
		return err
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	var stale []string
	for name, i := range db.Interfaces {
		if i.ExternalIDs[extOwner] == ownerTunnel && i.ExternalIDs[extHost] == host && host != "" && name != TunnelPortName(ip) {
			stale = append(stale, name)
		}
	}
	slices.Sort(stale)
	for _, name := range stale {
		if err := d.vsctlWrite(ctx, "--if-exists", "del-port", BrTun, name); err != nil {
			return fmt.Errorf("remove tunnel %s to the old endpoint of host %s: %w", name, host, err)
		}
	}
	return d.sync(ctx)
}

func (d *Dataplane) ensureTunnel(ctx context.Context, host string, remote net.IP) error {
	if d.cfg.LocalIP == nil {
		return errors.New("tunnels need vxlan.local_ip")
	}
	name := TunnelPortName(remote)
	db, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	want := map[string]string{"remote_ip": remote.String(), "local_ip": d.cfg.LocalIP.String(), "key": "flow",
		"dst_port": strconv.Itoa(d.cfg.VXLANPort)}
	p, i := db.portOn(BrTun, name)
	if p != nil && i != nil && i.Type == "vxlan" && mapsEqual(i.Options, want) && i.ExternalIDs[extOwner] == ownerTunnel &&
		(host == "" || i.ExternalIDs[extHost] == host) {
		return nil
	}
	args := []string{"set", "Interface", name, "type=vxlan"}
	for _, k := range sortedKeys(want) {
		args = append(args, "options:"+k+"="+quote(want[k]))
	}
	args = append(args, "external_ids:"+extOwner+"="+ownerTunnel)
	if host != "" {
		args = append(args, "external_ids:"+extHost+"="+quote(host))
	}
	var t txn
	t.add("--may-exist", "add-port", BrTun, name)
	t.add(args...)
	if err := d.commit(ctx, t); err != nil {
		return fmt.Errorf("tunnel %s to %s: %w", name, remote, err)
	}
	d.log.Info().Str("tunnel", name).Str("remote_ip", remote.String()).Str("peer", host).Msg("tunnel ready")
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Inventory implements links.Dataplane: netsource's port devices (tap*) in the namespace,
// port records on br-int whose device is gone, and one entry per network record (named
// like its NetworkSpec.Bridge, kind ovs-network), so orphan pruning at start also removes
// the local VLAN and flows of networks nothing needs any more.
func (d *Dataplane) Inventory(ctx context.Context) ([]links.Device, error) {
	list, err := d.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []links.Device
	present := map[string]bool{}
	for _, l := range list {
		a := l.Attrs()
		present[a.Name] = true
		if strings.HasPrefix(a.Name, links.TapPrefix) {
			out = append(out, links.Device{Name: a.Name, Kind: l.Type(), Ifindex: a.Index})
		}
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if b := db.Bridges[BrInt]; b != nil {
		for _, name := range b.Ports {
			if i := db.Interfaces[name]; i != nil && i.ExternalIDs[extOwner] == ownerPort && !present[name] {
				out = append(out, links.Device{Name: name, Kind: kindOVSPort})
			}
		}
	}
	d.mu.Lock()
	for _, n := range d.m.nets {
		out = append(out, links.Device{Name: links.BridgeName(n.ID), Kind: kindNetworkD})
	}
	d.mu.Unlock()
	return out, nil
}

// DeleteDevice implements links.Dataplane for orphan pruning: a network record's entry
// forgets the network, a tap* device leaves br-int and is deleted when it is a veth (a
// hypervisor's tap stays). Other names are refused.
func (d *Dataplane) DeleteDevice(ctx context.Context, name string) error {
	d.mu.Lock()
	var netIDs []string
	for _, n := range d.m.nets {
		if links.BridgeName(n.ID) == name {
			netIDs = append(netIDs, n.ID)
		}
	}
	d.mu.Unlock()
	if len(netIDs) > 0 {
		var errs []error
		for _, id := range netIDs {
			errs = append(errs, d.forgetNetwork(ctx, id))
		}
		return errors.Join(errs...)
	}
	if !strings.HasPrefix(name, links.TapPrefix) {
		return fmt.Errorf("refusing to delete %s: not a device netsource owns", name)
	}
	if err := d.unplug(ctx, name); err != nil {
		return err
	}
	l, err := lookup(d.h, name)
	if err != nil || l == nil || l.Type() != "veth" {
		return err
	}
	return d.netlinkWrite("delete "+name, func() error { return d.h.LinkDel(l) })
}

// Watch implements links.Dataplane: the namespace's link events, with a port device's
// master reported as its network's key (a device on br-int has no kernel master with the
// userspace datapath).
func (d *Dataplane) Watch(ctx context.Context) (<-chan links.LinkEvent, error) {
	in, err := d.nl.Watch(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan links.LinkEvent)
	go func() {
		defer close(out)
		for ev := range in {
			d.mu.Lock()
			if key, ok := d.portNet[ev.Name]; ok && !ev.Deleted {
				ev.Master = key
			}
			d.mu.Unlock()
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// DeviceWithAddress returns the device holding ip in the agent namespace, and whether it
// is an OVS bridge's internal port: the userspace datapath sends tunnel packets only
// through OVS bridges, so the tunnel endpoint address must sit on one.
func (d *Dataplane) DeviceWithAddress(ctx context.Context, ip net.IP) (string, bool, error) {
	dev, err := d.nl.DeviceWithAddress(ip)
	if err != nil {
		return "", false, err
	}
	db, err := d.snapshot(ctx)
	if err != nil {
		return dev, false, err
	}
	return dev, db.Bridges[dev] != nil, nil
}
