// This file is the API server fixture, shared with the kubelet tier
// (test/cni), which joins a kubelet to the same API server.

package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/clawnet/clawnet/kube"
	"github.com/clawnet/clawnet/test/harness"
)

// APIServer is a kube-apiserver and its etcd, started by
// scripts/apiserver-setup.sh for one test.
type APIServer struct {
	Kubeconfig string
	Dyn        dynamic.Interface
	Core       kubernetes.Interface
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// StartAPIServer starts etcd and kube-apiserver on loopback, applies the
// CRDs of deploy/kubernetes/crds and waits until both kinds are served.
// Both are stopped when t ends.
func StartAPIServer(t *testing.T) *APIServer {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("CNI_CACHE")
	if cache == "" {
		cache = "/var/cache/clawnet-ci"
	}
	version := os.Getenv("APISERVER_VERSION")
	if version == "" {
		version = "v1.34.4"
	}
	if _, err := os.Stat(filepath.Join(cache, "kube-apiserver-"+version)); err != nil {
		t.Fatalf("kube-apiserver %s is not built: run scripts/apiserver-setup.sh build (make kube-test does): %v", version, err)
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatalf("etcd is not installed: apt-get install etcd-server (make kube-test does): %v", err)
	}
	dir, err := os.MkdirTemp("", "capi")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "apiserver-setup.sh")
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stop the API server: %v\n%s", err, out)
		}
		if t.Failed() {
			out, _ := exec.Command("tail", "-n", "30", filepath.Join(dir, "apiserver.log")).Output()
			t.Logf("kube-apiserver log:\n%s", out)
		}
		os.RemoveAll(dir)
	})
	start := time.Now()
	if out, err := exec.Command(script, "start", dir).CombinedOutput(); err != nil {
		t.Fatalf("start the API server: %v\n%s", err, out)
	}
	t.Logf("etcd and kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
	api := &APIServer{Kubeconfig: filepath.Join(dir, "kubeconfig")}
	cfg, err := clientcmd.BuildConfigFromFlags("", api.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if api.Dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if api.Core, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	api.ApplyCRDs(t, filepath.Join(root, "deploy", "kubernetes", "crds"))
	return api
}

// applyCRDs creates every CRD in dir and waits until each is established
// and its kind can be listed.
func (api *APIServer) ApplyCRDs(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) != 2 {
		t.Fatalf("CRDs in %s: %v, want 2", dir, files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := api.Dyn.Resource(crdResource).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Fatalf("apply %s: %v", f, err)
		}
		name := u.GetName()
		if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
			got, err := api.Dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("CRD %s not established after 30s", name)
		}
	}
	for _, r := range []schema.GroupVersionResource{kube.PolicyResource, kube.ClusterPolicyResource} {
		if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool {
			_, err := api.Dyn.Resource(r).List(ctx, metav1.ListOptions{})
			return err == nil
		}) {
			t.Fatalf("%s not served 30s after its CRD was established", r.Resource)
		}
	}
}

// Object makes an AgentNetworkPolicy (ns set) or ClusterAgentNetworkPolicy
// (ns empty) from a spec written in YAML.
func Object(t *testing.T, ns, name, spec string) *unstructured.Unstructured {
	t.Helper()
	kind := kube.Kind
	if ns == "" {
		kind = kube.KindCluster
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": kube.Group + "/" + kube.Version, "kind": kind,
		"metadata": map[string]any{"name": name},
	}}
	if ns != "" {
		u.SetNamespace(ns)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	u.Object["spec"] = m
	return u
}

func (api *APIServer) resource(ns string) dynamic.ResourceInterface {
	if ns == "" {
		return api.Dyn.Resource(kube.ClusterPolicyResource)
	}
	return api.Dyn.Resource(kube.PolicyResource).Namespace(ns)
}

// Create creates a policy object through the API server, as kubectl
// apply would, with strict field validation.
func (api *APIServer) Create(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	if _, err := api.resource(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// SetSpec replaces the spec of a policy object.
func (api *APIServer) SetSpec(t *testing.T, ns, name, spec string) {
	t.Helper()
	ctx := context.Background()
	u, err := api.resource(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Object["spec"] = Object(t, ns, name, spec).Object["spec"]
	if _, err := api.resource(ns).Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("update %s: %v", name, err)
	}
}

// StatusOf summarises an object's status as "Accepted=S agents=N error=E".
func (api *APIServer) StatusOf(ns, name string) string {
	u, err := api.resource(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	cond := "none"
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Accepted" {
			cond = fmt.Sprint(m["status"])
		}
	}
	agents, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "agents")
	errMsg, _, _ := unstructured.NestedString(u.Object, "status", "error")
	return fmt.Sprintf("Accepted=%s agents=%v error=%s", cond, agents, errMsg)
}

// WaitStatus waits up to timeout for the object's status summary to
// satisfy ok.
func (api *APIServer) WaitStatus(t *testing.T, ns, name string, timeout time.Duration, want string, ok func(string) bool) {
	t.Helper()
	var got string
	if !harness.Poll(timeout, 100*time.Millisecond, func() bool {
		got = api.StatusOf(ns, name)
		return ok(got)
	}) {
		t.Fatalf("status of %s %s/%s = %q after %v, want %s", kindOf(ns), ns, name, got, timeout, want)
	}
}

func kindOf(ns string) string {
	if ns == "" {
		return kube.KindCluster
	}
	return kube.Kind
}

// Is is a WaitStatus condition: the summary is want.
func Is(want string) func(string) bool { return func(s string) bool { return s == want } }

// HasPrefix is a WaitStatus condition: the summary starts with p.
func HasPrefix(p string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, p) }
}

// createPod creates a pod object (no kubelet runs it: the test attaches a
// namespace of its own in its name), annotated with policy if not empty.
func (api *APIServer) createPod(t *testing.T, ns, name, policy string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "localhost/clawnet-test/busybox:latest"}}},
	}
	if policy != "" {
		p.Annotations = map[string]string{kube.PolicyAnnotation: policy}
	}
	got, err := api.Core.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return got
}

// CreateNamespace creates a namespace (one that exists already is fine).
func (api *APIServer) CreateNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	_, err := api.Core.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// table reads path as kubectl get does, as a server-side Table, and
// returns its column names then each row's cells, as text.
func (api *APIServer) table(t *testing.T, path string) [][]string {
	t.Helper()
	raw, err := api.Core.CoreV1().RESTClient().Get().AbsPath(path).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET %s as a table: %v", path, err)
	}
	var tab struct {
		ColumnDefinitions []struct{ Name string } `json:"columnDefinitions"`
		Rows              []struct{ Cells []any } `json:"rows"`
	}
	if err := json.Unmarshal(raw, &tab); err != nil {
		t.Fatalf("table %s: %v", raw, err)
	}
	var out [][]string
	var head []string
	for _, c := range tab.ColumnDefinitions {
		head = append(head, c.Name)
	}
	out = append(out, head)
	for _, r := range tab.Rows {
		var row []string
		for _, c := range r.Cells {
			if c == nil {
				c = ""
			}
			row = append(row, fmt.Sprint(c))
		}
		out = append(out, row)
	}
	return out
}
