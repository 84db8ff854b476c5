package ovs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Runner runs one Open vSwitch command-line tool (ovs-vsctl, ovs-ofctl, ovs-appctl) and
// returns its standard output. It is the dataplane's only way to OVS.
type Runner interface {
	Run(ctx context.Context, stdin string, tool string, args ...string) (string, error)
}

// ExecRunner runs the tools of one OVS instance: ovs-vsctl talks to DB, and the tools
// that reach ovs-vswitchd (bridge management sockets <RunDir>/<bridge>.mgmt, the unixctl
// socket) find them through OVS_RUNDIR.
type ExecRunner struct {
	DB     string // e.g. unix:/run/openvswitch/db.sock
	RunDir string // e.g. /run/openvswitch
	// VsctlTimeout bounds ovs-vsctl's wait for the database and for ovs-vswitchd to apply
	// a change (seconds; 0: 10).
	VsctlTimeout int
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, stdin string, tool string, args ...string) (string, error) {
	full := args
	if tool == "ovs-vsctl" {
		t := r.VsctlTimeout
		if t == 0 {
			t = 10
		}
		full = append([]string{"--db=" + r.DB, fmt.Sprintf("--timeout=%d", t)}, args...)
	}
	cmd := exec.CommandContext(ctx, tool, full...)
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+r.RunDir)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", tool, shortArgs(args), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// shortArgs is a command line for an error message, cut when long.
func shortArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// quote is an OVSDB string atom as ovs-vsctl parses it.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
