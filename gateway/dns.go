package gateway

import "github.com/clawnet/clawnet/netstack"

// handleDNSUDP answers a DNS datagram from the agent. Until the gateway's
// resolver lands every query is refused with ICMP unreachable, so no name
// ever leaves the gateway.
func (a *Agent) handleDNSUDP(r *netstack.UDPRequest) bool {
	a.event(&AuditEvent{Kind: "dns", Src: r.Src.String(), Dst: r.Dst.String(), Verdict: "deny",
		Rule: "builtin:dns", Reason: "the gateway's resolver is not enabled"})
	return false
}

// handleDNSTCP is DNS over TCP; see handleDNSUDP.
func (a *Agent) handleDNSTCP(r *netstack.TCPRequest) {
	r.Reject()
	a.event(&AuditEvent{Kind: "dns", Src: r.Src.String(), Dst: r.Dst.String(), Verdict: "deny",
		Rule: "builtin:dns", Reason: "the gateway's resolver is not enabled"})
}
