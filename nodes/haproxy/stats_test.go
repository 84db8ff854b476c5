package haproxy

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// testdata/show-stat.csv is `show stat -1 7 -1` of haproxy 2.6 with servers in every state:
// s1 UP, s2 DOWN (connection refused), s3 UP with weight 0, s4 disabled, s5/s6 unchecked.
func TestParseStats(t *testing.T) {
	f, err := os.Open("testdata/show-stat.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := ParseStats(f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for name, r := range st.Frontends {
		got["frontend "+name] = r.Status
	}
	for name, r := range st.Backends {
		got["backend "+name] = r.Status
	}
	for be, servers := range st.Servers {
		for name, r := range servers {
			got[be+"/"+name] = r.Status + " " + r.CheckStatus + " -> " + MemberStatus(r, true)
		}
	}
	want := map[string]string{
		"frontend f1": "OPEN", "frontend f2": "OPEN", "backend b1": "UP",
		"b1/s1": "UP L7OK -> ONLINE",
		"b1/s2": "DOWN L4CON -> OFFLINE",
		"b1/s3": "UP L7OK -> DRAINING",
		"b1/s4": "MAINT  -> OFFLINE",
		"b1/s5": "no check  -> NO_MONITOR",
		"b1/s6": "no check  -> NO_MONITOR",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestMemberStatus(t *testing.T) {
	for _, c := range []struct {
		row      Row
		reported bool
		want     string
	}{
		{Row{Status: "UP", Weight: 1}, true, Online},
		{Row{Status: "UP 1/3", Weight: 1}, true, Online}, // going down: still serving
		{Row{Status: "UP", Weight: 0}, true, Draining},
		{Row{Status: "DRAIN", Weight: 1}, true, Draining},
		{Row{Status: "NOLB", Weight: 1}, true, Draining},
		{Row{Status: "no check", Weight: 1}, true, NoMonitor},
		{Row{Status: "MAINT", Weight: 1}, true, Offline},
		{Row{Status: "MAINT (via b/s)", Weight: 1}, true, Offline},
		{Row{Status: "DOWN", CheckStatus: "L4CON"}, true, Offline},
		{Row{Status: "DOWN", CheckStatus: "L4TOUT"}, true, Offline},
		{Row{Status: "DOWN 1/2", CheckStatus: "L4CON"}, true, Offline}, // going up: not yet
		{Row{Status: "DOWN", CheckStatus: "L7STS"}, true, Error},       // answers, wrong status
		{Row{Status: "DOWN", CheckStatus: "L6RSP"}, true, Error},       // TLS failure
		{Row{Status: "WEIRD"}, true, Error},
		{Row{}, false, Offline},
	} {
		if got := MemberStatus(c.row, c.reported); got != c.want {
			t.Errorf("MemberStatus(%+v, %t) = %s, want %s", c.row, c.reported, got, c.want)
		}
	}
}

func TestStatuses(t *testing.T) {
	lb := goldenCases()["listeners-limits-admin-down"]
	pool1, pool3 := lb.Pools[0], lb.Pools[2]
	st := &Stats{
		Frontends: map[string]Row{lb.Listeners[0].Id: {Status: "OPEN"}, lb.Listeners[1].Id: {Status: "FULL"}, lb.Listeners[2].Id: {Status: "OPEN"}},
		Backends:  map[string]Row{pool1.Id: {Status: "UP"}, pool3.Id: {Status: "UP"}},
		Servers: map[string]map[string]Row{
			pool1.Id: {pool1.Members[0].Id: {Status: "UP", Weight: 1}, pool1.Members[1].Id: {Status: "DOWN", CheckStatus: "L4CON", Weight: 3}},
			pool3.Id: {pool3.Members[0].Id: {Status: "no check", Weight: 1}},
		},
	}
	got := Statuses(lb, st)
	want := map[string]string{
		"listener:" + lb.Listeners[0].Id:      Online,
		"listener:" + lb.Listeners[1].Id:      Degraded, // FULL
		"listener:" + lb.Listeners[2].Id:      Online,
		"listener:" + lb.Listeners[3].Id:      Offline, // admin down
		"pool:" + pool1.Id:                    Degraded,
		"pool:" + lb.Pools[1].Id:              Offline, // admin down
		"pool:" + pool3.Id:                    Online,
		"member:" + pool1.Members[0].Id:       Online,
		"member:" + pool1.Members[1].Id:       Offline,
		"member:" + lb.Pools[1].Members[0].Id: Offline,
		"member:" + pool3.Members[0].Id:       NoMonitor,
		"operating_status":                    Degraded,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	healthy := &nsv1.LoadBalancer{Id: lb.Id, Listeners: lb.Listeners[:1], Pools: []*nsv1.Pool{{Id: pool1.Id, Members: pool1.Members[:1]}}}
	if got := Statuses(healthy, st)["operating_status"]; got != Online {
		t.Errorf("healthy operating_status = %s", got)
	}
}

func TestParseShowProc(t *testing.T) {
	out := `#<PID>          <type>          <reloads>       <uptime>        <version>
13993           master          2 [failed: 1]   0d00h00m13s     2.6.12-1+deb12u4
# workers
14165           worker          1               0d00h00m10s     2.6.12-1+deb12u4
# old workers
13996           worker          2               0d00h00m20s     2.6.12-1+deb12u4
# programs

`
	got, err := parseShowProc([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := procInfo{master: 13993, reloads: 2, failed: 1, workers: []int{14165}, oldWorkers: []int{13996}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(procInfo{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := parseShowProc([]byte("Unknown command\n")); err == nil {
		t.Error("no master line accepted")
	}
}

func TestFilterServerState(t *testing.T) {
	state := `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 b1 1 s1 127.0.0.1 2 0 1 1 613 15 3 3 6 0 0 0 - 18081 - 0 0 - - 0
4 b1 2 s2 127.0.0.1 0 0 1 1 615 8 2 0 6 0 0 0 - 18089 - 0 0 - - 0
4 b1 6 s6 ::1 2 0 3 3 615 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0
5 b2 1 s1 127.0.0.1 2 0 1 1 615 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0
`
	got := string(filterServerState([]byte(state), []ServerKey{
		{Backend: "b1", Server: "s1", Addr: "127.0.0.1", Port: 18081}, // unchanged: kept
		{Backend: "b1", Server: "s2", Addr: "127.0.0.1", Port: 18090}, // port changed: dropped
		{Backend: "b1", Server: "s6", Addr: "::1", Port: 18081},       // IPv6: kept
	}))
	want := `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 b1 1 s1 127.0.0.1 2 0 1 1 613 15 3 3 6 0 0 0 - 18081 - 0 0 - - 0
4 b1 6 s6 ::1 2 0 3 3 615 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
