package streams

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// ClusterState is what a server knows about its JetStream cluster.
type ClusterState struct {
	Name   string // cluster name ("" on a single server)
	Leader string // meta leader's server name
	Size   int    // servers in the JetStream cluster
	Online int    // of those, how many this server sees online (itself included)
}

// Replicas is the replica count netsource streams get on this cluster: 3 from three
// servers on (one server may fail without losing an acknowledged event), else 1.
func (c ClusterState) Replicas() int {
	if c.Size >= 3 {
		return 3
	}
	return 1
}

// JetStreamCluster reads ns's view of its JetStream cluster. A single server is a
// cluster of one.
func JetStreamCluster(ns *server.Server) (ClusterState, error) {
	if !ns.JetStreamIsClustered() {
		return ClusterState{Leader: ns.Name(), Size: 1, Online: 1}, nil
	}
	jsz, err := ns.Jsz(&server.JSzOptions{})
	if err != nil {
		return ClusterState{}, fmt.Errorf("jetstream cluster state: %w", err)
	}
	st := ClusterState{Name: ns.ClusterName(), Online: 1}
	if m := jsz.Meta; m != nil {
		st.Leader, st.Size = m.Leader, m.Size
		for _, p := range m.Replicas {
			if !p.Offline {
				st.Online++
			}
		}
	}
	return st, nil
}

// WaitCluster waits until ns's JetStream cluster has a meta leader and at least size
// servers online, and returns what it saw. Streams can be created from then on.
func WaitCluster(ctx context.Context, ns *server.Server, size int) (ClusterState, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var st ClusterState
	for {
		var err error
		st, err = JetStreamCluster(ns)
		if err != nil {
			return st, err
		}
		if st.Leader != "" && st.Online >= size && st.Size >= size && ns.JetStreamIsCurrent() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("jetstream cluster %q: %d of %d servers online, leader %q: %w", st.Name, st.Online, size, st.Leader, ctx.Err())
		case <-tick.C:
		}
	}
}

// ExpectedClusterSize is how many servers a node with these options expects: its routes
// plus itself. A route to the node's own listen address (one route list shared by every
// node) is not counted twice.
func ExpectedClusterSize(c ClusterOptions) int {
	if c.Name == "" {
		return 1
	}
	self := map[string]bool{}
	if host, port, err := net.SplitHostPort(c.Listen); err == nil {
		self[net.JoinHostPort(host, port)] = true
		if host == "" || host == "0.0.0.0" || host == "::" || host == "localhost" || host == "127.0.0.1" {
			for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
				self[net.JoinHostPort(h, port)] = true
			}
		}
	}
	n := 1
	seen := map[string]bool{}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || seen[u.Host] || self[u.Host] {
			continue
		}
		seen[u.Host] = true
		n++
	}
	return n
}

// StartLocalCluster starts n servers in this process that form one JetStream cluster on
// loopback (tests, demos): server i is "<name>-<i>", stores under dir/<i>, takes clients
// on a random port and routes on consecutive free ports picked at random from
// [basePort, basePort+2000). Route ports must be known before the servers start, so they
// cannot be left to the kernel; keep basePort+2000 below the Linux ephemeral range
// (32768-60999) so they never collide with clients' ports. It returns once the cluster has
// a meta leader and every server online.
func StartLocalCluster(ctx context.Context, dir, name string, n, basePort int, configFile string, log zerolog.Logger) ([]*server.Server, error) {
	basePort, err := freeRoutePorts(basePort, n)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(basePort+i))
	}
	var servers []*server.Server
	stopAll := func() {
		for _, s := range servers {
			ShutdownServer(s)
		}
	}
	for i := range n {
		ns, err := StartServer(ServerOptions{
			StoreDir: filepath.Join(dir, strconv.Itoa(i)), Listen: "127.0.0.1:-1", Name: fmt.Sprintf("%s-%d", name, i),
			MaxStore: 1 << 30, MaxMemory: 256 << 20, Log: log, ConfigFile: configFile,
			Cluster: ClusterOptions{Name: name, Listen: "127.0.0.1:" + strconv.Itoa(basePort+i), Routes: routes},
		})
		if err != nil {
			stopAll()
			return nil, err
		}
		servers = append(servers, ns)
	}
	for _, ns := range servers {
		if _, err := WaitCluster(ctx, ns, n); err != nil {
			stopAll()
			return nil, err
		}
	}
	return servers, nil
}

// freeRoutePorts finds n consecutive ports that loopback listeners can take now, from a
// random start in [base, base+2000): two test processes of the same package (two runs at
// once) then rarely even try the same ports.
func freeRoutePorts(base, n int) (int, error) {
	for range 200 {
		start := base + rand.IntN(2000/n)*n
		free := true
		for i := range n {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(start+i))
			if err != nil {
				free = false
				break
			}
			_ = l.Close()
		}
		if free {
			return start, nil
		}
	}
	return 0, fmt.Errorf("no %d free consecutive route ports in [%d, %d)", n, base, base+2000)
}

// ClientURLs joins the servers' client URLs for nats.Connect, which then fails over
// between them.
func ClientURLs(servers []*server.Server) string {
	var s string
	for i, ns := range servers {
		if i > 0 {
			s += ","
		}
		s += ns.ClientURL()
	}
	return s
}

// StreamLeader returns the server among servers that leads stream ("" account: the
// global account), or nil when none does right now.
func StreamLeader(servers []*server.Server, stream string) *server.Server {
	for _, ns := range servers {
		if ns.Running() && ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return ns
		}
	}
	return nil
}

// JetStream error codes a publish may get while a clustered stream changes leader.
const (
	errCodeClusterNotAvailable = 10008 // JetStream system temporarily unavailable
	errCodeStreamOffline       = 10118
	errCodeMsgIDInProcess      = 10158 // a retry of a Msg-Id whose first attempt is still being proposed
)

// IsTransient reports whether err from Append only says that the stream could not answer
// now (a timeout, no responders during a leader election, the retry of an event still in
// flight), so that appending the same event with the same expectation again is safe and
// may succeed.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, ErrConflict) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeClusterNotAvailable, errCodeStreamOffline, errCodeMsgIDInProcess:
			return true
		}
	}
	return false
}

// AppendDurable is Append that rides out a stream leader change: it appends the same
// event with the same expectation again, with backoff (100 ms doubling to 2 s), for as long
// as the error is transient and ctx lasts. That is safe because the event id is the
// Nats-Msg-Id: a replicated stream answers a retry of a stored event with a duplicate
// acknowledgement, a single server with "wrong last sequence", which Append resolves by
// reading the subject's last message. Conflicts and invalid events return at once.
func (p *Publisher) AppendDurable(ctx context.Context, ev *nsv1.DesiredEvent, expected uint64) (Ack, error) {
	delay := 100 * time.Millisecond
	for {
		ack, err := p.Append(ctx, ev, expected)
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return Ack{}, fmt.Errorf("%w (then: %w)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}
