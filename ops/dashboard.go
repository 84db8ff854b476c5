package ops

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

//go:embed static
var static embed.FS

// Dashboard serves the web page and its data:
//
//	GET /              the page (static/index.html), with its script and style under /static/
//	GET /api/state     the current View as JSON
//	GET /api/events    server-sent events: "view" events, a full snapshot first, then increments
//	GET /healthz       200 once the streams were replayed, 503 before
//
// Everything is embedded in the binary; the page loads nothing from elsewhere.
type Dashboard struct {
	fleet *Fleet
	// KeepAlive is the interval of SSE comments that keep proxies from closing idle streams.
	KeepAlive time.Duration
	// Buffer is how many increments a slow browser may lag behind before it is reconnected.
	Buffer int
}

// NewDashboard serves fleet.
func NewDashboard(fleet *Fleet) *Dashboard {
	return &Dashboard{fleet: fleet, KeepAlive: 15 * time.Second, Buffer: 1024}
}

// Handler returns the HTTP handler.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(static, "static") // cannot fail: the directory is embedded
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, assets, "index.html")
	})
	mux.HandleFunc("GET /api/state", d.state)
	mux.HandleFunc("GET /api/events", d.events)
	mux.HandleFunc("GET /healthz", d.healthz)
	return securityHeaders(mux)
}

// securityHeaders: the page runs only its own script and style, and is never framed.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func (d *Dashboard) state(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d.fleet.Snapshot())
}

func (d *Dashboard) healthz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-d.fleet.Ready():
		_, _ = fmt.Fprintln(w, "ok")
	default:
		http.Error(w, "replaying the status stream", http.StatusServiceUnavailable)
	}
}

// events streams Views as server-sent events. A browser that falls behind is disconnected;
// EventSource reconnects by itself (after the retry interval) and starts over from a fresh
// snapshot.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	snapshot, sub := d.fleet.Subscribe(d.Buffer)
	defer sub.Close()
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return
	}
	if err := writeEvent(w, snapshot); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	keepAlive := time.NewTicker(d.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case v, ok := <-sub.C:
			if !ok {
				return
			}
			if err := writeEvent(w, v); err != nil {
				return
			}
			// Send what else is queued in the same flush.
			for more := true; more; {
				select {
				case v, ok := <-sub.C:
					if !ok {
						_ = rc.Flush()
						return
					}
					if err := writeEvent(w, v); err != nil {
						return
					}
				default:
					more = false
				}
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func writeEvent(w http.ResponseWriter, v View) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: view\nid: %d\ndata: %s\n\n", v.Version, data)
	return err
}

// Serve follows the streams into a new fleet and serves its dashboard on ln until ctx
// ends (then it returns nil) or a stream reader fails. It closes ln.
func Serve(ctx context.Context, js jetstream.JetStream, ln net.Listener, scope Scope) error {
	return ServeFleet(ctx, js, ln, scope, NewFleet(Options{}))
}

// ServeFleet is Serve into a fleet the caller made (with its Options, e.g. Notice).
func ServeFleet(ctx context.Context, js jetstream.JetStream, ln net.Listener, scope Scope, fleet *Fleet) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{Handler: NewDashboard(fleet).Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }} // ends SSE streams on shutdown
	errc := make(chan error, 2)
	go func() { errc <- Follow(ctx, js, fleet, scope) }()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("dashboard on %s: %w", ln.Addr(), err)
			return
		}
		errc <- nil
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shutdownCtx)
	return err
}
