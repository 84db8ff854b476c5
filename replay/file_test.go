package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/replay"
	"github.com/netsource/netsource/replay/replaytest"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// importScript starts a server holding the scripted history (imported from its file).
func importScript(t *testing.T) (jetstream.JetStream, *replay.File) {
	t.Helper()
	file := scriptFile(t)
	_, js := natstest.Start(t).Connect()
	res, err := replay.Import(context.Background(), js, file)
	if err != nil {
		t.Fatal(err)
	}
	if res.Desired < 200 || res.FirstDesired != 1 {
		t.Fatalf("import stored %+v", res)
	}
	return js, file
}

func export(t *testing.T, src replay.Source, from, to replay.Bound, subjects ...string) []byte {
	t.Helper()
	ctx := context.Background()
	q, err := replay.Select(ctx, src, []replay.Stream{replay.Desired, replay.Status}, subjects, from, to)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := replay.Export(ctx, src, q, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeTemp(t *testing.T, data []byte) *replay.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.nsr")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := replay.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestExportImportExportIdentical: the script → server → file → fresh server → file gives
// the same bytes each time, whole and for a range that starts in the middle (whose import
// moves the empty desired stream to the range's first sequence).
func TestExportImportExportIdentical(t *testing.T) {
	js, _ := importScript(t)
	first := export(t, replay.NewLive(js), replay.Bound{}, replay.Bound{})
	if !bytes.Equal(first, replaytest.Bytes()) {
		t.Fatal("export of the imported script differs from the script's file")
	}
	_, js2 := natstest.Start(t).Connect()
	if _, err := replay.Import(context.Background(), js2, writeTemp(t, first)); err != nil {
		t.Fatal(err)
	}
	second := export(t, replay.NewLive(js2), replay.Bound{}, replay.Bound{})
	if !bytes.Equal(first, second) {
		t.Fatalf("export → import → export changed the file (%d bytes, then %d)", len(first), len(second))
	}

	part := export(t, replay.NewLive(js), replay.Bound{Seq: 100}, replay.Bound{Time: replaytest.Start.Add(5 * time.Minute)})
	_, js3 := natstest.Start(t).Connect()
	res, err := replay.Import(context.Background(), js3, writeTemp(t, part))
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstDesired != 100 {
		t.Fatalf("partial import starts at %d, want 100", res.FirstDesired)
	}
	if again := export(t, replay.NewLive(js3), replay.Bound{}, replay.Bound{}); !bytes.Equal(part, again) {
		t.Fatalf("partial export → import → export changed the file (%d bytes, then %d)", len(part), len(again))
	}
	// The file answers the same as the server it came from.
	if fromFile := export(t, writeTemp(t, first), replay.Bound{Seq: 100}, replay.Bound{Time: replaytest.Start.Add(5 * time.Minute)}); !bytes.Equal(part, fromFile) {
		t.Fatal("a range exported from the file differs from the same range exported from the server")
	}
}

func TestImportRefusesWhatItCannotKeep(t *testing.T) {
	js, file := importScript(t)
	if _, err := replay.Import(context.Background(), js, file); err == nil || !strings.Contains(err.Error(), "empty server") {
		t.Fatalf("import into a server with history: %v", err)
	}
	filtered := export(t, replay.NewLive(js), replay.Bound{}, replay.Bound{}, "ns.desired.network.>", "ns.desired.host.hostA.>")
	_, js2 := natstest.Start(t).Connect()
	_, err := replay.Import(context.Background(), js2, writeTemp(t, filtered))
	if err == nil || !strings.Contains(err.Error(), "contiguous") {
		t.Fatalf("import of a filtered history: %v", err)
	}
}

// TestLiveAnswersAsFile: every question gives the same answer from the server as from the
// file the server's history came from.
func TestLiveAnswersAsFile(t *testing.T) {
	js, file := importScript(t)
	live := replay.NewLive(js)
	ctx := context.Background()
	now, err := file.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	questions := map[string]func(src replay.Source) (any, error){
		"timeline moved port": func(src replay.Source) (any, error) {
			return replay.ObjectTimeline(ctx, src, streams.KindPort, replaytest.Moved)
		},
		"timeline network": func(src replay.Source) (any, error) {
			return replay.ObjectTimeline(ctx, src, streams.KindNetwork, replaytest.NetGreen)
		},
		"timeline undecodable": func(src replay.Source) (any, error) {
			return replay.ObjectTimeline(ctx, src, streams.KindPort, replaytest.Garbled)
		},
		"state seq 150": func(src replay.Source) (any, error) {
			return stateView(replay.StateAt(ctx, src, replay.Bound{Seq: 150}))
		},
		"state at 10:05": func(src replay.Source) (any, error) {
			return stateView(replay.StateAt(ctx, src, replay.Bound{Time: replaytest.Start.Add(5 * time.Minute)}))
		},
		"state now": func(src replay.Source) (any, error) { return stateView(replay.StateAt(ctx, src, replay.Bound{})) },
		"diff":      func(src replay.Source) (any, error) { return replay.Diff(ctx, src, replay.DiffOptions{Now: now}) },
		"diff hostB": func(src replay.Source) (any, error) {
			return replay.Diff(ctx, src, replay.DiffOptions{Host: "hostB", Now: now})
		},
		"simulate hostA": func(src replay.Source) (any, error) {
			return replay.Simulate(ctx, src, replay.SimOptions{Host: "hostA"})
		},
		"simulate hostB to 180": func(src replay.Source) (any, error) {
			return replay.Simulate(ctx, src, replay.SimOptions{Host: "hostB", To: replay.Bound{Seq: 180}})
		},
		"export status of hostB from seq 50": func(src replay.Source) (any, error) {
			return export(t, src, replay.Bound{Seq: 50}, replay.Bound{}, "ns.status.hostB.>"), nil
		},
	}
	for name, ask := range questions {
		t.Run(name, func(t *testing.T) {
			fromFile, err := ask(file)
			if err != nil {
				t.Fatal(err)
			}
			fromLive, err := ask(live)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(fromFile)
			b, _ := json.Marshal(fromLive)
			if len(a) < 100 {
				t.Fatalf("suspiciously small answer: %s", a)
			}
			if diff := cmp.Diff(string(a), string(b)); diff != "" {
				t.Fatalf("file and server answer differently (-file +server):\n%s", diff)
			}
		})
	}
}

func stateView(res *replay.StateResult, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := replay.WriteTopology(&buf, "json", res.Topology()); err != nil {
		return nil, err
	}
	return map[string]any{"topology": buf.String(), "skipped": res.Skipped}, nil
}

func TestOpenFileRefusesOtherData(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":    nil,
		"text":     []byte("networks: []\n"),
		"truncate": replaytest.Bytes()[:1000],
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := replay.OpenFile(path)
		if err == nil {
			err = f.Scan(context.Background(), replay.Query{Desired: &replay.Range{}}, func(*replay.Record) error { return nil })
		}
		if err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
}

// TestScanStopsAtTheEndOfTheRange: a bounded read ends at its bound instead of reading the
// rest of the history, on the server as in the file.
func TestScanStopsAtTheEndOfTheRange(t *testing.T) {
	js, file := importScript(t)
	for name, src := range map[string]replay.Source{"file": file, "live": replay.NewLive(js)} {
		var seqs []uint64
		err := src.Scan(context.Background(), replay.Query{Desired: &replay.Range{FromSeq: 10, ToSeq: 12}}, func(r *replay.Record) error {
			seqs = append(seqs, r.Seq)
			return nil
		})
		if err != nil || fmt.Sprint(seqs) != "[10 11 12]" {
			t.Errorf("%s: desired 10..12 read %v, %v", name, seqs, err)
		}
		stop := errors.New("enough")
		err = src.Scan(context.Background(), replay.Query{Desired: &replay.Range{}, Status: &replay.Range{}}, func(*replay.Record) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("%s: the callback's error did not end the scan: %v", name, err)
		}
	}
}
