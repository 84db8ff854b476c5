package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

func TestSubjectFilters(t *testing.T) {
	for _, c := range []struct {
		filter, subject string
		match           bool
	}{
		{"ns.desired.>", "ns.desired.network.n1", true},
		{"ns.desired.host.*.port.*", "ns.desired.host.hostA.port.p1", true},
		{"ns.desired.host.*.port.*", "ns.desired.host.hostA.port.p1.x", false},
		{"ns.status.*.agent", "ns.status.hostA.agent", true},
		{">", "ns.status.hostA.agent", true},
		{"ns.desired.network.n1", "ns.desired.network.n2", false},
	} {
		if got := subjectMatch(c.filter, c.subject); got != c.match {
			t.Errorf("subjectMatch(%q, %q) = %v", c.filter, c.subject, got)
		}
	}
	for _, c := range []struct {
		a, b             string
		subset, overlaps bool
	}{
		{"ns.desired.host.hostA.>", "ns.desired.>", true, true},
		{"ns.desired.>", "ns.desired.host.hostA.>", false, true},
		{"ns.*.host.>", "ns.desired.>", false, true},
		{"ns.status.>", "ns.desired.>", false, false},
		{"ns.desired.network.*", "ns.desired.*.*", true, true},
		{"ns.desired.>", "ns.desired.*", false, true},
	} {
		if got := subjectSubset(c.a, c.b); got != c.subset {
			t.Errorf("subjectSubset(%q, %q) = %v", c.a, c.b, got)
		}
		if got := subjectsOverlap(c.a, c.b); got != c.overlaps {
			t.Errorf("subjectsOverlap(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// TestFiltersFor: user filters become non-overlapping server filters per stream.
func TestFiltersFor(t *testing.T) {
	all := &Range{}
	for _, c := range []struct {
		subjects []string
		desired  string
		status   string
	}{
		{nil, "[ns.desired.>] false", "[ns.status.>] false"},
		{[]string{"ns.desired.host.hostA.>", "ns.desired.network.>"}, "[ns.desired.host.hostA.> ns.desired.network.>] false", "[] false"},
		{[]string{"ns.desired.network.>", "ns.desired.>", "ns.desired.>"}, "[ns.desired.>] false", "[] false"},
		{[]string{"ns.*.hostA.>"}, "[ns.desired.>] true", "[ns.status.>] true"},
		{[]string{"ns.status.*.port.*", "ns.status.hostA.>"}, "[] false", "[ns.status.>] true"},
	} {
		q := Query{Desired: all, Status: all, Subjects: c.subjects}
		d, dm := q.filtersFor(Desired)
		s, sm := q.filtersFor(Status)
		if got := fmt.Sprint(d, " ", dm); got != c.desired {
			t.Errorf("%v: desired filters %s, want %s", c.subjects, got, c.desired)
		}
		if got := fmt.Sprint(s, " ", sm); got != c.status {
			t.Errorf("%v: status filters %s, want %s", c.subjects, got, c.status)
		}
	}
}

func TestParseBound(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "open",
		"42":                        "seq 42",
		"2026-11-21T10:00:00Z":      "2026-11-21T10:00:00Z",
		"2026-11-21T11:00:00+01:00": "2026-11-21T10:00:00Z",
	} {
		b, err := ParseBound(in)
		if err != nil || b.String() != want {
			t.Errorf("ParseBound(%q) = %v, %v; want %s", in, b, err, want)
		}
	}
	for _, bad := range []string{"0", "yesterday", "-1"} {
		if _, err := ParseBound(bad); err == nil {
			t.Errorf("ParseBound(%q) accepted", bad)
		}
	}
}

func TestBarRendering(t *testing.T) {
	got := renderBar("reading X", 250, 1000, 2*time.Second)
	want := "reading X [######..................]  25% 250/1000 125/s"
	if got != want {
		t.Fatalf("bar %q, want %q", got, want)
	}
}

// TestDecodeRecordMatchesProto: the hand-written decoder reads replay files exactly as the
// generated code does.
func TestDecodeRecordMatchesProto(t *testing.T) {
	path := filepath.Join(t.TempDir(), "script.nsr")
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		r := &Record{Stream: Stream(1 + i%2), Subject: fmt.Sprintf("ns.desired.host.h%d.port.p%d", i%3, i), Seq: uint64(i) << (i % 40),
			Time: time.Unix(int64(i)*7919, int64(i)*104729%1e9).UTC(), Data: bytes.Repeat([]byte{byte(i)}, i%5)}
		if i%3 != 0 {
			r.Header = nats.Header{"Nats-Msg-Id": {fmt.Sprint("id", i)}, "Multi": {"a", "", "ü"}}
		}
		if i == 5 {
			r.Time = time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC) // negative seconds
		}
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &File{path: path}
	r, err := f.open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	n := 0
	for ; ; n++ {
		data, err := r.next(true)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(data, true)
		if err != nil {
			t.Fatal(err)
		}
		pb := &nsv1.ReplayRecord{}
		if err := proto.Unmarshal(data, pb); err != nil {
			t.Fatal(err)
		}
		want := &Record{Stream: Desired, Subject: pb.GetSubject(), Seq: pb.GetSequence(), Time: pb.GetTime().AsTime(), Data: pb.GetBody()}
		if pb.GetStream() == nsv1.ReplayStream_REPLAY_STREAM_STATUS {
			want.Stream = Status
		}
		for _, h := range pb.GetHeaders() {
			if want.Header == nil {
				want.Header = nats.Header{}
			}
			want.Header[h.GetName()] = h.GetValues()
		}
		if want.Data == nil {
			want.Data = []byte{}
		}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Fatalf("record %d (-decodeRecord +proto.Unmarshal):\n%s", n, diff)
		}
		if noHeaders, _ := decodeRecord(data, false); noHeaders.Header != nil || noHeaders.Subject != want.Subject {
			t.Fatalf("record %d without headers: %+v", n, noHeaders)
		}
	}
	if n < 600 {
		t.Fatalf("only %d records", n)
	}
}
