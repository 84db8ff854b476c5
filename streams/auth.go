package streams

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Role is what a NATS user may do with netsource's subjects.
type Role string

// The roles of issue 9. Every role but admin is least-privilege: it may publish only the
// subjects and JetStream API requests it needs, and receive only on its own inbox.
const (
	// RoleAdmin may do anything (stream setup, repairs, the `nats` CLI).
	RoleAdmin Role = "admin"
	// RolePublisher writes the desired state (ns.desired.>) and reads both streams.
	RolePublisher Role = "publisher"
	// RoleAgent is one host's agent: it reads its host's desired subjects, the shared
	// networks and security groups, its own status and every host's port status
	// (l2population, remote groups), and writes only ns.status.<host>.>.
	RoleAgent Role = "agent"
	// RoleDashboard is read-only on status: it reads the status stream and nothing else, and
	// writes nothing. It has no access to the desired stream, so the dashboard and `watch`
	// (ops.Follow) show objects by id without their names when they run as this role.
	RoleDashboard Role = "dashboard"
)

// Permissions are the subjects a user may publish to and subscribe to; everything else is
// denied.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// InboxPrefix is the reply-subject prefix of the user with this public key. Each user may
// subscribe only below its own prefix, so no client can read the replies (acks, consumer
// deliveries) meant for another; clients must set it (nats.CustomInboxPrefix, or the nats
// CLI's --inbox-prefix).
func InboxPrefix(publicKey string) string { return "_INBOX_" + publicKey }

const jsAPI = "$JS.API."

// TaaSBucket is the KV bucket in which agents of the openvswitch mechanism allocate tap ids
// (nodes/taas.KVBucket; a test keeps the two equal). Its keys are tap ids, not hosts, so
// every agent may write all of them.
const TaaSBucket = "NETSOURCE_TAAS"

// readStream is what reading a whole stream takes: stream info, leader and direct gets, and
// ordered consumers on any filter.
func readStream(stream string) []string {
	return append([]string{
		jsAPI + "STREAM.INFO." + stream,
		jsAPI + "STREAM.MSG.GET." + stream,
		jsAPI + "DIRECT.GET." + stream,
		jsAPI + "DIRECT.GET." + stream + ".>",
		jsAPI + "CONSUMER.CREATE." + stream + ".>",
	}, consumerOps(stream)...)
}

// consumerOps: pulling from, inspecting and deleting (the ordered consumer's reset) a
// consumer whose name the client knows.
func consumerOps(stream string) []string {
	return []string{
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".*",
		jsAPI + "CONSUMER.INFO." + stream + ".*",
		jsAPI + "CONSUMER.DELETE." + stream + ".*",
	}
}

// createFiltered allows creating consumers on stream with exactly this filter (or a
// narrower one): since server 2.10 the single filter is part of the create subject
// ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>) and the server refuses a request
// whose body names another filter. A consumer with several filters has no filter in its
// subject, so a role restricted this way must use one consumer per filter.
func createFiltered(stream, filter string) string {
	return jsAPI + "CONSUMER.CREATE." + stream + ".*." + filter
}

// RolePermissions returns what a user of role may do. host is required for agents;
// publicKey (the user's nkey) names its inbox.
func RolePermissions(role Role, host, publicKey string) (Permissions, error) {
	inbox := []string{InboxPrefix(publicKey) + ".>"}
	switch role {
	case RoleAdmin:
		return Permissions{Publish: []string{">"}, Subscribe: []string{">"}}, nil
	case RolePublisher:
		pub := []string{DesiredRoot + ".>"}
		pub = append(pub, readStream(DesiredStream)...)
		pub = append(pub, readStream(StatusStream)...)
		return Permissions{Publish: pub, Subscribe: inbox}, nil
	case RoleDashboard:
		// Read-only on status: only the JetStream API requests that read the status stream
		// (and the ephemeral consumers reading needs); no event subject, no desired stream.
		return Permissions{Publish: readStream(StatusStream), Subscribe: inbox}, nil
	case RoleAgent:
		filters, err := HostFilters(host)
		if err != nil {
			return Permissions{}, fmt.Errorf("agent role: %w", err)
		}
		pub := []string{
			StatusRoot + "." + host + ".>",
			jsAPI + "STREAM.INFO." + DesiredStream,
			jsAPI + "STREAM.INFO." + StatusStream,
		}
		for _, f := range filters {
			pub = append(pub, createFiltered(DesiredStream, f))
		}
		pub = append(pub,
			createFiltered(StatusStream, StatusRoot+"."+host+".>"),               // its own status at start
			createFiltered(StatusStream, StatusRoot+".*."+string(KindPort)+".>"), // l2population, remote groups
			createFiltered(StatusStream, AgentFilter),                            // tunnel peers (openvswitch)
		)
		pub = append(pub, consumerOps(DesiredStream)...)
		pub = append(pub, consumerOps(StatusStream)...)
		// The tap id directory: look the bucket up, watch it, write its keys. Creating it is
		// the administrator's (or netsource server's) job.
		kvStream, kvSubjects := "KV_"+TaaSBucket, "$KV."+TaaSBucket
		pub = append(pub, kvSubjects+".>", jsAPI+"STREAM.INFO."+kvStream,
			jsAPI+"DIRECT.GET."+kvStream+".>", createFiltered(kvStream, kvSubjects+".>"))
		pub = append(pub, consumerOps(kvStream)...)
		return Permissions{Publish: pub, Subscribe: inbox}, nil
	}
	return Permissions{}, fmt.Errorf("unknown role %q (want admin, publisher, agent or dashboard)", role)
}

// ErrRefused is the cause of a WithRefusal context that ended because the server refused
// the request.
var ErrRefused = errors.New("refused by the server: permission denied")

// refusalPoll is how often WithRefusal looks at the connection's last error.
const refusalPoll = 20 * time.Millisecond

// WithRefusal returns a context that ends with ctx, or as soon as the server refuses nc a
// request about stream; then its cause (context.Cause) is ErrRefused. A request its user
// may not make is dropped by the server, which tells the client only asynchronously, as an
// error of the connection: the request itself just times out, after seconds or whatever
// ctx allows. WithRefusal polls nc.LastError every 20 ms until the context ends; call
// cancel when done.
func WithRefusal(ctx context.Context, nc *nats.Conn, stream string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		tick := time.NewTicker(refusalPoll)
		defer tick.Stop()
		for {
			if IsRefused(nc.LastError(), stream) {
				cancel(ErrRefused)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// IsRefused reports whether err is the server's permission violation for a request about
// stream (a JetStream API subject naming it, such as $JS.API.CONSUMER.CREATE.<stream>...).
// The server drops a denied request and tells the client asynchronously, so the request
// itself only times out: pass the connection's nc.LastError() (or what an error handler
// received) to learn why.
func IsRefused(err error, stream string) bool {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	_, subject, ok := strings.Cut(err.Error(), `to "`)
	if !ok {
		return false
	}
	subject, _, _ = strings.Cut(subject, `"`)
	if !strings.HasPrefix(subject, "$JS.") {
		return false
	}
	for _, tok := range strings.Split(subject, ".") {
		if tok == stream {
			return true
		}
	}
	return false
}

// Identity is one NATS user of a netsource installation.
type Identity struct {
	Role Role
	Host string // agents only
	// PublicKey is the user's nkey (U...); the seed stays in its credentials file.
	PublicKey string
	// File is the credentials file holding the seed.
	File string
}

// Name is how the identity is called in files and logs: admin, publisher, dashboard or
// agent-<host>.
func (i Identity) Name() string {
	if i.Role == RoleAgent {
		return string(RoleAgent) + "-" + i.Host
	}
	return string(i.Role)
}

// AuthConfigFile is the name of the nats-server configuration fragment InitAuth writes.
const AuthConfigFile = "auth.conf"

// InitAuth creates (or completes) a credentials directory: one NKEY seed file per role and
// per agent host, mode 0600, plus the nats-server authorization fragment auth.conf
// listing exactly these users. Seed files that already exist are kept, so running it again
// with more hosts adds them without locking out running agents; auth.conf is rewritten
// from the hosts given, so a host left out loses access (its seed file stays, unused).
func InitAuth(dir string, hosts []string) ([]Identity, error) {
	seen := map[string]bool{}
	ids := []Identity{{Role: RoleAdmin}, {Role: RolePublisher}, {Role: RoleDashboard}}
	for _, h := range hosts {
		if err := CheckToken("host", h); err != nil {
			return nil, err
		}
		if seen[h] {
			return nil, fmt.Errorf("host %q is listed twice", h)
		}
		seen[h] = true
		ids = append(ids, Identity{Role: RoleAgent, Host: h})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials directory: %w", err)
	}
	for i := range ids {
		id := &ids[i]
		id.File = filepath.Join(dir, id.Name()+".nk")
		pub, err := ensureSeedFile(*id)
		if err != nil {
			return nil, err
		}
		id.PublicKey = pub
	}
	conf, err := AuthConfig(ids)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, AuthConfigFile), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return ids, nil
}

// ensureSeedFile returns the public key of id's seed file, creating the file with a new
// user key when it is missing.
func ensureSeedFile(id Identity) (string, error) {
	if data, err := os.ReadFile(id.File); err == nil {
		kp, err := nkeys.ParseDecoratedNKey(data)
		if err != nil {
			return "", fmt.Errorf("%s: %w", id.File, err)
		}
		return kp.PublicKey()
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("new key for %s: %w", id.Name(), err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# netsource NATS credentials: NKEY seed of %s. Secret: keep it mode 0600 on the host that uses it.\n", id.Name())
	fmt.Fprintf(&b, "# role: %s\n", id.Role)
	if id.Host != "" {
		fmt.Fprintf(&b, "# host: %s\n", id.Host)
	}
	fmt.Fprintf(&b, "# public key: %s\n", pub)
	fmt.Fprintf(&b, "# inbox prefix: %s\n", InboxPrefix(pub))
	fmt.Fprintf(&b, "# use: netsource --creds %s ...   or   nats --nkey %s --inbox-prefix %s ...\n",
		filepath.Base(id.File), filepath.Base(id.File), InboxPrefix(pub))
	b.Write(seed)
	b.WriteString("\n")
	f, err := os.OpenFile(id.File, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", id.Name(), err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("credentials for %s: %w", id.Name(), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("credentials for %s: %w", id.Name(), err)
	}
	return pub, nil
}

// AuthConfig renders the nats-server authorization block for these users: one nkey user
// per identity with its role's permissions (allow lists; everything else denied).
func AuthConfig(ids []Identity) (string, error) {
	var b strings.Builder
	b.WriteString("# netsource NATS authorization, written by `netsource auth init`.\n")
	b.WriteString("# Use it with `netsource server --auth FILE` or `include` it from a nats-server configuration.\n")
	b.WriteString("# One NKEY user per role and per agent host; a user may publish and subscribe only to what is listed.\n")
	b.WriteString("authorization {\n  users = [\n")
	sorted := append([]Identity(nil), ids...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name() < sorted[j].Name() })
	for _, id := range sorted {
		if !nkeys.IsValidPublicUserKey(id.PublicKey) {
			return "", fmt.Errorf("%s: %q is not a user public key", id.Name(), id.PublicKey)
		}
		perms, err := RolePermissions(id.Role, id.Host, id.PublicKey)
		if err != nil {
			return "", fmt.Errorf("%s: %w", id.Name(), err)
		}
		fmt.Fprintf(&b, "    # %s\n", id.Name())
		fmt.Fprintf(&b, "    {\n      nkey: %q\n      permissions: {\n", id.PublicKey)
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", confList(perms.Publish))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", confList(perms.Subscribe))
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
}

// confList quotes every subject: unquoted, "$JS..." would be read as a variable.
func confList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
