package cnitest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawnet/clawnet/kube"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
	kubetest "github.com/clawnet/clawnet/test/kube"
)

// apiNamespace is the Kubernetes namespace of the API server test's pods
// and AgentNetworkPolicy.
const apiNamespace = "clawnet-agents"

// apiPod is a regular pod (not static) bound to the kubelet's node by
// spec.nodeName (no scheduler runs), annotated clawnet.dev/policy: policy,
// whose only container runs script.
func apiPod(name, policy, script string) *corev1.Pod {
	grace := int64(1)
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: apiNamespace, Name: name,
			Annotations: map[string]string{kube.PolicyAnnotation: policy}},
		Spec: corev1.PodSpec{
			NodeName:                      nodeName,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			Containers: []corev1.Container{{
				Name: name, Image: agentImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", script},
			}},
		},
	}
}

// TestKubeletAPIServer is the cluster path end to end: a kubelet joined to
// a real kube-apiserver (registered as its node), containerd's CRI,
// clawnet-cni with the pod-annotations capability as `clawnet-cni install`
// writes it, and clawnetd with --kubeconfig and --node-name taking its
// policies from AgentNetworkPolicy objects. A pod created through the API
// server, bound to the node and annotated clawnet.dev/policy: coder, is
// attached under the object NAMESPACE/coder before its container runs: its
// container's first connection (allowed) reaches the canary, its second
// (denied by the object) never does, and the object's status counts it.
// Editing the object to drop the allowed destination closes the pod's live
// flow there and refuses its next connection. A pod naming no object never
// starts and gets an AttachRefused event; deleting the agent pod through the
// API server detaches it.
func TestKubeletAPIServer(t *testing.T) {
	requireCNI(t)
	kubeletPath(t)
	// Stopped last (cleanups run in reverse): kubelet, containerd and
	// clawnetd all talk to it until they stop.
	api := kubetest.StartAPIServer(t)
	ctx := context.Background()
	w := newWorldWith(t, "--kubeconfig", api.Kubeconfig, "--node-name", nodeName)
	srv, other := w.in.Server4, w.in.Addr4(3)

	// coder allows HTTP and the tarpit on the canary's primary address,
	// and HTTP on another of its addresses (the sentinels'); the echo port
	// stays denied everywhere.
	coder := func(primary bool) string {
		spec := fmt.Sprintf("egress:\n  - cidrs: [%q]\n    ports: [80]\n", netip.PrefixFrom(other, 32))
		if primary {
			spec += fmt.Sprintf("  - cidrs: [%q]\n    ports: [80, 8083]\n", netip.PrefixFrom(srv, 32))
		}
		return spec
	}
	api.CreateNamespace(t, apiNamespace, nil)
	api.Create(t, kubetest.Object(t, apiNamespace, "coder", coder(true)))
	api.WaitStatus(t, apiNamespace, "coder", 20*time.Second, "accepted, no agents", kubetest.Is("Accepted=True agents=0 error="))

	c := startContainerdWith(t, w, agentConflist(w))
	k := startKubeletWith(t, c, api.Kubeconfig)
	if !harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		_, err := api.Core.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		return err == nil
	}) {
		t.Fatalf("kubelet did not register node %s with the API server within 60s; its log:\n%s", nodeName, k.logTail())
	}

	mark := w.in.Mark()
	first, sentinel := token("api-first"), token("api-sentinel")
	script := httpGet(srv.String(), first) + "; echo denied | nc -w 3 " + srv.String() + " 7; " +
		httpGet(other.String(), sentinel) + "; exec sleep 3600"
	pod, err := api.Core.CoreV1().Pods(apiNamespace).Create(ctx, apiPod("agent", "coder", script), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/agent: %v", apiNamespace, err)
	}
	const agent = apiNamespace + "_agent"
	a := w.waitAgent(t, agent, "", 90*time.Second)
	if a.Policy != apiNamespace+"/coder" || a.Interface != "eth0" {
		t.Errorf("agent = %+v; want policy %s/coder (the object the pod's annotation names), interface eth0", a, apiNamespace)
	}
	// The container's first instruction went through the gateway; the
	// denied echo connection, made before the sentinel, never arrived.
	waitSince(t, w, mark, 60*time.Second, "the container's first request "+first, requested(first))
	w.in.NeverSawBefore(t, mark, 30*time.Second, "the sentinel "+sentinel, requested(sentinel),
		"the denied echo connection", harness.To(srv, 7))
	api.WaitStatus(t, apiNamespace, "coder", 25*time.Second, "accepted, one agent", kubetest.Is("Accepted=True agents=1 error="))
	// What the API server shows of the pod is what clawnetd attached: the
	// kubelet reports the agent's address as the pod IP.
	var podIP string
	if !harness.Poll(30*time.Second, 200*time.Millisecond, func() bool {
		p, err := api.Core.CoreV1().Pods(apiNamespace).Get(ctx, "agent", metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			podIP = p.Status.PodIP
			return true
		}
		return false
	}) {
		t.Errorf("pod %s/agent is not Running in the API server after 30s", apiNamespace)
	} else if podIP != addr4(t, a).String() {
		t.Errorf("the pod IP in the API server is %q; the agent's address is %s", podIP, addr4(t, a))
	}

	ctr := c.must(t, "ps", "--name", "^agent$", "--state", "running", "-q")
	t.Run("object edited, allowed destination revoked", func(t *testing.T) {
		// A live flow to the tarpit, which holds it open.
		mark := w.in.Mark()
		liveDone := make(chan harness.Result, 1)
		go func() {
			liveDone <- c.run("exec", ctr, "sh", "-c", fmt.Sprintf("exec nc %s 8083 </dev/zero", srv))
		}()
		tarpit := func(event string) func(canarylog.Entry) bool {
			return func(e canarylog.Entry) bool {
				return e.Service == canarylog.ServiceTarpit && e.Event == event && harness.To(srv, 8083)(e)
			}
		}
		waitSince(t, w, mark, 20*time.Second, "the live flow to the tarpit", tarpit(canarylog.EventOpen))

		api.SetSpec(t, apiNamespace, "coder", coder(false))
		w.d.WaitAudit(t, 20*time.Second, "the revoke of the live flow", func(e harness.AuditEntry) bool {
			return e.Event == "revoke" && e.Agent == agent && e.DstAddr() == netip.AddrPortFrom(srv, 8083)
		})
		waitSince(t, w, mark, 10*time.Second, "the live flow closed on the far side", tarpit(canarylog.EventClose))
		select {
		case r := <-liveDone:
			if r.OK() {
				t.Errorf("nc on the revoked flow exited 0: %v", r)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("nc on the revoked flow still runs 20s after the revoke")
		}

		// The next connection there is refused; the sentinel still goes.
		mark = w.in.Mark()
		after, sentinel := token("api-revoked"), token("api-sentinel")
		if r := c.run("exec", ctr, "sh", "-c", httpGet(srv.String(), after)); strings.Contains(r.Stdout, "200 OK") {
			t.Errorf("GET %s after the object dropped it: %v; want refused", after, r)
		}
		if r := c.run("exec", ctr, "sh", "-c", httpGet(other.String(), sentinel)); !r.OK() || !strings.Contains(r.Stdout, "200 OK") {
			t.Errorf("sentinel GET: %v", r)
		}
		w.in.NeverSawBefore(t, mark, 10*time.Second, "the sentinel "+sentinel, requested(sentinel),
			"the request to the revoked destination", harness.To(srv, 0))
		api.WaitStatus(t, apiNamespace, "coder", 20*time.Second, "the edit accepted", kubetest.Is("Accepted=True agents=1 error="))
	})

	t.Run("annotation names no object: not started, AttachRefused", func(t *testing.T) {
		mark := w.in.Mark()
		ghost := token("ghost")
		gp, err := api.Core.CoreV1().Pods(apiNamespace).Create(ctx, apiPod("ghost", "missing", httpGet(other.String(), ghost)+"; exec sleep 3600"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/ghost: %v", apiNamespace, err)
		}
		defer func() {
			zero := int64(0)
			api.Core.CoreV1().Pods(apiNamespace).Delete(ctx, "ghost", metav1.DeleteOptions{GracePeriodSeconds: &zero})
		}()
		var msg string
		if !harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
			evs, err := api.Core.CoreV1().Events(apiNamespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=ghost"})
			if err != nil {
				return false
			}
			for _, e := range evs.Items {
				if e.Reason == "AttachRefused" && e.Type == corev1.EventTypeWarning && e.InvolvedObject.UID == gp.UID {
					msg = e.Message
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no AttachRefused event on pod %s/ghost within 60s; containerd's log:\n%s", apiNamespace, c.logTail())
		}
		if !strings.Contains(msg, `AgentNetworkPolicy "missing", which does not exist in namespace `+apiNamespace) {
			t.Errorf("AttachRefused message %q; want it to name the missing AgentNetworkPolicy", msg)
		}
		if got := c.run("ps", "-a", "--name", "^ghost$", "-q").Stdout; strings.TrimSpace(got) != "" {
			t.Errorf("containers of the refused pod: %q; want none", got)
		}
		if _, ok := w.agent(t, apiNamespace+"_ghost"); ok {
			t.Error("the refused pod is attached")
		}
		if p, err := api.Core.CoreV1().Pods(apiNamespace).Get(ctx, "ghost", metav1.GetOptions{}); err != nil {
			t.Errorf("refused pod in the API server: %v", err)
		} else if p.Status.Phase != corev1.PodPending {
			t.Errorf("refused pod in the API server: phase %q; want Pending", p.Status.Phase)
		}
		sentinel := token("api-sentinel")
		if r := c.run("exec", ctr, "sh", "-c", httpGet(other.String(), sentinel)); !r.OK() {
			t.Errorf("sentinel GET: %v", r)
		}
		w.in.NeverSawBefore(t, mark, 10*time.Second, "the sentinel "+sentinel, requested(sentinel),
			"the refused pod's request", requested(ghost))
	})

	t.Run("pod deleted through the API server, agent detached", func(t *testing.T) {
		if err := api.Core.CoreV1().Pods(apiNamespace).Delete(ctx, "agent", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete pod %s/agent: %v", apiNamespace, err)
		}
		w.waitGone(t, agent, 60*time.Second)
		api.WaitStatus(t, apiNamespace, "coder", 25*time.Second, "no agents", kubetest.Is("Accepted=True agents=0 error="))
		// The kubelet confirms the deletion once the pod is torn down.
		if !harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
			_, err := api.Core.CoreV1().Pods(apiNamespace).Get(ctx, "agent", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}) {
			t.Errorf("pod %s/agent (uid %s) still in the API server 60s after its deletion", apiNamespace, pod.UID)
		}
		if recs := w.records(t, "clawnet-kubelet"); len(recs) != 0 {
			t.Errorf("attachment records after the pod was deleted: %q", recs)
		}
	})
}
