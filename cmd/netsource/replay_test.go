package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/replay/replaytest"
	"github.com/netsource/netsource/topology"
)

// replayServer starts a server and imports the scripted history into it with the CLI.
func replayServer(t *testing.T) (url, file string) {
	t.Helper()
	url, file = startServer(t), replaytest.WriteFile(t)
	out, err := runCLI(t, url, "replay", "import", file)
	if err != nil || !strings.Contains(out, "imported 214 desired messages (sequences 1-214)") {
		t.Fatalf("replay import: %v\n%s", err, out)
	}
	return url, file
}

// TestReplayFileAnswersAsServer: every replay command prints the same from the file as from
// the server holding the same history.
func TestReplayFileAnswersAsServer(t *testing.T) {
	url, file := replayServer(t)
	end := replaytest.Start.Add(7*time.Minute + 9300*time.Millisecond).Format(time.RFC3339Nano)
	at := replaytest.Start.Add(5 * time.Minute).Format(time.RFC3339)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"timeline", "port", replaytest.Moved},
		{"timeline", "ports", replaytest.Invalid, "-o", "json"},
		{"timeline", "network", replaytest.NetBlue, "-o", "yaml"},
		{"state", "--seq", "150"},
		{"state", "--at", at, "-o", "json"},
		{"diff", "--now", end},
		{"diff", "--now", end, "--host", "hostC", "-o", "json"},
		{"export", "--from", "100", "--to", at},
		{"export", "--subjects", "ns.desired.host.hostB.>,ns.status.hostB.>"},
		{"simulate", "--host", "hostA", "--status", "--dump"},
		{"simulate", "--host", "hostB", "--to", "150", "-o", "json"},
	} {
		name := strings.Join(args, " ")
		t.Run(name, func(t *testing.T) {
			live, err := runCLI(t, url, append([]string{"replay"}, args...)...)
			if err != nil {
				t.Fatalf("server: %v", err)
			}
			offline, err := runCLI(t, url, append([]string{"replay", "--file", file}, args...)...)
			if err != nil {
				t.Fatalf("file: %v", err)
			}
			if len(live) < 200 {
				t.Fatalf("suspiciously short output:\n%s", live)
			}
			if live != offline {
				_ = os.WriteFile(filepath.Join(dir, "live"), []byte(live), 0o600)
				t.Fatalf("server and file print differently:\n%s", cmp.Diff(live, offline))
			}
		})
	}
}

// TestReplayStateApplyGet: the state at a past time, applied into a fresh server, is what
// `get` then shows there.
func TestReplayStateApplyGet(t *testing.T) {
	url, _ := replayServer(t)
	at := replaytest.Start.Add(5 * time.Minute).Format(time.RFC3339)
	out, err := runCLI(t, url, "replay", "state", "--at", at)
	if err != nil {
		t.Fatal(err)
	}
	want, err := topology.Decode([]byte(out))
	if err != nil {
		t.Fatalf("state output is not a topology file: %v", err)
	}
	if len(want.GetPorts()) < 30 || len(want.GetNetworks()) != 3 || len(want.GetSecurityGroups()) != 1 {
		t.Fatalf("state at %s: %d networks, %d ports", at, len(want.GetNetworks()), len(want.GetPorts()))
	}
	file := filepath.Join(t.TempDir(), "state.yaml")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := startServer(t)
	if out, err := runCLI(t, fresh, "apply", "-f", file); err != nil {
		t.Fatalf("apply of the state: %v\n%s", err, out)
	}
	got := &nsv1.Topology{}
	for _, kind := range []string{"networks", "secgroups", "ports", "trunks", "tapservices", "tapflows", "loadbalancers"} {
		out, err := runCLI(t, fresh, "get", kind, "-o", "json")
		if err != nil {
			t.Fatalf("get %s: %v", kind, err)
		}
		part, err := topology.Decode([]byte(out))
		if err != nil {
			t.Fatalf("get %s -o json: %v\n%s", kind, err, out)
		}
		proto.Merge(got, part)
	}
	if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
		t.Fatalf("get after apply differs from the state at %s (-got +want):\n%s", at, diff)
	}
}

// TestReplayExportImportExport through the CLI, with files.
func TestReplayExportImportExport(t *testing.T) {
	url, script := replayServer(t)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.nsr"), filepath.Join(dir, "second.nsr")
	if out, err := runCLI(t, url, "replay", "export", "--out", first, "-o", "json"); err != nil || !strings.Contains(out, `"records":693`) {
		t.Fatalf("export: %v %s", err, out)
	}
	other := startServer(t)
	if _, err := runCLI(t, other, "replay", "import", first); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, other, "replay", "export", "--out", second); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	c, _ := os.ReadFile(script)
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Fatalf("export → import → export: %d, %d bytes (script %d); files differ", len(a), len(b), len(c))
	}
	if _, err := runCLI(t, other, "replay", "import", first); err == nil {
		t.Fatal("import into a server that has a history succeeded")
	}
}
