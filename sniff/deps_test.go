package sniff

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: sniff stays a pure parser, fuzzed and reasoned about alone.
// TestImports allow-lists its own imports; this guards what they pull in.
func TestDeps(t *testing.T) {
	const pure = "sniff is a pure parser: no I/O, no clock"
	const leaf = "sniff parses bytes it is handed; it knows nothing of the data path"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/sniff",
		// Its own files; policy's dependencies reach net/http (publicsuffix
		// names net/http/cookiejar), so these can only be checked here.
		BadImports: map[string]string{
			"net": pure, "net/http": pure, "crypto/tls": pure, "os": pure,
			"syscall": pure, "time": pure, "io/fs": pure, "log": pure,
		},
		// Anything it pulls in. golang.org/x/net/http2/hpack stays allowed.
		BadDeps: map[string]string{
			"gvisor.dev/":                          leaf,
			"golang.zx2c4.com/":                    leaf,
			"github.com/vishvananda/":              leaf,
			"github.com/miekg/dns":                 leaf,
			"github.com/hashicorp/":                "sniff logs nothing",
			"os/exec":                              pure,
			"github.com/clawnet/clawnet/gateway":   leaf,
			"github.com/clawnet/clawnet/netstack":  leaf,
			"github.com/clawnet/clawnet/tun":       leaf,
			"github.com/clawnet/clawnet/container": leaf,
		},
		// Names are matched with policy's domain rules.
		WantDeps: []string{"github.com/clawnet/clawnet/policy"},
	}.Check(t)
}
