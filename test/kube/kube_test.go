// Package kubetest runs clawnet's policy objects through a real
// kube-apiserver (on Debian's etcd, both on loopback, started by
// scripts/apiserver-setup.sh) and the real clawnetd with --kubeconfig: the
// CRDs are applied as written in deploy/kubernetes/crds, objects are
// created through the API server, and the tests assert on what clawnetd
// wrote back into their status, on the events it posted, and on what
// reached the canary from an agent attached with a pod reference.
//
// The tier runs only with CLAWNET_KUBE_TESTS=1 (make kube-test, which
// builds kube-apiserver once per version and installs etcd-server first),
// as root.
package kubetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// envKubeTests asks for this tier.
const envKubeTests = "CLAWNET_KUBE_TESTS"

func requireTier(t *testing.T) {
	t.Helper()
	if os.Getenv(envKubeTests) != "1" {
		t.Skipf("API server tier: runs only with %s=1 (make kube-test)", envKubeTests)
	}
	harness.RequireRoot(t)
}

// attachPod asks d's control API to attach ns as the agent name for pod,
// naming no policy, as clawnet-cni does.
func attachPod(d *harness.Daemon, ns *harness.NetNS, name string, pod control.PodRef) (*control.Agent, error) {
	return attach(d, control.AttachRequest{Name: name, Netns: ns.Path, Pod: &pod})
}

// attach sends req to d's control API.
func attach(d *harness.Daemon, req control.AttachRequest) (*control.Agent, error) {
	body, _ := json.Marshal(req)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
		DisableKeepAlives: true,
	}}
	resp, err := c.Post("http://clawnet/v1/agents", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		var e struct{ Error string }
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(out))
	}
	var a control.Agent
	if err := json.Unmarshal(out, &a); err != nil {
		return nil, fmt.Errorf("answer %q: %v", out, err)
	}
	return &a, nil
}

// echo sends msg on c and reads it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read back %q: %v", msg, err)
	}
}

// TestPoliciesFromAPIServer: clawnetd with --kubeconfig takes its policies
// from AgentNetworkPolicy and ClusterAgentNetworkPolicy objects, says in
// their status whether each is accepted (with the field path of what is
// wrong) and how many agents use it, attaches a pod's namespace under the
// policy its annotation names, and the canary sees exactly what that
// policy with the cluster-wide denies laid over it allows. A pod naming no
// such object is refused, with an event on the pod; a cluster deny added
// later closes a live flow.
func TestPoliciesFromAPIServer(t *testing.T) {
	requireTier(t)
	api := StartAPIServer(t)
	in := harness.NewInternet(t)
	ctx := context.Background()
	srv, other := in.Server4, in.Addr4(3)

	api.CreateNamespace(t, "agents", nil)
	api.Create(t, Object(t, "agents", "coder", fmt.Sprintf(`
description: echo anywhere on the test internet
egress:
  - cidrs: [%q]
    ports: [7]
`, in.Net4)))
	api.Create(t, Object(t, "agents", "broken", "egress:\n  - domains: [api.example.org, '*.com']\n    ports: [443]\n"))
	api.Create(t, Object(t, "", "no-other", fmt.Sprintf("deny:\n  - cidrs: [%q]\n", netip.PrefixFrom(other, 32))))
	pod1 := api.createPod(t, "agents", "agent-1", "coder")
	pod2 := api.createPod(t, "agents", "agent-2", "missing")

	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in,
		Args: []string{"--kubeconfig", api.Kubeconfig, "--node-name", "test-node"}})

	api.WaitStatus(t, "agents", "coder", 20*time.Second, "accepted, no agents", Is("Accepted=True agents=0 error="))
	api.WaitStatus(t, "", "no-other", 20*time.Second, "accepted", Is("Accepted=True agents=0 error="))
	api.WaitStatus(t, "agents", "broken", 20*time.Second, "refused at its field path",
		HasPrefix(`Accepted=False agents=0 error=spec.egress[0].domains[1]: domain "*.com"`))

	ns := harness.NewNetNS(t, "pod")
	a, err := attachPod(d, ns, "agent-1", control.PodRef{Namespace: "agents", Name: "agent-1", UID: string(pod1.UID)})
	if err != nil {
		t.Fatalf("attach agent-1: %v", err)
	}
	if a.Policy != "agents/coder" {
		t.Errorf("agent-1 attached under %q, want agents/coder", a.Policy)
	}

	// Allowed by the namespace's policy: the echo server.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	live, err := ns.Dial(dctx, "tcp", netip.AddrPortFrom(srv, 7).String())
	if err != nil {
		t.Fatalf("dial the allowed echo server: %v", err)
	}
	defer live.Close()
	echo(t, live, "allowed by agents/coder")
	in.WaitFor(t, 5*time.Second, "the allowed flow", harness.To(srv, 7))

	// Allowed by agents/coder too, but denied by the cluster-wide policy.
	mark := in.Mark()
	if c, err := ns.Dial(dctx, "tcp", netip.AddrPortFrom(other, 7).String()); err == nil {
		c.Close()
		t.Errorf("a flow the ClusterAgentNetworkPolicy denies connected")
	}
	sentinel, err := ns.Dial(dctx, "tcp", netip.AddrPortFrom(srv, 7).String())
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte(fmt.Sprintf("sentinel %d", time.Now().UnixNano()))
	if got, err := harness.EchoHalfClose(sentinel, marker, 5*time.Second); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("sentinel echo: %q, %v", got, err)
	}
	sentinel.Close()
	sum := canarylog.Digest(marker)
	in.NeverSawBefore(t, mark, 5*time.Second, "the sentinel", func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceEcho && e.Event == canarylog.EventClose && e.SHA256 == sum
	}, "a flow to the host the cluster policy denies", harness.To(other, 0))
	d.WaitAudit(t, 5*time.Second, "the cluster deny", func(e harness.AuditEntry) bool {
		return e.Verdict == "deny" && e.Rule == "ClusterAgentNetworkPolicy:no-other deny[0]"
	})

	api.WaitStatus(t, "agents", "coder", 25*time.Second, "one agent", Is("Accepted=True agents=1 error="))
	api.WaitStatus(t, "", "no-other", 25*time.Second, "one agent (every agent on the node)", Is("Accepted=True agents=1 error="))

	// What kubectl get agentnetworkpolicies shows: the API server's table
	// made from the CRD's printer columns.
	table := api.table(t, "/apis/clawnet.dev/v1alpha1/namespaces/agents/agentnetworkpolicies")
	if got := strings.Join(table[0], " "); got != "Name Accepted Agents Error Age" {
		t.Errorf("kubectl get columns: %q", got)
	}
	rows := map[string]string{}
	for _, r := range table[1:] {
		rows[r[0]] = strings.Join(r[1:4], " | ")
	}
	if rows["coder"] != "True | 1 | " || !strings.HasPrefix(rows["broken"], `False | 0 | spec.egress[0].domains[1]: domain "*.com"`) {
		t.Errorf("kubectl get rows: %q", rows)
	}

	// A pod naming no AgentNetworkPolicy does not start on another policy.
	ns2 := harness.NewNetNS(t, "pod2")
	if _, err := attachPod(d, ns2, "agent-2", control.PodRef{Namespace: "agents", Name: "agent-2", UID: string(pod2.UID)}); err == nil ||
		!strings.Contains(err.Error(), `404 Not Found: policy of pod agents/agent-2: not found: the pod's annotation clawnet.dev/policy names AgentNetworkPolicy "missing", which does not exist in namespace agents`) {
		t.Errorf("attach agent-2 = %v, want refused: no such AgentNetworkPolicy", err)
	}
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		evs, err := api.Core.CoreV1().Events("agents").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=agent-2"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "AttachRefused" && e.Type == "Warning" && strings.Contains(e.Message, `"missing"`) && e.InvolvedObject.UID == pod2.UID {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no AttachRefused event on pod agents/agent-2")
	}

	// A runtime that passes the pod's annotation to the plugin names the
	// bare NAME: it is the namespace's object all the same.
	pod3 := api.createPod(t, "agents", "agent-3", "coder")
	ns3 := harness.NewNetNS(t, "pod3")
	a3, err := attach(d, control.AttachRequest{Name: "agent-3", Netns: ns3.Path, Policy: "coder",
		Pod: &control.PodRef{Namespace: "agents", Name: "agent-3", UID: string(pod3.UID)}})
	if err != nil || a3.Policy != "agents/coder" {
		t.Errorf("attach agent-3 naming coder: %+v, %v; want it under agents/coder", a3, err)
	}
	if err == nil {
		d.MustCLI(t, "detach", "agent-3")
	}

	// A bad new version is refused and the last good one stays in force.
	api.SetSpec(t, "agents", "coder", "egress:\n  - cidrs: [10.20.1.0/16]\n    ports: [7]\n")
	api.WaitStatus(t, "agents", "coder", 20*time.Second, "refused, last good in force",
		func(s string) bool {
			return strings.HasPrefix(s, "Accepted=False agents=1 error=spec.egress[0].cidrs[0]: ") && strings.HasSuffix(s, "the last accepted version stays in force")
		})
	echo(t, live, "still allowed")

	// A cluster-wide deny added for a live flow closes it.
	api.SetSpec(t, "", "no-other", fmt.Sprintf("deny:\n  - cidrs: [%q, %q]\n", netip.PrefixFrom(other, 32), netip.PrefixFrom(srv, 32)))
	d.WaitAudit(t, 10*time.Second, "the revoke line", func(e harness.AuditEntry) bool {
		return e.Event == "revoke" && e.Rule == "ClusterAgentNetworkPolicy:no-other deny[0]" && e.DstAddr() == netip.AddrPortFrom(srv, 7)
	})
	live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := live.Read(make([]byte, 16)); err == nil {
		t.Errorf("the live flow still reads (%d bytes) after the cluster deny", n)
	}

	// A restarted clawnetd has the objects' policies again before it
	// re-attaches: agent-1 comes back under agents/coder. (The last good
	// version of a refused object is not kept across restarts: coder is
	// made good again first.)
	api.SetSpec(t, "agents", "coder", fmt.Sprintf("egress:\n  - cidrs: [%q]\n    ports: [7]\n", in.Net4))
	api.WaitStatus(t, "agents", "coder", 20*time.Second, "accepted again", HasPrefix("Accepted=True"))
	d.Restart(t)
	if a, ok := d.Lookup(t, "agent-1"); !ok || a.Policy != "agents/coder" {
		t.Errorf("after a restart, agent-1 = %+v (attached %v), want it re-attached under agents/coder", a, ok)
	}
}
