package haproxy

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	goldenStateDir = "/var/lib/netsource/lbaas/hostA"
	lbID           = "5e6f7081-0000-4000-8000-000000000001"
)

func ptr[T any](v T) *T { return &v }

func member(n int, weight *uint32) *nsv1.Member {
	return &nsv1.Member{Id: "92a3b4c5-0000-4000-8000-00000000000" + string(rune('0'+n)),
		Address: "192.0.2." + string(rune('0'+n)) + "1", ProtocolPort: 8080, Weight: weight}
}

// lbWith is a load balancer with one listener of protocol on port 80 using one pool.
func lbWith(protocol string, pool *nsv1.Pool) *nsv1.LoadBalancer {
	pool.Id = "708192a3-0000-4000-8000-000000000001"
	if pool.Protocol == "" {
		pool.Protocol = protocol
	}
	if len(pool.Members) == 0 {
		pool.Members = []*nsv1.Member{member(1, nil), member(2, ptr(uint32(3)))}
	}
	return &nsv1.LoadBalancer{Id: lbID, Host: "hostA", VipAddress: "192.0.2.100",
		VipNetworkId: "6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01", VipSubnetId: "0c5d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f",
		VipPortId: "5f607182-0000-4000-8000-000000000004",
		Listeners: []*nsv1.Listener{{Id: "6f708192-0000-4000-8000-000000000001", Protocol: protocol, ProtocolPort: 80,
			DefaultPoolId: pool.Id}},
		Pools: []*nsv1.Pool{pool}}
}

func monitor(typ string) *nsv1.HealthMonitor {
	return &nsv1.HealthMonitor{Id: "8192a3b4-0000-4000-8000-000000000001", Type: typ, Delay: 2, Timeout: 1, MaxRetries: 3}
}

// goldenCases cover every protocol, algorithm, persistence and monitor type.
func goldenCases() map[string]*nsv1.LoadBalancer {
	cases := map[string]*nsv1.LoadBalancer{
		"http-roundrobin-httpmonitor": lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN",
			Healthmonitor: &nsv1.HealthMonitor{Id: "8192a3b4-0000-4000-8000-000000000001", Type: "HTTP", Delay: 1, Timeout: 1,
				MaxRetries: 2, HttpMethod: "GET", UrlPath: "/healthz", ExpectedCodes: "200"}}),
		"tcp-leastconn-tcpmonitor": lbWith("TCP", &nsv1.Pool{LbAlgorithm: "LEAST_CONNECTIONS", Healthmonitor: monitor("TCP")}),
		"https-passthrough-source-httpsmonitor": lbWith("HTTPS", &nsv1.Pool{LbAlgorithm: "SOURCE_IP",
			Healthmonitor: &nsv1.HealthMonitor{Type: "HTTPS", Delay: 5, Timeout: 3, MaxRetries: 4, HttpMethod: "HEAD",
				UrlPath: "/status", ExpectedCodes: "200-204,301"}}),
		"tcp-pingmonitor":         lbWith("TCP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", Healthmonitor: monitor("PING")}),
		"persistence-source-ip":   lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", SessionPersistence: &nsv1.SessionPersistence{Type: "SOURCE_IP"}}),
		"persistence-http-cookie": lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", SessionPersistence: &nsv1.SessionPersistence{Type: "HTTP_COOKIE"}, Healthmonitor: monitor("HTTP")}),
		"persistence-app-cookie":  lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "LEAST_CONNECTIONS", SessionPersistence: &nsv1.SessionPersistence{Type: "APP_COOKIE", CookieName: "JSESSIONID"}}),
		"expected-codes-hundreds": lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", Healthmonitor: &nsv1.HealthMonitor{Type: "HTTP", Delay: 1, Timeout: 1, MaxRetries: 1, ExpectedCodes: "200-299,302,404-405"}}),
		"weights-and-admin-states": lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", Healthmonitor: monitor("TCP"),
			Members: []*nsv1.Member{member(1, ptr(uint32(0))), member(2, ptr(uint32(256))),
				{Id: "92a3b4c5-0000-4000-8000-000000000003", Address: "192.0.2.31", ProtocolPort: 80, AdminStateUp: ptr(false)}}}),
	}
	// Several listeners, limits, an admin-down listener, an admin-down pool, a pool no
	// listener uses, and an admin-down monitor.
	multi := lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", Healthmonitor: monitor("HTTP")})
	multi.Listeners = append(multi.Listeners,
		&nsv1.Listener{Id: "6f708192-0000-4000-8000-000000000002", Protocol: "TCP", ProtocolPort: 8443, ConnectionLimit: ptr(int32(100)),
			DefaultPoolId: "708192a3-0000-4000-8000-000000000002"},
		&nsv1.Listener{Id: "6f708192-0000-4000-8000-000000000003", Protocol: "HTTP", ProtocolPort: 8080, ConnectionLimit: ptr(int32(-1))},
		&nsv1.Listener{Id: "6f708192-0000-4000-8000-000000000004", Protocol: "HTTP", ProtocolPort: 8081, AdminStateUp: ptr(false)})
	monitorDown := monitor("TCP")
	monitorDown.AdminStateUp = ptr(false)
	multi.Pools = append(multi.Pools,
		&nsv1.Pool{Id: "708192a3-0000-4000-8000-000000000002", Protocol: "TCP", LbAlgorithm: "SOURCE_IP", AdminStateUp: ptr(false),
			Members: []*nsv1.Member{member(3, nil)}},
		&nsv1.Pool{Id: "708192a3-0000-4000-8000-000000000003", Protocol: "HTTP", LbAlgorithm: "ROUND_ROBIN", Healthmonitor: monitorDown,
			Members: []*nsv1.Member{member(4, nil)}})
	cases["listeners-limits-admin-down"] = multi
	limited := lbWith("TCP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN"})
	limited.Listeners[0].ConnectionLimit = ptr(int32(100))
	limited.Listeners = append(limited.Listeners, &nsv1.Listener{Id: "6f708192-0000-4000-8000-000000000002", Protocol: "TCP",
		ProtocolPort: 81, ConnectionLimit: ptr(int32(50)), DefaultPoolId: limited.Pools[0].Id})
	cases["connection-limits"] = limited
	v6 := lbWith("TCP", &nsv1.Pool{LbAlgorithm: "SOURCE_IP", SessionPersistence: &nsv1.SessionPersistence{Type: "SOURCE_IP"}, Healthmonitor: monitor("TCP"),
		Members: []*nsv1.Member{{Id: "92a3b4c5-0000-4000-8000-000000000001", Address: "2001:db8::21", ProtocolPort: 443}}})
	v6.VipAddress = "2001:db8::100"
	cases["ipv6"] = v6
	noPools := lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN"})
	noPools.Pools, noPools.Listeners[0].DefaultPoolId = nil, ""
	cases["listener-without-pool"] = noPools
	return cases
}

func TestRenderGolden(t *testing.T) {
	for name, lb := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			cfg, err := Render(lb, PathsFor(goldenStateDir, lb.GetId()))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".cfg")
			if *update {
				if err := os.WriteFile(golden, cfg.Text, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(cfg.Text)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", golden, diff)
			}
			again, err := Render(proto.Clone(lb).(*nsv1.LoadBalancer), PathsFor(goldenStateDir, lb.GetId()))
			if err != nil || string(again.Text) != string(cfg.Text) {
				t.Errorf("rendering is not deterministic")
			}
		})
	}
}

// TestGoldenConfigsPassHAProxyCheck runs `haproxy -c` with zero-warning mode on every
// golden file, with its paths moved to a temporary directory that exists.
func TestGoldenConfigsPassHAProxyCheck(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (the deps task installs it): cannot check the golden configs")
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.cfg"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			dir, err := os.MkdirTemp("", "nshx") // short: haproxy socket paths are limited to 97 bytes
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			if err := os.MkdirAll(filepath.Join(dir, lbID), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, lbID, "server-state"), []byte("1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), goldenStateDir, dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, "-c", "-dW", "-f", path).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c -dW: %v\n%s", err, out)
			}
		})
	}
}

// TestRenderRefusesInjection: whatever bypassed validation, a value that could end a line,
// start a comment or open a quote never reaches the config.
func TestRenderRefusesInjection(t *testing.T) {
	base := func() *nsv1.LoadBalancer {
		return lbWith("HTTP", &nsv1.Pool{LbAlgorithm: "ROUND_ROBIN", Healthmonitor: &nsv1.HealthMonitor{
			Type: "HTTP", Delay: 1, Timeout: 1, MaxRetries: 1, UrlPath: "/ok"}})
	}
	cases := map[string]func(lb *nsv1.LoadBalancer){
		"newline in url_path":      func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/x\n    stats enable" },
		"CR in url_path":           func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/x\rfoo" },
		"hash in url_path":         func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/x#y" },
		"quote in url_path":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = `/"${HOME}"` },
		"single quote in url_path": func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/it's" },
		"backslash in url_path":    func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = `/a\nb` },
		"space in url_path":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/a b" },
		"relative url_path":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "healthz" },
		"unicode line separator":   func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.UrlPath = "/a\u2028b" },
		"bad http_method":          func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.HttpMethod = "GET /x\nfoo" },
		"bad expected_codes":       func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.ExpectedCodes = "200\nbar" },
		"newline in listener id":   func(lb *nsv1.LoadBalancer) { lb.Listeners[0].Id = "a\nb" },
		"newline in pool id":       func(lb *nsv1.LoadBalancer) { lb.Pools[0].Id = "p\n" },
		"hash in member id":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].Id = "m#1" },
		"address with newline":     func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].Address = "192.0.2.1\n" },
		"address with zone":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].Address = "fe80::1%eth0" },
		"vip not an address":       func(lb *nsv1.LoadBalancer) { lb.VipAddress = "example.org" },
		"port zero":                func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].ProtocolPort = 0 },
		"weight too big":           func(lb *nsv1.LoadBalancer) { lb.Pools[0].Members[0].Weight = ptr(uint32(257)) },
		"unknown algorithm":        func(lb *nsv1.LoadBalancer) { lb.Pools[0].LbAlgorithm = "RANDOM" },
		"unknown protocol":         func(lb *nsv1.LoadBalancer) { lb.Listeners[0].Protocol = "UDP" },
		"connection_limit zero":    func(lb *nsv1.LoadBalancer) { lb.Listeners[0].ConnectionLimit = ptr(int32(0)) },
		"cookie name with quote": func(lb *nsv1.LoadBalancer) {
			lb.Pools[0].SessionPersistence = &nsv1.SessionPersistence{Type: "APP_COOKIE", CookieName: `a"b`}
		},
		"cookie persistence on TCP": func(lb *nsv1.LoadBalancer) {
			lb.Pools[0].Protocol = "TCP"
			lb.Pools[0].SessionPersistence = &nsv1.SessionPersistence{Type: "HTTP_COOKIE"}
		},
		"unknown monitor":     func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.Type = "UDP-CONNECT" },
		"max_retries zero":    func(lb *nsv1.LoadBalancer) { lb.Pools[0].Healthmonitor.MaxRetries = 0 },
		"default pool absent": func(lb *nsv1.LoadBalancer) { lb.Listeners[0].DefaultPoolId = "708192a3-0000-4000-8000-00000000ffff" },
		"lb id with slash":    func(lb *nsv1.LoadBalancer) { lb.Id = "../../etc" },
	}
	if _, err := Render(base(), PathsFor(goldenStateDir, lbID)); err != nil {
		t.Fatalf("base case: %v", err)
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			lb := base()
			mutate(lb)
			cfg, err := Render(lb, PathsFor(goldenStateDir, lbID))
			if !errors.Is(err, ErrInvalidConfig) || cfg != nil {
				t.Fatalf("Render = %v, %v; want ErrInvalidConfig and no config", cfg, err)
			}
		})
	}
	t.Run("unsafe state dir", func(t *testing.T) {
		if _, err := Render(base(), PathsFor("/var/lib/x y", lbID)); !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestExpectRule(t *testing.T) {
	for codes, want := range map[string]string{
		"200":             "status 200",
		"200,202":         "rstatus ^(200|202)$",
		"200-204":         "rstatus ^(200|201|202|203|204)$",
		"200-209,404":     "rstatus ^(20[0-9]|404)$",
		"200-299":         "rstatus ^(2[0-9][0-9])$",
		"100-599":         "rstatus ^(1[0-9][0-9]|2[0-9][0-9]|3[0-9][0-9]|4[0-9][0-9]|5[0-9][0-9])$",
		"200-204,200-201": "rstatus ^(200|201|202|203|204)$",
	} {
		got, err := expectRule(codes)
		if err != nil || got != want {
			t.Errorf("expectRule(%q) = %q, %v; want %q", codes, got, err, want)
		}
	}
	for _, bad := range []string{"", "20", "2000", "600", "204-200", "200,", "abc", "200-"} {
		if _, err := expectRule(bad); err == nil {
			t.Errorf("expectRule(%q) accepted", bad)
		}
	}
}
