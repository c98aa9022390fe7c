package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
)

func pod(ns, name, uid, policy string) runtime.Object {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + uid)}}
	if policy != "" {
		p.Annotations = map[string]string{PolicyAnnotation: policy}
	}
	return unstructuredOf(p)
}

func namespace(name string, labels, annotations map[string]string) runtime.Object {
	return unstructuredOf(&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}})
}

func unstructuredOf(o runtime.Object) *unstructured.Unstructured {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		panic(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// coreClient is a fake API server holding objs, for Pods.
func coreClient(objs ...runtime.Object) *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		podResource: "PodList", namespaceResource: "NamespaceList", eventResource: "EventList",
	}, objs...)
}

// TestPodPolicy: PodPolicy(pod) = the policy chosen, or the error.
func TestPodPolicy(t *testing.T) {
	g := newTestGateway(t)
	dyn := fakeClient(
		object(t, false, "agents", "coder", coderSpec),
		object(t, false, "agents", "strict", coderSpec),
		object(t, false, "agents", "broken", "egress:\n  - domains: ['*.com']\n    ports: [443]\n"),
		object(t, false, "team", "base", coderSpec),
		object(t, false, "both", "by-label", coderSpec),
		object(t, false, "both", "by-annotation", coderSpec),
	)
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWatcher(Options{Client: dyn, Gateway: g, Node: "node-1"})
	if err := w.Start(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); w.Wait() }()
	core := coreClient(
		namespace("agents", nil, nil),
		namespace("team", map[string]string{PolicyAnnotation: "base"}, nil),
		namespace("annotated", nil, map[string]string{PolicyAnnotation: "gone"}),
		pod("agents", "a", "a", "coder"),
		pod("agents", "plain", "plain", ""),
		pod("agents", "typo", "typo", "codr"),
		pod("agents", "bad", "bad", "broken"),
		pod("team", "t", "t", ""),
		pod("team", "own", "own", "strict"),           // names an object in its own namespace only
		pod("team", "cross", "cross", "agents/coder"), // another namespace's object, by its gateway name
		pod("annotated", "n", "n", ""),
		namespace("both", map[string]string{PolicyAnnotation: "by-label"}, map[string]string{PolicyAnnotation: "by-annotation"}),
		pod("both", "b", "b", ""),
	)
	p := &Pods{Client: core, Policies: w, Node: "node-1"}
	for _, tc := range []struct {
		ns, name, uid string
		want, err     string
	}{
		{"agents", "a", "", "agents/coder", ""},
		{"agents", "a", "uid-a", "agents/coder", ""},
		{"agents", "plain", "", "", ""},
		{"team", "t", "", "team/base", ""},
		{"both", "b", "", "both/by-label", ""}, // the label wins
		{"agents", "typo", "", "", `the pod's annotation clawnet.dev/policy names AgentNetworkPolicy "codr", which does not exist in namespace agents`},
		{"agents", "bad", "", "", `names AgentNetworkPolicy "broken", which is not accepted: spec.egress[0].domains[0]: domain "*.com"`},
		{"team", "own", "", "", `AgentNetworkPolicy "strict", which does not exist in namespace team`},
		{"team", "cross", "", "", `AgentNetworkPolicy "agents/coder", which does not exist in namespace team`},
		{"annotated", "n", "", "", `namespace annotated's annotation clawnet.dev/policy names AgentNetworkPolicy "gone", which does not exist`},
		{"agents", "a", "uid-other", "", "it was replaced"},
		{"agents", "nobody", "", "", "not found: pod agents/nobody is not in the API server"},
	} {
		got, err := p.PodPolicy(context.Background(), control.PodRef{Namespace: tc.ns, Name: tc.name, UID: tc.uid})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || (strings.Contains(tc.err, "exist") && !errors.Is(err, gateway.ErrNotFound)) {
				t.Errorf("PodPolicy(%s/%s) = %q, %v; want error %q", tc.ns, tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("PodPolicy(%s/%s) = %q, %v; want %q", tc.ns, tc.name, got, err, tc.want)
		}
	}
}

// TestAttachRefusedEvent: a refused attach becomes a Warning event on the
// pod, with the refusal as its message.
func TestAttachRefusedEvent(t *testing.T) {
	core := coreClient()
	p := &Pods{Client: core, Node: "node-1"}
	p.AttachRefused(control.PodRef{Namespace: "agents", Name: "a", UID: "uid-a"}, errors.New(`unknown policy "agents/x"`))
	p.Close()
	evs, err := core.Resource(eventResource).Namespace("agents").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 {
		t.Fatalf("%d events, want 1", len(evs.Items))
	}
	var e corev1.Event
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(evs.Items[0].Object, &e); err != nil {
		t.Fatal(err)
	}
	if e.Reason != "AttachRefused" || e.Type != corev1.EventTypeWarning || e.Message != `unknown policy "agents/x"` ||
		e.InvolvedObject.Kind != "Pod" || e.InvolvedObject.Name != "a" || e.InvolvedObject.UID != "uid-a" || e.Source.Host != "node-1" {
		t.Errorf("event = %+v", e)
	}
}
