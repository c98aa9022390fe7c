package cnitest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/clawnet/clawnet/test/harness"
)

// libcni parses conflist and returns it with a libcni caller of the
// plugins in w's CNI bin directory, as a runtime calls them.
func (w *world) libcni(t *testing.T, conflist string) (*libcni.NetworkConfigList, *libcni.CNIConfig) {
	t.Helper()
	list, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	return list, libcni.NewCNIConfigWithCacheDir([]string{w.binDir}, filepath.Join(w.dir, "cni-cache"), nil)
}

// podRuntime is the runtime's side of a sandbox of pod clawnet-test/name
// in ns, as containerd's CRI passes it, with the pod's annotations ann
// (nil: the runtime passes none).
func podRuntime(ns *harness.NetNS, name string, ann map[string]string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: name + "-" + fmt.Sprintf("%x", harness.RandomBytes(6)),
		NetNS:       ns.Path,
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "clawnet-test"}, {"K8S_POD_NAME", name}},
	}
	if ann != nil {
		rt.CapabilityArgs = map[string]any{"io.kubernetes.cri.pod-annotations": ann}
	}
	return rt
}

// mustAdd runs ADD of list for rt, the sandbox of what, and returns its
// result.
func mustAdd(t *testing.T, ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, what string) *current.Result {
	t.Helper()
	r, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD of %s: %v", what, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestLibcniAddCheckDel drives the built plugin through libcni, the library
// podman, containerd and cnitool call plugins with, on a namespace the test
// made: ADD answers the TUN the daemon created there, CHECK passes while it
// is attached and fails once clawnetd lost it, DEL detaches and is
// idempotent.
func TestLibcniAddCheckDel(t *testing.T) {
	requireCNI(t)
	w := newWorld(t)
	ns := harness.NewNetNS(t, "pod")
	list, cni := w.libcni(t, w.conflist("clawnet-libcni"))
	rt := podRuntime(ns, "libcni-pod", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	res := mustAdd(t, ctx, cni, list, rt, "the pod")
	a := w.mustAgent(t, "clawnet-test_libcni-pod")
	if a.Netns != ns.Path || a.Interface != "eth0" || a.Policy != "canary" {
		t.Errorf("agent = %+v; want netns %s, interface eth0, policy canary", a, ns.Path)
	}
	if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Sandbox != ns.Path {
		t.Errorf("result interfaces = %v; want eth0 in %s", res.Interfaces, ns.Path)
	}
	if len(res.IPs) == 0 || res.IPs[0].Address.IP.String() != addr4(t, a).String() {
		t.Errorf("result IPs = %v; want the agent's %v first", res.IPs, a.Addresses)
	}
	// The result describes what is really in the namespace.
	if got := ns.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(got, res.IPs[0].Address.String()) {
		t.Errorf("eth0 in the namespace has %q; the result said %s", got, res.IPs[0].Address.String())
	}
	if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
		t.Errorf("CHECK of the live attachment: %v", err)
	}

	checkPodNetwork(t, w, inNetns(t, ns))

	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	w.waitGone(t, a.Name, 5*time.Second)
	if got := ns.LinkNames(t); len(got) != 1 || got[0] != "lo" {
		t.Errorf("links after DEL = %q; want lo only", got)
	}
	if recs := w.records(t, "clawnet-libcni"); len(recs) != 0 {
		t.Errorf("attachment records after DEL: %q", recs)
	}
	// Again, and as containerd's second DEL: without the namespace.
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	rt.NetNS = ""
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("DEL without CNI_NETNS: %v", err)
	}

	// CHECK fails when clawnetd lost the agent (here: detached behind the
	// runtime's back).
	rt.NetNS = ns.Path
	if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("ADD again: %v", err)
	}
	w.d.MustCLI(t, "detach", "clawnet-test_libcni-pod")
	if err := cni.CheckNetworkList(ctx, list, rt); err == nil || !strings.Contains(err.Error(), "lost it") {
		t.Errorf("CHECK after the agent was detached = %v; want it to say clawnetd lost the agent", err)
	}
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("DEL of a lost agent: %v", err)
	}
}

// TestLibcniFailsClosed: with clawnetd gone, ADD fails (the runtime does
// not start the pod, the namespace keeps only lo) and DEL still succeeds.
func TestLibcniFailsClosed(t *testing.T) {
	requireCNI(t)
	w := newWorld(t)
	ns := harness.NewNetNS(t, "pod")
	list, cni := w.libcni(t, w.conflist("clawnet-closed"))
	rt := &libcni.RuntimeConf{ContainerID: "closed-1", NetNS: ns.Path, IfName: "eth0"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.d.Kill()
	if _, err := cni.AddNetworkList(ctx, list, rt); err == nil || !strings.Contains(err.Error(), "clawnetd is not running") {
		t.Errorf("ADD without clawnetd = %v; want it refused, saying clawnetd is not running", err)
	}
	if got := ns.LinkNames(t); len(got) != 1 || got[0] != "lo" {
		t.Errorf("links after a refused ADD = %q; want lo only", got)
	}
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("DEL without clawnetd: %v", err)
	}
}
