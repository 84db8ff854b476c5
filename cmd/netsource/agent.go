package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newAgentCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "agent --host H [--netns NS] [--nats URL] [--config FILE]",
		Short: "Run the per-host agent",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return errors.New("agent: not built yet")
		},
	}
}
