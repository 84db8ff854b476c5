package haproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// NamespacePrefix names the namespace of a load balancer, as Neutron's haproxy driver does.
const NamespacePrefix = "qlbaas-"

// DefaultStateDir is where instances live when the agent config does not say (DESIGN.md).
const DefaultStateDir = "/var/lib/netsource/lbaas"

// Namespace is the network namespace of load balancer id: qlbaas-<id>.
func Namespace(id string) string { return NamespacePrefix + id }

// validID: ids become directory names and namespace names.
func validID(id string) error {
	if id == "" || len(id) > 64 || strings.IndexFunc(id, func(c rune) bool { return !isIDChar(c) }) >= 0 {
		return fmt.Errorf("%w: id %q is not 1-64 of A-Z a-z 0-9 - _", ErrInvalidConfig, id)
	}
	return nil
}

// Errors with a meaning for the caller. Implementations wrap them with context.
var (
	// ErrInvalidConfig: the load balancer cannot be rendered into a safe haproxy config (a
	// value that could inject a directive, an unknown algorithm, ...). Nothing was written;
	// retrying the same graph cannot help.
	ErrInvalidConfig = errors.New("invalid load balancer for haproxy")
	// ErrReloadFailed: haproxy refused the new config at reload; the previous config keeps
	// running (and is on disk again).
	ErrReloadFailed = errors.New("haproxy reload failed")
)

// Instance is the wanted haproxy instance of one load balancer.
type Instance struct {
	ID        string             // load balancer id; haproxy runs in Namespace(ID)
	LB        *nsv1.LoadBalancer // the graph Render turns into the config
	Device    string             // the VIP device inside the namespace
	Addresses []net.IP           // VIP addresses; haproxy binds only once they are usable (IPv6 DAD)
}

// Action says what Ensure did.
type Action string

// Actions of Ensure.
const (
	ActionUnchanged Action = "unchanged" // the running haproxy already had this config
	ActionAdopted   Action = "adopted"   // a haproxy a previous agent started runs this config: left alone
	ActionStarted   Action = "started"   // a new haproxy was started
	ActionReloaded  Action = "reloaded"  // the running haproxy loaded the new config without dropping connections
)

// State is what Ensure reached.
type State struct {
	Action Action
	Proc   *Proc  // the haproxy master process
	Hash   string // sha256 of the running config, hex
}

// Driver is the contract with haproxy on one host: one instance (a master-worker haproxy in
// its own namespace) per load balancer.
//
//   - Ensure renders the load balancer, starts haproxy, reloads it when the config changed,
//     and changes nothing when it is the same (also for a haproxy an earlier agent started).
//   - Delete of a missing instance returns nil.
//   - Prune removes the instances this agent owns that are no longer wanted.
type Driver interface {
	// Ensure makes inst run with exactly the config Render makes of inst.LB. An invalid
	// graph returns an error wrapping ErrInvalidConfig before anything is written.
	Ensure(ctx context.Context, inst Instance) (State, error)
	// Delete stops the instance's haproxy (by PID), deletes its namespace and its state
	// directory. Missing is nil.
	Delete(ctx context.Context, id string) error
	// Stats reads frontends, backends and servers from the instance's stats socket.
	Stats(ctx context.Context, id string) (*Stats, error)
	// Announce sends count gratuitous ARPs for the IPv4 addrs from device in netns: the
	// first before it returns, the others a second apart in the background until ctx ends.
	Announce(ctx context.Context, netns, device string, addrs []net.IP, count int) error
	// Prune deletes every instance of the state directory that keep rejects and that this
	// driver has not ensured since it was created; it returns the ids it deleted.
	Prune(ctx context.Context, keep func(id string) bool) ([]string, error)
}

// Paths are the files of one instance in the agent's state directory.
type Paths struct {
	Dir    string // <state_dir>/<lb id>
	Config string // haproxy.cfg
	PID    string // haproxy.pid: the master's PID
	Stats  string // haproxy.sock: the stats socket (level admin, mode 600)
	Master string // master.sock: the master CLI
	Notify string // notify.sock: haproxy's sd_notify messages (READY=1 after start and reload)
	State  string // server-state: health state carried across reloads
}

// PathsFor returns the paths of instance id under stateDir.
func PathsFor(stateDir, id string) Paths {
	dir := filepath.Join(stateDir, id)
	return Paths{
		Dir:    dir,
		Config: filepath.Join(dir, "haproxy.cfg"),
		PID:    filepath.Join(dir, "haproxy.pid"),
		Stats:  filepath.Join(dir, "haproxy.sock"),
		Master: filepath.Join(dir, "master.sock"),
		Notify: filepath.Join(dir, "notify.sock"),
		State:  filepath.Join(dir, "server-state"),
	}
}

// Proc is a haproxy master process. Done is closed when it exits; Err then says how.
type Proc struct {
	PID  int
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

// NewProc returns a running process record (for drivers and fakes).
func NewProc(pid int) *Proc { return &Proc{PID: pid, done: make(chan struct{})} }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil while it runs).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Exit records the end of the process; only the first call counts.
func (p *Proc) Exit(err error) {
	p.once.Do(func() {
		if err == nil {
			err = errors.New("exited")
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	})
}
