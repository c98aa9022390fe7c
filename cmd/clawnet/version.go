package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/internal/version"
)

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(e.stdout, "clawnet", version.Version)
			return nil
		},
	}
}
