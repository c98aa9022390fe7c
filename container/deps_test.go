package container

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: container speaks the engine's HTTP API; attaching a namespace is
// the daemon's job, reached through the Attacher interface.
func TestDeps(t *testing.T) {
	const engine = "container talks to the engine; the daemon attaches"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/container",
		BadDeps: map[string]string{
			"gvisor.dev/":                         engine,
			"github.com/clawnet/clawnet/netstack": engine,
			"github.com/clawnet/clawnet/tun":      engine,
			"github.com/clawnet/clawnet/gateway":  "the gateway uses container, through small interfaces",
			"github.com/clawnet/clawnet/policy":   "container never decides what an agent may reach",
		},
		WantDeps: []string{"net/http"},
	}.Check(t)
}
