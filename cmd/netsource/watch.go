package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/netsource/netsource/ops"
	"github.com/netsource/netsource/streams"
)

func newWatchCmd(g *globals) *cobra.Command {
	var host, kindName, phaseName string
	var plain, once bool
	cmd := &cobra.Command{
		Use:   "watch [--host H] [--kind K] [--phase P]",
		Short: "Live status: a table of hosts and objects on a terminal, one event per line otherwise",
		Long: "Live status. On a terminal, a table of hosts (heartbeat age, down after 3 missed report " +
			"intervals) and objects (kind, name, id, host, phase, age, reason; ERROR first) redrawn as " +
			"status events arrive. With -o json, or when stdout is not a terminal, or with --plain: one " +
			"status event per line, the latest of each object first. --once prints the table once and exits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseStatusFilter(host, kindName, phaseName)
			if err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			table := once || (!plain && !g.jsonOut() && isatty.IsTerminal(os.Stdout.Fd()))
			if !table {
				return watchLines(cmd.Context(), js, f, g.jsonOut())
			}
			return watchTable(cmd.Context(), js, f, g.natsURL, once)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only this agent host")
	cmd.Flags().StringVar(&kindName, "kind", "", "only this kind")
	cmd.Flags().StringVar(&phaseName, "phase", "", "only this phase")
	cmd.Flags().BoolVar(&plain, "plain", false, "one line per event even on a terminal")
	cmd.Flags().BoolVar(&once, "once", false, "print the table once, when the current state is loaded, and exit")
	return cmd
}

// watchLines prints every status event, the latest of each object first, as JSON lines or
// text lines.
func watchLines(ctx context.Context, js jetstream.JetStream, f statusFilter, asJSON bool) error {
	enc := json.NewEncoder(os.Stdout)
	return streams.Follow(ctx, js, streams.StatusStream,
		streams.FollowOptions{Filters: []string{streams.StatusFilter(f.host, f.kind)}},
		func(m streams.Msg) {
			ev, err := streams.DecodeStatus(m.Data)
			if err != nil || (f.phase != 0 && ev.GetPhase() != f.phase) {
				return
			}
			if asJSON {
				_ = enc.Encode(statusView(ev))
				return
			}
			fmt.Printf("%s %-8s %-12s %s %-7s seq=%d %s\n", ev.GetTime().AsTime().Format("15:04:05.000"), ev.GetHost(),
				ev.GetKind(), ev.GetId(), streams.PhaseName(ev.GetPhase()), ev.GetDesiredSeq(), oneLine(ev.GetReason()))
		})
}

// watchTable redraws the table on every change (at most every 100 ms) and every second, so
// ages and host liveness move on without events.
func watchTable(ctx context.Context, js jetstream.JetStream, f statusFilter, source string, once bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fleet := ops.NewFleet(ops.Options{})
	errc := make(chan error, 1)
	go func() { errc <- ops.Follow(ctx, js, fleet, ops.Scope{Host: f.host, Kind: f.kind}) }()
	filter := ops.Filter{Host: f.host, Kind: f.kind}
	if f.phase != 0 {
		filter.Phase = streams.PhaseName(f.phase)
	}
	if once {
		select {
		case <-fleet.Ready():
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		return ops.RenderTable(os.Stdout, fleet.Snapshot(), ops.TableOptions{Source: source, Filter: filter})
	}

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprint(out, "\x1b[?25l\x1b[2J") // hide the cursor, clear the screen
	defer func() {
		fmt.Fprint(out, "\x1b[?25h\n")
		_ = out.Flush()
	}()
	_, sub := fleet.Subscribe(4096)
	defer func() { sub.Close() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var soon <-chan time.Time
	draw := func() error {
		width, height, err := term.GetSize(int(os.Stdout.Fd()))
		if err != nil {
			width, height = 0, 0
		}
		var b strings.Builder
		o := ops.TableOptions{Width: width, Height: height - 1, Color: true, Source: source, Filter: filter}
		if err := ops.RenderTable(&b, fleet.Snapshot(), o); err != nil {
			return err
		}
		// Home, then every line erased to its end, then everything below erased: no flicker.
		fmt.Fprint(out, "\x1b[H"+strings.ReplaceAll(b.String(), "\n", "\x1b[K\n")+"\x1b[J")
		return out.Flush()
	}
	if err := draw(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case _, ok := <-sub.C:
			if !ok { // fell behind: take a new subscription; the snapshot is drawn anyway
				_, sub = fleet.Subscribe(4096)
			}
			if soon == nil {
				soon = time.After(100 * time.Millisecond)
			}
			continue
		case <-soon:
			soon = nil
		case <-tick.C:
		}
		if err := draw(); err != nil {
			return err
		}
	}
}
