package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
)

// countingGateway is a real gateway whose attached agents the test sets.
type countingGateway struct {
	*gateway.Gateway
	mu     sync.Mutex
	agents []control.Agent
}

func (g *countingGateway) Agents() []control.Agent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]control.Agent(nil), g.agents...)
}

func (g *countingGateway) setAgents(as ...control.Agent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.agents = as
}

func newTestGateway(t *testing.T) *countingGateway {
	t.Helper()
	cfg := gateway.DefaultConfig()
	cfg.PolicyDir = t.TempDir()
	g, err := gateway.New(gateway.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return &countingGateway{Gateway: g}
}

func object(t *testing.T, cluster bool, ns, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	kind := Kind
	if cluster {
		kind = KindCluster
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version, "kind": kind,
		"metadata": map[string]any{"name": name},
	}}
	if ns != "" {
		u.SetNamespace(ns)
	}
	if specYAML != "" {
		u.Object["spec"] = spec(t, specYAML)
	}
	return u
}

func fakeClient(objs ...runtime.Object) *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		PolicyResource:        Kind + "List",
		ClusterPolicyResource: KindCluster + "List",
	}, objs...)
}

// eventually polls cond for up to five seconds.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 5s", what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func explain(t *testing.T, g *countingGateway, pol, host string) string {
	t.Helper()
	e, err := g.Explain(pol, "tcp", host, 443)
	if err != nil {
		return err.Error()
	}
	return e.Verdict + " by " + e.Rule
}

func status(t *testing.T, c *dynfake.FakeDynamicClient, cluster bool, ns, name string) map[string]any {
	t.Helper()
	var u *unstructured.Unstructured
	var err error
	if cluster {
		u, err = c.Resource(ClusterPolicyResource).Get(context.Background(), name, metav1.GetOptions{})
	} else {
		u, err = c.Resource(PolicyResource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := unstructured.NestedMap(u.Object, "status")
	return st
}

// statusSays summarises a status as "accepted=STATUS agents=N error=MSG".
func statusSays(st map[string]any) string {
	cond := "none"
	if cs, ok := st["conditions"].([]any); ok && len(cs) == 1 {
		cond, _ = cs[0].(map[string]any)["status"].(string)
	}
	agents := "nil"
	if a, ok := st["agents"]; ok {
		agents = fmt.Sprint(a)
	}
	errMsg, _ := st["error"].(string)
	return "accepted=" + cond + " agents=" + agents + " error=" + errMsg
}

const coderSpec = `
egress:
  - domains: [api.github.com]
    ports: [443]
`

// TestWatcher: objects become policies in the gateway, cluster denies lay
// over them, status says accepted or the error with its field path and
// counts agents; a bad new version keeps the last good one in force; a
// deleted object's policy goes.
func TestWatcher(t *testing.T) {
	g := newTestGateway(t)
	c := fakeClient(
		object(t, false, "agents", "coder", coderSpec+"  - domains: [pastebin.com]\n    ports: [443]\n"),
		object(t, false, "agents", "broken", "egress:\n  - domains: ['*.com']\n    ports: [443]\n"),
		object(t, true, "", "no-paste", "deny:\n  - domains: [pastebin.com]\n"),
	)
	g.setAgents(control.Agent{Name: "a1", Policy: "agents/coder"}, control.Agent{Name: "a2", Policy: "agents/coder"}, control.Agent{Name: "x", Policy: "default"})
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWatcher(Options{Client: c, Gateway: g, Node: "node-1", Refresh: 50 * time.Millisecond})
	if err := w.Start(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); w.Wait() }()

	// Start returns once the gateway has them.
	if got := explain(t, g, "agents/coder", "api.github.com"); got != "allow by agents:coder egress[0]" {
		t.Errorf("agents/coder, api.github.com: %s", got)
	}
	if got := explain(t, g, "agents/coder", "pastebin.com"); got != "deny by ClusterAgentNetworkPolicy:no-paste deny[0]" {
		t.Errorf("agents/coder, pastebin.com: %s, want the cluster deny", got)
	}
	if got := explain(t, g, "default", "pastebin.com"); !strings.HasPrefix(got, "deny") {
		t.Errorf("default, pastebin.com: %s", got)
	}
	if got := explain(t, g, "agents/broken", "x.com"); !strings.Contains(got, "unknown policy") {
		t.Errorf("agents/broken is in force: %s", got)
	}
	eventually(t, "coder's status", func() (bool, string) {
		s := statusSays(status(t, c, false, "agents", "coder"))
		return s == "accepted=True agents=2 error=", s
	})
	eventually(t, "broken's status", func() (bool, string) {
		s := statusSays(status(t, c, false, "agents", "broken"))
		return strings.HasPrefix(s, `accepted=False agents=0 error=spec.egress[0].domains[0]: domain "*.com"`), s
	})
	eventually(t, "no-paste's status", func() (bool, string) {
		s := statusSays(status(t, c, true, "", "no-paste"))
		return s == "accepted=True agents=3 error=", s // every agent on the node
	})
	st := status(t, c, false, "agents", "coder")
	if nodes, _ := st["nodes"].([]any); len(nodes) != 1 || nodes[0].(map[string]any)["name"] != "node-1" {
		t.Errorf("status.nodes = %v, want this node's entry", st["nodes"])
	}

	// Agent counts follow the gateway without any object changing.
	g.setAgents(control.Agent{Name: "a1", Policy: "agents/coder"})
	eventually(t, "coder's agent count", func() (bool, string) {
		s := statusSays(status(t, c, false, "agents", "coder"))
		return s == "accepted=True agents=1 error=", s
	})

	// A bad new version: refused, the last good one stays in force.
	bad := object(t, false, "agents", "coder", "egress:\n  - domains: [api.github.com]\n    ports: [443]\n    protocol: sctp\n")
	bad.SetResourceVersion("")
	cur, _ := c.Resource(PolicyResource).Namespace("agents").Get(ctx, "coder", metav1.GetOptions{})
	cur.Object["spec"] = bad.Object["spec"]
	if _, err := c.Resource(PolicyResource).Namespace("agents").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "coder's status after a bad update", func() (bool, string) {
		s := statusSays(status(t, c, false, "agents", "coder"))
		return strings.HasPrefix(s, "accepted=False agents=1 error=spec.egress[0].protocol: ") &&
			strings.HasSuffix(s, "; the last accepted version stays in force"), s
	})
	if got := explain(t, g, "agents/coder", "api.github.com"); got != "allow by agents:coder egress[0]" {
		t.Errorf("after a bad update, agents/coder, api.github.com: %s, want the last good version", got)
	}

	// A good new version replaces it.
	cur, _ = c.Resource(PolicyResource).Namespace("agents").Get(ctx, "coder", metav1.GetOptions{})
	cur.Object["spec"] = spec(t, "egress:\n  - domains: [example.org]\n    ports: [443]\n")
	if _, err := c.Resource(PolicyResource).Namespace("agents").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new version in force", func() (bool, string) {
		got := explain(t, g, "agents/coder", "api.github.com")
		return strings.HasPrefix(got, "deny by default"), got
	})
	eventually(t, "coder's status after a good update", func() (bool, string) {
		s := statusSays(status(t, c, false, "agents", "coder"))
		return s == "accepted=True agents=1 error=", s
	})

	// Deleted: the policy goes, and the cluster denies with it.
	if err := c.Resource(PolicyResource).Namespace("agents").Delete(ctx, "coder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Resource(ClusterPolicyResource).Delete(ctx, "no-paste", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted policy gone", func() (bool, string) {
		got := explain(t, g, "agents/coder", "example.org")
		return strings.Contains(got, "unknown policy"), got
	})
	if got := g.Policies(); len(got) != 1 || got[0] != "default" {
		t.Errorf("policies after deletes = %v, want [default]", got)
	}
}

// TestWatcherNoCRDs: Start fails with a clear error when the kinds cannot
// be listed (the CRDs are not installed) in time, and stops when told.
func TestWatcherNoCRDs(t *testing.T) {
	g := newTestGateway(t)
	c := fakeClient()
	c.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(a.GetResource().GroupResource(), "")
	})
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWatcher(Options{Client: c, Gateway: g, Node: "n"})
	err := w.Start(ctx, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "CRDs") {
		t.Fatalf("Start = %v, want an error naming the CRDs", err)
	}
	cancel()
	w.Wait()
}
