package gateway

import (
	"fmt"
	"net/netip"

	"github.com/clawnet/clawnet/policy"
)

// decideFlow makes a new flow's one decision, on one snapshot of the
// agent's policy that the flow keeps for every later check (its names, its
// requests): the gateway's guards first, then the policy on the address
// and the names this agent's own DNS bound to it. A flow that the address
// alone would not allow is marked byName: a TCP one must then show an
// allowed, bound name (SNI or Host) before anything reaches upstream.
func (a *Agent) decideFlow(f *flow) policy.Decision {
	if a.g.pool.contains(f.dst.Addr()) {
		if b := a.g.agentAt(f.dst.Addr()); b != nil && b != a {
			return a.decideToAgent(f, b)
		}
	}
	if d, ok := a.g.guard(f.dst.Addr(), f.dst.Port()); ok {
		return d
	}
	f.pol = a.policyNow()
	if f.pol == nil {
		return policy.Decision{Rule: "builtin:policy-missing", Reason: fmt.Sprintf("policy %q is no longer defined", a.policy)}
	}
	ip := f.dst.Addr().Unmap()
	fl := policy.Flow{Proto: f.proto, Dst: netip.AddrPortFrom(ip, f.dst.Port()), Names: a.names.Names(ip)}
	f.names = fl.Names
	d := f.pol.DecideFlow(fl)
	if len(fl.Names) > 0 {
		f.name = fl.Names[0]
	}
	if d.Verdict == policy.WouldDeny {
		// enforcement: audit let it through for a name this agent's DNS
		// bound, never for its address: the client's SNI or Host must
		// still be a bound name (checkHello), and its lines say would_deny.
		f.byName = true
		return d
	}
	if !d.Allowed() || len(fl.Names) == 0 {
		// A deny rule on a bound name beats a CIDR rule on the address.
		return d
	}
	fl.Names = nil
	f.byName = !f.pol.DecideFlow(fl).Allowed()
	return d
}

// decide is decideFlow for a flow that is only asked about.
func (a *Agent) decide(proto policy.Proto, dst netip.AddrPort) policy.Decision {
	return a.decideFlow(newFlow(a, proto, netip.AddrPort{}, dst, 0))
}

// limitDecision is the refusal of a flow past one of the agent's limits.
func limitDecision(err error) policy.Decision {
	return policy.Decision{Verdict: policy.Deny, Rule: "builtin:limit", Reason: err.Error()}
}
