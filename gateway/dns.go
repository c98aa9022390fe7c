package gateway

import (
	"net/netip"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/netstack"
)

// resolver is the gateway's DNS: it answers every agent query locally or
// through the configured upstream. (Being written: until then every query
// is refused, so no name ever leaves the gateway.)
type resolver struct{}

func newResolver(cfg *Config, log hclog.Logger) (*resolver, error) { return &resolver{}, nil }

func (r *resolver) close() {}

// handleDNS answers a DNS datagram from the agent (any destination address,
// port 53). It runs on the packet path and must not block.
func (a *Agent) handleDNS(src, dst netip.AddrPort, payload []byte) {
	a.event(&AuditEvent{Kind: "dns", Src: src.String(), Dst: dst.String(), Verdict: "deny",
		Rule: "builtin:dns", Reason: "the gateway's resolver is not enabled"})
}

// handleDNSTCP serves DNS over TCP on one agent connection (any
// destination address, port 53).
func (a *Agent) handleDNSTCP(r *netstack.TCPRequest) {
	r.Reject()
	a.event(&AuditEvent{Kind: "dns", Src: r.Src.String(), Dst: r.Dst.String(), Verdict: "deny",
		Rule: "builtin:dns", Reason: "the gateway's resolver is not enabled"})
}
