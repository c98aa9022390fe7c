package main

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: the plugin runs once per pod event, on every node; it asks
// clawnetd over the control socket and links none of the data path and no
// policy (importing gateway would fail here through gVisor). netlink is
// allowed for one job only, chained mode's: removing the interfaces the
// cluster's plugin made in an agent pod's namespace (the TUN itself is
// still made by clawnetd, which refuses a namespace with anything but lo).
func TestDeps(t *testing.T) {
	const plugin = "the plugin asks clawnetd; the data path and policy stay in the daemon"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/cmd/clawnet-cni",
		BadDeps: map[string]string{
			"gvisor.dev/":                          plugin,
			"golang.zx2c4.com/":                    plugin,
			"github.com/miekg/dns":                 plugin,
			"github.com/clawnet/clawnet/netstack":  plugin,
			"github.com/clawnet/clawnet/tun":       plugin,
			"github.com/clawnet/clawnet/policy":    plugin,
			"github.com/clawnet/clawnet/container": plugin,
		},
		WantDeps: []string{"github.com/clawnet/clawnet/gateway/control", "github.com/containernetworking/cni/pkg/skel"},
	}.Check(t)
}
