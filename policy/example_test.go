package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/clawnet/clawnet/policy"
)

func Example() {
	src := `version: v1
name: coder
presets: [anthropic]
egress:
  - domains: [api.github.com]
    ports: [443]
  - cidrs: [10.20.0.0/16]
    ports: [5432]
deny:
  - domains: [gist.github.com]
`
	f, err := policy.Parse("coder.yaml", []byte(src))
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.DecideFlow(policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("10.20.1.1:5432")}))
	fmt.Println(p.DecideFlow(policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("10.0.0.1:5432")}))
	fmt.Println(p.DecideFlow(policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("[::ffff:169.254.169.254]:80")}))
	fmt.Println(p.DecideQuery("gist.github.com"))
	fmt.Println(policy.Explain(p, policy.ProtoTCP, "api.anthropic.com", 443))
	// Output:
	// allow by coder.yaml:7 egress[1]: 10.20.1.1 in 10.20.0.0/16 on tcp port 5432
	// deny by builtin:special-address: 10.0.0.1 is private (RFC 1918); only a cidrs rule within 10.0.0.0/8 opens it
	// deny by builtin:metadata: 169.254.169.254 is cloud metadata (AWS, GCP, Azure, OCI, OpenStack, DigitalOcean); never reachable
	// deny by coder.yaml:10 deny[0]: name gist.github.com matches a deny rule
	// allow by coder.yaml:3 preset anthropic: dns query for api.anthropic.com: allow by coder.yaml:3 preset anthropic; tcp api.anthropic.com:443: allow by coder.yaml:3 preset anthropic: name api.anthropic.com matches api.anthropic.com on tcp port 443; its addresses must also be public, or opened by a cidrs rule naming their range
}

// An OpenClaw Gateway agent reachable on 18789 from the host and from the
// agent openclaw-cli, whose own policy must name it in its egress.
func Example_inbound() {
	src := `version: v1
name: openclaw-gateway
ingress:
  - ports: [18789]
    host: true
    agents: [openclaw-cli]
`
	f, err := policy.Parse("openclaw-gateway.yaml", []byte(src))
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	cli := policy.Peer{Kind: policy.PeerAgent, Agent: "openclaw-cli"}
	fmt.Println(p.DecideInbound(policy.Inbound{Proto: policy.ProtoTCP, Port: 18789, Peer: cli}))
	fmt.Println(p.DecideInbound(policy.Inbound{Proto: policy.ProtoTCP, Port: 18789, Peer: policy.Peer{Kind: policy.PeerHost}}))
	fmt.Println(p.DecideInbound(policy.Inbound{Proto: policy.ProtoTCP, Port: 22, Peer: cli}))
	fmt.Println(policy.ExplainInbound(p, policy.Inbound{Proto: policy.ProtoTCP, Port: 18789, Peer: policy.Peer{Kind: policy.PeerAgent, Agent: "intruder"}}))
	// Output:
	// allow by openclaw-gateway.yaml:4 ingress[0]: agent openclaw-cli may connect to tcp port 18789
	// allow by openclaw-gateway.yaml:4 ingress[0]: the host may connect to tcp port 18789
	// deny by default: no ingress rule allows agent openclaw-cli on tcp port 22
	// deny by default: no ingress rule allows agent intruder on tcp port 18789; to let it in, add to ingress: {ports: [18789], agents: [intruder]}
}
