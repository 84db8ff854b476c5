package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// Replay throughput (issue 7): desired state reconstruction over a history of 1,000,000
// desired events (10,000 ports on 10 hosts, 100 versions each; a 491 MB file, ~490 B per
// record with headers), from a replay file and from a live server, against a plain read of
// the same messages. Run with
//
//	go test -run='^$' -bench=BenchmarkReplayState -benchtime=3x ./replay/
//	NETSOURCE_BENCH_LIVE=1 go test -run='^$' -bench=BenchmarkReplayState -benchtime=3x -timeout=40m ./replay/
//
// The file is generated once per run (a few seconds); the live part first imports it into
// an embedded server (1-2 minutes), so it runs only when NETSOURCE_BENCH_LIVE is set. Each
// iteration times one pass of every variant in turn; the metrics are events/s per variant
// and state/plain, the ratio of the state reconstruction rate to the plain read rate.

const (
	benchEvents = 1_000_000
	benchHosts  = 10
	benchPorts  = 10_000
)

var (
	benchOnce sync.Once
	benchDir  string
	benchPath string
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// benchFile writes the 1M-event history once.
func benchFile(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "netsource-replay-bench")
		if benchErr != nil {
			return
		}
		benchPath = filepath.Join(benchDir, "history-1m.nsr")
		benchErr = writeBenchHistory(benchPath)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

func writeBenchHistory(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := NewWriter(f)
	if err != nil {
		return err
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	ports := make([]*nsv1.Port, benchPorts)
	for i := range ports {
		ports[i] = &nsv1.Port{Id: fmt.Sprintf("%08x-0000-4000-8000-%012x", 0x10000000+i, i), Name: fmt.Sprintf("vm%d-eth0", i),
			NetworkId: "6a0e4b81-1c7d-4a55-9b3f-2f1f4c1e0a01", Host: fmt.Sprintf("host%02d", i%benchHosts),
			MacAddress:     fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			FixedIps:       []*nsv1.FixedIP{{SubnetId: "0c5d1e2f-3a4b-4c5d-8e6f-000000000001"}},
			SecurityGroups: []string{"1b2c3d4e-0000-4000-8000-000000000001"}, DeviceOwner: "compute:nova",
			Binding: &nsv1.Binding{Type: "veth", Netns: fmt.Sprintf("vm%d", i)}}
	}
	for seq := uint64(1); seq <= benchEvents; seq++ {
		i := int(seq-1) % benchPorts
		p := ports[i]
		p.FixedIps[0].IpAddress = fmt.Sprintf("10.%d.%d.%d", seq%200, i>>8&0xff, i&0xff)
		change := nsv1.ChangeKind_CHANGE_KIND_UPDATED
		if seq <= benchPorts {
			change = nsv1.ChangeKind_CHANGE_KIND_CREATED
		}
		at := start.Add(time.Duration(seq) * time.Millisecond)
		ev := streams.NewEvent(change, p, "bench@replay")
		ev.Time = timestamppb.New(at)
		msg, err := streams.EncodeDesired(ev)
		if err != nil {
			return err
		}
		if err := w.Write(&Record{Stream: Desired, Subject: msg.Subject, Seq: seq, Time: at, Header: msg.Header, Data: msg.Data}); err != nil {
			return err
		}
	}
	return w.Flush()
}

// passes times the given passes in turn in every iteration, so that each is measured
// under the same load (this VM's neighbours make rates swing by 2-3x between minutes), and
// reports each one's rate and the rate of the last relative to the first.
func passes(b *testing.B, names []string, fns ...func(b *testing.B)) {
	b.Helper()
	spent := make([]time.Duration, len(fns))
	for range b.N {
		for i, fn := range fns {
			start := time.Now()
			fn(b)
			spent[i] += time.Since(start)
		}
	}
	rate := func(i int) float64 { return float64(benchEvents) * float64(b.N) / spent[i].Seconds() }
	for i, name := range names {
		b.ReportMetric(rate(i), name+"-events/s")
	}
	b.ReportMetric(rate(len(fns)-1)/rate(0), "state/plain")
	b.ReportMetric(0, "ns/op")
}

func checkState(b *testing.B, res *StateResult, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	if res.Events != benchEvents || len(res.Topology().GetPorts()) != benchPorts {
		b.Fatalf("state of %d events with %d ports", res.Events, len(res.Topology().GetPorts()))
	}
}

// plainFileRead frames and decodes every record with the generated code, nothing else.
func plainFileRead(b *testing.B, path string) {
	f := &File{path: path}
	r, err := f.open()
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	n := 0
	var rec nsv1.ReplayRecord
	for {
		data, err := r.next(false)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		rec.Reset()
		if err := proto.Unmarshal(data, &rec); err != nil {
			b.Fatal(err)
		}
		n++
	}
	if n != benchEvents {
		b.Fatalf("read %d records", n)
	}
}

// BenchmarkReplayState: per iteration, a plain read of the 1M messages, the replay reader's
// pass over them (a callback that does nothing), and state reconstruction (StateAt, with
// its topology), first from the file, then (NETSOURCE_BENCH_LIVE=1) from the server.
func BenchmarkReplayState(b *testing.B) {
	path := benchFile(b)
	ctx := context.Background()
	src, err := OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	scan := func(src Source) func(b *testing.B) {
		return func(b *testing.B) {
			n := 0
			err := src.Scan(ctx, Query{Desired: &Range{}, NoHeaders: true}, func(*Record) error { n++; return nil })
			if err != nil || n != benchEvents {
				b.Fatalf("scanned %d records: %v", n, err)
			}
		}
	}
	state := func(src Source) func(b *testing.B) {
		return func(b *testing.B) {
			res, err := StateAt(ctx, src, Bound{Seq: benchEvents})
			checkState(b, res, err)
		}
	}
	b.Run("file", func(b *testing.B) {
		passes(b, []string{"plain", "scan", "state"}, func(b *testing.B) { plainFileRead(b, path) }, scan(src), state(src))
	})
	if os.Getenv("NETSOURCE_BENCH_LIVE") == "" {
		b.Log("live server part skipped: set NETSOURCE_BENCH_LIVE=1 (imports 1M events first, 1-2 minutes)")
		return
	}
	js := benchServer(b, path)
	live := NewLive(js)
	b.Run("live", func(b *testing.B) {
		passes(b, []string{"plain", "scan", "state"}, func(b *testing.B) {
			if n := plainLiveRead(b, js); n != benchEvents {
				b.Fatalf("read %d messages", n)
			}
		}, scan(live), state(live))
	})
}

func benchServer(b *testing.B, path string) jetstream.JetStream {
	b.Helper()
	srv := natstest.StartAt(b, b.TempDir(), "")
	_, js := srv.Connect()
	src, err := OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	res, err := Import(context.Background(), js, src)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("imported %d desired events in %s", res.Desired, time.Since(start).Round(time.Second))
	return js
}

func plainLiveRead(b *testing.B, js jetstream.JetStream) int {
	b.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, streams.DesiredStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{streams.DesiredRoot + ".>"}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	for n := 1; ; n++ {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			b.Fatal(err)
		}
		_ = m.Data()
		if md.NumPending == 0 {
			return n
		}
	}
}
