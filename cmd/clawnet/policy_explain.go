package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
)

func newPolicyExplainCmd(e *env) *cobra.Command {
	var pol, proto string
	cmd := &cobra.Command{
		Use:   "explain --policy NAME [--proto tcp|udp] HOST[:PORT]",
		Short: "Say what the gateway would decide for a destination, and by which rule",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("explain takes one HOST[:PORT]")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if pol == "" {
				return usageError{errors.New("--policy is required")}
			}
			host, port, err := splitHostPort(args[0])
			if err != nil {
				return usageError{err}
			}
			x, err := e.client().Explain(cmd.Context(), pol, proto, host, port)
			if err != nil {
				return err
			}
			dst := x.Host
			if x.Port != 0 {
				dst = net.JoinHostPort(x.Host, strconv.Itoa(int(x.Port)))
			}
			fmt.Fprintf(e.stdout, "%s %s %s: %s by %s: %s\n", x.Policy, x.Proto, dst, x.Verdict, x.Rule, x.Reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&pol, "policy", "", "policy name")
	cmd.Flags().StringVar(&proto, "proto", "tcp", "protocol: tcp or udp")
	return cmd
}

// splitHostPort accepts host, host:port, [v6]:port and a bare IPv6 address.
func splitHostPort(s string) (string, uint16, error) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("bad port in %q", s)
		}
		return h, uint16(n), nil
	}
	return s, 0, nil
}
