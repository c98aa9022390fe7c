package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway/control"
)

// exitStatus carries a container's exit status out of run.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRunCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:                strings.TrimPrefix(container.RunUsage, "clawnet "),
		Short:              "Run a container whose first instruction already goes through the gateway",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
				return cmd.Help()
			}
			o, err := container.ParseRunArgs(args)
			if err != nil {
				return usageError{err}
			}
			if o.Publish, err = publishSpecs(o.Publish); err != nil {
				return err
			}
			if err := checkSetupTimeout(o.SetupTimeout); err != nil {
				return err
			}
			if len(o.AgentConfig) > 0 {
				if o.Policy, err = agentConfigPolicy(cmd.Context(), e, o); err != nil {
					return err
				}
			} else if o.PolicyDir != "" {
				return usageError{errors.New("--policy-dir goes with --agent-config")}
			}
			o.Stdin, o.Stdout, o.Stderr = os.Stdin, e.stdout, e.stderr
			code, err := container.Run(cmd.Context(), o, func(ctx context.Context, r container.AttachRequest) (container.AttachResult, error) {
				a, err := e.client().Attach(ctx, control.AttachRequest{Container: r.Container, Name: r.Name, Policy: r.Policy, Publish: r.Publish, SetupTimeout: o.SetupTimeout})
				if err != nil {
					return container.AttachResult{}, err
				}
				return container.AttachResult{DNS: gatewayDNS(a.Gateway)}, nil
			})
			if err != nil {
				return err
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
}

// checkSetupTimeout refuses a --setup-timeout the daemon would refuse,
// before anything is created.
func checkSetupTimeout(s string) error {
	if s == "" {
		return nil
	}
	if d, err := time.ParseDuration(s); err != nil || d <= 0 {
		return usageError{fmt.Errorf("--setup-timeout %q: want a positive duration such as 90s or 5m", s)}
	}
	return nil
}

// gatewayDNS is the agent's nameserver: the gateway's first IPv4 address
// (zero when the daemon named none; Run then uses the default).
func gatewayDNS(gateway []string) netip.Addr {
	for _, g := range gateway {
		if a, err := netip.ParseAddr(g); err == nil && a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func newPauseCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "pause",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return container.Pause(cmd.Context()) },
	}
}
