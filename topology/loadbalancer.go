package topology

import (
	"fmt"
	"net/netip"
	"strconv"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// lbProtocols are the protocols of listeners and pools.
var lbProtocols = []string{"HTTP", "TCP", "HTTPS"}

// ValidateLoadBalancer checks one load balancer graph on its own: listeners, pools,
// health monitors and members, and the references between them.
func ValidateLoadBalancer(path string, lb *netsourcev1.LoadBalancer) error {
	return validateOne(path, "loadbalancer", lb, validateLoadBalancer)
}

func validateLoadBalancer(s scope, lb *netsourcev1.LoadBalancer) {
	s.meta(lb.GetId(), lb.GetName())
	s.requireHost("host", lb.GetHost())
	s.requireID("vip_network_id", lb.GetVipNetworkId())
	s.requireID("vip_subnet_id", lb.GetVipSubnetId())
	s.requireIP("vip_address", lb.GetVipAddress())
	s.optionalID("vip_port_id", lb.GetVipPortId())

	pools := map[string]*netsourcev1.Pool{}
	for _, p := range lb.GetPools() {
		if _, dup := pools[p.GetId()]; !dup {
			pools[p.GetId()] = p
		}
	}
	ids, ports := firstSeen{}, firstSeen{}
	for i, l := range lb.GetListeners() {
		ls := s.item("listeners", i)
		ids.add(ls, "id", l.GetId(), "")
		if validateListener(ls, l, pools) {
			port := l.GetProtocolPort()
			ports.add(ls, "protocol_port", strconv.Itoa(int(port)), fmt.Sprintf("port %d", port))
		}
	}
	ids = firstSeen{}
	for i, p := range lb.GetPools() {
		ps := s.item("pools", i)
		ids.add(ps, "id", p.GetId(), "")
		validatePool(ps, p)
	}
}

// validateListener checks a listener and its default pool; it reports whether protocol_port is valid.
func validateListener(s scope, l *netsourcev1.Listener, pools map[string]*netsourcev1.Pool) bool {
	s.meta(l.GetId(), l.GetName())
	protoOK := s.check("protocol", oneOf("protocol", l.GetProtocol(), lbProtocols...))
	portOK := s.check("protocol_port", inRange("port", l.GetProtocolPort(), 1, 65535))
	if c := l.GetConnectionLimit(); l.ConnectionLimit != nil && c != -1 && c < 1 {
		s.errorf("connection_limit", "%d is not allowed (want -1 for unlimited or at least 1)", c)
	}
	if id := l.GetDefaultPoolId(); id != "" && s.check("default_pool_id", CheckID(id)) {
		pool, ok := pools[id]
		switch {
		case !ok:
			s.errorf("default_pool_id", "pool %s is not a pool of this load balancer", quote(id))
		case protoOK:
			s.check("default_pool_id", poolFits(l.GetProtocol(), pool))
		}
	}
	return portOK
}

// poolFits accepts a pool that can serve a listener of protocol lp: HTTP needs HTTP, TCP and
// HTTPS (passed through) need TCP or HTTPS.
func poolFits(lp string, pool *netsourcev1.Pool) error {
	pp := pool.GetProtocol()
	switch {
	case oneOf("protocol", pp, lbProtocols...) != nil:
		return nil // reported at the pool
	case lp == "HTTP" && pp != "HTTP":
		return fmt.Errorf("pool %s speaks %s; an HTTP listener needs an HTTP pool", quote(pool.GetId()), pp)
	case lp != "HTTP" && pp == "HTTP":
		return fmt.Errorf("pool %s speaks HTTP; a %s listener needs a TCP or HTTPS pool", quote(pool.GetId()), lp)
	}
	return nil
}

func validatePool(s scope, p *netsourcev1.Pool) {
	s.meta(p.GetId(), p.GetName())
	s.check("protocol", oneOf("protocol", p.GetProtocol(), lbProtocols...))
	s.check("lb_algorithm", oneOf("lb_algorithm", p.GetLbAlgorithm(), "ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP"))
	if sp := p.GetSessionPersistence(); sp != nil {
		validatePersistence(s.at("session_persistence"), sp, p.GetProtocol())
	}
	if hm := p.GetHealthmonitor(); hm != nil {
		validateMonitor(s.at("healthmonitor"), hm)
	}
	ids, endpoints := firstSeen{}, firstSeen{}
	for i, m := range p.GetMembers() {
		ms := s.item("members", i)
		ids.add(ms, "id", m.GetId(), "")
		if ep, ok := validateMember(ms, m); ok {
			endpoints.add(ms, "address", ep.String(), ep.String())
		}
	}
}

// validatePersistence checks session persistence; cookies need an HTTP pool.
func validatePersistence(s scope, sp *netsourcev1.SessionPersistence, poolProtocol string) {
	typ, name := sp.GetType(), sp.GetCookieName()
	if !s.check("type", oneOf("session persistence type", typ, "SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE")) {
		return
	}
	switch {
	case typ == "APP_COOKIE" && name == "":
		s.errorf("cookie_name", "required for APP_COOKIE")
	case typ != "APP_COOKIE" && name != "":
		s.errorf("cookie_name", "only for APP_COOKIE, not %s", typ)
	case name != "":
		s.check("cookie_name", checkToken("cookie name", name, 64, "_-"))
	}
	if typ != "SOURCE_IP" && poolProtocol != "HTTP" && oneOf("", poolProtocol, lbProtocols...) == nil {
		s.errorf("type", "%s needs an HTTP pool, not %s", typ, poolProtocol)
	}
}

// validateMonitor checks a health monitor; the HTTP fields are for HTTP and HTTPS monitors
// only (consumers default them to GET, / and 200).
func validateMonitor(s scope, hm *netsourcev1.HealthMonitor) {
	s.optionalID("id", hm.GetId())
	typ := hm.GetType()
	typeOK := s.check("type", oneOf("health monitor type", typ, "PING", "TCP", "HTTP", "HTTPS"))
	delay, timeout := hm.GetDelay(), hm.GetTimeout()
	if delay < 1 {
		s.errorf("delay", "required, at least 1 second")
	}
	switch {
	case timeout < 1:
		s.errorf("timeout", "required, at least 1 second")
	case delay >= 1 && timeout > delay:
		s.errorf("timeout", "timeout %d is longer than delay %d", timeout, delay)
	}
	s.check("max_retries", inRange("max_retries", hm.GetMaxRetries(), 1, 10))
	isHTTP := typ == "HTTP" || typ == "HTTPS"
	for _, f := range []struct {
		name, value string
		check       func(string) error
	}{
		{"http_method", hm.GetHttpMethod(), func(v string) error { return oneOf("http_method", v, httpMethods...) }},
		{"url_path", hm.GetUrlPath(), checkURLPath},
		{"expected_codes", hm.GetExpectedCodes(), checkExpectedCodes},
	} {
		switch {
		case f.value == "":
		case typeOK && !isHTTP:
			s.errorf(f.name, "only for HTTP or HTTPS monitors, not %s", typ)
		default:
			s.check(f.name, f.check(f.value))
		}
	}
}

// validateMember checks a member and returns its address and port when both are valid.
func validateMember(s scope, m *netsourcev1.Member) (netip.AddrPort, bool) {
	s.meta(m.GetId(), m.GetName())
	a, addrOK := s.requireIP("address", m.GetAddress())
	portOK := s.check("protocol_port", inRange("port", m.GetProtocolPort(), 1, 65535))
	if m.Weight != nil {
		s.check("weight", inRange("weight", m.GetWeight(), 0, 256))
	}
	s.optionalID("subnet_id", m.GetSubnetId())
	return netip.AddrPortFrom(a, uint16(m.GetProtocolPort())), addrOK && portOK
}
