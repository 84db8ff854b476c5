package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/netsource/netsource/streams/natstest"
)

var stdoutMu sync.Mutex

// runCLI runs the netsource command in-process and returns what it printed on stdout.
func runCLI(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&out, r); close(done) }()
	root := newRootCmd()
	root.SetArgs(append([]string{"--nats", url, "--log-level", "error"}, args...))
	runErr := root.Execute()
	os.Stdout = saved
	w.Close()
	<-done
	return out.String(), runErr
}

func startServer(t *testing.T) string {
	return natstest.StartAt(t, t.TempDir(), "127.0.0.1:-1").NS.ClientURL()
}

func TestApplyGetDelete(t *testing.T) {
	url := startServer(t)
	out, err := runCLI(t, url, "apply", "-f", "../../examples/topology.yaml")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if n := strings.Count(out, " created"); n != 10 {
		t.Fatalf("apply printed %d created lines, want 10:\n%s", n, out)
	}
	out, err = runCLI(t, url, "apply", "-f", "../../examples/topology.yaml", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var changes []changeView
	if err := json.Unmarshal([]byte(out), &changes); err != nil || len(changes) != 10 || changes[0].Action != "unchanged" {
		t.Fatalf("second apply -o json: %v %s", err, out)
	}
	// get -o yaml prints a topology file that apply accepts (and finds unchanged).
	out, err = runCLI(t, url, "get", "ports", "-o", "yaml")
	if err != nil || !strings.Contains(out, "mac_address: fa:16:3e:00:00:01") {
		t.Fatalf("get ports -o yaml: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "ports.yaml")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err = runCLI(t, url, "apply", "-f", file); err != nil || strings.Count(out, "unchanged") != 4 {
		t.Fatalf("apply of get output: %v\n%s", err, out)
	}
	if out, err = runCLI(t, url, "delete", "loadbalancer", "5e6f7081-0000-4000-8000-000000000001"); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, _ = runCLI(t, url, "get", "loadbalancers"); strings.Contains(out, "5e6f7081") {
		t.Fatalf("deleted load balancer still listed:\n%s", out)
	}
}

func TestApplyInvalidNamesFileObjectField(t *testing.T) {
	url := startServer(t)
	data, err := os.ReadFile("../../examples/topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(data), "mac_address: fa:16:3e:00:00:02", "mac_address: zz:16:3e:00:00:02", 1)
	file := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, url, "apply", "-f", file)
	if err == nil {
		t.Fatal("invalid file applied")
	}
	for _, want := range []string{file, "nothing published", "ports[1].mac_address", `"zz:16:3e:00:00:02"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if out, _ := runCLI(t, url, "get", "networks"); strings.Contains(out, "6a0e4b8e") {
		t.Fatal("something was published from an invalid file")
	}
}

func TestWaitTimesOutWithExitCode2(t *testing.T) {
	url := startServer(t)
	if _, err := runCLI(t, url, "apply", "-f", "../../examples/topology.yaml"); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, url, "wait", "port", "3d4e5f60-0000-4000-8000-000000000001", "--phase", "ACTIVE", "--timeout", "300ms")
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 2 {
		t.Fatalf("wait without an agent: %v, want exit code 2", err)
	}
}

func TestAgentRefusesBadConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	cfg := "host: hostA\nphysical_interface_mappings: {physnet1: this-name-is-too-long}\nvxlan: {local_ip: 198.18.0.1, udp_port: 0x}\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "nats://127.0.0.1:1", "agent", "--config", file)
	if err == nil || !strings.Contains(err.Error(), "udp_port") {
		t.Fatalf("agent with a malformed config: %v", err)
	}
	cfg = "host: hostA\nphysical_interface_mappings: {physnet1: this-name-is-too-long}\nvxlan: {local_ip: 198.18.0.1}\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "nats://127.0.0.1:1", "agent", "--config", file)
	if err == nil || !strings.Contains(err.Error(), "Parsing physical_interface_mappings failed: physnet1") {
		t.Fatalf("agent with an invalid mapping: %v", err)
	}
}
