// Command clawnet-cni is a CNI plugin: it attaches a pod's (or a podman
// container's) network namespace to the node's clawnetd, which creates the
// TUN inside it from outside, so the pod is on the gateway's leash from its
// first packet and needs no capability. The runtime calls it with the
// namespace before any container of the pod starts.
//
// It never decides policy and never makes the TUN: it asks clawnetd over
// the control socket, and keeps only a record of which agent it made for
// which container (the container ID is the key; the agent's name, derived
// from the pod, is for people and policies). It touches a namespace only in
// chained mode, to remove the interfaces the cluster's plugin made in an
// agent pod (chained.go). `clawnet-cni install` puts it on a node
// (install.go).
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	clawversion "github.com/clawnet/clawnet/internal/version"
)

// supported are the spec versions whose results the plugin can write; its
// own is 1.0.0.
var supported = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0")

func main() {
	// `clawnet-cni install ...` puts the plugin and its configuration on a
	// node; a runtime runs the plugin with no arguments and CNI_COMMAND set.
	if len(os.Args) > 1 && os.Args[1] == "install" && os.Getenv("CNI_COMMAND") == "" {
		if err := runInstall(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "clawnet-cni:", err)
			os.Exit(2)
		}
		return
	}
	skel.PluginMainFuncs(newPlugin(os.Stdout).funcs(), supported, "clawnet-cni "+clawversion.Version+": attaches pods to clawnetd")
}
