package policygen

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestPure: the generator reads what it is handed and writes text; it never
// reaches the network, runs a command or opens a file by itself.
func TestPure(t *testing.T) {
	const pure = "policygen reads only what its caller hands it, and never reaches the network"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/policygen",
		BadImports: map[string]string{
			"net": pure, "net/http": pure, "os": pure, "os/exec": pure, "io/ioutil": pure,
			"syscall": pure, "unsafe": pure, "log": pure, "plugin": pure,
		},
		BadDeps: map[string]string{
			"os/exec":                             pure,
			"gvisor.dev/":                         pure,
			"github.com/clawnet/clawnet/gateway":  pure,
			"github.com/clawnet/clawnet/netstack": pure,
			"github.com/clawnet/clawnet/tun":      pure,
		},
		WantDeps: []string{"github.com/clawnet/clawnet/policy", "github.com/titanous/json5", "github.com/BurntSushi/toml"},
	}.Check(t)
}
