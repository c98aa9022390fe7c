package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/policy"
)

func newPolicyCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, explain, generate and learn policies",
	}
	cmd.AddCommand(newPolicyCheckCmd(e), newPolicyExplainCmd(e), newPolicyGenerateCmd(e), newPolicyLearnCmd(e), newPolicyPhaseCmd(e), newPolicyApproveCmd(e))
	return cmd
}

func newPolicyCheckCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Parse and compile policy files; print one line per problem",
		Long: `check parses and compiles policy files without a daemon, printing one line
per problem, every problem of every file. When a daemon answers, it also warns (without failing)
about each agent name a file mentions that is not attached: such a rule
applies once an agent of that name is.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("check takes one or more policy files")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			var refs []fileRef
			for _, file := range args {
				f, _, errs := checkFile(file)
				if len(errs) == 0 {
					fmt.Fprintf(e.stdout, "%s: ok (policy %q)%s\n", file, f.Name, phaseNote(f))
					refs = append(refs, agentRefs(file, f)...)
					continue
				}
				bad++
				for _, err := range errs {
					fmt.Fprintln(e.stderr, err)
				}
			}
			warnUnattached(cmd.Context(), e, refs)
			if bad > 0 {
				return fmt.Errorf("%d of %d policy files refused", bad, len(args))
			}
			return nil
		},
	}
}

// phaseNote says what of f does not apply at all times: its setup rules
// and its pending rules.
func phaseNote(f *policy.File) string {
	s := ""
	if n := len(f.Setup); n > 0 {
		s += fmt.Sprintf("; %d setup rules, applied only in an agent's setup phase", n)
	}
	if n := len(f.Pending); n > 0 {
		s += fmt.Sprintf("; %d pending rules, not applied until clawnet policy approve", n)
		setup := 0
		for _, r := range f.Pending {
			if r.Phase == policy.PhaseSetup {
				setup++
			}
		}
		if setup > 0 {
			s += fmt.Sprintf(" (%d with phase: setup, which approval makes setup rules)", setup)
		}
	}
	return s
}

// checkFile parses and compiles one policy file, returning every problem.
func checkFile(file string) (*policy.File, *policy.Policy, []error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, []error{err}
	}
	f, perrs := policy.ParseAll(file, data)
	if len(perrs) > 0 {
		errs := make([]error, len(perrs))
		for i, pe := range perrs {
			errs[i] = pe
		}
		return nil, nil, errs
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		return nil, nil, []error{err}
	}
	return f, p, nil
}

// fileRef is an agent name a policy file mentions, where it first does.
type fileRef struct {
	file string
	policy.AgentRef
}

// agentRefs lists each agent name f mentions once, at its first mention.
func agentRefs(file string, f *policy.File) []fileRef {
	var out []fileRef
	seen := map[string]bool{}
	for _, r := range f.AgentRefs() {
		if !seen[r.Name] {
			seen[r.Name] = true
			out = append(out, fileRef{file, r})
		}
	}
	return out
}

// daemonWait bounds how long check waits for a daemon's list of agents.
const daemonWait = 2 * time.Second

// warnUnattached warns about each name in refs that no attached agent has.
// It asks the daemon only when a file names agents, and says nothing when
// none answers: check must work offline.
func warnUnattached(ctx context.Context, e *env, refs []fileRef) {
	if len(refs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, daemonWait)
	defer cancel()
	as, err := e.client().Agents(ctx)
	if err != nil {
		return
	}
	attached := map[string]bool{}
	for _, a := range as {
		attached[a.Name] = true
	}
	for _, r := range refs {
		if !attached[r.Name] {
			fmt.Fprintf(e.stderr, "%s:%d: warning: %s names agent %q, which is not attached; the rule applies once an agent of that name is\n",
				r.file, r.Line, r.List, r.Name)
		}
	}
}
