package control

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: control is wire types and the client the CLI links in; it
// imports nothing of the data path, so the CLI stays small.
func TestDeps(t *testing.T) {
	const small = "control is wire types and a client; the CLI links it"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/gateway/control",
		BadDeps: map[string]string{
			"gvisor.dev/":                          small,
			"golang.zx2c4.com/":                    small,
			"github.com/vishvananda/":              small,
			"github.com/miekg/dns":                 small,
			"github.com/clawnet/clawnet/netstack":  small,
			"github.com/clawnet/clawnet/tun":       small,
			"github.com/clawnet/clawnet/container": "container talks to the engine, the daemon to control",
		},
		WantDeps: []string{"net/http"},
	}.Check(t)
}
