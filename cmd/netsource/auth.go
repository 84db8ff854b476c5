package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/netsource/netsource/streams"
)

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "NATS credentials and permissions for netsource's roles",
	}
	cmd.AddCommand(newAuthInitCmd(g))
	return cmd
}

type identityView struct {
	Name        string `json:"name"`
	Role        string `json:"role"`
	Host        string `json:"host,omitempty"`
	PublicKey   string `json:"public_key"`
	InboxPrefix string `json:"inbox_prefix"`
	File        string `json:"file"`
}

func newAuthInitCmd(g *globals) *cobra.Command {
	var out, hosts string
	cmd := &cobra.Command{
		Use:   "init --out DIR --hosts H1,H2,...",
		Short: "Create NKEY credentials per role and per agent host, and the nats-server authorization for them",
		Long: "Create NKEY credentials per role (admin, publisher, dashboard) and per agent host (agent-<host>.nk, " +
			"mode 0600) in DIR, and DIR/auth.conf: the nats-server authorization block with each user's permissions. " +
			"Run the servers with `netsource server --auth DIR/auth.conf` and every client with `--creds FILE`.\n\n" +
			"Running it again keeps existing keys and adds new hosts; auth.conf is rewritten for exactly the hosts given, " +
			"so a host left out loses access once the servers load the new file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []string
			for _, h := range strings.Split(hosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					list = append(list, h)
				}
			}
			ids, err := streams.InitAuth(out, list)
			if err != nil {
				return err
			}
			views := make([]identityView, len(ids))
			for i, id := range ids {
				views[i] = identityView{Name: id.Name(), Role: string(id.Role), Host: id.Host, PublicKey: id.PublicKey,
					InboxPrefix: streams.InboxPrefix(id.PublicKey), File: id.File}
			}
			conf := filepath.Join(out, streams.AuthConfigFile)
			if g.jsonOut() {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"config": conf, "identities": views})
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tROLE\tPUBLIC KEY\tCREDENTIALS")
			for _, v := range views {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", v.Name, v.Role, v.PublicKey, v.File)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Printf("\nserver authorization: %s (netsource server --auth %s)\n", conf, conf)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the credentials and auth.conf (created mode 0700)")
	cmd.Flags().StringVar(&hosts, "hosts", "", "agent host names, comma-separated")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}
