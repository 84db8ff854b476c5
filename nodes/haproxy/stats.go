package haproxy

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// StatsCommand asks the stats socket for frontends, backends and servers (type mask 1|2|4).
const StatsCommand = "show stat -1 7 -1"

// Row is one line of `show stat`.
type Row struct {
	Status      string // OPEN, FULL, STOP (frontend); UP, DOWN (backend); UP, DOWN, MAINT, DRAIN, NOLB, no check, "UP 1/2" ... (server)
	Weight      int
	CheckStatus string // L4OK, L4CON, L7STS, ... without haproxy's "* " (check running) mark
	CheckDesc   string
	Sessions    int64 // scur
	Total       int64 // stot
}

// Stats is what one haproxy instance reports.
type Stats struct {
	Frontends map[string]Row            // by listener id
	Backends  map[string]Row            // by pool id
	Servers   map[string]map[string]Row // by pool id, then member id
}

// ParseStats reads the CSV of `show stat`: a header line "# pxname,svname,..." and one line
// per proxy or server.
func ParseStats(r io.Reader) (*Stats, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("stats: no header: %w", err)
	}
	if len(header) == 0 || !strings.HasPrefix(header[0], "# ") {
		return nil, fmt.Errorf("stats: header %q does not start with \"# \"", strings.Join(header, ","))
	}
	header[0] = strings.TrimPrefix(header[0], "# ")
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, need := range []string{"pxname", "svname", "status", "type"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("stats: no %s column", need)
		}
	}
	st := &Stats{Frontends: map[string]Row{}, Backends: map[string]Row{}, Servers: map[string]map[string]Row{}}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		num := func(name string) int64 {
			n, _ := strconv.ParseInt(get(name), 10, 64)
			return n
		}
		row := Row{
			Status: get("status"), Weight: int(num("weight")),
			CheckStatus: strings.TrimPrefix(get("check_status"), "* "), CheckDesc: get("check_desc"),
			Sessions: num("scur"), Total: num("stot"),
		}
		px, sv := get("pxname"), get("svname")
		switch get("type") {
		case "0":
			st.Frontends[px] = row
		case "1":
			st.Backends[px] = row
		case "2":
			if st.Servers[px] == nil {
				st.Servers[px] = map[string]Row{}
			}
			st.Servers[px][sv] = row
		}
	}
}

// Operating statuses (Neutron/Octavia vocabulary).
const (
	Online    = "ONLINE"
	Offline   = "OFFLINE"
	Degraded  = "DEGRADED"
	Draining  = "DRAINING"
	NoMonitor = "NO_MONITOR"
	Error     = "ERROR"
)

// MemberStatus maps a server row to a member's operating_status. Neutron's driver knew only
// ONLINE and OFFLINE (reference 3.8); netsource uses the whole vocabulary:
//
//	UP, "UP 1/2" (going down)              ONLINE, or DRAINING with weight 0 (takes no new clients)
//	DRAIN, NOLB                            DRAINING
//	no check                               NO_MONITOR
//	MAINT (admin down)                     OFFLINE
//	DOWN, "DOWN 1/2" (going up):
//	  unreachable (L4CON, L4TOUT, SOCKERR, timeouts)            OFFLINE
//	  answering but failing the check (L7STS, L7RSP, L6RSP)     ERROR
//	not reported                           OFFLINE
//	anything else                          ERROR
func MemberStatus(r Row, reported bool) string {
	if !reported {
		return Offline
	}
	s := r.Status
	switch {
	case s == "no check":
		return NoMonitor
	case strings.HasPrefix(s, "MAINT"):
		return Offline
	case s == "DRAIN" || s == "NOLB" || strings.HasPrefix(s, "NOLB "):
		return Draining
	case s == "UP" || strings.HasPrefix(s, "UP "):
		if r.Weight == 0 {
			return Draining
		}
		return Online
	case s == "DOWN" || strings.HasPrefix(s, "DOWN "):
		switch r.CheckStatus {
		case "L7STS", "L7RSP", "L6RSP":
			return Error
		}
		return Offline
	}
	return Error
}

// Statuses derives the operating status of a load balancer, its listeners, pools and
// members from the stats of its running haproxy, as status details:
//
//	member:<id>    MemberStatus
//	pool:<id>      ONLINE; DEGRADED when an admin-up member is OFFLINE or ERROR; ERROR when
//	               haproxy has no server left for it; OFFLINE when admin down
//	listener:<id>  ONLINE (OPEN), DEGRADED (FULL: connection_limit reached), OFFLINE (admin
//	               down or not running)
//	operating_status  ONLINE, or DEGRADED when a listener or a pool a listener uses is not ONLINE
func Statuses(lb *nsv1.LoadBalancer, st *Stats) map[string]string {
	out := map[string]string{}
	if st == nil {
		st = &Stats{}
	}
	pools := map[string]string{}
	for _, p := range lb.GetPools() {
		servers := st.Servers[p.GetId()]
		status := Online
		be, ok := st.Backends[p.GetId()]
		switch {
		case !adminUp(p.AdminStateUp):
			status = Offline
		case ok && strings.HasPrefix(be.Status, "DOWN") && len(p.GetMembers()) > 0:
			status = Error
		case !ok:
			status = Offline
		}
		for _, m := range p.GetMembers() {
			row, reported := servers[m.GetId()]
			ms := MemberStatus(row, reported)
			if !adminUp(p.AdminStateUp) {
				ms = Offline
			}
			out["member:"+m.GetId()] = ms
			if status == Online && adminUp(m.AdminStateUp) && (ms == Offline || ms == Error) {
				status = Degraded
			}
		}
		out["pool:"+p.GetId()] = status
		pools[p.GetId()] = status
	}
	lbStatus := Online
	for _, l := range lb.GetListeners() {
		status := Offline
		if adminUp(l.AdminStateUp) {
			switch st.Frontends[l.GetId()].Status {
			case "OPEN":
				status = Online
			case "FULL":
				status = Degraded
			}
			if status != Online {
				lbStatus = Degraded
			}
			if ps, ok := pools[l.GetDefaultPoolId()]; ok && ps != Online {
				lbStatus = Degraded
			}
		}
		out["listener:"+l.GetId()] = status
	}
	out["operating_status"] = lbStatus
	return out
}
