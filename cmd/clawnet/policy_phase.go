package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/gateway/control"
)

func newPolicyPhaseCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "phase AGENT run",
		Short: "End an agent's setup phase: its policy's setup rules stop applying",
		Long: `phase AGENT run ends the agent's setup phase. From then on its policy's
setup rules (package downloads of MCP launchers, say) no longer apply: the
agent's live flows that only a setup rule allowed are reset, each with an
audit line "event": "revoke" naming that rule, and new ones are refused. An
agent goes from setup to run only; a restart of clawnetd keeps it in run.
attach and run take --setup-timeout D to have the daemon do this by itself.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{errors.New("phase takes an agent's name and the phase: clawnet policy phase AGENT run")}
			}
			if args[1] != control.PhaseRun {
				return usageError{fmt.Errorf("phase %q: an agent moves from setup to run only (clawnet policy phase %s run)", args[1], args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := e.client().SetPhase(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: phase %s, %d live flows revoked\n", r.Agent, r.Phase, r.Revoked)
			return nil
		},
	}
}
