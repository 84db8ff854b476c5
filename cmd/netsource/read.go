package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
	"github.com/netsource/netsource/streams"
)

var protoJSON = protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}

// printProto prints a message as JSON or YAML with Neutron's field names, so `get -o yaml`
// output is a topology file that `apply -f` accepts.
func printProto(format string, m proto.Message) error {
	data, err := protoJSON.Marshal(m)
	if err != nil {
		return err
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	}
	_, err = os.Stdout.Write(append(data, '\n'))
	return err
}

func newGetCmd(g *globals) *cobra.Command {
	var showDeleted bool
	cmd := &cobra.Command{
		Use:   "get KIND [ID]",
		Short: "Show desired state (the last event of each object)",
		Long: "Show desired state (the last event of each object). -o json and -o yaml print a " +
			"topology file that `netsource apply -f` accepts.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := streams.ParseKind(args[0])
			if err != nil {
				return err
			}
			filter := streams.KindFilter(kind)
			if len(args) == 2 {
				if filter, err = streams.ObjectFilter(kind, args[1]); err != nil {
					return err
				}
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			ctx, stop := streams.WithRefusal(ctx, nc, streams.DesiredStream) // e.g. the dashboard role
			defer stop()
			state, err := streams.LoadState(ctx, js, filter)
			if errors.Is(context.Cause(ctx), streams.ErrRefused) {
				return fmt.Errorf("read %s: %w (this user may not read the desired state)", streams.DesiredStream, streams.ErrRefused)
			}
			if err != nil {
				return err
			}
			var records []*streams.Record
			for _, r := range state.Records() {
				if r.Live() || showDeleted {
					records = append(records, r)
				}
			}
			if len(args) == 2 && len(records) == 0 {
				return fmt.Errorf("%s %s: %w", kind, args[1], streams.ErrNotFound)
			}
			if g.output != "table" {
				t := &nsv1.Topology{}
				for _, r := range records {
					if r.Live() {
						streams.AddToTopology(t, streams.SpecOf(r.Event))
					}
				}
				return printProto(g.output, t)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "KIND\tID\tNAME\tHOST\tSEQ\tCHANGE\tPUBLISHED BY")
			for _, r := range records {
				if r.Event == nil {
					fmt.Fprintf(w, "%s\t%s\t\t%s\t%d\tundecodable: %v\t\n", r.Address.Kind, r.Address.ID, r.Address.Host, r.Seq, r.Err)
					continue
				}
				spec := streams.SpecOf(r.Event)
				name := ""
				if n, ok := spec.(interface{ GetName() string }); ok {
					name = n.GetName()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Address.Kind, r.Address.ID, name, r.Address.Host, r.Seq,
					streams.ChangeName(r.Event.GetChange()), r.Event.GetPublisher())
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&showDeleted, "deleted", false, "also list tombstones (table output)")
	return cmd
}

// statusView is the JSON shape of a status event in CLI output.
func statusView(ev *nsv1.StatusEvent) map[string]any {
	v := map[string]any{}
	data, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
	_ = json.Unmarshal(data, &v)
	v["phase"] = streams.PhaseName(ev.GetPhase())
	return v
}

func printStatusTable(events []*nsv1.StatusEvent) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tKIND\tID\tPHASE\tDESIRED SEQ\tAGE\tREASON")
	now := time.Now()
	for _, ev := range events {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", ev.GetHost(), ev.GetKind(), ev.GetId(),
			streams.PhaseName(ev.GetPhase()), ev.GetDesiredSeq(), streams.Age(ev.GetTime().AsTime(), now), oneLine(ev.GetReason()))
	}
	return w.Flush()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func newStatusCmd(g *globals) *cobra.Command {
	var host, kindName string
	cmd := &cobra.Command{
		Use:   "status [--host H] [--kind K]",
		Short: "Show the latest status of each object",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseStatusFilter(host, kindName, "")
			if err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			events, err := streams.LoadStatus(ctx, js, f.host, f.kind)
			if err != nil {
				return err
			}
			if g.jsonOut() {
				views := make([]map[string]any, 0, len(events))
				for _, ev := range events {
					views = append(views, statusView(ev))
				}
				return json.NewEncoder(os.Stdout).Encode(views)
			}
			return printStatusTable(events)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only this agent host")
	cmd.Flags().StringVar(&kindName, "kind", "", "only this kind")
	return cmd
}

func newWaitCmd(g *globals) *cobra.Command {
	var phaseName, host string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait KIND ID --phase P --timeout D",
		Short: "Block until the object reaches the phase for its current desired version",
		Long: "Block until the object reaches the phase for its current desired version; exit 2 " +
			"on timeout, printing the last status seen.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := streams.ParseKind(args[0])
			if err != nil {
				return err
			}
			phase, err := streams.ParsePhase(phaseName)
			if err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ev, err := streams.Wait(ctx, js, streams.WaitOptions{Kind: kind, ID: args[1], Phase: phase, Host: host})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if g.jsonOut() {
				return json.NewEncoder(os.Stdout).Encode(statusView(ev))
			}
			fmt.Printf("%s %s %s on %s (desired seq %d)\n", kind, args[1], streams.PhaseName(ev.GetPhase()), ev.GetHost(), ev.GetDesiredSeq())
			return nil
		},
	}
	cmd.Flags().StringVar(&phaseName, "phase", "ACTIVE", "phase to wait for")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long (exit 2)")
	cmd.Flags().StringVar(&host, "host", "", "only a status from this agent host counts")
	return cmd
}

// statusFilter is what `status` and `watch` select by.
type statusFilter struct {
	host  string
	kind  streams.Kind
	phase nsv1.Phase
}

// parseStatusFilter checks the --host, --kind and --phase flags; empty means any.
func parseStatusFilter(host, kind, phase string) (statusFilter, error) {
	var f statusFilter
	var err error
	if host != "" {
		if err = streams.CheckToken("--host", host); err != nil {
			return f, err
		}
		f.host = host
	}
	if kind != "" {
		if f.kind, err = streams.ParseKind(kind); err != nil {
			return f, err
		}
	}
	if phase != "" {
		if f.phase, err = streams.ParsePhase(phase); err != nil {
			return f, err
		}
	}
	return f, nil
}
