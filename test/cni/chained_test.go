package cnitest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/clawnet/clawnet/test/harness"
)

// bridgePlugin is a cluster's own plugin for these tests, as a plugin
// object of a configuration list: the reference bridge plugin with
// host-local addresses, no gateway and no masquerade (nothing on the node's
// routing changes), on a bridge of its own that is removed when t ends. It
// puts bridge and host-local into w's CNI bin directory.
func (w *world) bridgePlugin(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink("/usr/lib/cni/"+p, filepath.Join(w.binDir, p)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	br := fmt.Sprintf("clwbr%x", harness.RandomBytes(3))
	t.Cleanup(func() { run(10*time.Second, nil, "ip", "link", "del", br) })
	return fmt.Sprintf(`{"type": "bridge", "bridge": %q, "isGateway": false, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "192.0.2.0/24"}]]}}`, br, filepath.Join(w.dir, "ipam"))
}

// chainedConflist is a network where the cluster's own plugin
// (bridgePlugin) runs first and clawnet-cni after it, in chained mode, with
// the pod-annotations capability declared.
func (w *world) chainedConflist(t *testing.T, name string) string {
	t.Helper()
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    %s,
    {"type": "clawnet-cni", "socket": %q, "dataDir": %q, "chained": true,
     "capabilities": {"io.kubernetes.cri.pod-annotations": true}}
  ]
}`, name, w.bridgePlugin(t), w.socket, w.dataDir())
}

// TestLibcniChained runs clawnet-cni after a real bridge plugin against a
// real clawnetd: a pod annotated clawnet.dev/policy loses the bridge's veth
// and gets only the TUN, reaching what its policy allows and nothing else;
// a pod without the annotation keeps the bridge's network and is no agent;
// DEL of both succeeds; with clawnetd gone, ADD of either pod fails.
func TestLibcniChained(t *testing.T) {
	requireCNI(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatalf("%s=1 but no /usr/lib/cni/bridge (containernetworking-plugins; run scripts/cni-setup.sh)", EnvCNITests)
	}
	w := newWorld(t)
	list, cni := w.libcni(t, w.chainedConflist(t, "clawnet-chained"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	agentNS := harness.NewNetNS(t, "pod")
	agent := podRuntime(agentNS, "agent", map[string]string{"clawnet.dev/policy": "canary", "team": "a"})
	res := mustAdd(t, ctx, cni, list, agent, "the annotated pod")
	a := w.mustAgent(t, "clawnet-test_agent")
	if a.Netns != agentNS.Path || a.Interface != "eth0" || a.Policy != "canary" {
		t.Errorf("agent = %+v; want %s, eth0, policy canary (the annotation's)", a, agentNS.Path)
	}
	var sandboxIfs, nodeIfs []string
	for _, i := range res.Interfaces {
		if i.Sandbox != "" {
			sandboxIfs = append(sandboxIfs, i.Name)
		} else {
			nodeIfs = append(nodeIfs, i.Name)
		}
	}
	// The bridge stays on the node and in the result; the veth's node end
	// went with its pod end.
	if len(nodeIfs) != 1 || !strings.HasPrefix(nodeIfs[0], "clwbr") {
		t.Errorf("node-side interfaces in the result = %q; want the bridge alone", nodeIfs)
	}
	if !slices.Equal(sandboxIfs, []string{"eth0"}) || len(res.IPs) == 0 || res.IPs[0].Address.IP.String() != addr4(t, a).String() {
		t.Errorf("result = interfaces %v IPs %v; want the TUN eth0 alone in the pod, with the agent's address", res.Interfaces, res.IPs)
	}
	for _, ip := range res.IPs {
		if strings.HasPrefix(ip.Address.IP.String(), "192.0.2.") {
			t.Errorf("result still carries the bridge's address %v", ip.Address)
		}
	}
	if got := agentNS.MustRun(t, "ip", "-o", "addr"); strings.Contains(got, "192.0.2.") {
		t.Errorf("the bridge's address is still in the agent pod:\n%s", got)
	}
	checkPodNetwork(t, w, inNetns(t, agentNS))

	otherNS := harness.NewNetNS(t, "pod")
	other := podRuntime(otherNS, "web", nil)
	res = mustAdd(t, ctx, cni, list, other, "the pod without the annotation")
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), "192.0.2.") {
		t.Errorf("result of the other pod = %v; want the bridge's address, untouched", res.IPs)
	}
	if _, ok := w.agent(t, "clawnet-test_web"); ok {
		t.Error("the pod without the annotation was attached")
	}
	if got := otherNS.MustRun(t, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(got, res.IPs[0].Address.String()) {
		t.Errorf("eth0 of the other pod: %q; want the bridge's %s", got, res.IPs[0].Address)
	}
	// CHECK of clawnet-cni alone, on the result libcni cached for the
	// network: the bridge's own CHECK looks for its veth in the pod and
	// finds the TUN instead (no kubelet runtime calls CHECK; docs/kubernetes.md).
	if err := cni.CheckNetworkList(ctx, list, agent); err == nil || !strings.Contains(err.Error(), "Bridge") {
		t.Errorf("CHECK of the whole list = %v; the bridge's own CHECK fails for an agent pod, as docs/kubernetes.md says", err)
	}
	own := *list
	own.Plugins = list.Plugins[1:]
	if err := cni.CheckNetworkList(ctx, &own, agent); err != nil {
		t.Errorf("CHECK of the agent pod: %v", err)
	}

	if err := cni.DelNetworkList(ctx, list, agent); err != nil {
		t.Errorf("DEL of the agent pod: %v", err)
	}
	w.waitGone(t, a.Name, 5*time.Second)
	if err := cni.DelNetworkList(ctx, list, other); err != nil {
		t.Errorf("DEL of the other pod: %v", err)
	}
	if recs := w.records(t, "clawnet-chained"); len(recs) != 0 {
		t.Errorf("attachment records after DEL: %q", recs)
	}

	// Fail closed: with clawnetd gone no pod of the network starts, not
	// even one that would have kept the bridge's network.
	w.d.Kill()
	for _, rt := range []*libcni.RuntimeConf{
		podRuntime(harness.NewNetNS(t, "pod"), "agent2", map[string]string{"clawnet.dev/policy": "canary"}),
		podRuntime(harness.NewNetNS(t, "pod"), "web2", nil),
	} {
		if _, err := cni.AddNetworkList(ctx, list, rt); err == nil || !strings.Contains(err.Error(), "clawnetd is not running") {
			t.Errorf("ADD of %s without clawnetd = %v; want it refused, saying clawnetd is not running", rt.Args[2][1], err)
		}
		// The runtime then deletes the failed sandbox's network.
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("DEL of %s without clawnetd: %v", rt.Args[2][1], err)
		}
	}
}
