package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/gateway/control"
)

// publishUsage is the form of a publish spec, for usage lines.
const publishUsage = "[HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp]"

// publishSpecs reads specs as the daemon will (control.ParsePublish), so a
// bad one is a usage error before the daemon is asked; it returns them in
// their full form.
func publishSpecs(specs []string) ([]string, error) {
	out := make([]string, 0, len(specs))
	for _, s := range specs {
		p, err := control.ParsePublish(s)
		if err != nil {
			return nil, usageError{err}
		}
		out = append(out, p.String())
	}
	return out, nil
}

func newPublishCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "publish AGENT " + publishUsage + "...",
		Short: "Publish ports of a running agent on the host (loopback unless HOST_IP is given)",
		Long: `publish makes the gateway listen on the host and deliver what it accepts to
the agent's port, once the agent's ingress rules allow the peer. The listener
is on 127.0.0.1 unless HOST_IP names another address. Either every port given
is published or none is.`,
		Args: publishArgs("publish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			specs, err := publishSpecs(args[1:])
			if err != nil {
				return err
			}
			if err := e.client().Publish(cmd.Context(), args[0], specs); err != nil {
				return err
			}
			for _, s := range specs {
				fmt.Fprintf(e.stdout, "published %s on agent %s\n", s, args[0])
			}
			return nil
		},
	}
}

func newUnpublishCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "unpublish AGENT " + publishUsage + "...",
		Short: "Close ports published for a running agent",
		Args:  publishArgs("unpublish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			specs, err := publishSpecs(args[1:])
			if err != nil {
				return err
			}
			if err := e.client().Unpublish(cmd.Context(), args[0], specs); err != nil {
				return err
			}
			for _, s := range specs {
				fmt.Fprintf(e.stdout, "unpublished %s on agent %s\n", s, args[0])
			}
			return nil
		},
	}
}

func publishArgs(verb string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < 2 {
			return usageError{fmt.Errorf("%s takes an agent name and one or more ports, %s", verb, publishUsage)}
		}
		return nil
	}
}
