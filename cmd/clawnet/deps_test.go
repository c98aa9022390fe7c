package main

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestDeps: the CLI talks to the daemon over the control socket; it never
// links the data path (importing gateway would fail here through gVisor).
func TestDeps(t *testing.T) {
	const cli = "the CLI talks to clawnetd; the data path stays in the daemon"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/cmd/clawnet",
		BadDeps: map[string]string{
			"gvisor.dev/":                         cli,
			"golang.zx2c4.com/":                   cli,
			"github.com/vishvananda/":             cli,
			"github.com/clawnet/clawnet/netstack": cli,
			"github.com/clawnet/clawnet/tun":      cli,
			"github.com/miekg/dns":                cli,
		},
		WantDeps: []string{"github.com/clawnet/clawnet/gateway/control", "github.com/spf13/cobra"},
	}.Check(t)
}
