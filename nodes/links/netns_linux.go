package links

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Named network namespaces, as `ip netns add/del` manage them: /run/netns/<name> is a bind
// mount of the namespace file.
//
// Ownership: netsource deletes a peer namespace only if it created it (a marker file
// <markerDir>/<name>, written right after creation) and only when no device other than
// loopback (and the kernel's fallback tunnels) is left in it. A namespace an operator
// made for the port is used but never deleted. Both the marker and the namespace live on
// tmpfs, so they vanish together at reboot.

// onOwnThread runs fn on a goroutine locked to its OS thread, then puts the thread back
// into the namespace it started in before unlocking it. fn may switch the thread's
// namespace (netns.Set, netns.NewNamed); if switching back fails the goroutine ends still
// locked, and the Go runtime then destroys the thread instead of reusing it in the wrong
// namespace. Namespaces are per thread: this is the one place netsource switches them.
func onOwnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer origin.Close()
		ferr := fn()
		if rerr := netns.Set(origin); rerr != nil {
			errc <- errors.Join(ferr, fmt.Errorf("switch thread back to its netns: %w", rerr))
			return // exits locked: the thread is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNetns runs fn on a thread inside ns (sockets fn opens belong to ns).
func InNetns(ns netns.NsHandle, fn func() error) error {
	return onOwnThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}

// InNamedNetns runs fn on a thread inside the named namespace /run/netns/<name>.
func InNamedNetns(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	if err := InNetns(ns, fn); err != nil {
		return fmt.Errorf("in netns %s: %w", name, err)
	}
	return nil
}

// CreateNamedNetns creates /run/netns/<name>, as `ip netns add` does. netns.NewNamed moves
// the calling thread into the new namespace, hence the thread of its own.
func CreateNamedNetns(name string) error {
	return onOwnThread(func() error {
		created, err := netns.NewNamed(name)
		if err == nil {
			created.Close()
		}
		return err
	})
}

// netnsExists reports whether /run/netns/<name> exists.
func netnsExists(name string) (bool, error) {
	_, err := os.Stat(netnsPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// ensurePeerNetns creates the named namespace if missing and marks it as netsource's.
func (n *Netlink) ensurePeerNetns(name string) error {
	ok, err := netnsExists(name)
	if err != nil || ok {
		return err
	}
	if err := n.write(OpNetnsAdd, name, func() error { return CreateNamedNetns(name) }); err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := os.MkdirAll(n.markerDir, 0o755); err != nil {
		return fmt.Errorf("record netns %s as ours: %w", name, err)
	}
	if err := os.WriteFile(n.markerPath(name), nil, 0o644); err != nil {
		return fmt.Errorf("record netns %s as ours: %w", name, err)
	}
	return nil
}

func (n *Netlink) markerPath(name string) string { return filepath.Join(n.markerDir, name) }

// deletePeerNetnsIfEmpty deletes a namespace netsource created once nothing is left in it.
func (n *Netlink) deletePeerNetnsIfEmpty(name string) error {
	if name == "" {
		return nil
	}
	if _, err := os.Stat(n.markerPath(name)); errors.Is(err, fs.ErrNotExist) {
		return nil // not ours
	}
	exists, err := netnsExists(name)
	if err != nil {
		return err
	}
	if exists {
		empty, err := netnsEmpty(name)
		if err != nil || !empty {
			return err
		}
		if err := n.write(OpNetnsDel, name, func() error { return netns.DeleteNamed(name) }); err != nil {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
	}
	if err := os.Remove(n.markerPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget netns %s: %w", name, err)
	}
	return nil
}

// netnsEmpty reports whether a namespace holds only loopback and fallback tunnels.
func netnsEmpty(name string) (bool, error) {
	h, err := openNetnsHandle(name)
	if err != nil {
		return false, err
	}
	defer h.Close()
	links, err := retryDump(h.LinkList)
	if err != nil {
		return false, fmt.Errorf("list links of netns %s: %w", name, err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" && !isFallbackTunnel(l.Attrs().Name) {
			return false, nil
		}
	}
	return true, nil
}

// openNetnsHandle opens a route handle inside the named namespace. The namespace file
// descriptor is closed right away: the handle's sockets keep the namespace reachable.
func openNetnsHandle(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := newHandle(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", name, err)
	}
	return h, nil
}

// SocketIn opens a socket inside ns: a socket belongs to the namespace of the thread that
// created it.
func SocketIn(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	fd := -1
	err := InNetns(ns, func() error {
		var err error
		fd, err = unix.Socket(domain, typ, proto)
		return err
	})
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, err
	}
	return fd, nil
}
