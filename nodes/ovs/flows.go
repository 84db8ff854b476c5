package ovs

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Cookies. Every flow netsource installs carries a cookie whose top 16 bits are "NS"
// (0x4e53); the next 8 bits say what the flow is for and the low 40 bits which object
// (a local VLAN, a tap id). Flows with another prefix are never modified or deleted, and
// flow dumps ask OVS for netsource's prefix only.
const (
	cookiePrefix uint64 = 0x4e53 << 48
	cookieMask   uint64 = 0xffff << 48
	objectMask   uint64 = 1<<40 - 1

	kindBase       = 0x00 // the static pipeline of each bridge
	kindNetwork    = 0x01 // one network's flows (id: local VLAN)
	kindTunnel     = 0x02 // tunnel ports: classification, TaaS flood
	kindTapService = 0x10 // a tap service's delivery (id: tap id)
	kindTapFlow    = 0x11 // tap flows' mirroring and source-side checks (id: tap id)
	kindLearned    = 0xfe // MAC learning in br-tun table 20 (learn action): not synced
	kindTaasLearn  = 0xff // TaaS destination learning in br-tun table 30: not synced
)

// Cookie returns the cookie of an object's flows.
func Cookie(kind int, id uint64) uint64 {
	return cookiePrefix | uint64(kind&0xff)<<40 | id&objectMask
}

// CookieKind returns the kind byte of a netsource cookie.
func CookieKind(c uint64) int { return int(c >> 40 & 0xff) }

// TapServiceCookie and TapFlowCookie are the cookies of the flows a tap service's and its
// tap flows' tap id installs, for operators and tests counting them.
func TapServiceCookie(tapID int) uint64 { return Cookie(kindTapService, uint64(tapID)) }

// TapFlowCookie: see TapServiceCookie.
func TapFlowCookie(tapID int) uint64 { return Cookie(kindTapFlow, uint64(tapID)) }

// Flow is one OpenFlow flow as netsource writes it. Match and Actions are in the form
// ovs-ofctl dump-flows --no-names prints, so a programmed flow compares equal to its dump.
type Flow struct {
	Cookie   uint64
	Table    int
	Priority int
	Match    string // comma-separated fields, "" for all packets
	Actions  string
}

// key identifies a flow in its table: what OpenFlow's strict match compares. Match fields
// are compared as a set: ovs-ofctl prints them in its own order.
func (f Flow) key() string {
	return fmt.Sprintf("table=%d,priority=%d,%s", f.Table, f.Priority, normMatch(f.Match))
}

func normMatch(m string) string {
	if m == "" {
		return ""
	}
	fields := strings.Split(m, ",")
	slices.Sort(fields)
	return strings.Join(fields, ",")
}

// spec is the flow without actions, as delete_strict takes it.
func (f Flow) spec() string {
	s := fmt.Sprintf("cookie=%#x/-1,table=%d,priority=%d", f.Cookie, f.Table, f.Priority)
	if f.Match != "" {
		s += "," + f.Match
	}
	return s
}

// String is the flow as add-flow(s) takes it.
func (f Flow) String() string {
	s := fmt.Sprintf("cookie=%#x,table=%d,priority=%d", f.Cookie, f.Table, f.Priority)
	if f.Match != "" {
		s += "," + f.Match
	}
	return s + ",actions=" + f.Actions
}

// parseDump reads the output of `ovs-ofctl dump-flows --no-stats --no-names`, one flow per
// line after the reply header:
//
//	cookie=0x4e53000000000000, table=2, priority=1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)
//
// Flows of the learned kinds and flows with timeouts are skipped: they are not netsource's
// to reconcile.
func parseDump(out string) ([]Flow, error) {
	var flows []Flow
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "cookie=") {
			continue
		}
		head, actions, ok := strings.Cut(line, " actions=")
		if !ok {
			return nil, fmt.Errorf("flow dump line without actions: %q", line)
		}
		f := Flow{Actions: actions, Priority: 32768}
		parts := strings.Split(head, ", ")
		skip := false
		for i, p := range parts {
			if i == len(parts)-1 && !strings.HasPrefix(p, "cookie=") && !strings.HasPrefix(p, "table=") {
				// "priority=N,match..." (priority left out when it is the default)
				fields := strings.Split(p, ",")
				var match []string
				for _, fl := range fields {
					if v, ok := strings.CutPrefix(fl, "priority="); ok {
						n, err := strconv.Atoi(v)
						if err != nil {
							return nil, fmt.Errorf("flow dump line %q: priority: %w", line, err)
						}
						f.Priority = n
						continue
					}
					match = append(match, fl)
				}
				f.Match = strings.Join(match, ",")
				continue
			}
			k, v, _ := strings.Cut(p, "=")
			switch k {
			case "cookie":
				c, err := strconv.ParseUint(v, 0, 64)
				if err != nil {
					return nil, fmt.Errorf("flow dump line %q: cookie: %w", line, err)
				}
				f.Cookie = c
			case "table":
				n, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("flow dump line %q: table: %w", line, err)
				}
				f.Table = n
			case "idle_timeout", "hard_timeout", "importance":
				skip = true
			}
		}
		if skip || f.Cookie&cookieMask != cookiePrefix {
			continue
		}
		if k := CookieKind(f.Cookie); k == kindLearned || k == kindTaasLearn {
			continue
		}
		flows = append(flows, f)
	}
	return flows, nil
}

// diffFlows returns the flow mods that turn have into want: deletes of netsource flows
// nobody wants, and adds of wanted flows that are missing or differ (an add replaces the
// flow with the same match and priority). The result is sorted, so equal inputs give equal
// bundles.
func diffFlows(have, want []Flow) (dels, adds []Flow) {
	haveByKey := make(map[string]Flow, len(have))
	for _, f := range have {
		haveByKey[f.key()] = f
	}
	wantByKey := make(map[string]Flow, len(want))
	for _, f := range want {
		wantByKey[f.key()] = f
	}
	for k, f := range haveByKey {
		if _, ok := wantByKey[k]; !ok {
			dels = append(dels, f)
		}
	}
	for k, f := range wantByKey {
		if h, ok := haveByKey[k]; !ok || h.Actions != f.Actions || h.Cookie != f.Cookie {
			adds = append(adds, f)
		}
	}
	byKey := func(a, b Flow) int { return strings.Compare(a.key(), b.key()) }
	slices.SortFunc(dels, byKey)
	slices.SortFunc(adds, byKey)
	return dels, adds
}

// bundle is the add-flows input that applies dels and adds in one OpenFlow bundle.
func bundle(dels, adds []Flow) string {
	var b strings.Builder
	for _, f := range dels {
		b.WriteString("delete_strict " + f.spec() + "\n")
	}
	for _, f := range adds {
		b.WriteString("add " + f.String() + "\n")
	}
	return b.String()
}
