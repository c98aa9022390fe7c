package netstack

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: netstack knows gVisor and packets, never policy or YAML; the
// gateway decides what the flows it hands up may do.
func TestDeps(t *testing.T) {
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/netstack",
		BadDeps: map[string]string{
			"github.com/clawnet/clawnet/policy":    "netstack hands flows up; the gateway decides",
			"github.com/clawnet/clawnet/gateway":   "netstack is a layer the gateway uses",
			"github.com/clawnet/clawnet/container": "netstack knows packets, not containers",
			"gopkg.in/yaml.v3":                     "netstack reads no config files",
			"github.com/miekg/dns":                 "DNS answers are the gateway's, above the stack",
		},
		WantDeps: []string{"gvisor.dev/gvisor/pkg/tcpip/stack"},
	}.Check(t)
}
