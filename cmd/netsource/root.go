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
)

// globals are the flags every command shares.
type globals struct {
	natsURL  string
	output   string
	logLevel string
	log      zerolog.Logger
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
	root.AddCommand(
		newServerCmd(g), newAgentCmd(g),
		newApplyCmd(g), newDeleteCmd(g), newGetCmd(g),
		newStatusCmd(g), newWaitCmd(g), newWatchCmd(g),
	)
	return root
}

// newLogger logs human-readable lines on a terminal and JSON otherwise.
func newLogger(level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: %w", level, err)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// connect opens a client connection and a JetStream context.
func (g *globals) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(g.natsURL, nats.Name("netsource-cli"), nats.Timeout(5*time.Second))
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

func (g *globals) jsonOut() bool { return g.output == "json" }
