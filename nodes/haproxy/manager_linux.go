package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options configure a Manager.
type Options struct {
	// Binary is the haproxy executable (a name looked up in PATH, or a path).
	Binary string
	// StateDir holds one directory per instance (<StateDir>/<lb id>). It must be short
	// enough for the unix sockets inside (108 bytes per path).
	StateDir string
	Log      zerolog.Logger
	// ReadyTimeout bounds the wait for a started or reloaded haproxy (default 30 s).
	ReadyTimeout time.Duration
	// StopTimeout is how long a stopping haproxy gets before SIGKILL (default 10 s).
	StopTimeout time.Duration
}

// Manager is the Driver that runs real haproxy processes, each in its load balancer's
// namespace, in master-worker mode:
//
//	ip netns exec qlbaas-<id> haproxy -Ws -f haproxy.cfg -p haproxy.pid -S master.sock,mode,600
//
// The master is a child of the agent (so the agent reaps it and learns when it dies), in its
// own session (so it outlives the agent: a restarted agent adopts it by its pid file). It
// reloads on SIGUSR2 by re-executing itself; since haproxy 1.9 it then hands the listening
// sockets to the new worker over its socketpair (-x sockpair@), so a reload refuses no
// connection, and old workers finish their connections. Readiness is read from facts, never
// waited out: the master CLI answers `show proc` only once the master has bound the
// listeners and forked its worker, and haproxy's sd_notify READY=1 (NOTIFY_SOCKET) wakes the
// waiter; a reload is done when the master's reload counter moved, and failed if its failure
// counter did.
type Manager struct {
	binary, ip   string
	stateDir     string
	log          zerolog.Logger
	readyTimeout time.Duration
	stopTimeout  time.Duration

	mu     sync.Mutex
	insts  map[string]*inst
	closed bool
}

var _ Driver = (*Manager)(nil)

// inst is the agent's record of one instance.
type inst struct {
	mu      sync.Mutex // one operation on the instance at a time
	id      string
	paths   Paths
	ensured bool // Ensure ran since the Manager was created: Prune leaves it alone
	proc    *Proc
	watch   io.Closer // stops watching proc
	notify  *notifier
	out     *outputTail
}

// maxSocketPath is the longest unix socket path haproxy binds: sun_path holds 107 bytes and
// haproxy first binds "<path>.<pid>.tmp" and renames it (haproxy 2.6 says "max 97").
const maxSocketPath = 97

// New checks the binaries and the state directory; it starts nothing.
func New(o Options) (*Manager, error) {
	if o.Binary == "" {
		o.Binary = "haproxy"
	}
	bin, err := exec.LookPath(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("haproxy.binary %q: %w (install the haproxy package)", o.Binary, err)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("ip (iproute2) is needed to run haproxy in a namespace: %w", err)
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if abs, err := filepath.Abs(o.StateDir); err == nil {
		o.StateDir = abs
	}
	if unsafeText(o.StateDir) != "" {
		return nil, fmt.Errorf("haproxy.state_dir %q: want a path without whitespace, #, quotes or backslashes", o.StateDir)
	}
	if longest := PathsFor(o.StateDir, strings.Repeat("x", 36)).Stats; len(longest) > maxSocketPath {
		return nil, fmt.Errorf("haproxy.state_dir %q is too long: socket paths like %s exceed %d bytes", o.StateDir, longest, maxSocketPath)
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	return &Manager{binary: bin, ip: ip, stateDir: filepath.Clean(o.StateDir), log: o.Log,
		readyTimeout: o.ReadyTimeout, stopTimeout: o.StopTimeout, insts: map[string]*inst{}}, nil
}

// StateDir is where the instances live.
func (m *Manager) StateDir() string { return m.stateDir }

// Paths returns the files of instance id.
func (m *Manager) Paths(id string) Paths { return PathsFor(m.stateDir, id) }

// Close stops watching processes and reading their output. The haproxy processes keep
// running: a restarted agent adopts them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	insts := make([]*inst, 0, len(m.insts))
	for _, it := range m.insts {
		insts = append(insts, it)
	}
	m.mu.Unlock()
	for _, it := range insts {
		it.mu.Lock()
		it.release()
		it.mu.Unlock()
	}
}

// release drops what the agent holds of an instance (watchers, sockets, pipes).
func (it *inst) release() {
	if it.watch != nil {
		_ = it.watch.Close()
		it.watch = nil
	}
	if it.notify != nil {
		it.notify.close()
		it.notify = nil
	}
	if it.out != nil {
		it.out.close()
		it.out = nil
	}
}

// lock returns the locked record of id, creating it.
func (m *Manager) lock(id string) (*inst, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("haproxy manager is closed")
	}
	it := m.insts[id]
	if it == nil {
		it = &inst{id: id, paths: m.Paths(id)}
		m.insts[id] = it
	}
	m.mu.Unlock()
	it.mu.Lock()
	return it, nil
}

// Ensure implements Driver.
func (m *Manager) Ensure(ctx context.Context, in Instance) (State, error) {
	it, err := m.lock(in.ID)
	if err != nil {
		return State{}, err
	}
	defer it.mu.Unlock()
	it.ensured = true
	cfg, err := Render(in.LB, it.paths)
	if err != nil {
		return State{}, err
	}
	sum := sha256.Sum256(cfg.Text)
	hash := hex.EncodeToString(sum[:])
	ns := Namespace(in.ID)

	action := ActionUnchanged
	proc, err := m.running(it, ns)
	if err != nil {
		return State{}, err
	}
	if proc == nil {
		if proc = m.adopt(it, ns); proc != nil {
			action = ActionAdopted
		}
	}
	if proc != nil && fileHash(it.paths.Config) == hash {
		return State{Action: action, Proc: proc, Hash: hash}, nil
	}

	if err := os.MkdirAll(it.paths.Dir, 0o700); err != nil {
		return State{}, fmt.Errorf("state directory of %s: %w", in.ID, err)
	}
	if err := it.listenNotify(); err != nil {
		return State{}, err
	}
	next := it.paths.Config + ".new"
	if err := writeFile(next, cfg.Text); err != nil {
		return State{}, err
	}
	defer os.Remove(next)
	if err := m.check(ctx, next); err != nil {
		return State{}, err
	}
	if err := waitUsable(ctx, ns, in.Device, in.Addresses); err != nil {
		return State{}, fmt.Errorf("VIP of %s: %w", in.ID, err)
	}
	if proc != nil {
		if err := m.reload(ctx, it, proc, next, cfg); err != nil {
			return State{}, err
		}
		return State{Action: ActionReloaded, Proc: proc, Hash: hash}, nil
	}
	if proc, err = m.start(ctx, it, ns, next); err != nil {
		return State{}, err
	}
	return State{Action: ActionStarted, Proc: proc, Hash: hash}, nil
}

// running returns the instance's live haproxy the agent knows of, stopping one that no
// longer runs in the namespace of that name (deleted and re-created by hand).
func (m *Manager) running(it *inst, ns string) (*Proc, error) {
	p := it.proc
	if p == nil || p.Exited() {
		it.proc = nil
		return nil, nil
	}
	if owned(p.PID, it.paths.Config, ns) {
		return p, nil
	}
	m.log.Warn().Str("loadbalancer", it.id).Int("pid", p.PID).Msg("haproxy no longer runs in its namespace; restarting it")
	if err := m.stop(it, p); err != nil {
		return nil, err
	}
	return nil, nil
}

// adopt takes over a haproxy a previous agent started: the pid in the pid file is alive,
// runs our config file, and is in the instance's namespace.
func (m *Manager) adopt(it *inst, ns string) *Proc {
	data, err := os.ReadFile(it.paths.PID)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 || !owned(pid, it.paths.Config, ns) {
		return nil
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil
	}
	// Checked again now that the pidfd pins the process: the pid cannot be reused any more.
	if !owned(pid, it.paths.Config, ns) {
		_ = unix.Close(fd)
		return nil
	}
	p := NewProc(pid)
	w, err := watchPidfd(fd, p, nil)
	if err != nil {
		return nil
	}
	it.release()
	it.proc, it.watch = p, w
	m.log.Info().Str("loadbalancer", it.id).Int("pid", pid).Msg("adopted running haproxy")
	return p
}

// owned reports whether pid is a live haproxy with config file cfg in namespace ns.
func owned(pid int, cfg, ns string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// State is the field after the command in parentheses; Z and X are dead.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	found := false
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-f" && args[i+1] == cfg {
			found = true
		}
	}
	if !found {
		return false
	}
	var have, want unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &have) != nil || unix.Stat(filepath.Join("/run/netns", ns), &want) != nil {
		return false
	}
	return have.Ino == want.Ino && have.Dev == want.Dev
}

// check runs `haproxy -c` on a config file.
func (m *Manager) check(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, m.binary, "-c", "-q", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: haproxy -c: %v: %s", ErrInvalidConfig, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// start launches the master in the namespace and waits until it serves.
func (m *Manager) start(ctx context.Context, it *inst, ns, next string) (*Proc, error) {
	it.release()
	if err := it.listenNotify(); err != nil {
		return nil, err
	}
	// A fresh process starts without saved health state, and without sockets a dead
	// process left (nothing would answer on them).
	for _, stale := range []string{it.paths.Stats, it.paths.Master} {
		_ = os.Remove(stale)
	}
	if err := writeFile(it.paths.State, []byte("1\n")); err != nil {
		return nil, err
	}
	if err := os.Rename(next, it.paths.Config); err != nil {
		return nil, fmt.Errorf("install config of %s: %w", it.id, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(m.ip, "netns", "exec", ns, m.binary, "-Ws", "-f", it.paths.Config, "-p", it.paths.PID,
		"-S", it.paths.Master+",mode,600")
	cmd.Dir = it.paths.Dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NOTIFY_SOCKET=" + it.paths.Notify}
	cmd.Stdout, cmd.Stderr = w, w
	// Its own session: signals to the agent's process group (Ctrl-C) do not reach haproxy.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("start haproxy for %s: %w", it.id, err)
	}
	// `ip netns exec` execs haproxy: the child's pid is the master's.
	p := NewProc(cmd.Process.Pid)
	it.out = readOutput(r, m.log.With().Str("loadbalancer", it.id).Int("pid", p.PID).Logger())
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err == nil {
		it.watch, err = watchPidfd(fd, p, cmd)
	}
	if err != nil {
		// No pidfd (kernel < 5.3): a goroutine blocked in wait does the same.
		go func() { p.Exit(exitErr(cmd.Wait())) }()
	}
	it.proc = p
	readyCtx, cancel := context.WithTimeout(ctx, m.readyTimeout)
	defer cancel()
	if _, err := m.waitReady(readyCtx, it, p, 0); err != nil {
		_ = m.stop(it, p)
		return nil, fmt.Errorf("start haproxy for %s: %w", it.id, err)
	}
	m.log.Info().Str("loadbalancer", it.id).Int("pid", p.PID).Msg("haproxy started")
	return p, nil
}

// reload makes the master load the new config (SIGUSR2), keeping the health state of
// unchanged servers. On failure the old config is put back: it is what still runs.
func (m *Manager) reload(ctx context.Context, it *inst, p *Proc, next string, cfg *Config) error {
	readyCtx, cancel := context.WithTimeout(ctx, m.readyTimeout)
	defer cancel()
	// The master CLI can refuse or reset a connection while the master re-executes itself
	// (its socket is bound anew each time): wait for an answer rather than fail.
	before, err := m.waitReady(readyCtx, it, p, 0)
	if err != nil {
		return fmt.Errorf("reload haproxy for %s: master CLI: %w", it.id, err)
	}
	if state, err := query(readyCtx, it.paths.Stats, "show servers state"); err == nil {
		if err := writeFile(it.paths.State, filterServerState(state, cfg.Servers)); err != nil {
			return err
		}
	} else {
		m.log.Warn().Err(err).Str("loadbalancer", it.id).Msg("cannot save server state before reload; health checks restart")
	}
	old, _ := os.ReadFile(it.paths.Config)
	if err := os.Rename(next, it.paths.Config); err != nil {
		return fmt.Errorf("install config of %s: %w", it.id, err)
	}
	restore := func() {
		if old != nil {
			_ = writeFile(it.paths.Config, old)
		}
	}
	it.notify.drain()
	if err := unix.Kill(p.PID, unix.SIGUSR2); err != nil {
		restore()
		return fmt.Errorf("reload haproxy for %s: signal pid %d: %w", it.id, p.PID, err)
	}
	after, err := m.waitReady(readyCtx, it, p, before.reloads+1)
	if err != nil {
		restore()
		return fmt.Errorf("reload haproxy for %s: %w", it.id, err)
	}
	if after.failed > before.failed {
		restore()
		return fmt.Errorf("%w for %s: %s", ErrReloadFailed, it.id, it.out.text())
	}
	m.log.Info().Str("loadbalancer", it.id).Int("pid", p.PID).Int("reloads", after.reloads).Msg("haproxy reloaded")
	return nil
}

func (m *Manager) showProc(ctx context.Context, it *inst) (procInfo, error) {
	out, err := query(ctx, it.paths.Master, "show proc")
	if err != nil {
		return procInfo{}, err
	}
	return parseShowProc(out)
}

// waitReady waits until the master answers with a worker and at least minReloads reloads.
// haproxy's READY=1 notification wakes it; a slow tick covers a lost datagram.
func (m *Manager) waitReady(ctx context.Context, it *inst, p *Proc, minReloads int) (procInfo, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if info, err := m.showProc(ctx, it); err == nil && info.reloads >= minReloads && len(info.workers) > 0 {
			return info, nil
		}
		select {
		case <-p.Done():
			return procInfo{}, fmt.Errorf("haproxy (pid %d) exited: %v: %s", p.PID, p.Err(), it.out.text())
		case <-it.notify.readyChan():
		case <-tick.C:
		case <-ctx.Done():
			return procInfo{}, fmt.Errorf("haproxy (pid %d) not ready: %w: %s", p.PID, ctx.Err(), it.out.text())
		}
	}
}

// Delete implements Driver.
func (m *Manager) Delete(ctx context.Context, id string) error {
	it, err := m.lock(id)
	if err != nil {
		return err
	}
	defer it.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.insts, id)
		m.mu.Unlock()
	}()
	ns := Namespace(id)
	p, err := m.running(it, ns)
	if err != nil {
		return err
	}
	if p == nil {
		p = m.adopt(it, ns)
	}
	if p != nil {
		if err := m.stop(it, p); err != nil {
			return err
		}
	}
	it.release()
	var errs []error
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", ns, err))
		}
	}
	if err := os.RemoveAll(it.paths.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove state of %s: %w", id, err))
	}
	return errors.Join(errs...)
}

// stop ends a master by its PID: SIGTERM (the master stops its workers), SIGKILL after
// StopTimeout; workers still there afterwards are killed by PID too.
func (m *Manager) stop(it *inst, p *Proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	info, _ := m.showProc(ctx, it)
	cancel()
	if err := unix.Kill(p.PID, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop haproxy pid %d: %w", p.PID, err)
	}
	select {
	case <-p.Done():
	case <-time.After(m.stopTimeout):
		_ = unix.Kill(p.PID, unix.SIGKILL)
		select {
		case <-p.Done():
		case <-time.After(m.stopTimeout):
			return fmt.Errorf("haproxy pid %d did not exit after SIGKILL", p.PID)
		}
	}
	for _, w := range append(info.workers, info.oldWorkers...) {
		if owned(w, it.paths.Config, Namespace(it.id)) {
			_ = unix.Kill(w, unix.SIGKILL)
		}
	}
	if it.proc == p {
		it.proc = nil
	}
	m.log.Info().Str("loadbalancer", it.id).Int("pid", p.PID).Msg("haproxy stopped")
	return nil
}

// Stats implements Driver.
func (m *Manager) Stats(ctx context.Context, id string) (*Stats, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	out, err := query(ctx, m.Paths(id).Stats, StatsCommand)
	if err != nil {
		return nil, err
	}
	return ParseStats(bytes.NewReader(out))
}

// Prune implements Driver. Only the state directory says what this agent owns: a
// qlbaas-* namespace without a directory may be another agent's on the same machine.
func (m *Manager) Prune(ctx context.Context, keep func(id string) bool) ([]string, error) {
	entries, err := os.ReadDir(m.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", m.stateDir, err)
	}
	var pruned []string
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || validID(id) != nil || keep(id) {
			continue
		}
		m.mu.Lock()
		ensured := m.insts[id] != nil && m.insts[id].ensured
		m.mu.Unlock()
		if ensured {
			continue
		}
		m.log.Info().Str("loadbalancer", id).Msg("removing orphan haproxy instance")
		if err := m.Delete(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, id)
	}
	return pruned, errors.Join(errs...)
}

// Instances lists the instance directories (for tests and operators).
func (m *Manager) Instances() ([]string, error) {
	entries, err := os.ReadDir(m.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, err
}

// watchPidfd turns a pidfd's readability (the process exited) into p.Exit, through the
// runtime's poller: no thread blocks per process. For a child, cmd reaps it and gives the
// exit status. Closing the returned Closer stops watching.
func watchPidfd(fd int, p *Proc, cmd *exec.Cmd) (io.Closer, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", p.PID))
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	go func() {
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(pfd, 0)
			return n > 0
		})
		if err != nil {
			if cmd != nil {
				// Not watched any more, but the child must still be reaped.
				go func() { _ = cmd.Wait() }()
			}
			return // closed: the agent stops
		}
		if cmd != nil {
			p.Exit(exitErr(cmd.Wait()))
		} else {
			p.Exit(errors.New("exited (not a child of this agent: exit status unknown)"))
		}
		_ = f.Close()
	}()
	return f, nil
}

func exitErr(err error) error {
	if err == nil {
		return errors.New("exited with status 0")
	}
	return err
}

// fileHash is the sha256 of a file, "" when unreadable.
func fileHash(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// writeFile writes atomically: a temporary file renamed over path.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// notifier receives haproxy's sd_notify datagrams; ready gets a token for each READY=1.
type notifier struct {
	conn  *net.UnixConn
	ready chan struct{}
}

func (it *inst) listenNotify() error {
	if it.notify != nil {
		return nil
	}
	_ = os.Remove(it.paths.Notify)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: it.paths.Notify, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket of %s: %w", it.id, err)
	}
	_ = os.Chmod(it.paths.Notify, 0o600)
	n := &notifier{conn: conn, ready: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			if bytes.Contains(buf[:k], []byte("READY=1")) {
				select {
				case n.ready <- struct{}{}:
				default:
				}
			}
		}
	}()
	it.notify = n
	return nil
}

// readyChan is nil (never ready) without a notifier.
func (n *notifier) readyChan() <-chan struct{} {
	if n == nil {
		return nil
	}
	return n.ready
}

func (n *notifier) drain() {
	if n == nil {
		return
	}
	select {
	case <-n.ready:
	default:
	}
}

func (n *notifier) close() { _ = n.conn.Close() }

// outputTail logs what haproxy prints and keeps the last lines for error messages.
type outputTail struct {
	r     *os.File
	mu    sync.Mutex
	lines []string
}

const tailLines = 20

func readOutput(r *os.File, log zerolog.Logger) *outputTail {
	t := &outputTail{r: r}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ln := sc.Text()
			log.Debug().Str("output", ln).Msg("haproxy")
			t.mu.Lock()
			t.lines = append(t.lines, ln)
			if len(t.lines) > tailLines {
				t.lines = t.lines[len(t.lines)-tailLines:]
			}
			t.mu.Unlock()
		}
	}()
	return t
}

// text is the kept output, alerts first.
func (t *outputTail) text() string {
	if t == nil {
		return "(no output captured)"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var alerts []string
	for _, ln := range t.lines {
		if strings.Contains(ln, "[ALERT]") {
			alerts = append(alerts, ln)
		}
	}
	if len(alerts) > 0 {
		return strings.Join(alerts, "; ")
	}
	return strings.Join(t.lines, "; ")
}

func (t *outputTail) close() { _ = t.r.Close() }
