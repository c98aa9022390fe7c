package gateway

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestNoDaemonWiring: the daemon's wiring lives in cmd/clawnetd. The gateway
// parses no flags, installs no signal handlers and reaches the container
// engine only through its ContainerResolver and ContainerFollower
// interfaces.
func TestNoDaemonWiring(t *testing.T) {
	const wiring = "the daemon's wiring belongs in cmd/clawnetd"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/gateway",
		BadDeps: map[string]string{
			"flag":                                 wiring,
			"os/signal":                            wiring,
			"github.com/clawnet/clawnet/container": "the engine is reached through the ContainerResolver and ContainerFollower interfaces",
		},
		WantDeps: []string{"github.com/clawnet/clawnet/tun", "github.com/clawnet/clawnet/netstack", "github.com/clawnet/clawnet/dnsproxy"},
	}.Check(t)
}
