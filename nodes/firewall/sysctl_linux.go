package firewall

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/netsource/netsource/nodes/links"
)

// bridgeSysctls make br_netfilter pass bridged IPv4 and IPv6 packets through the inet
// table's hooks, where conntrack and the security group chains see them. Since Linux 5.3
// they are per network namespace (a new namespace starts with 1, but an operator or a
// container runtime may turn them off), so they are set in the agent's namespace. Without
// them bridged traffic would silently bypass the security groups (Neutron only warns).
var bridgeSysctls = []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"}

// EnsureBridgeNetfilter turns the br_netfilter sysctls on in the named network namespace
// ("" for the caller's own) and returns those it had to change. /proc/sys/net is resolved
// against the namespace of the thread that opens the file, so the files are opened from a
// thread locked into the namespace for just that.
func EnsureBridgeNetfilter(netnsName string) (changed []string, err error) {
	work := func() error {
		for _, name := range bridgeSysctls {
			path := "/proc/sys/" + name
			b, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s is missing: the kernel has no br_netfilter (modprobe br_netfilter), so security groups cannot filter bridged traffic", path)
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			if strings.TrimSpace(string(b)) == "1" {
				continue
			}
			if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
				return fmt.Errorf("set %s=1: %w", strings.ReplaceAll(name, "/", "."), err)
			}
			changed = append(changed, strings.ReplaceAll(name, "/", "."))
		}
		return nil
	}
	if netnsName == "" {
		return changed, work()
	}
	err = InNetns(netnsName, work)
	if err != nil {
		err = fmt.Errorf("netns %q: %w", netnsName, err)
	}
	return changed, err
}

// InNetns runs fn on an OS thread that has entered the named network namespace (see
// links.InNamedNetns); the caller's thread is never switched.
func InNetns(name string, fn func() error) error {
	return links.InNamedNetns(name, fn)
}
