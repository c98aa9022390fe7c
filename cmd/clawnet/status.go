package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the gateway's health (agents, flows, goroutines, open files)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := e.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(s, "", "  ")
			fmt.Fprintln(e.stdout, string(b))
			return nil
		},
	}
}

func newReloadCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the gateway read its policy files again (a bad file keeps its last good version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := e.client().Reload(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "policies reloaded")
			return nil
		},
	}
}
