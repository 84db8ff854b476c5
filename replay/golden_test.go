package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/netsource/netsource/replay"
	"github.com/netsource/netsource/replay/replaytest"
	"github.com/netsource/netsource/streams"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// golden compares got with testdata/<name>.golden (or rewrites it with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./replay -update to create it)", err)
	}
	if diff := cmp.Diff(string(got), string(want)); diff != "" {
		t.Errorf("%s differs (-got +want); if the change is intended, run go test ./replay -run '%s' -update:\n%s", path, t.Name(), diff)
	}
}

func scriptFile(t *testing.T) *replay.File {
	t.Helper()
	f, err := replay.OpenFile(replaytest.WriteFile(t))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func jsonIndent(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestScriptedHistory checks the fixture is what the tests claim it is.
func TestScriptedHistory(t *testing.T) {
	counts := map[string]int{}
	desired := 0
	for _, r := range replaytest.History() {
		if r.Stream != replay.Desired {
			counts[r.Stream.String()]++
			continue
		}
		desired++
		ev, err := streams.DecodeDesired(r.Data)
		if err != nil {
			counts["undecodable"]++
			continue
		}
		counts[streams.ChangeName(ev.GetChange())]++
		if streams.ValidateSpec(streams.SpecOf(ev)) != nil {
			counts["invalid"]++
		}
	}
	t.Logf("%d desired events: %v", desired, counts)
	if desired < 200 || counts["created"] < 40 || counts["updated"] < 100 || counts["deleted"] < 5 ||
		counts["undecodable"] != 1 || counts["invalid"] != 1 || counts["status"] < 200 {
		t.Fatalf("scripted history too thin: %d desired, %v", desired, counts)
	}
}

func TestGoldenTimeline(t *testing.T) {
	src := scriptFile(t)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		kind streams.Kind
		id   string
	}{
		{"timeline_moved_port", streams.KindPort, replaytest.Moved},
		{"timeline_invalid_port", streams.KindPort, replaytest.Invalid},
		{"timeline_undecodable_port", streams.KindPort, replaytest.Garbled},
		{"timeline_network", streams.KindNetwork, replaytest.NetBlue},
		{"timeline_stale_port", streams.KindPort, replaytest.PortID(32)},
	} {
		t.Run(c.name, func(t *testing.T) {
			tl, err := replay.ObjectTimeline(ctx, src, c.kind, c.id)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := replay.WriteTimeline(&buf, tl); err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, buf.Bytes())
			if c.name == "timeline_moved_port" {
				golden(t, c.name+"_json", jsonIndent(t, tl))
				if strings.Join(tl.Hosts, ",") != "hostA,hostB" || !strings.Contains(buf.String(), `host: "hostA" → "hostB"`) {
					t.Errorf("moved port's timeline does not show both hosts and the move:\n%s", buf.String())
				}
			}
		})
	}
}

func TestGoldenState(t *testing.T) {
	src := scriptFile(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		at     replay.Bound
		format string
	}{
		{"state_seq_150", replay.Bound{Seq: 150}, "yaml"},
		{"state_at_10h05", replay.Bound{Time: replaytest.Start.Add(5 * time.Minute)}, "json"},
		{"state_end", replay.Bound{Seq: 1000}, "yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := replay.StateAt(ctx, src, c.at)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := replay.WriteTopology(&buf, c.format, res.Topology()); err != nil {
				t.Fatal(err)
			}
			for _, s := range res.Skipped {
				buf.WriteString("# left out: " + string(s.Kind) + " " + s.ID + ": " + s.Reason + "\n")
			}
			golden(t, c.name, buf.Bytes())
		})
	}
}

func TestGoldenDiff(t *testing.T) {
	src := scriptFile(t)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		host string
	}{{"diff_all", ""}, {"diff_hostC", "hostC"}, {"diff_hostA", "hostA"}} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := replay.Diff(ctx, src, replay.DiffOptions{Host: c.host})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := replay.WriteDiff(&buf, rep); err != nil {
				t.Fatal(err)
			}
			golden(t, c.name, buf.Bytes())
			if c.host == "" {
				golden(t, c.name+"_json", jsonIndent(t, rep))
				problems := map[string]int{}
				for _, p := range rep.Objects {
					problems[p.Problem]++
				}
				if len(rep.Agents) != 1 || rep.Agents[0].Host != "hostC" || problems[replay.ProblemLagging] == 0 ||
					problems[replay.ProblemError] != 2 || problems[replay.ProblemNotConverged] != 1 {
					t.Errorf("diff misses what the script breaks: late %v, problems %v", rep.Agents, problems)
				}
			}
		})
	}
}
