// Package natstest starts real embedded JetStream servers for tests: one helper that every
// test calls, with its own store directory and no TCP port, stopped when the test ends.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/netsource/netsource/streams"
)

// Server is an embedded JetStream server with the netsource streams.
type Server struct {
	t      testing.TB
	Store  string
	NS     *server.Server
	Listen string
}

// Start runs a server with a fresh store directory and creates the streams.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartAt(t, t.TempDir(), "")
}

// StartAt runs a server on store (reusing what is there), listening on listen ("" for
// in-process only).
func StartAt(t testing.TB, store, listen string) *Server {
	t.Helper()
	ns, err := streams.StartServer(streams.ServerOptions{StoreDir: store, Listen: listen, Log: zerolog.Nop(),
		MaxStore: 1 << 30, MaxMemory: 256 << 20})
	if err != nil {
		t.Fatalf("start embedded JetStream: %v", err)
	}
	s := &Server{t: t, Store: store, NS: ns, Listen: listen}
	t.Cleanup(s.Stop)
	_, js := s.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.EnsureStreams(ctx, js, streams.Config{}); err != nil {
		t.Fatalf("create streams: %v", err)
	}
	return s
}

// Connect returns an in-process client, closed when the test ends.
func (s *Server) Connect() (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := nats.Connect(s.NS.ClientURL(), nats.InProcessServer(s.NS))
	if err != nil {
		s.t.Fatalf("connect: %v", err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Stop shuts the server down (idempotent).
func (s *Server) Stop() {
	if s.NS.Running() {
		s.NS.Shutdown()
	}
	s.NS.WaitForShutdown()
}

// Restart stops the server and starts a new one on the same store.
func (s *Server) Restart() *Server {
	s.t.Helper()
	s.Stop()
	return StartAt(s.t, s.Store, s.Listen)
}
