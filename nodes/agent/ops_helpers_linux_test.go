package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/netsource/netsource/nodes/links"
	"github.com/netsource/netsource/nodes/metrics/metricstest"
	"github.com/netsource/netsource/ops"
)

// chromiumPath is Debian's chromium, which the deps task installs.
const chromiumPath = "/usr/bin/chromium"

// startDashboardServer serves the dashboard of js on a free loopback port until the test
// ends and returns its URL.
func startDashboardServer(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, js, ln, ops.Scope{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dashboard: %v", err)
		}
	})
	url := "http://" + ln.Addr().String() + "/"
	eventually(t, 10*time.Second, "dashboard ready", func() error {
		resp, err := http.Get(url + "healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	return url
}

// browser starts headless Chromium (Debian's, with the flags this machine needs: no
// sandbox as root, no GPU, no QUIC or background traffic to the closed network, a fresh
// profile) and returns a tab context; the browser process is stopped when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser test needs Debian's chromium at %s (`go tool task deps` installs it): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1100),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// pageValue evaluates a JavaScript expression in the page.
func pageValue[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitPage polls a JavaScript expression (every 25 ms) until it returns want, and returns
// when that was first seen.
func waitPage(t *testing.T, ctx context.Context, timeout time.Duration, what, expr, want string) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got string
	for {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err == nil && v == want {
			return time.Now()
		}
		got = v
		if time.Now().After(deadline) {
			t.Fatalf("page: %s: %s is %q after %s, want %q (err %v)", what, expr, got, timeout, want, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// scrapeMetrics reads a Prometheus text exposition into name{labels} -> value.
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return parseExposition(t, resp.Body)
}

func parseExposition(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out, err := metricstest.Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	return body, err
}

// removeMarkersAtEnd drops, when the test ends, the ownership markers agents wrote for the
// VM namespaces of the test's prefix (the agents are killed before they could delete them).
func removeMarkersAtEnd(t *testing.T, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		markers, _ := filepath.Glob(filepath.Join(links.DefaultMarkerDir, prefix+"*"))
		for _, m := range markers {
			_ = os.Remove(m)
		}
	})
}
