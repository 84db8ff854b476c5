// Package haproxytest drives real traffic through haproxy instances in tests: HTTP servers
// and clients whose sockets live in named network namespaces ("VMs"), in the test process.
//
// A socket belongs to the namespace of the thread that created it and stays there, so each
// socket is created on a fresh goroutine locked to its thread, switched into the namespace
// and back; if switching back fails the goroutine ends locked and the Go runtime discards
// the thread rather than reuse it in the wrong namespace.
package haproxytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netsource/netsource/nodes/links"
)

// InNetns runs fn on a thread inside the named namespace. fn must only create sockets (or
// do other per-call work): it must not start goroutines that expect the namespace.
func InNetns(name string, fn func() error) error {
	return links.InNamedNetns(name, fn)
}

// Listen opens a listening socket inside the named namespace.
func Listen(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNetns(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext dials from inside the named namespace.
func DialContext(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := InNetns(ns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Client is an HTTP client in the named namespace that opens a new connection per request,
// so every request is balanced on its own.
func Client(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialContext(ctx, ns, network, addr)
			},
		},
	}
}

// Get fetches url with c and returns the body, or an error for a status other than 200.
func Get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return strings.TrimSpace(string(body)), nil
}

// Backend is an HTTP server in a namespace that answers its name on every path but
// /healthz, which answers "ok"; it counts the requests that got its name.
type Backend struct {
	Name, Netns, Addr string
	hits              atomic.Int64
	mu                sync.Mutex
	srv               *http.Server
	done              chan struct{}
}

// StartBackend serves on addr (ip:port) in namespace ns.
func StartBackend(ns, addr, name string) (*Backend, error) {
	b := &Backend{Name: name, Netns: ns, Addr: addr}
	return b, b.Start()
}

// Start (re)opens the listener and serves.
func (b *Backend) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return nil
	}
	ln, err := Listen(b.Netns, "tcp", b.Addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", b.Name, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		b.hits.Add(1)
		_, _ = io.WriteString(w, b.Name+"\n")
	})
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	b.done = make(chan struct{})
	srv, done := b.srv, b.done
	go func() {
		_ = srv.Serve(ln)
		close(done)
	}()
	return nil
}

// Stop closes the listener and every connection: the server refuses connections at once.
func (b *Backend) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return
	}
	_ = b.srv.Close()
	<-b.done
	b.srv = nil
}

// Hits is the number of requests answered with the backend's name.
func (b *Backend) Hits() int64 { return b.hits.Load() }

// ResetHits sets the request count to zero.
func (b *Backend) ResetHits() { b.hits.Store(0) }

// KillInstances kills, by PID, the master of every instance under stateDir and its
// workers (the processes whose parent it is): test cleanup that works also when the agent
// or the driver under test is broken.
func KillInstances(stateDir string) {
	pids, _ := filepath.Glob(filepath.Join(stateDir, "*", "haproxy.pid"))
	for _, f := range pids {
		data, _ := os.ReadFile(f)
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 1 {
			continue
		}
		// A stale pid file may name a recycled PID: only a haproxy of this directory dies.
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmd), stateDir) {
			continue
		}
		for _, child := range ChildrenOf(pid) {
			_ = unix.Kill(child, unix.SIGKILL)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// ChildrenOf lists the processes whose parent is pid.
func ChildrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		data, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(data), ')')
		if f := strings.Fields(string(data[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(s))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X'
}

// Reloads asks a haproxy master CLI socket how often the master reloaded (`show proc`).
func Reloads(masterSocket string) (int, error) {
	conn, err := net.DialTimeout("unix", masterSocket, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "show proc\n"); err != nil {
		return 0, err
	}
	_ = conn.(*net.UnixConn).CloseWrite()
	out, err := io.ReadAll(conn)
	if err != nil {
		return 0, err
	}
	for _, ln := range strings.Split(string(out), "\n") {
		if f := strings.Fields(ln); len(f) >= 3 && f[1] == "master" {
			return strconv.Atoi(f[2])
		}
	}
	return 0, fmt.Errorf("show proc: no master in %q", out)
}
