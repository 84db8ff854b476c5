package haproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Fake is the in-memory Driver the unit tests share. It renders configs exactly as the
// real one does, keeps them per instance, counts starts and reloads, answers Stats from the
// graph (every checked server UP unless a test says otherwise), lets tests kill an instance,
// and prints its whole state as text (Dump).
type Fake struct {
	// FailOn, when set, is asked before every operation ("ensure", "delete", "stats",
	// "announce") and its error is returned.
	FailOn func(op, id string) error

	mu        sync.Mutex
	stateDir  string
	insts     map[string]*fakeInst
	nextPID   int
	announced []string
}

type fakeInst struct {
	lb      *nsv1.LoadBalancer
	config  []byte
	hash    string
	proc    *Proc
	starts  int
	reloads int
	ensured bool
	servers map[string]Row // pool/member -> row set by SetServer
}

var _ Driver = (*Fake)(nil)

// NewFake returns an empty fake whose configs name files under /fake/lbaas.
func NewFake() *Fake {
	return &Fake{stateDir: "/fake/lbaas", insts: map[string]*fakeInst{}, nextPID: 1000}
}

func (f *Fake) fail(op, id string) error {
	if f.FailOn != nil {
		return f.FailOn(op, id)
	}
	return nil
}

// Ensure implements Driver.
func (f *Fake) Ensure(_ context.Context, in Instance) (State, error) {
	if err := validID(in.ID); err != nil {
		return State{}, err
	}
	cfg, err := Render(in.LB, PathsFor(f.stateDir, in.ID))
	if err != nil {
		return State{}, err
	}
	if err := f.fail("ensure", in.ID); err != nil {
		return State{}, err
	}
	sum := sha256.Sum256(cfg.Text)
	hash := hex.EncodeToString(sum[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	it := f.insts[in.ID]
	if it == nil {
		it = &fakeInst{servers: map[string]Row{}}
		f.insts[in.ID] = it
	}
	adopted := !it.ensured
	it.ensured = true
	it.lb = proto.Clone(in.LB).(*nsv1.LoadBalancer)
	running := it.proc != nil && !it.proc.Exited()
	switch {
	case running && it.hash == hash:
		action := ActionUnchanged
		if adopted {
			action = ActionAdopted
		}
		return State{Action: action, Proc: it.proc, Hash: hash}, nil
	case running:
		it.config, it.hash = cfg.Text, hash
		it.reloads++
		return State{Action: ActionReloaded, Proc: it.proc, Hash: hash}, nil
	}
	it.config, it.hash = cfg.Text, hash
	f.nextPID++
	it.proc = NewProc(f.nextPID)
	it.starts++
	return State{Action: ActionStarted, Proc: it.proc, Hash: hash}, nil
}

// Delete implements Driver.
func (f *Fake) Delete(_ context.Context, id string) error {
	if err := f.fail("delete", id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if it := f.insts[id]; it != nil && it.proc != nil {
		it.proc.Exit(errors.New("stopped"))
	}
	delete(f.insts, id)
	return nil
}

// Stats implements Driver: frontends OPEN, backends UP (DOWN when no server is up),
// servers MAINT when disabled, "no check" without a monitor, UP otherwise, unless SetServer
// said something else.
func (f *Fake) Stats(_ context.Context, id string) (*Stats, error) {
	if err := f.fail("stats", id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	it := f.insts[id]
	if it == nil || it.proc == nil || it.proc.Exited() {
		return nil, fmt.Errorf("instance %s: no stats socket", id)
	}
	st := &Stats{Frontends: map[string]Row{}, Backends: map[string]Row{}, Servers: map[string]map[string]Row{}}
	for _, l := range it.lb.GetListeners() {
		if adminUp(l.AdminStateUp) {
			st.Frontends[l.GetId()] = Row{Status: "OPEN"}
		}
	}
	for _, p := range it.lb.GetPools() {
		servers := map[string]Row{}
		up := false
		checked := p.GetHealthmonitor() != nil && adminUp(p.GetHealthmonitor().AdminStateUp)
		for _, m := range p.GetMembers() {
			w := 1
			if m.Weight != nil {
				w = int(m.GetWeight())
			}
			row := Row{Status: "no check", Weight: w}
			switch {
			case !adminUp(m.AdminStateUp):
				row.Status = "MAINT"
			case checked:
				row.Status, row.CheckStatus = "UP", "L4OK"
			}
			if set, ok := it.servers[p.GetId()+"/"+m.GetId()]; ok {
				row = set
			}
			servers[m.GetId()] = row
			up = up || strings.HasPrefix(row.Status, "UP") || row.Status == "no check"
		}
		st.Servers[p.GetId()] = servers
		if adminUp(p.AdminStateUp) {
			st.Backends[p.GetId()] = Row{Status: map[bool]string{true: "UP", false: "DOWN"}[up]}
		}
	}
	return st, nil
}

// Announce implements Driver; it records "netns device addrs count".
func (f *Fake) Announce(_ context.Context, netns, device string, addrs []net.IP, count int) error {
	if err := f.fail("announce", netns); err != nil {
		return err
	}
	var ips []string
	for _, a := range addrs {
		ips = append(ips, a.String())
	}
	f.mu.Lock()
	f.announced = append(f.announced, fmt.Sprintf("%s %s %s %d", netns, device, strings.Join(ips, ","), count))
	f.mu.Unlock()
	return nil
}

// Prune implements Driver.
func (f *Fake) Prune(_ context.Context, keep func(id string) bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var pruned []string
	for _, id := range sortedIDs(f.insts) {
		if it := f.insts[id]; !it.ensured && !keep(id) {
			if it.proc != nil {
				it.proc.Exit(errors.New("stopped"))
			}
			delete(f.insts, id)
			pruned = append(pruned, id)
		}
	}
	return pruned, nil
}

// AddRunning makes an instance that a previous agent left running with lb's config.
func (f *Fake) AddRunning(lb *nsv1.LoadBalancer) error {
	cfg, err := Render(lb, PathsFor(f.stateDir, lb.GetId()))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(cfg.Text)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	f.insts[lb.GetId()] = &fakeInst{lb: proto.Clone(lb).(*nsv1.LoadBalancer), config: cfg.Text,
		hash: hex.EncodeToString(sum[:]), proc: NewProc(f.nextPID), servers: map[string]Row{}}
	return nil
}

// Kill makes the instance's haproxy exit as if killed; it returns the PID (0 if none ran).
func (f *Fake) Kill(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	it := f.insts[id]
	if it == nil || it.proc == nil {
		return 0
	}
	it.proc.Exit(errors.New("signal: killed"))
	return it.proc.PID
}

// SetServer sets the stats row of one member of one pool.
func (f *Fake) SetServer(id, pool, member string, row Row) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if it := f.insts[id]; it != nil {
		it.servers[pool+"/"+member] = row
	}
}

// Config returns the config an instance runs (nil if none).
func (f *Fake) Config(id string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if it := f.insts[id]; it != nil {
		return slices.Clone(it.config)
	}
	return nil
}

// Counts returns how often an instance was started and reloaded.
func (f *Fake) Counts(id string) (starts, reloads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if it := f.insts[id]; it != nil {
		return it.starts, it.reloads
	}
	return 0, 0
}

// Announced returns the announcements made so far.
func (f *Fake) Announced() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.announced)
}

// Dump prints every instance, sorted by id: a line with its namespace, PID, whether it
// runs, starts and reloads, then its config.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, id := range sortedIDs(f.insts) {
		it := f.insts[id]
		state := "stopped"
		pid := 0
		if it.proc != nil {
			pid = it.proc.PID
			if !it.proc.Exited() {
				state = "running"
			}
		}
		fmt.Fprintf(&b, "instance %s netns %s pid %d %s starts %d reloads %d\n", id, Namespace(id), pid, state, it.starts, it.reloads)
		b.Write(it.config)
	}
	return b.String()
}

func sortedIDs(m map[string]*fakeInst) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
