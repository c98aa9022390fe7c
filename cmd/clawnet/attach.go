package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/gateway/control"
)

func newAttachCmd(e *env) *cobra.Command {
	var req control.AttachRequest
	var publish []string
	cmd := &cobra.Command{
		Use:   "attach [--name NAME] [--policy POLICY] [--setup-timeout D] [-p " + publishUsage + "]... (CONTAINER | --pid PID | --netns PATH)",
		Short: "Give an agent's network namespace its one interface, through the gateway",
		Long: `attach creates a TUN device inside the target's network namespace (from
outside: the agent needs no capability and no tool), gives it addresses and
default routes, and connects it to the gateway. From then on every flow the
agent opens is decided by its policy. The namespace must have no interface
but lo (anything else would be a way around the gateway) unless --force.
Each --publish makes the gateway listen on the host (127.0.0.1 unless
HOST_IP is given) for the agent's port; the attach fails if one cannot be.
Under a policy with setup rules the agent starts in its setup phase, which
clawnet policy phase AGENT run ends, or --setup-timeout D after the attach.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("attach takes one container, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.Container = args[0]
			}
			n := 0
			for _, set := range []bool{req.Container != "", req.PID != 0, req.Netns != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				return usageError{fmt.Errorf("name exactly one target: CONTAINER, --pid PID or --netns PATH")}
			}
			if cmd.Flags().Changed("pid") && req.PID <= 0 {
				return usageError{fmt.Errorf("--pid must be a positive process ID, not %d", req.PID)}
			}
			var err error
			if req.Publish, err = publishSpecs(publish); err != nil {
				return err
			}
			if err := checkSetupTimeout(req.SetupTimeout); err != nil {
				return err
			}
			a, err := e.client().Attach(cmd.Context(), req)
			if err != nil {
				return err
			}
			published := ""
			if len(a.Published) > 0 {
				published = " published=" + strings.Join(a.Published, ",")
			}
			phase := ""
			if a.Phase == control.PhaseSetup {
				phase = " phase=setup"
				if a.SetupUntil != nil {
					phase += " until=" + since(*a.SetupUntil)
				}
			}
			fmt.Fprintf(e.stdout, "attached %s (%s) policy=%s%s interface=%s addresses=%s gateway=%s%s\n",
				a.Name, a.Target, a.Policy, phase, a.Interface, strings.Join(a.Addresses, ","), strings.Join(a.Gateway, ","), published)
			for _, n := range a.Notes {
				fmt.Fprintf(e.stdout, "note: %s\n", n)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "agent name (default: the container's name, pid-PID, or the netns file name)")
	f.StringVar(&req.Policy, "policy", "", "policy to enforce (default: the gateway's default_policy)")
	f.IntVar(&req.PID, "pid", 0, "attach the network namespace of this process")
	f.StringVar(&req.Netns, "netns", "", "attach the network namespace at this path (for example /var/run/netns/NAME)")
	f.BoolVar(&req.Force, "force", false, "attach even if the namespace has interfaces besides lo")
	f.StringVar(&req.SetupTimeout, "setup-timeout", "", "end the agent's setup phase (its policy's setup rules) after this long, such as 5m; the daemon keeps the timer")
	f.StringArrayVarP(&publish, "publish", "p", nil, "publish the agent's port on the host, "+publishUsage+" (127.0.0.1 unless HOST_IP; repeatable)")
	return cmd
}

func newDetachCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "detach NAME",
		Short: "Remove an agent's interface and close its flows",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("detach takes one agent name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().Detach(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "detached %s\n", args[0])
			return nil
		},
	}
}
