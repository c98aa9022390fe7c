package tun

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: tun knows namespaces and devices, never policy, packets or
// config files.
func TestDeps(t *testing.T) {
	const devices = "tun knows namespaces and devices only"
	deptest.DepChecker{
		Pkg:  "github.com/clawnet/clawnet/tun",
		GOOS: "linux", // the package is Linux-only; check it from any host
		BadDeps: map[string]string{
			"github.com/clawnet/clawnet/policy":    "tun never decides anything",
			"github.com/clawnet/clawnet/gateway":   "tun is a leaf the gateway uses",
			"github.com/clawnet/clawnet/netstack":  "the device carries packets; the stack above it is another layer",
			"github.com/clawnet/clawnet/container": devices,
			"gvisor.dev/":                          "the device carries packets; the stack above it is another layer",
			"gopkg.in/yaml.v3":                     "tun reads no config files",
			"github.com/miekg/dns":                 devices,
		},
		WantDeps: []string{"github.com/vishvananda/netlink", "golang.zx2c4.com/wireguard/tun"},
	}.Check(t)
}
