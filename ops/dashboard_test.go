package ops

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/streams/natstest"
)

// dashboardEnv is a JetStream server, a followed fleet and the dashboard over httptest.
type dashboardEnv struct {
	srv  *httptest.Server
	sink *streams.StatusSink
	ctx  context.Context
}

func startDashboard(t *testing.T) *dashboardEnv {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	pub := streams.NewPublisher(js, "test")
	if _, err := pub.Append(ctx, streams.NewEvent(nsv1.ChangeKind_CHANGE_KIND_CREATED,
		&nsv1.Port{Id: portID, Name: "web1", Host: "hostA", NetworkId: "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01",
			MacAddress: "fa:16:3e:00:00:01"}, "test"), 0); err != nil {
		t.Fatal(err)
	}
	sink, err := streams.NewStatusSink(js, "hostA")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Heartbeat(ctx, &nsv1.AgentHeartbeat{ReportInterval: durationpb.New(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Publish(ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_ACTIVE, DesiredSeq: 1,
		Convergence: durationpb.New(25 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	fleet := NewFleet(Options{})
	done := make(chan error, 1)
	followCtx, stop := context.WithCancel(context.Background())
	go func() { done <- Follow(followCtx, js, fleet, Scope{}) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("follow: %v", err)
		}
	})
	srv := httptest.NewServer(NewDashboard(fleet).Handler())
	t.Cleanup(srv.Close)
	select {
	case <-fleet.Ready():
	case <-ctx.Done():
		t.Fatal("fleet never caught up")
	}
	return &dashboardEnv{srv: srv, sink: sink, ctx: ctx}
}

func (e *dashboardEnv) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestDashboardServesEmbeddedPage(t *testing.T) {
	e := startDashboard(t)
	for path, want := range map[string]string{
		"/":               `<script src="/static/app.js"`,
		"/static/app.js":  "new EventSource('/api/events')",
		"/static/app.css": "#hosts",
		"/healthz":        "ok",
	} {
		resp, body := e.get(t, path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %s, body lacks %q", path, resp.Status, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	// The page must not load anything from elsewhere (the SVG namespace is a name, not a load).
	for _, path := range []string{"/", "/static/app.js", "/static/app.css"} {
		_, text := e.get(t, path)
		text = strings.ReplaceAll(text, "'http://www.w3.org/2000/svg'", "")
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") || strings.Contains(text, "//cdn") {
			t.Errorf("%s refers to an external address", path)
		}
	}
	if resp, _ := e.get(t, "/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %s", resp.Status)
	}
}

func TestDashboardState(t *testing.T) {
	e := startDashboard(t)
	resp, body := e.get(t, "/api/state")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var v View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Full || !v.Ready || len(v.Hosts) != 1 || v.Hosts[0].Host != "hostA" || v.Hosts[0].DownAfterMs != 900 {
		t.Fatalf("state: %s", body)
	}
	if len(v.Objects) != 1 || v.Objects[0].Name != "web1" || v.Objects[0].Phase != "ACTIVE" || len(v.Latency) != 1 {
		t.Fatalf("objects: %s", body)
	}
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, r *bufio.Reader) View {
	t.Helper()
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && data != "":
			if event != "view" {
				t.Fatalf("event %q, want view", event)
			}
			var v View
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
}

func TestDashboardEventsSnapshotThenIncrements(t *testing.T) {
	e := startDashboard(t)
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, e.srv.URL+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	snap := readEvent(t, r)
	if !snap.Full || len(snap.Objects) != 1 || snap.Objects[0].Phase != "ACTIVE" {
		t.Fatalf("first event is not the snapshot: %+v", snap)
	}
	if _, err := e.sink.Publish(e.ctx, &nsv1.StatusEvent{Kind: "port", Id: portID, Phase: nsv1.Phase_PHASE_DOWN,
		Reason: "admin_state_up is false", DesiredSeq: 2}); err != nil {
		t.Fatal(err)
	}
	v := readEvent(t, r)
	if v.Full || v.Version <= snap.Version || len(v.Objects) != 1 || v.Objects[0].Phase != "DOWN" || v.Objects[0].Name != "web1" ||
		len(v.Feed) != 1 {
		t.Fatalf("increment: %+v", v)
	}
}
