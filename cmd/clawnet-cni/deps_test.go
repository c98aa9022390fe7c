package main

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: the plugin runs once per pod event, on every node; it asks
// clawnetd over the control socket and links none of the data path, no
// netlink and no policy (importing gateway would fail here through gVisor).
func TestDeps(t *testing.T) {
	const plugin = "the plugin asks clawnetd; the data path and policy stay in the daemon"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/cmd/clawnet-cni",
		BadDeps: map[string]string{
			"gvisor.dev/":                          plugin,
			"golang.zx2c4.com/":                    plugin,
			"github.com/vishvananda/netlink":       plugin,
			"github.com/miekg/dns":                 plugin,
			"github.com/clawnet/clawnet/netstack":  plugin,
			"github.com/clawnet/clawnet/tun":       plugin,
			"github.com/clawnet/clawnet/policy":    plugin,
			"github.com/clawnet/clawnet/container": plugin,
		},
		WantDeps: []string{"github.com/clawnet/clawnet/gateway/control", "github.com/containernetworking/cni/pkg/skel"},
	}.Check(t)
}
