package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/policygen"
)

func newPolicyApproveCmd(e *env) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "approve FILE [N... | --all]",
		Short: "List a policy file's pending rules, or move them into egress (or setup)",
		Long: `approve FILE lists the pending rules of a policy file, numbered: rules
clawnet policy generate derived from a repository's own files (.mcp.json,
.cursor/mcp.json, .vscode/mcp.json), which do not apply until approved.
approve FILE N... (or --all) moves those rules into egress, keeping their
from: and the sha256 of their file, and rewrites FILE in place, atomically,
with its comments. A rule with phase: setup (a launcher's download: npx,
uvx, docker run) moves into setup: instead, so it applies only in the
agent's setup phase; the list marks it "(phase: setup)". A daemon whose
policy_dir holds FILE applies it as it applies any edit. generate keeps an
approval while the file it came from has the same sha256, and puts the rule
back in pending when it changed.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("approve takes a policy file, then the numbers of its pending rules or --all")}
			}
			if all && len(args) > 1 {
				return usageError{fmt.Errorf("%s: give the numbers of pending rules or --all, not both", args[0])}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			file := args[0]
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			if len(args) == 1 && !all {
				ps, err := policygen.ListPending(file, data)
				if err != nil {
					return err
				}
				if len(ps) == 0 {
					fmt.Fprintf(e.stdout, "%s: no pending rules\n", file)
					return nil
				}
				for _, p := range ps {
					fmt.Fprintf(e.stdout, "%d\t%s%s\tfrom: %s (sha256 %.12s, %s:%d)\n", p.Index, p.What, phaseMark(p), p.From, p.SHA256, file, p.Line)
				}
				fmt.Fprintf(e.stdout, "approve with: clawnet policy approve %s N... (or --all)\n", file)
				return nil
			}
			var idx []int
			for _, a := range args[1:] {
				n, err := strconv.Atoi(a)
				if err != nil {
					return usageError{fmt.Errorf("%s: %q is not the number of a pending rule", file, a)}
				}
				idx = append(idx, n)
			}
			out, moved, err := policygen.Approve(file, data, idx, all)
			if err != nil {
				return err
			}
			if err := replaceFile(file, out); err != nil {
				return err
			}
			for _, p := range moved {
				to := "egress"
				if p.Phase == policy.PhaseSetup {
					to = "setup (setup phase only)"
				}
				fmt.Fprintf(e.stdout, "approved %d\t%s\tinto %s\tfrom: %s\n", p.Index, p.What, to, p.From)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "approve every pending rule")
	return cmd
}

// phaseMark marks a pending rule that approval puts in setup:.
func phaseMark(p policygen.PendingRule) string {
	if p.Phase == policy.PhaseSetup {
		return " (phase: setup)"
	}
	return ""
}

// replaceFile writes data to file atomically: a daemon watching the
// directory, or a crash, sees the old file or the new one, never a part.
// The file keeps its mode. The temporary file starts with a dot, so a
// policy_dir reload never reads it as a policy.
func replaceFile(file string, data []byte) error {
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".approve-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(st.Mode().Perm())
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, file)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}
