package policy

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestPure: the package stays pure, decisions in microseconds, no I/O, no
// clock, nothing of the netstack.
func TestPure(t *testing.T) {
	const noIO = "policy does no I/O and reads no clock"
	const leaf = "policy is a leaf the data path calls, never a user of it"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/policy",
		// Its own files may not import these; its dependencies may (fmt
		// pulls in os).
		BadImports: map[string]string{
			"crypto/rand": noIO, "embed": noIO, "io/fs": noIO, "io/ioutil": noIO,
			"log": noIO, "log/slog": noIO, "math/rand": noIO, "math/rand/v2": noIO,
			"net": noIO, "net/http": noIO, "os": noIO, "os/exec": noIO,
			"os/signal": noIO, "path/filepath": noIO, "plugin": noIO,
			"syscall": noIO, "time": noIO, "unsafe": noIO,
		},
		// Nothing it pulls in, however indirectly, may be one of these.
		BadDeps: map[string]string{
			"gvisor.dev/":                         leaf,
			"golang.zx2c4.com/":                   leaf,
			"github.com/vishvananda/":             leaf,
			"github.com/miekg/dns":                leaf,
			"github.com/hashicorp/":               "policy logs nothing",
			"os/exec":                             noIO,
			"github.com/clawnet/clawnet/gateway":  leaf,
			"github.com/clawnet/clawnet/netstack": leaf,
			"github.com/clawnet/clawnet/tun":      leaf,
		},
		// Policy files are YAML, and domain names go through IDNA.
		WantDeps: []string{"gopkg.in/yaml.v3", "golang.org/x/net/idna"},
	}.Check(t)
}
