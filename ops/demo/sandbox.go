package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netsource/netsource/nodes/links"
)

// sandbox is the demo's namespaces: two hosts joined by an underlay veth, as the agent's
// two-host tests build them, and the VM namespaces the agents create for veth ports. Every
// name starts with the prefix, so removal finds them all.
type sandbox struct {
	prefix string
}

func (s sandbox) hostNetns(host string) string {
	if host == HostA {
		return s.prefix + "-a"
	}
	return s.prefix + "-b"
}

// underlayIP is the host's VXLAN tunnel endpoint on the underlay veth.
func underlayIP(host string) string {
	if host == HostA {
		return "198.18.0.1"
	}
	return "198.18.0.2"
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// namespaces lists the named network namespaces whose names start with the prefix and a
// dash (exactly the given names too, when extra is set).
func (s sandbox) namespaces(extra ...string) ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name == "" {
			continue
		}
		if strings.HasPrefix(name, s.prefix+"-") || slices.Contains(extra, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// create makes the two host namespaces and the underlay (198.18.0.1/15 and 198.18.0.2/15
// on eth1, with the multicast route VXLAN's group needs).
func (s sandbox) create() error {
	a, b := s.hostNetns(HostA), s.hostNetns(HostB)
	for _, n := range []string{a, b} {
		if err := ip("netns", "add", n); err != nil {
			return err
		}
		if err := ip("-n", n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	if err := ip("-n", a, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", b); err != nil {
		return err
	}
	for _, h := range []string{HostA, HostB} {
		n := s.hostNetns(h)
		for _, args := range [][]string{
			{"-n", n, "addr", "add", underlayIP(h) + "/15", "dev", "eth1"},
			{"-n", n, "link", "set", "eth1", "up"},
			{"-n", n, "route", "add", "224.0.0.0/4", "dev", "eth1"},
		} {
			if err := ip(args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes the sandbox's namespaces (and the extra ones named, e.g. a load balancer's
// qlbaas-<id>), first stopping by PID the processes that run in them (never this one),
// and drops the agent's ownership markers of the deleted names. It returns what it removed.
func (s sandbox) remove(extra ...string) ([]string, error) {
	names, err := s.namespaces(extra...)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range names {
		stopProcessesIn(n)
		if err := ip("netns", "del", n); err != nil {
			errs = append(errs, err)
			continue
		}
		_ = os.Remove(filepath.Join(links.DefaultMarkerDir, n))
	}
	return names, errors.Join(errs...)
}

// stopProcessesIn sends SIGTERM, then after 2 s SIGKILL, to the processes whose network
// namespace is the named one (as `ip netns pids` lists them), by PID.
func stopProcessesIn(name string) {
	pids := func() []int {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil {
			return nil
		}
		var pids []int
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() && pid > 1 {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	first := pids()
	if len(first) == 0 {
		return
	}
	for _, pid := range first {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && len(pids()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// inNetns runs fn on a thread switched into the named namespace: sockets fn opens belong
// to that namespace whatever thread later uses them. The thread is switched back before it
// is unlocked; if switching back fails it stays locked and the Go runtime discards it.
func inNetns(name string, fn func() error) error {
	return links.InNamedNetns(name, fn)
}

// listenIn opens a TCP listener inside the named namespace.
func listenIn(name, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(name, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil && ln != nil {
		ln.Close()
		return nil, err
	}
	return ln, err
}

// httpGetIn fetches url from inside the named namespace (a VM's view).
func httpGetIn(name, url string) (string, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNetns(name, func() (err error) {
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s", resp.Status)
	}
	return strings.TrimSpace(string(body)), err
}

// backend is a load-balancer member: HTTP on :8080 inside a VM namespace.
type backend struct {
	srv  *http.Server
	done chan struct{}
}

func startBackend(vm VM) (*backend, error) {
	ln, err := listenIn(vm.Netns, ":8080")
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", vm.Name, err)
	}
	b := &backend{done: make(chan struct{}), srv: &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s on %s)\n", vm.Name, vm.IP, vm.Host)
		})}}
	go func() { defer close(b.done); _ = b.srv.Serve(ln) }()
	return b, nil
}

func (b *backend) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	<-b.done
}

// ping checks that one VM reaches another's address (up to a few tries: ARP and the
// VXLAN's learning take a moment).
func ping(fromNetns, addr string) error {
	var err error
	for range 5 {
		var out []byte
		out, err = exec.Command("ip", "netns", "exec", fromNetns, "ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return err
}

// freeAddr returns preferred when it can be listened on, else the same host with a port
// the kernel picks (preferred with port 0 always gets a picked port).
func freeAddr(preferred string) (string, error) {
	if ln, err := net.Listen("tcp", preferred); err == nil {
		addr := ln.Addr().String()
		ln.Close()
		return addr, nil
	}
	host, _, err := net.SplitHostPort(preferred)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", preferred, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
