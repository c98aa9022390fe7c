package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/policygen"
)

func newPolicyLearnCmd(e *env) *cobra.Command {
	var audit, out string
	var since time.Duration
	var public []string
	o := policygen.LearnOptions{}
	cmd := &cobra.Command{
		Use:   "learn AGENT --audit FILE [--since DURATION] [--out FILE]",
		Short: "Propose the rules that would have allowed what an agent did, from its audit lines",
		Long: `learn reads the gateway's audit log (the audit_log path of clawnetd's
config; "-" reads standard input) and proposes the egress rules that would
have allowed what AGENT did and its policy refused for want of a rule, or let
through as would_deny under enforcement: audit. It reads AGENT's own lines
only. It proposes names (from SNI, Host and the names its DNS bound), never
addresses, on the ports and protocols used; a wildcard only where at least
--wildcard-min names share a registrable domain (by the public suffix list);
never a special-purpose or metadata destination. Each name comes with its
count and the first and last time it was seen.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("learn takes one agent name")}
			}
			if !policy.ValidAgentName(args[0]) {
				return usageError{fmt.Errorf("bad agent name %q", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if audit == "" {
				return usageError{errors.New("--audit FILE is required: the daemon does not report where its audit log is (audit_log in clawnetd's config)")}
			}
			o.Agent, o.Source = args[0], audit
			if since < 0 {
				return usageError{errors.New("--since must be positive")}
			}
			if since > 0 {
				o.Since = time.Now().Add(-since)
			}
			for _, s := range public {
				c, err := netip.ParsePrefix(s)
				if err != nil {
					return usageError{fmt.Errorf("--treat-as-public: bad prefix %q", s)}
				}
				o.TreatAsPublic = append(o.TreatAsPublic, c.Masked())
			}
			var r io.Reader = os.Stdin
			if audit != "-" {
				f, err := os.Open(audit)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			p, err := policygen.Learn(r, o)
			if err != nil {
				return err
			}
			if p.Read == 0 {
				fmt.Fprintf(e.stderr, "warning: %s has no line of agent %s%s\n", audit, o.Agent, sinceText(since))
			}
			if out != "" {
				if err := os.WriteFile(out, p.YAML(), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "wrote %s\n", out)
				return nil
			}
			_, err = e.stdout.Write(p.YAML())
			return err
		},
	}
	cmd.Flags().StringVar(&audit, "audit", "", `the audit log to read ("-": standard input)`)
	cmd.Flags().DurationVar(&since, "since", 0, "read only lines of the last DURATION (e.g. 24h)")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the proposal to FILE instead of standard output")
	cmd.Flags().IntVar(&o.WildcardMin, "wildcard-min", 3, "names under one registrable domain before a wildcard replaces them (-1: never)")
	cmd.Flags().StringSliceVar(&public, "treat-as-public", nil, "ranges the gateway's treat_as_public declares public (labs, tests)")
	return cmd
}

func sinceText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return " in the last " + d.String()
}
