package streams

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
)

// ServerOptions configures an embedded JetStream server.
type ServerOptions struct {
	// StoreDir keeps the streams across restarts. Required: an empty StoreDir would make
	// nats-server share a directory under /tmp with every other process.
	StoreDir string
	// Listen is host:port for clients; empty means no TCP listener (in-process clients only).
	Listen string
	// Name of the server (defaults to "netsource"). Every server of a cluster needs its own.
	Name string
	// MaxStore and MaxMemory bound JetStream (0: 16 GiB of disk, 1 GiB of memory).
	MaxStore, MaxMemory int64
	// Log receives the server's log lines; a disabled logger silences it.
	Log zerolog.Logger
	// ConfigFile is a nats-server configuration file read before the options above, which
	// win over it: typically the authorization fragment `netsource auth init` writes, but
	// anything nats-server accepts (accounts, websocket, cluster TLS) works.
	ConfigFile string
	// TLS for client connections: Cert and Key are the server's certificate; with CA, every
	// client must present a certificate that CA signed (mutual TLS).
	TLS TLSFiles
	// Cluster joins other servers through routes; the zero value is a single server.
	Cluster ClusterOptions
}

// TLSFiles names PEM files. For a server, Cert/Key are its certificate and CA verifies
// client certificates; for a client, CA verifies the server and Cert/Key are the client's.
type TLSFiles struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (t TLSFiles) Enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// ClusterOptions make the server one node of a JetStream cluster.
type ClusterOptions struct {
	// Name of the cluster; the same on every node. Empty: no cluster.
	Name string
	// Listen is host:port for routes from the other nodes (use a fixed port).
	Listen string
	// Routes are the other nodes' route URLs (nats-route://host:port); listing the node
	// itself too is allowed, so every node can share one list.
	Routes []string
}

// StartServer starts an embedded nats-server with JetStream and waits until it accepts
// clients. Stop it with Shutdown and WaitForShutdown. In a cluster it returns before the
// cluster has formed; WaitCluster waits for that.
func StartServer(o ServerOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded server: store directory is required")
	}
	opts := &server.Options{}
	if o.ConfigFile != "" {
		if err := opts.ProcessConfigFile(o.ConfigFile); err != nil && !onlyWarnings(err) {
			return nil, fmt.Errorf("embedded server: configuration %s: %w", o.ConfigFile, err)
		}
	}
	opts.JetStream = true
	opts.StoreDir = o.StoreDir
	opts.NoSigs = true
	if o.Name != "" {
		opts.ServerName = o.Name
	}
	if o.MaxStore != 0 {
		opts.JetStreamMaxStore = o.MaxStore
	}
	if o.MaxMemory != 0 {
		opts.JetStreamMaxMemory = o.MaxMemory
	}
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = 16 << 30
	}
	if opts.JetStreamMaxMemory == 0 {
		opts.JetStreamMaxMemory = 1 << 30
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded server: listen address: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	if err := applyServerTLS(opts, o.TLS); err != nil {
		return nil, err
	}
	if o.Cluster.Name != "" {
		if err := applyCluster(opts, o.Cluster); err != nil {
			return nil, err
		}
	}
	if opts.ServerName == "" {
		if opts.Cluster.Name != "" {
			return nil, errors.New("embedded server: a cluster node needs its own name")
		}
		opts.ServerName = "netsource"
	}
	internal, err := addInternalUser(opts)
	if err != nil {
		return nil, err
	}
	silent := o.Log.GetLevel() == zerolog.Disabled
	opts.NoLog = silent
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if !silent {
		ns.SetLoggerV2(serverLogger{o.Log.With().Str("component", "nats-server").Logger()}, false, false, false)
	}
	if internal != nil {
		internalUsers.Store(ns, internal)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		internalUsers.Delete(ns)
		return nil, fmt.Errorf("embedded server: not ready after 15s (store %s, listen %q)", o.StoreDir, o.Listen)
	}
	return ns, nil
}

// onlyWarnings: nats-server reports unknown-but-harmless settings as warnings in the same
// error value as real errors.
func onlyWarnings(err error) bool {
	var pe interface{ Errors() []error }
	return errors.As(err, &pe) && len(pe.Errors()) == 0
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q: %w", addr, port, err)
	}
	return host, p, nil
}

func applyServerTLS(opts *server.Options, t TLSFiles) error {
	if !t.Enabled() {
		return nil
	}
	if t.Cert == "" || t.Key == "" {
		return errors.New("embedded server: TLS needs both a certificate and a key (--tls-cert, --tls-key)")
	}
	cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: t.CA != ""})
	if err != nil {
		return fmt.Errorf("embedded server: TLS: %w", err)
	}
	opts.TLSConfig = cfg
	opts.TLS = true
	opts.TLSVerify = t.CA != ""
	if opts.TLSTimeout == 0 {
		opts.TLSTimeout = 2
	}
	return nil
}

func applyCluster(opts *server.Options, c ClusterOptions) error {
	if c.Listen == "" {
		return errors.New("embedded server: a cluster node needs a route listen address (--cluster-listen)")
	}
	host, port, err := splitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("embedded server: cluster listen address: %w", err)
	}
	opts.Cluster.Name = c.Name
	opts.Cluster.Host, opts.Cluster.Port = host, port
	if len(c.Routes) > 0 {
		routes := server.RoutesFromStr(strings.Join(c.Routes, ","))
		if len(routes) != len(c.Routes) {
			return fmt.Errorf("embedded server: route URLs %q: want nats-route://host:port, comma-separated", c.Routes)
		}
		opts.Routes = routes
	}
	return nil
}

// internalUsers holds, per server started here with authorization configured, the key of
// a user that only this process knows: the embedded server's own clients (stream setup,
// an agent with its embedded server) connect in-process with it. The key never leaves
// memory and dies with the process.
var internalUsers sync.Map // *server.Server -> nkeys.KeyPair

// addInternalUser adds that user when the configuration requires clients to authenticate
// with users or nkeys; JWT operator mode and a server without auth get none.
func addInternalUser(opts *server.Options) (nkeys.KeyPair, error) {
	if len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 {
		return nil, nil
	}
	if len(opts.Nkeys) == 0 && len(opts.Users) == 0 && opts.Username == "" && opts.Authorization == "" {
		return nil, nil
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("embedded server: internal user key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("embedded server: internal user key: %w", err)
	}
	opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub})
	return kp, nil
}

// ConnectInProcess connects to an embedded server started by StartServer without a TCP
// socket, as the server's internal user when it requires authentication.
func ConnectInProcess(ns *server.Server, options ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{nats.InProcessServer(ns)}
	if v, ok := internalUsers.Load(ns); ok {
		kp := v.(nkeys.KeyPair)
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, err
		}
		all = append(all, nats.Nkey(pub, kp.Sign))
	}
	// With TLS configured the client URL says tls://, which would make the client insist on
	// TLS; the server offers in-process connections plain text.
	url := strings.Replace(ns.ClientURL(), "tls://", "nats://", 1)
	nc, err := nats.Connect(url, append(all, options...)...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process to %s: %w", ns.Name(), err)
	}
	return nc, nil
}

// ShutdownServer stops a server started by StartServer and waits until it has stopped.
func ShutdownServer(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
	internalUsers.Delete(ns)
}

// serverLogger adapts nats-server's logger to zerolog.
type serverLogger struct{ log zerolog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
