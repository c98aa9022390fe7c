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
