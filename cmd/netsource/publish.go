package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/spf13/cobra"

	"github.com/netsource/netsource/streams"
	"github.com/netsource/netsource/topology"
)

// publisherName identifies the operator in events: user@hostname.
func publisherName() string {
	name := "netsource"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

// changeView is one line of apply/delete output.
type changeView struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Host    string `json:"host,omitempty"`
	Subject string `json:"subject"`
	Action  string `json:"action"`
	Seq     uint64 `json:"seq,omitempty"`
	Error   string `json:"error,omitempty"`
}

func printChanges(g *globals, plan []*streams.Change) error {
	views := make([]changeView, 0, len(plan))
	for _, c := range plan {
		v := changeView{Kind: string(c.Address.Kind), ID: c.Address.ID, Host: c.Address.Host, Subject: c.Subject,
			Action: string(c.Action), Seq: c.Seq}
		if c.Err != nil {
			v.Error = c.Err.Error()
		}
		views = append(views, v)
	}
	if g.jsonOut() {
		return json.NewEncoder(os.Stdout).Encode(views)
	}
	for _, v := range views {
		line := fmt.Sprintf("%s %s %s", v.Kind, v.ID, v.Action)
		if v.Host != "" {
			line += " on " + v.Host
		}
		if v.Seq > 0 {
			line += fmt.Sprintf(" (seq %d)", v.Seq)
		}
		if v.Error != "" {
			line += ": " + v.Error
		}
		fmt.Println(line)
	}
	return nil
}

func newApplyCmd(g *globals) *cobra.Command {
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a YAML/JSON topology file whole, then publish what changed",
		Long: "Validate a YAML/JSON topology file whole, then publish what changed. Nothing is " +
			"published when any object is invalid; every problem is listed with its path.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readInput(file)
			if err != nil {
				return err
			}
			topo, err := topology.Decode(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			pub := streams.NewPublisher(js, publisherName())
			plan, err := pub.Plan(ctx, topo)
			if err != nil {
				return fmt.Errorf("%s: nothing published:\n%w", file, err)
			}
			if !dryRun {
				err = pub.Publish(ctx, plan)
			}
			if perr := printChanges(g, plan); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "topology file (YAML or JSON; - for stdin)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and print the plan without publishing")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func readInput(file string) ([]byte, error) {
	if file == "-" {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return data, nil
}

func newDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KIND ID",
		Short: "Publish the delete (tombstone) of one object",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := streams.ParseKind(args[0])
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
			plan, err := streams.NewPublisher(js, publisherName()).Delete(ctx, kind, args[1])
			if plan != nil {
				if perr := printChanges(g, plan); perr != nil {
					return perr
				}
			}
			return err
		},
	}
}
