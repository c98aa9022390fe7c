package dnsproxy

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: the answer path needs the policy decider, miekg/dns and netip.
// Nothing it pulls in, however indirectly, may be the packet path, the
// container client or the gateway it serves.
func TestDeps(t *testing.T) {
	const leaf = "dnsproxy answers queries for the gateway, it never drives the packet path"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/dnsproxy",
		BadDeps: map[string]string{
			"gvisor.dev/":                          leaf,
			"golang.zx2c4.com/":                    leaf,
			"github.com/clawnet/clawnet/netstack":  leaf,
			"github.com/clawnet/clawnet/tun":       leaf,
			"github.com/clawnet/clawnet/gateway":   leaf,
			"github.com/clawnet/clawnet/container": "dnsproxy knows no container engine",
		},
		WantDeps: []string{"github.com/miekg/dns", "github.com/clawnet/clawnet/policy"},
	}.Check(t)
}
