// Package ovstest runs a private Open vSwitch for tests: an ovsdb-server and an
// ovs-vswitchd (userspace datapath) per simulated host, with their own database, sockets and
// run directory, ovs-vswitchd inside the host's network namespace. Both are started and
// stopped by PID; nothing touches a system OVS.
package ovstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Schema is the Debian location of the Open_vSwitch database schema.
const Schema = "/usr/share/openvswitch/vswitch.ovsschema"

// Instance is one running OVS.
type Instance struct {
	Dir    string // run directory: database, sockets, logs
	DB     string // unix:<Dir>/db.sock
	RunDir string // = Dir
	Netns  string

	tb       testing.TB
	server   *exec.Cmd
	vswitchd *exec.Cmd
	done     map[*exec.Cmd]chan struct{}
}

// Require skips the test unless the OVS programs and the schema are installed.
func Require(tb testing.TB) {
	tb.Helper()
	for _, p := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"} {
		if _, err := exec.LookPath(p); err != nil {
			tb.Skipf("needs Open vSwitch (%s not found; the deps task installs openvswitch-switch)", p)
		}
	}
	if _, err := os.Stat(Schema); err != nil {
		tb.Skipf("needs the Open vSwitch schema %s: %v", Schema, err)
	}
}

// Start runs ovsdb-server and, inside netns, ovs-vswitchd; both stop when the test ends.
func Start(tb testing.TB, netns string) *Instance {
	tb.Helper()
	Require(tb)
	// A short path: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "ovs-"+netns+"-")
	if err != nil {
		tb.Fatal(err)
	}
	o := &Instance{Dir: dir, DB: "unix:" + filepath.Join(dir, "db.sock"), RunDir: dir, Netns: netns, tb: tb,
		done: map[*exec.Cmd]chan struct{}{}}
	tb.Cleanup(o.Stop)
	env := append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_DBDIR="+dir, "OVS_LOGDIR="+dir, "OVS_SYSCONFDIR="+dir)
	if out, err := exec.Command("ovsdb-tool", "create", filepath.Join(dir, "conf.db"), Schema).CombinedOutput(); err != nil {
		tb.Fatalf("ovsdb-tool create: %v\n%s", err, out)
	}
	o.server = exec.Command("ovsdb-server", filepath.Join(dir, "conf.db"), "--remote=punix:"+filepath.Join(dir, "db.sock"),
		"--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"), "--pidfile="+filepath.Join(dir, "ovsdb-server.pid"),
		"--log-file="+filepath.Join(dir, "ovsdb-server.log"), "--no-chdir")
	o.server.Env = env
	o.start(o.server)
	o.waitFor("ovsdb-server", func() error {
		return exec.Command("ovs-vsctl", "--db="+o.DB, "--no-wait", "--timeout=2", "init").Run()
	})
	args := []string{"ovs-vswitchd", o.DB, "--unixctl=" + filepath.Join(dir, "ovs-vswitchd.ctl"),
		"--pidfile=" + filepath.Join(dir, "ovs-vswitchd.pid"), "--log-file=" + filepath.Join(dir, "ovs-vswitchd.log"), "--no-chdir"}
	if netns != "" {
		args = append([]string{"netns", "exec", netns}, args...) // ip execs ovs-vswitchd: same PID
		o.vswitchd = exec.Command("ip", args...)
	} else {
		o.vswitchd = exec.Command(args[0], args[1:]...)
	}
	o.vswitchd.Env = env
	o.start(o.vswitchd)
	o.waitFor("ovs-vswitchd", func() error {
		return exec.Command("ovs-appctl", "-t", filepath.Join(dir, "ovs-vswitchd.ctl"), "version").Run()
	})
	return o
}

func (o *Instance) start(cmd *exec.Cmd) {
	o.tb.Helper()
	if err := cmd.Start(); err != nil {
		o.tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	o.done[cmd] = done
	go func() { _ = cmd.Wait(); close(done) }()
}

func (o *Instance) waitFor(what string, ok func() error) {
	o.tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			o.tb.Fatalf("%s did not come up: %v\n%s", what, err, o.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends one process by its PID: SIGTERM, then SIGKILL after 10 s.
func (o *Instance) stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	done := o.done[cmd]
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Stop stops ovs-vswitchd and ovsdb-server and removes the directory (idempotent). On a
// failed test the logs are printed first.
func (o *Instance) Stop() {
	if o.tb.Failed() && o.Dir != "" {
		o.tb.Logf("open vswitch of %s:\n%s", o.Netns, o.Logs())
	}
	o.stop(o.vswitchd)
	o.stop(o.server)
	if o.Dir != "" {
		_ = os.RemoveAll(o.Dir)
		o.Dir = ""
	}
}

// Logs returns the last lines of the OVS logs.
func (o *Instance) Logs() string {
	var b strings.Builder
	for _, f := range []string{"ovs-vswitchd.log", "ovsdb-server.log"} {
		data, err := os.ReadFile(filepath.Join(o.Dir, f))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", f, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// Vsctl runs ovs-vsctl against this instance.
func (o *Instance) Vsctl(args ...string) (string, error) {
	cmd := exec.Command("ovs-vsctl", append([]string{"--db=" + o.DB, "--timeout=10"}, args...)...)
	out, err := cmd.Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		err = fmt.Errorf("ovs-vsctl %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
	}
	return string(out), err
}

// Ofctl runs ovs-ofctl against this instance's bridges.
func (o *Instance) Ofctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ovs-ofctl", args...)
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+o.RunDir)
	out, err := cmd.Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		err = fmt.Errorf("ovs-ofctl %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
	}
	return string(out), err
}

// MustVsctl is Vsctl failing the test on error.
func (o *Instance) MustVsctl(args ...string) string {
	o.tb.Helper()
	out, err := o.Vsctl(args...)
	if err != nil {
		o.tb.Fatal(err)
	}
	return out
}

// MustOfctl is Ofctl failing the test on error.
func (o *Instance) MustOfctl(args ...string) string {
	o.tb.Helper()
	out, err := o.Ofctl(args...)
	if err != nil {
		o.tb.Fatal(err)
	}
	return out
}

// Flows returns `ovs-ofctl dump-flows --no-stats --no-names` of a bridge (without the
// reply header), one flow per line, sorted, optionally restricted to a cookie/mask.
func (o *Instance) Flows(bridge string, filter ...string) []string {
	o.tb.Helper()
	out := o.MustOfctl(append([]string{"dump-flows", "--no-stats", "--no-names", bridge}, filter...)...)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "cookie=") {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}
