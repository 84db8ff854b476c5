// Package linkstest helps privileged tests that build hosts and VMs out of network
// namespaces.
package linkstest

import (
	"os/exec"
	"strings"
	"testing"
)

// RemoveNetnsOnCleanup deletes every named network namespace whose name starts with prefix
// when tb ends, also when it fails: the test's hosts and the VM namespaces its agents made.
func RemoveNetnsOnCleanup(tb testing.TB, prefix string) {
	tb.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
				_ = exec.Command("ip", "netns", "del", name).Run()
			}
		}
	})
}
