package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/clawnet/clawnet/gateway/control"
)

// annotations is the runtimeConfig a runtime passes for the capability
// io.kubernetes.cri.pod-annotations.
func annotations(kv ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(map[string]any{"io.kubernetes.cri.pod-annotations": m})
	return `"capabilities":{"io.kubernetes.cri.pod-annotations":true},"runtimeConfig":` + string(b)
}

// chainedConf is the plugin's configuration after a cluster plugin that
// made eth0 in the pod (a veth whose node end is vethpod1 on bridge cni0).
func (w *world) chainedConf(extra string) []byte {
	c := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"clawnet-cni","socket":%q,"dataDir":%q,"chained":true,"prevResult":%s`, w.d.socket, w.dataDir, clusterResult)
	if extra != "" {
		c += "," + extra
	}
	return []byte(c + "}")
}

const clusterResult = `{"cniVersion":"1.0.0",` +
	`"interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:00:01"},{"name":"vethpod1","mac":"0a:58:0a:f4:00:02"},{"name":"eth0","mac":"0a:58:0a:f4:00:03","sandbox":"/run/netns/n1"}],` +
	`"ips":[{"interface":2,"address":"10.244.0.3/24","gateway":"10.244.0.1"}],` +
	`"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"}],"dns":{"nameservers":["10.96.0.10"]}}`

// chainedAdd runs ADD of a pod in /run/netns/n1, the namespace of
// clusterResult, and parses its result.
func (w *world) chainedAdd(id, cniArgs string, conf []byte) (*current.Result, error) {
	w.t.Helper()
	return w.addConf(id, "/run/netns/n1", cniArgs, conf)
}

// TestAddPolicyFromTheAnnotation: the annotation as the runtime passed it
// names the policy when clawnetd's pod policy source names none (a node
// without an API server); when the source names one (it reads the same
// annotation from the API server, as an AgentNetworkPolicy of the pod's
// namespace), the source's wins.
func TestAddPolicyFromTheAnnotation(t *testing.T) {
	w := newWorld(t)
	w.d.podPolicies = map[string]string{"ns/api": "ns/coder"}
	for _, tc := range []struct{ pod, want string }{
		{"p", "coder"},
		{"api", "ns/coder"},
	} {
		conf := w.conf(annotations("clawnet.dev/policy", "coder", "other", "x"))
		if err := w.p.add(w.args("s-"+tc.pod, "/run/netns/"+tc.pod, k8sArgs("ns", tc.pod, "s-"+tc.pod), conf)); err != nil {
			t.Fatal(err)
		}
		req := w.d.lastAttach()
		if req.Policy != tc.want || req.Pod == nil || *req.Pod != (control.PodRef{Namespace: "ns", Name: tc.pod, UID: tc.pod + "-uid"}) {
			t.Errorf("pod %s: attach = policy %q pod %+v; want %q and pod ns/%s with its UID", tc.pod, req.Policy, req.Pod, tc.want, tc.pod)
		}
	}
	// An empty or padded annotation is a mistake, not "no policy".
	for _, bad := range []string{"", " coder"} {
		err := w.p.add(w.args("s2", "/run/netns/n2", k8sArgs("ns", "q", "s2"), w.conf(annotations("clawnet.dev/policy", bad))))
		if err == nil || !strings.Contains(err.Error(), "clawnet.dev/policy") {
			t.Errorf("ADD with annotation %q = %v; want an error naming the annotation", bad, err)
		}
	}
	// podman: no namespace, no pod to ask about; the annotation alone.
	if err := w.p.add(w.args("s3", "/run/netns/n3", "IgnoreUnknown=1;K8S_POD_NAME=pm", w.conf(annotations("clawnet.dev/policy", "coder")))); err != nil {
		t.Fatal(err)
	}
	if req := w.d.lastAttach(); req.Policy != "coder" || req.Pod != nil {
		t.Errorf("podman-style ADD: attach = policy %q pod %+v; want coder, no pod", req.Policy, req.Pod)
	}
	w.wantAgents("ns_api", "ns_p", "pm")
}

// TestAddPolicyPrecedence: annotation (above), then clawnetd's pod policy
// source, then the network's policy, then (no policy sent) the daemon's.
func TestAddPolicyPrecedence(t *testing.T) {
	w := newWorld(t)
	w.d.podPolicies = map[string]string{"ns/bound": "coder"}
	cases := []struct {
		id, args string
		conf     []byte
		want     string
		wantPod  bool
	}{
		// The network names canary; clawnetd's source wins for a pod it knows.
		{"s1", k8sArgs("ns", "bound", "s1"), w.conf(""), "coder", true},
		{"s2", k8sArgs("ns", "plain", "s2"), w.conf(""), "canary", true},
		// podman: no namespace, no pod to ask about.
		{"s3", "IgnoreUnknown=1;K8S_POD_NAME=pm", w.conf(""), "canary", false},
		// No network policy: nothing sent, the pod named; clawnetd resolves it at attach.
		{"s4", k8sArgs("ns", "other", "s4"), bytes.Replace(w.conf(""), []byte(`,"policy":"canary"`), nil, 1), "", true},
	}
	for i, tc := range cases {
		if err := w.p.add(w.args(tc.id, fmt.Sprintf("/run/netns/n%d", i), tc.args, tc.conf)); err != nil {
			t.Fatalf("ADD %s: %v", tc.id, err)
		}
		req := w.d.lastAttach()
		if req.Policy != tc.want || (req.Pod != nil) != tc.wantPod {
			t.Errorf("ADD %s: attach policy %q pod %+v; want %q, pod named: %v", tc.id, req.Policy, req.Pod, tc.want, tc.wantPod)
		}
	}
	var asked []string
	for _, p := range w.d.asks() {
		asked = append(asked, p.Namespace+"/"+p.Name)
	}
	if want := []string{"ns/bound", "ns/plain"}; !slices.Equal(asked, want) {
		t.Errorf("clawnetd asked about %q; want %q", asked, want)
	}
	// The source failing fails the ADD (closed), naming the pod.
	w.d.podPolicyErr = "policy of pod ns/x: api server unreachable"
	err := w.p.add(w.args("s5", "/run/netns/n5", k8sArgs("ns", "x", "s5"), w.conf("")))
	if err == nil || !strings.Contains(err.Error(), "api server unreachable") || !strings.Contains(err.Error(), "pod ns/x") {
		t.Errorf("ADD when the source fails = %v; want it refused with the daemon's reason", err)
	}
	if w.recordExists("s5") {
		t.Error("a refused ADD left its record")
	}
}

func TestChainedPassesOtherPodsThrough(t *testing.T) {
	w := newWorld(t)
	if _, err := w.chainedAdd("web", k8sArgs("default", "web", "web"), w.chainedConf(annotations("team", "x"))); err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(w.out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal([]byte(clusterResult), &want)
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("result of a pod that is not an agent pod:\n%s\nwant prevResult untouched:\n%s", gotJSON, wantJSON)
	}
	if w.d.attachCount() != 0 || len(w.cleared) != 0 || w.recordExists("web") {
		t.Errorf("attaches %d, cleared %q, record %v; want nothing done", w.d.attachCount(), w.cleared, w.recordExists("web"))
	}
	if asks := w.d.asks(); len(asks) != 1 || asks[0].Name != "web" {
		t.Errorf("clawnetd asked %+v; want one question about default/web", asks)
	}
	// CHECK and DEL leave it to the cluster's plugins, even with clawnetd gone.
	w.d.stop()
	if err := w.p.check(w.args("web", "/run/netns/n1", "", w.chainedConf(""))); err != nil {
		t.Errorf("CHECK of a pod passed through: %v", err)
	}
	if err := w.p.del(w.args("web", "/run/netns/n1", "", w.chainedConf(""))); err != nil {
		t.Errorf("DEL of a pod passed through, clawnetd gone: %v", err)
	}
}

func TestChainedAgentPod(t *testing.T) {
	for _, tc := range []struct {
		name, extra, fromDaemon, want string
	}{
		{"by annotation", annotations("clawnet.dev/policy", "coder"), "", "coder"},
		{"by clawnetd", "", "canary", "canary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.d.podPolicies = map[string]string{"agents/a1": tc.fromDaemon}
			res, err := w.chainedAdd("s1", k8sArgs("agents", "a1", "s1"), w.chainedConf(tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(w.cleared, []string{"/run/netns/n1"}) {
				t.Errorf("cleared %q; want the pod's namespace", w.cleared)
			}
			req := w.d.lastAttach()
			if req.Policy != tc.want || req.Interface != "eth0" || req.Pod == nil || req.Pod.Name != "a1" || req.Force {
				t.Errorf("attach = %+v; want policy %q, eth0, the pod named, no force", req, tc.want)
			}
			var ifs []string
			for _, i := range res.Interfaces {
				ifs = append(ifs, i.Name+"@"+i.Sandbox)
			}
			// The TUN in place of eth0, first (the IPs point at it); the
			// bridge stays; the veth's node end went with its pod end.
			if want := []string{"eth0@/run/netns/n1", "cni0@"}; !slices.Equal(ifs, want) {
				t.Errorf("interfaces = %q; want %q", ifs, want)
			}
			var ips []string
			for _, ip := range res.IPs {
				ips = append(ips, ip.Address.String())
			}
			if want := []string{"100.96.0.2/16", "fd63:6c61:776e:1::2/64"}; !slices.Equal(ips, want) {
				t.Errorf("IPs = %q; want the agent's %q only", ips, want)
			}
			if slices.Contains(res.DNS.Nameservers, "10.96.0.10") {
				t.Errorf("DNS = %q; want the gateway, not the cluster's", res.DNS.Nameservers)
			}
			// CHECK against that result, then DEL detaches.
			b, _ := json.Marshal(res)
			if err := w.p.check(w.args("s1", "/run/netns/n1", "", bytes.Replace(w.chainedConf(""), []byte(clusterResult), b, 1))); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := w.p.del(w.args("s1", "/run/netns/n1", "", w.chainedConf(""))); err != nil {
				t.Errorf("DEL: %v", err)
			}
			w.wantAgents()
		})
	}
}

func TestChainedFailsClosed(t *testing.T) {
	w := newWorld(t)
	w.d.stop()
	for _, extra := range []string{"", annotations("clawnet.dev/policy", "coder")} {
		_, err := w.chainedAdd("s1", k8sArgs("ns", "p", "s1"), w.chainedConf(extra))
		if cniCode(err) != int(types.ErrTryAgainLater) || !strings.Contains(err.Error(), "clawnetd is not running") {
			t.Errorf("chained ADD (%s) without clawnetd = %v; want code 11, clawnetd is not running", extra, err)
		}
	}
	if len(w.cleared) != 0 {
		t.Errorf("cleared %q without clawnetd; the cluster's interfaces must stay until the attach can happen", w.cleared)
	}

	w = newWorld(t)
	w.clearErr = errors.New("interfaces [sriov0] are still in /run/netns/n1")
	_, err := w.chainedAdd("s1", k8sArgs("ns", "p", "s1"), w.chainedConf(annotations("clawnet.dev/policy", "coder")))
	if err == nil || !strings.Contains(err.Error(), "sriov0") {
		t.Errorf("chained ADD when an interface stays = %v; want it refused naming the interface", err)
	}
	if w.d.attachCount() != 0 || w.recordExists("s1") {
		t.Errorf("attaches %d, record %v after a refused ADD; want none", w.d.attachCount(), w.recordExists("s1"))
	}
}

func TestChainedConf(t *testing.T) {
	w := newWorld(t)
	// chained without a plugin before it, or with a network-wide policy.
	err := w.p.add(w.args("s1", "/run/netns/n1", "", bytes.Replace(w.conf(""), []byte(`"policy":"canary"`), []byte(`"chained":true`), 1)))
	if cniCode(err) != int(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), "no prevResult") {
		t.Errorf("chained ADD without prevResult = %v; want an invalid-config error", err)
	}
	err = w.p.add(w.args("s1", "/run/netns/n1", "", w.chainedConf(`"policy":"canary"`)))
	if cniCode(err) != int(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), "chained mode") {
		t.Errorf("chained ADD with a policy = %v; want an invalid-config error", err)
	}
	w.wantAgents()
}
