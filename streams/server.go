package streams

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// ServerOptions configures an embedded JetStream server.
type ServerOptions struct {
	// StoreDir keeps the streams across restarts. Required: an empty StoreDir would make
	// nats-server share a directory under /tmp with every other process.
	StoreDir string
	// Listen is host:port for clients; empty means no TCP listener (in-process clients only).
	Listen string
	// Name of the server (defaults to "netsource").
	Name string
	// MaxStore and MaxMemory bound JetStream (0: 16 GiB of disk, 1 GiB of memory).
	MaxStore, MaxMemory int64
	// Log receives the server's log lines; a disabled logger silences it.
	Log zerolog.Logger
}

// StartServer starts an embedded nats-server with JetStream and waits until it accepts
// clients. Stop it with Shutdown and WaitForShutdown.
func StartServer(o ServerOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded server: store directory is required")
	}
	opts := &server.Options{
		ServerName:         o.Name,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxStore:  o.MaxStore,
		JetStreamMaxMemory: o.MaxMemory,
		NoSigs:             true,
	}
	if opts.ServerName == "" {
		opts.ServerName = "netsource"
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
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded server: listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded server: listen port %q: %w", port, err)
		}
		opts.Host, opts.Port = host, p
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
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded server: not ready after 15s (store %s, listen %q)", o.StoreDir, o.Listen)
	}
	return ns, nil
}

// serverLogger adapts nats-server's logger to zerolog.
type serverLogger struct{ log zerolog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
