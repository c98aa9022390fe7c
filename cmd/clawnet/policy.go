package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/policy"
)

func newPolicyCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check policy files and explain decisions",
	}
	cmd.AddCommand(newPolicyCheckCmd(e), newPolicyExplainCmd(e))
	return cmd
}

func newPolicyCheckCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Parse and compile policy files; print one line per problem",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("check takes one or more policy files")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			for _, file := range args {
				data, err := os.ReadFile(file)
				if err == nil {
					var f *policy.File
					if f, err = policy.Parse(file, data); err == nil {
						var p *policy.Policy
						if p, err = policy.Compile(f, policy.Options{}); err == nil {
							fmt.Fprintf(e.stdout, "%s: ok (policy %q)\n", file, p.Name())
							continue
						}
					}
				}
				bad++
				fmt.Fprintln(e.stderr, err)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d policy files refused", bad, len(args))
			}
			return nil
		},
	}
}
