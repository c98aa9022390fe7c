package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

func newPolicyExplainCmd(e *env) *cobra.Command {
	var pol, file, proto, from string
	cmd := &cobra.Command{
		Use:   "explain (--policy NAME | --file POLICY.yaml) [--proto tcp|udp] (HOST[:PORT] | --from PEER [:PORT])",
		Short: "Say what the gateway would decide for a destination, or for a peer connecting in, and by which rule",
		Long: `explain says what a policy would decide, and by which rule, for a connection
the agent opens to HOST[:PORT], or with --from for one PEER opens to the
agent's PORT (none: which ports PEER may reach). PEER is agent:NAME (another
attached agent), host (the gateway host, through a published port) or an IP
address (a remote client, through a port published on a non-loopback address).
With --file, a policy file is explained offline, without a daemon (and
without the daemon's treat_as_public: lab addresses count as special).`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case from == "" && len(args) != 1:
				return usageError{errors.New("explain takes one HOST[:PORT], or --from PEER and the agent's :PORT")}
			case from != "" && len(args) > 1:
				return usageError{errors.New("explain --from takes at most one :PORT, the agent's")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if pol == "" && file == "" {
				return usageError{errors.New("--policy is required (or --file, to explain a policy file offline)")}
			}
			if pol != "" && file != "" {
				return usageError{errors.New("give --policy or --file, not both")}
			}
			if file != "" {
				return explainFile(e, file, proto, from, args)
			}
			if from != "" {
				return explainInbound(cmd, e, pol, proto, from, args)
			}
			host, port, err := splitHostPort(args[0])
			if err != nil {
				return usageError{err}
			}
			x, err := e.client().Explain(cmd.Context(), pol, proto, host, port)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, outboundLine(x))
			return nil
		},
	}
	cmd.Flags().StringVar(&pol, "policy", "", "policy name, as the daemon knows it")
	cmd.Flags().StringVar(&file, "file", "", "a policy file to explain offline, without a daemon")
	cmd.Flags().StringVar(&proto, "proto", "tcp", "protocol: tcp or udp")
	cmd.Flags().StringVar(&from, "from", "", "explain a connection into the agent from PEER: agent:NAME, host or an IP address")
	return cmd
}

// explainInbound asks about a connection from the peer from to the agent's
// port (args: none, or one :PORT).
func explainInbound(cmd *cobra.Command, e *env, pol, proto, from string, args []string) error {
	peer, err := policy.ParsePeer(from)
	if err != nil {
		return usageError{fmt.Errorf("--from: %w", err)}
	}
	var port uint16
	if len(args) == 1 {
		if port, err = agentPort(args[0]); err != nil {
			return usageError{err}
		}
	}
	x, err := e.client().ExplainInbound(cmd.Context(), pol, proto, peer.String(), port)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, inboundLine(x, peer.String()))
	return nil
}

// outboundLine is an explanation as explain prints it:
// "coder tcp api.github.com:443: allow by coder.yaml:4 egress[0]: ...".
func outboundLine(x *control.Explanation) string {
	dst := x.Host
	if x.Port != 0 {
		dst = net.JoinHostPort(x.Host, strconv.Itoa(int(x.Port)))
	}
	return fmt.Sprintf("%s %s %s: %s by %s: %s", x.Policy, x.Proto, dst, x.Verdict, x.Rule, x.Reason)
}

// inboundLine is an inbound explanation as explain prints it:
// "gw tcp from agent:cli to :18789: allow by gw.yaml:5 ingress[0]: ...".
func inboundLine(x *control.Explanation, from string) string {
	if x.From != "" {
		from = x.From
	}
	to := "any port"
	if x.Port != 0 {
		to = ":" + strconv.Itoa(int(x.Port))
	}
	return fmt.Sprintf("%s %s from %s to %s: %s by %s: %s", x.Policy, x.Proto, from, to, x.Verdict, x.Rule, x.Reason)
}

// agentPort reads the agent's port of an inbound question, :PORT or PORT.
func agentPort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, ":"), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q: with --from, give the agent's port as :PORT (1-65535)", s)
	}
	return uint16(n), nil
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

// explainFile answers explain from a policy file, without a daemon, in the
// daemon's words.
func explainFile(e *env, file, protoName, from string, args []string) error {
	proto, err := policy.ParseProto(protoName)
	if err != nil {
		return usageError{err}
	}
	_, p, errs := checkFile(file)
	if len(errs) > 0 {
		return errs[0]
	}
	x := &control.Explanation{Policy: p.Name(), Proto: proto.String()}
	var d policy.Decision
	if from != "" {
		peer, err := policy.ParsePeer(from)
		if err != nil {
			return usageError{fmt.Errorf("--from: %w", err)}
		}
		if len(args) == 1 {
			if x.Port, err = agentPort(args[0]); err != nil {
				return usageError{err}
			}
		}
		d = policy.ExplainInbound(p, policy.Inbound{Proto: proto, Port: x.Port, Peer: peer})
		x.Verdict, x.Rule, x.Reason = d.Verdict.String(), d.Rule, d.Reason
		fmt.Fprintln(e.stdout, inboundLine(x, peer.String()))
		return nil
	}
	if x.Host, x.Port, err = splitHostPort(args[0]); err != nil {
		return usageError{err}
	}
	d = policy.Explain(p, proto, x.Host, x.Port)
	x.Verdict, x.Rule, x.Reason = d.Verdict.String(), d.Rule, d.Reason
	fmt.Fprintln(e.stdout, outboundLine(x))
	return nil
}
