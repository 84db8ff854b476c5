package haproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Config is a rendered haproxy configuration.
type Config struct {
	Text []byte
	// Servers are the server lines, so that health state saved before a reload is kept
	// only for servers whose address did not change.
	Servers []ServerKey
}

// ServerKey identifies one server line: backend (pool id), server (member id), address.
type ServerKey struct {
	Backend, Server, Addr string
	Port                  int
}

// Size of the persistence stick tables, as Neutron's template (reference 3.7).
const stickSize = "10k"

// Render turns a load balancer graph into haproxy 2.6 configuration: global and defaults,
// a frontend per admin-up listener, a backend per pool. Every value taken from the graph is
// checked again here, whatever validated it before: ids are tokens, addresses and numbers
// are parsed and printed back, free text (url_path, cookie_name) may not hold whitespace,
// `#`, quotes or backslashes. Finally the whole text must be printable ASCII without those
// characters. Any problem returns an error wrapping ErrInvalidConfig, and no config.
func Render(lb *nsv1.LoadBalancer, p Paths) (*Config, error) {
	r := &renderer{}
	r.render(lb, p)
	if len(r.errs) > 0 {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidConfig, lb.GetId(), errors.Join(r.errs...))
	}
	text := []byte(r.b.String())
	if err := checkText(text); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidConfig, lb.GetId(), err)
	}
	return &Config{Text: text, Servers: r.servers}, nil
}

type renderer struct {
	b       strings.Builder
	errs    []error
	servers []ServerKey
}

func (r *renderer) errorf(field, format string, a ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
}

func (r *renderer) line(format string, a ...any) {
	r.b.WriteString("    ")
	fmt.Fprintf(&r.b, format, a...)
	r.b.WriteByte('\n')
}

func (r *renderer) section(format string, a ...any) {
	if r.b.Len() > 0 {
		r.b.WriteByte('\n')
	}
	fmt.Fprintf(&r.b, format, a...)
	r.b.WriteByte('\n')
}

// id checks a value used as a haproxy proxy or server name.
func (r *renderer) id(field, v string) string {
	if v == "" || len(v) > 64 || strings.IndexFunc(v, func(c rune) bool { return !isIDChar(c) }) >= 0 {
		r.errorf(field, "%q is not an id (want 1-64 of A-Z a-z 0-9 - _)", v)
		return "invalid"
	}
	return v
}

func isIDChar(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// path checks a file path that goes into the config.
func (r *renderer) path(field, v string) string {
	if !strings.HasPrefix(v, "/") || unsafeText(v) != "" {
		r.errorf(field, "%q is not an absolute path safe in haproxy config", v)
		return "/invalid"
	}
	return v
}

// addr parses an IP address; it is printed back from the parsed value.
func (r *renderer) addr(field, v string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		r.errorf(field, "%q is not an IP address", v)
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func (r *renderer) port(field string, v uint32) int {
	if v < 1 || v > 65535 {
		r.errorf(field, "%d is not a port (1-65535)", v)
		return 1
	}
	return int(v)
}

// unsafeText returns what makes s unfit for a haproxy config word: whitespace, control or
// non-ASCII characters (line separators included), `#` (a comment), quotes and backslashes
// (haproxy's quoting and escaping, and environment variables inside double quotes).
func unsafeText(s string) string {
	for _, c := range s {
		switch {
		case c <= ' ' || c >= 0x7f:
			return strconv.QuoteRune(c)
		case c == '#' || c == '"' || c == '\'' || c == '\\':
			return string(c)
		}
	}
	return ""
}

// checkText is the last line of defence: the config is printable ASCII lines without `#`,
// quotes or backslashes, each a section header or an indented directive.
func checkText(text []byte) error {
	for n, ln := range strings.Split(string(text), "\n") {
		for _, c := range ln {
			if c < ' ' || c >= 0x7f || c == '#' || c == '"' || c == '\'' || c == '\\' {
				return fmt.Errorf("rendered line %d holds %s", n+1, strconv.QuoteRune(c))
			}
		}
	}
	return nil
}

// hostPort prints an address and port as haproxy reads them ([v6]:port).
func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func adminUp(v *bool) bool { return v == nil || *v }

func (r *renderer) render(lb *nsv1.LoadBalancer, p Paths) {
	r.id("id", lb.GetId())
	vip, vipOK := r.addr("vip_address", lb.GetVipAddress())
	pools := map[string]*nsv1.Pool{}
	for _, pool := range lb.GetPools() {
		pools[pool.GetId()] = pool
	}
	// Global maxconn is the sum of the listeners' connection_limit (Neutron bug 1544861:
	// a lower global limit queued connections the listeners allowed). With an unlimited
	// listener it is left out: haproxy then sizes it from the file descriptor limit, where
	// Neutron's 2000 per unlimited listener made several listeners ask for more descriptors
	// than the host allows ("Cannot raise FD limit") and the reload fail.
	maxconn, unlimited := 0, false
	for _, l := range lb.GetListeners() {
		if !adminUp(l.AdminStateUp) {
			continue
		}
		if l.ConnectionLimit != nil && l.GetConnectionLimit() > 0 {
			maxconn += int(l.GetConnectionLimit())
		} else {
			unlimited = true
		}
	}

	r.section("global")
	r.line("user nobody")
	r.line("group nogroup")
	if !unlimited && maxconn > 0 {
		r.line("maxconn %d", maxconn)
	}
	r.line("stats socket %s mode 600 level admin expose-fd listeners", r.path("stats socket", p.Stats))
	r.line("server-state-file %s", r.path("server state file", p.State))

	r.section("defaults")
	r.line("retries 3")
	r.line("option redispatch")
	r.line("timeout connect 5000")
	r.line("timeout client 50000")
	r.line("timeout server 50000")
	r.line("load-server-state-from-file global")

	for i, l := range lb.GetListeners() {
		if adminUp(l.AdminStateUp) {
			r.frontend(fmt.Sprintf("listeners[%d]", i), l, vip, vipOK, pools)
		}
	}
	for i, pool := range lb.GetPools() {
		r.backend(fmt.Sprintf("pools[%d]", i), pool, vip.Is6())
	}
}

// modeOf maps a listener or pool protocol to haproxy's mode: HTTPS is TLS passthrough.
func (r *renderer) modeOf(field, protocol string) string {
	switch protocol {
	case "HTTP":
		return "http"
	case "TCP", "HTTPS":
		return "tcp"
	}
	r.errorf(field, "protocol %q is not HTTP, TCP or HTTPS", protocol)
	return "tcp"
}

func (r *renderer) frontend(at string, l *nsv1.Listener, vip netip.Addr, vipOK bool, pools map[string]*nsv1.Pool) {
	name := r.id(at+".id", l.GetId())
	mode := r.modeOf(at+".protocol", l.GetProtocol())
	port := r.port(at+".protocol_port", l.GetProtocolPort())
	r.section("frontend %s", name)
	r.line("mode %s", mode)
	if vipOK {
		r.line("bind %s", hostPort(vip, port))
	}
	if l.ConnectionLimit != nil {
		switch c := l.GetConnectionLimit(); {
		case c > 0:
			r.line("maxconn %d", c)
		case c != -1:
			r.errorf(at+".connection_limit", "%d is not -1 or a positive limit", c)
		}
	}
	if mode == "http" {
		r.line("option forwardfor")
	}
	if id := l.GetDefaultPoolId(); id != "" {
		if _, ok := pools[id]; !ok {
			r.errorf(at+".default_pool_id", "pool %q is not a pool of this load balancer", id)
		}
		r.line("default_backend %s", r.id(at+".default_pool_id", id))
	}
}

func (r *renderer) backend(at string, pool *nsv1.Pool, v6 bool) {
	name := r.id(at+".id", pool.GetId())
	mode := r.modeOf(at+".protocol", pool.GetProtocol())
	r.section("backend %s", name)
	r.line("mode %s", mode)
	switch alg := pool.GetLbAlgorithm(); alg {
	case "ROUND_ROBIN":
		r.line("balance roundrobin")
	case "LEAST_CONNECTIONS":
		r.line("balance leastconn")
	case "SOURCE_IP":
		r.line("balance source")
	default:
		r.errorf(at+".lb_algorithm", "%q is not ROUND_ROBIN, LEAST_CONNECTIONS or SOURCE_IP", alg)
	}
	if !adminUp(pool.AdminStateUp) {
		r.line("disabled")
	}
	cookies := false
	if sp := pool.GetSessionPersistence(); sp != nil {
		cookies = r.persistence(at+".session_persistence", sp, mode, v6)
	}
	check := ""
	if hm := pool.GetHealthmonitor(); hm != nil && adminUp(hm.AdminStateUp) {
		check = r.monitor(at+".healthmonitor", hm)
	}
	for i, m := range pool.GetMembers() {
		r.server(fmt.Sprintf("%s.members[%d]", at, i), name, m, cookies, check)
	}
}

// persistence renders session persistence and reports whether servers need a cookie.
func (r *renderer) persistence(at string, sp *nsv1.SessionPersistence, mode string, v6 bool) bool {
	switch sp.GetType() {
	case "SOURCE_IP":
		table := "ip"
		if v6 {
			table = "ipv6"
		}
		r.line("stick-table type %s size %s", table, stickSize)
		r.line("stick on src")
	case "HTTP_COOKIE":
		if mode != "http" {
			r.errorf(at+".type", "HTTP_COOKIE needs an HTTP pool")
		}
		r.line("cookie SRV insert indirect nocache")
		return true
	case "APP_COOKIE":
		name := sp.GetCookieName()
		if name == "" || len(name) > 64 || strings.IndexFunc(name, func(c rune) bool { return !isIDChar(c) }) >= 0 {
			r.errorf(at+".cookie_name", "%q is not a cookie name (want 1-64 of A-Z a-z 0-9 - _)", name)
			name = "invalid"
		}
		if mode != "http" {
			r.errorf(at+".type", "APP_COOKIE needs an HTTP pool")
		}
		r.line("stick-table type string len 64 size %s", stickSize)
		r.line("stick store-response res.cook(%s)", name)
		r.line("stick match req.cook(%s)", name)
	default:
		r.errorf(at+".type", "%q is not SOURCE_IP, HTTP_COOKIE or APP_COOKIE", sp.GetType())
	}
	return false
}

// httpMethods are the methods a health monitor may send.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}

// monitor renders a health monitor's backend lines and returns the check options of its
// servers. PING and TCP are TCP connect checks (haproxy sends no ICMP), as in Neutron;
// HTTPS is an HTTP check over TLS without certificate verification (Neutron's
// ssl-hello-chk sends an SSLv3 hello that TLS 1.3-only servers refuse).
func (r *renderer) monitor(at string, hm *nsv1.HealthMonitor) string {
	delay, timeout, retries := hm.GetDelay(), hm.GetTimeout(), hm.GetMaxRetries()
	if delay < 1 {
		r.errorf(at+".delay", "%d is not at least 1 second", delay)
	}
	if timeout < 1 {
		r.errorf(at+".timeout", "%d is not at least 1 second", timeout)
	}
	if retries < 1 || retries > 10 {
		r.errorf(at+".max_retries", "%d is not 1-10", retries)
	}
	r.line("timeout check %ds", timeout)
	check := fmt.Sprintf("check inter %ds fall %d rise %d", delay, retries, retries)
	switch typ := hm.GetType(); typ {
	case "PING", "TCP":
		return check
	case "HTTP", "HTTPS":
		method := orDefault(hm.GetHttpMethod(), "GET")
		if !slices.Contains(httpMethods, method) {
			r.errorf(at+".http_method", "%q is not an HTTP method", method)
			method = "GET"
		}
		path := orDefault(hm.GetUrlPath(), "/")
		if bad := unsafeText(path); bad != "" || !strings.HasPrefix(path, "/") {
			r.errorf(at+".url_path", "%q is not a path safe in haproxy config (%s)", path, orDefault(bad, "no leading /"))
			path = "/"
		}
		r.line("option httpchk %s %s", method, path)
		expect, err := expectRule(orDefault(hm.GetExpectedCodes(), "200"))
		if err != nil {
			r.errorf(at+".expected_codes", "%v", err)
		}
		r.line("http-check expect %s", expect)
		if typ == "HTTPS" {
			check += " check-ssl verify none"
		}
		return check
	default:
		r.errorf(at+".type", "%q is not PING, TCP, HTTP or HTTPS", typ)
	}
	return ""
}

func orDefault(v, fallback string) string {
	if v == "" {
		return fallback
	}
	return v
}

func (r *renderer) server(at, backend string, m *nsv1.Member, cookies bool, check string) {
	name := r.id(at+".id", m.GetId())
	a, ok := r.addr(at+".address", m.GetAddress())
	port := r.port(at+".protocol_port", m.GetProtocolPort())
	weight := uint32(1)
	if m.Weight != nil {
		weight = m.GetWeight()
	}
	if weight > 256 {
		r.errorf(at+".weight", "%d is not 0-256", weight)
	}
	if !ok {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server %s %s weight %d", name, hostPort(a, port), weight)
	if cookies {
		fmt.Fprintf(&b, " cookie %s", name)
	}
	if check != "" {
		b.WriteString(" " + check)
	}
	if !adminUp(m.AdminStateUp) {
		b.WriteString(" disabled")
	}
	r.line("%s", b.String())
	r.servers = append(r.servers, ServerKey{Backend: backend, Server: name, Addr: a.String(), Port: port})
}

// expectRule turns expected_codes ("200", "200,202", "200-204") into an http-check expect
// rule: "status 200" for one code, else an anchored regex over the codes, with whole tens
// and hundreds folded into character classes.
func expectRule(codes string) (string, error) {
	set := map[int]bool{}
	for item := range strings.SplitSeq(codes, ",") {
		first, last, isRange := strings.Cut(item, "-")
		a, err := statusCode(first)
		if err != nil {
			return "status 200", fmt.Errorf("%q: %w", codes, err)
		}
		b := a
		if isRange {
			if b, err = statusCode(last); err != nil {
				return "status 200", fmt.Errorf("%q: %w", codes, err)
			}
			if b < a {
				return "status 200", fmt.Errorf("%q: range %s is backwards", codes, item)
			}
		}
		for c := a; c <= b; c++ {
			set[c] = true
		}
	}
	if len(set) == 1 {
		for c := range set {
			return fmt.Sprintf("status %d", c), nil
		}
	}
	var alts []string
	for h := 1; h <= 5; h++ {
		if all(set, h*100, h*100+99) {
			alts = append(alts, fmt.Sprintf("%d[0-9][0-9]", h))
			continue
		}
		for t := h * 10; t < h*10+10; t++ {
			if all(set, t*10, t*10+9) {
				alts = append(alts, fmt.Sprintf("%d[0-9]", t))
				continue
			}
			for c := t * 10; c < t*10+10; c++ {
				if set[c] {
					alts = append(alts, strconv.Itoa(c))
				}
			}
		}
	}
	return "rstatus ^(" + strings.Join(alts, "|") + ")$", nil
}

func all(set map[int]bool, from, to int) bool {
	for c := from; c <= to; c++ {
		if !set[c] {
			return false
		}
	}
	return true
}

func statusCode(s string) (int, error) {
	if len(s) != 3 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a 3-digit HTTP status code", s)
	}
	c, _ := strconv.Atoi(s)
	if c < 100 || c > 599 {
		return 0, fmt.Errorf("%d is outside 100-599", c)
	}
	return c, nil
}
