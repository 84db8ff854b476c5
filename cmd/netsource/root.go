package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/netsource/netsource/streams"
)

// globals are the flags every command shares.
type globals struct {
	natsURL  string
	output   string
	logLevel string
	log      zerolog.Logger
	// creds and tls: the client's credentials and TLS files (for `server` and an agent's
	// embedded server, tls is the server's certificate and the CA of its clients).
	creds string
	tls   streams.TLSFiles
	// serverAuth is the nats-server configuration of an embedded server (agent --auth).
	serverAuth string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "netsource",
		Short:         "Event-sourced host networking agent on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g.logLevel, os.Stderr)
			if err != nil {
				return err
			}
			g.log = log
			switch g.output {
			case "", "table", "json", "yaml":
				return nil
			}
			return fmt.Errorf("-o %q: want table, json or yaml", g.output)
		},
	}
	defaultURL := os.Getenv("NATS_URL")
	if defaultURL == "" {
		defaultURL = nats.DefaultURL
	}
	root.PersistentFlags().StringVar(&g.natsURL, "nats", defaultURL, "NATS server URL (default $NATS_URL, then nats://127.0.0.1:4222)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	pf := root.PersistentFlags()
	pf.StringVar(&g.creds, "creds", os.Getenv("NATS_CREDS"),
		"NATS credentials `FILE`: an NKEY seed file of netsource auth init (or a JWT .creds file); default $NATS_CREDS")
	pf.StringVar(&g.tls.CA, "tls-ca", "", "TLS: CA certificate that verifies the server (for server and embedded server: that verifies clients)")
	pf.StringVar(&g.tls.Cert, "tls-cert", "", "TLS: client certificate (for server and embedded server: the server's certificate)")
	pf.StringVar(&g.tls.Key, "tls-key", "", "TLS: private key of --tls-cert")
	root.AddCommand(
		newServerCmd(g), withAgentAuthFlag(g, newAgentCmd(g)), newAuthCmd(g),
		newApplyCmd(g), newDeleteCmd(g), newGetCmd(g),
		newStatusCmd(g), newWaitCmd(g), newWatchCmd(g),
		newReplayCmd(g),
	)
	root.AddCommand(newDashboardCmd(g), newDemoCmd(g))
	return root
}

// newLogger logs human-readable lines on a terminal and JSON otherwise.
func newLogger(level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: %w", level, err)
	}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// connect opens a client connection and a JetStream context. --nats may list several
// servers (comma-separated): the client fails over between them.
func (g *globals) connect() (*nats.Conn, jetstream.JetStream, error) {
	sec, err := g.security().Options()
	if err != nil {
		return nil, nil, err
	}
	opts := append([]nats.Option{nats.Name("netsource-cli"), nats.Timeout(5 * time.Second), nats.ErrorHandler(g.asyncError)}, sec...)
	nc, err := nats.Connect(g.natsURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", g.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", g.natsURL, err)
	}
	return nc, js, nil
}

// asyncError logs what the server reports asynchronously (nats.go would print it to stderr
// unformatted). A refused read of the desired stream is expected of the dashboard role,
// whose watch and dashboard show objects by id instead and say so themselves.
func (g *globals) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	lvl := zerolog.WarnLevel
	if streams.IsRefused(err, streams.DesiredStream) {
		lvl = zerolog.DebugLevel
	}
	g.log.WithLevel(lvl).Err(err).Msg("NATS server")
}

func (g *globals) security() streams.ClientSecurity {
	return streams.ClientSecurity{Creds: g.creds, TLS: g.tls}
}

// withAgentAuthFlag adds --auth to the agent command: the configuration of its embedded
// server, as `server --auth`.
func withAgentAuthFlag(g *globals, cmd *cobra.Command) *cobra.Command {
	cmd.Flags().StringVar(&g.serverAuth, "auth", "",
		"nats-server configuration `FILE` for the embedded server (without --nats), e.g. auth.conf of netsource auth init")
	return cmd
}

func (g *globals) jsonOut() bool { return g.output == "json" }
