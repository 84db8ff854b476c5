package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/netsource/netsource/nodes/config"
	"github.com/netsource/netsource/replay"
	"github.com/netsource/netsource/streams"
)

// replayCmd holds what every replay subcommand shares: where the history comes from.
type replayCmd struct {
	g    *globals
	file string
	bar  *replay.Bar
}

func newReplayCmd(g *globals) *cobra.Command {
	r := &replayCmd{g: g, bar: replay.NewBar(os.Stderr)}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Ask the history: timelines, state at a time or sequence, diff, export, import, simulate",
		Long: "Ask the history: what the system wanted, what it did, and when. Every subcommand reads a " +
			"live server (--nats) or, with --file, a replay file written by `replay export`, and gives " +
			"the same answer from both. A sequence (digits) names a desired stream sequence; a time is " +
			"RFC 3339 (2026-11-21T10:00:00Z).",
	}
	cmd.PersistentFlags().StringVar(&r.file, "file", "", "read the history from this replay file instead of the server")
	cmd.AddCommand(r.timelineCmd(), r.stateCmd(), r.diffCmd(), r.exportCmd(), r.importCmd(), r.simulateCmd())
	return cmd
}

// source opens the history: the file, or a connection to the server (closed by done).
func (r *replayCmd) source() (src replay.Source, done func(), err error) {
	if r.file != "" {
		f, err := replay.OpenFile(r.file)
		if err != nil {
			return nil, nil, err
		}
		f.Progress = r.bar.Update
		return f, r.bar.Clear, nil
	}
	nc, js, err := r.g.connect()
	if err != nil {
		return nil, nil, err
	}
	l := replay.NewLive(js)
	l.Progress = r.bar.Update
	return l, func() { r.bar.Clear(); nc.Close() }, nil
}

// print writes v as JSON (-o json), YAML (-o yaml) or with table, the text form.
func (r *replayCmd) print(v any, table func(io.Writer) error) error {
	switch r.g.output {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false) // <none>, not \u003cnone\u003e
		return enc.Encode(v)
	case "yaml":
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
		_, err = os.Stdout.Write(data)
		return err
	}
	return table(os.Stdout)
}

func (r *replayCmd) timelineCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "timeline KIND ID",
		Short: "Desired and status events of one object in time order, with field changes and convergence times",
		Long: "Desired and status events of one object (on every host: a port that moved shows both) in time " +
			"order, with the fields each desired version changed, who published it, and how long each " +
			"version took from publishing to the agent's status reaching it.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := streams.ParseKind(args[0])
			if err != nil {
				return err
			}
			src, done, err := r.source()
			if err != nil {
				return err
			}
			defer done()
			tl, err := replay.ObjectTimeline(cmd.Context(), src, kind, args[1])
			if err != nil {
				return err
			}
			r.bar.Clear()
			return r.print(tl, func(w io.Writer) error { return replay.WriteTimeline(w, tl) })
		},
	}
}

func (r *replayCmd) stateCmd() *cobra.Command {
	var at string
	var seq uint64
	cmd := &cobra.Command{
		Use:   "state --at TIME | --seq N",
		Short: "The whole desired state at a time or sequence, as a topology file apply accepts",
		Long: "The whole desired state at a time or desired stream sequence, printed as a topology file " +
			"(YAML; -o json for JSON) that `netsource apply -f` accepts. Objects whose last version " +
			"agents refuse (undecodable, invalid) are left out and named on stderr.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var bound replay.Bound
			switch {
			case at != "" && seq > 0:
				return fmt.Errorf("give --at or --seq, not both")
			case at != "":
				t, err := time.Parse(time.RFC3339Nano, at)
				if err != nil {
					return fmt.Errorf("--at %q: want an RFC 3339 time like 2026-11-21T10:00:00Z", at)
				}
				bound.Time = t
			case seq > 0:
				bound.Seq = seq
			default:
				return fmt.Errorf("give --at TIME or --seq N")
			}
			src, done, err := r.source()
			if err != nil {
				return err
			}
			defer done()
			res, err := replay.StateAt(cmd.Context(), src, bound)
			if err != nil {
				return err
			}
			r.bar.Clear()
			for _, s := range res.Skipped {
				fmt.Fprintf(os.Stderr, "netsource: left out %s %s (seq %d on %s): %s\n", s.Kind, s.ID, s.Seq, s.Subject, s.Reason)
			}
			format := "yaml"
			if r.g.jsonOut() {
				format = "json"
			}
			return replay.WriteTopology(os.Stdout, format, res.Topology())
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "time (RFC 3339): the state after every event stored up to then")
	cmd.Flags().Uint64Var(&seq, "seq", 0, "desired stream sequence: the state after that event")
	return cmd
}

func (r *replayCmd) diffCmd() *cobra.Command {
	var host, now string
	cmd := &cobra.Command{
		Use:   "diff [--host H]",
		Short: "Desired state against the latest status: not converged, in ERROR, lagging; late agents",
		Long: "Desired state against the latest status of every object: objects with no status, lagging " +
			"(status for an older desired version), in ERROR, or not in the wanted phase; and agents " +
			"whose last heartbeat is older than three report intervals. Heartbeats are judged at --now: " +
			"by default the wall clock for a server and the newest record for a file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := replay.DiffOptions{Host: host}
			if host != "" {
				if err := streams.CheckToken("--host", host); err != nil {
					return err
				}
			}
			if now != "" {
				t, err := time.Parse(time.RFC3339Nano, now)
				if err != nil {
					return fmt.Errorf("--now %q: want an RFC 3339 time", now)
				}
				o.Now = t
			}
			src, done, err := r.source()
			if err != nil {
				return err
			}
			defer done()
			rep, err := replay.Diff(cmd.Context(), src, o)
			if err != nil {
				return err
			}
			r.bar.Clear()
			return r.print(rep, func(w io.Writer) error { return replay.WriteDiff(w, rep) })
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only this agent's objects and heartbeat")
	cmd.Flags().StringVar(&now, "now", "", "judge heartbeats at this time (RFC 3339)")
	return cmd
}

// exportView is the summary export and import print.
type exportView struct {
	File    string `json:"file"`
	Records int    `json:"records,omitempty"`
	Desired int    `json:"desired,omitempty"`
	Status  int    `json:"status,omitempty"`
	First   uint64 `json:"first_desired_seq,omitempty"`
	Last    uint64 `json:"last_desired_seq,omitempty"`
}

func (r *replayCmd) exportCmd() *cobra.Command {
	var from, to, out string
	var subjects []string
	cmd := &cobra.Command{
		Use:   "export [--from T|SEQ] [--to T|SEQ] [--subjects S] [--out FILE]",
		Short: "Write the history (both streams) to a replay file, or to stdout",
		Long: "Write the history of both streams, merged in time order, as length-delimited protobuf records " +
			"(proto/netsource/v1/replay.proto) to --out or stdout. Sequence bounds are desired stream " +
			"sequences; status messages are cut at those desired messages' times. --subjects takes NATS " +
			"filters (ns.desired.host.hostA.>, ns.status.*.port.*); a filtered desired history cannot be " +
			"imported, since import keeps desired sequences.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fromB, err := replay.ParseBound(from)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			toB, err := replay.ParseBound(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			src, done, err := r.source()
			if err != nil {
				return err
			}
			defer done()
			q, err := replay.Select(cmd.Context(), src, []replay.Stream{replay.Desired, replay.Status}, splitList(subjects), fromB, toB)
			if err != nil {
				return err
			}
			var w io.Writer = os.Stdout
			var f *os.File
			if out != "" && out != "-" {
				if f, err = os.Create(out); err != nil {
					return fmt.Errorf("export: %w", err)
				}
				w = f
			}
			n, err := replay.Export(cmd.Context(), src, q, w)
			if f != nil {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			r.bar.Clear()
			if f == nil {
				return nil // stdout is the file
			}
			v := exportView{File: out, Records: n}
			return r.print(v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "exported %d records to %s\n", n, out)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "first desired sequence or time (RFC 3339)")
	cmd.Flags().StringVar(&to, "to", "", "last desired sequence or time (RFC 3339)")
	cmd.Flags().StringSliceVar(&subjects, "subjects", nil, "only these subjects (NATS filters, comma-separated or repeated)")
	cmd.Flags().StringVar(&out, "out", "", "write to this file (default: stdout)")
	return cmd
}

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (r *replayCmd) importCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE",
		Short: "Store a replay file into an empty server, keeping desired sequences",
		Long: "Store a replay file into a server whose streams are empty, in history order. Desired " +
			"messages keep their sequences (status events refer to them), so the desired history must be " +
			"contiguous; status messages are renumbered. Both carry their original time (and status " +
			"sequence) in Ns-Replay-* headers, which replay readers report, so export → import → export " +
			"gives the same file.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if r.file != "" {
				return fmt.Errorf("import reads FILE and stores it into the server of --nats; --file is for the reading commands")
			}
			f, err := replay.OpenFile(args[0])
			if err != nil {
				return err
			}
			f.Progress = r.bar.Update
			nc, js, err := r.g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			res, err := replay.Import(cmd.Context(), js, f)
			r.bar.Clear()
			if err != nil {
				return err
			}
			v := exportView{File: args[0], Records: res.Desired + res.Status, Desired: res.Desired, Status: res.Status,
				First: res.FirstDesired, Last: res.LastDesired}
			return r.print(v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "imported %d desired messages (sequences %d-%d) and %d status messages from %s\n",
					res.Desired, res.FirstDesired, res.LastDesired, res.Status, args[0])
				return err
			})
		},
	}
}

func (r *replayCmd) simulateCmd() *cobra.Command {
	var host, to, configFile, underlay string
	var statuses, dump bool
	cmd := &cobra.Command{
		Use:   "simulate --host H [--to SEQ|TIME]",
		Short: "Run a host's actor tree over the history against a recording dataplane; print its operations",
		Long: "Run the agent's actor tree for one host over its desired history (from the start, one event " +
			"at a time) against an in-memory dataplane that records every call and kernel write, and " +
			"print those operations. The same history gives byte-identical output: the actors run one at " +
			"a time in a canonical order. The agent's options come from --config, else from the host's " +
			"last heartbeat.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			toB, err := replay.ParseBound(to)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			o := replay.SimOptions{Host: host, To: toB, Underlay: underlay}
			if configFile != "" {
				if o.Config, err = config.Load(configFile); err != nil {
					return err
				}
			}
			src, done, err := r.source()
			if err != nil {
				return err
			}
			defer done()
			sim, err := replay.Simulate(cmd.Context(), src, o)
			if err != nil {
				return err
			}
			r.bar.Clear()
			return r.print(sim, func(w io.Writer) error { return replay.WriteSimulation(w, sim, statuses, dump) })
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the agent host to simulate (required)")
	cmd.Flags().StringVar(&to, "to", "", "stop after this desired sequence or time (RFC 3339)")
	cmd.Flags().StringVar(&configFile, "config", "", "agent config file of the host (default: its last heartbeat)")
	cmd.Flags().StringVar(&underlay, "underlay", "eth1", "name of the device holding the VXLAN local_ip on the simulated host")
	cmd.Flags().BoolVar(&statuses, "status", false, "also print the status events the actors report")
	cmd.Flags().BoolVar(&dump, "dump", false, "also print the final dataplane state")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}
