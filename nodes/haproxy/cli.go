package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// query sends one command to a haproxy CLI socket (stats or master) and returns the whole
// answer. Closing the write side ends the session: haproxy answers and closes, in both the
// stats and the master CLI (which would otherwise wait for more commands).
func query(ctx context.Context, path, command string) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return nil, fmt.Errorf("send %q to %s: %w", command, path, err)
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return nil, fmt.Errorf("read answer to %q from %s: %w", command, path, err)
	}
	return out, nil
}

// procInfo is what the master CLI's `show proc` says.
type procInfo struct {
	master     int
	reloads    int
	failed     int
	workers    []int // current workers
	oldWorkers []int // workers of earlier configs still draining connections
}

// parseShowProc reads
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	13993           master          1 [failed: 0]   0d00h00m04s     2.6.12
//	# workers
//	14165           worker          0               0d00h00m01s     2.6.12
//	# old workers
//	13996           worker          1               0d00h00m09s     2.6.12
//	# programs
func parseShowProc(out []byte) (procInfo, error) {
	var p procInfo
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		ln := strings.TrimSpace(sc.Text())
		if ln == "" {
			continue
		}
		if strings.HasPrefix(ln, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(ln, "#"))
			continue
		}
		f := strings.Fields(ln)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch {
		case f[1] == "master":
			p.master = pid
			p.reloads, _ = strconv.Atoi(f[2])
			if len(f) >= 5 && f[3] == "[failed:" {
				p.failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case f[1] == "worker" && section == "workers":
			p.workers = append(p.workers, pid)
		case f[1] == "worker" && section == "old workers":
			p.oldWorkers = append(p.oldWorkers, pid)
		}
	}
	if p.master == 0 {
		return p, fmt.Errorf("show proc: no master line in %q", out)
	}
	return p, nil
}

// filterServerState keeps the health state of `show servers state` only for servers that
// the new config has with the same address and port: haproxy would otherwise apply a saved
// port to a member whose port changed.
func filterServerState(state []byte, servers []ServerKey) []byte {
	keep := map[string]bool{}
	for _, s := range servers {
		keep[s.Backend+" "+s.Server+" "+s.Addr+" "+strconv.Itoa(s.Port)] = true
	}
	var out bytes.Buffer
	out.WriteString("1\n")
	col := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(state))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		ln := sc.Text()
		switch {
		case strings.HasPrefix(ln, "# "):
			col = map[string]int{}
			for i, name := range strings.Fields(strings.TrimPrefix(ln, "# ")) {
				col[name] = i
			}
			out.WriteString(ln + "\n")
			continue
		case ln == "1" || strings.TrimSpace(ln) == "":
			continue
		}
		f := strings.Fields(ln)
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		if keep[get("be_name")+" "+get("srv_name")+" "+get("srv_addr")+" "+get("srv_port")] {
			out.WriteString(ln + "\n")
		}
	}
	return out.Bytes()
}
