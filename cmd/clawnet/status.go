package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

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
			res, err := e.client().Reload(cmd.Context())
			if err == nil {
				fmt.Fprintln(e.stdout, "policies reloaded")
			}
			// A reload that refused a file still applied the others.
			printRevoked(e.stdout, res.Revoked)
			return err
		},
	}
}

// printRevoked writes one line per agent that lost live flows to a reload.
func printRevoked(w io.Writer, revoked map[string]int) {
	agents := make([]string, 0, len(revoked))
	for a := range revoked {
		agents = append(agents, a)
	}
	sort.Strings(agents)
	for _, a := range agents {
		flows := "flows"
		if revoked[a] == 1 {
			flows = "flow"
		}
		fmt.Fprintf(w, "agent %s: %d live %s revoked\n", a, revoked[a], flows)
	}
}
