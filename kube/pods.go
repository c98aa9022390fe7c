package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
)

// The core resources Pods reads and writes, through the dynamic client
// (see informer for why not the typed one).
var (
	podResource       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	namespaceResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	eventResource     = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// Pods answers which policy a pod runs under, from the API server, and
// reports refused attaches as events on the pod.
type Pods struct {
	Client dynamic.Interface
	// Policies says which AgentNetworkPolicy objects exist; nil: a named
	// one is taken on trust and the gateway refuses it if it is unknown.
	Policies *Watcher
	Node     string
	Log      hclog.Logger // nil: no logs

	wg sync.WaitGroup // events being posted
}

// PodPolicy is gateway.Options.PodPolicy: the policy of the pod ref
// names, chosen as README.md says. The pod's own clawnet.dev/policy
// annotation names an AgentNetworkPolicy in its namespace; else the
// namespace's label or annotation of that name does (the label wins);
// else "" (default_policy). A value that names no such object, or one that
// was never accepted, fails the attach: a pod does not start under
// another policy than the one it asked for.
func (p *Pods) PodPolicy(ctx context.Context, ref control.PodRef) (string, error) {
	pod, err := p.Client.Resource(podResource).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: pod %s/%s is not in the API server", gateway.ErrNotFound, ref.Namespace, ref.Name)
	}
	if err != nil {
		return "", fmt.Errorf("read pod from the API server: %w", err)
	}
	if ref.UID != "" && string(pod.GetUID()) != ref.UID {
		return "", fmt.Errorf("pod %s/%s has uid %s, not %s: it was replaced", ref.Namespace, ref.Name, pod.GetUID(), ref.UID)
	}
	name, from := pod.GetAnnotations()[PolicyAnnotation], "the pod's annotation "+PolicyAnnotation
	if name == "" {
		ns, err := p.Client.Resource(namespaceResource).Get(ctx, ref.Namespace, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("read namespace %s from the API server: %w", ref.Namespace, err)
		}
		if err == nil {
			if v := ns.GetLabels()[PolicyAnnotation]; v != "" {
				name, from = v, "namespace "+ref.Namespace+"'s label "+PolicyAnnotation
			} else if v := ns.GetAnnotations()[PolicyAnnotation]; v != "" {
				name, from = v, "namespace "+ref.Namespace+"'s annotation "+PolicyAnnotation
			}
		}
	}
	if name == "" {
		return "", nil
	}
	if p.Policies != nil {
		exists, refused := p.Policies.Lookup(ref.Namespace, name)
		if !exists {
			return "", fmt.Errorf("%w: %s names %s %q, which does not exist in namespace %s", gateway.ErrNotFound, from, Kind, name, ref.Namespace)
		}
		if refused != "" {
			return "", fmt.Errorf("%w: %s names %s %q, which is not accepted: %s", gateway.ErrNotFound, from, Kind, name, refused)
		}
	}
	return PolicyName(ref.Namespace, name), nil
}

// eventTimeout bounds the posting of one event.
const eventTimeout = 10 * time.Second

// AttachRefused is gateway.Options.AttachRefused: it posts a Warning
// event AttachRefused on the pod, in the background.
func (p *Pods) AttachRefused(ref control.PodRef, refusal error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		if err := p.postEvent(ctx, ref, "AttachRefused", refusal.Error()); err != nil && p.Log != nil {
			p.Log.Warn("posting an event on the pod", "pod", ref.Namespace+"/"+ref.Name, "error", err)
		}
	}()
}

// Close waits for the events being posted.
func (p *Pods) Close() { p.wg.Wait() }

func (p *Pods) postEvent(ctx context.Context, ref control.PodRef, reason, msg string) error {
	now := time.Now().UTC().Format(time.RFC3339)
	involved := map[string]any{"kind": "Pod", "apiVersion": "v1", "namespace": ref.Namespace, "name": ref.Name}
	if ref.UID != "" {
		involved["uid"] = ref.UID
	}
	ev := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata":       map[string]any{"generateName": ref.Name + ".", "namespace": ref.Namespace},
		"involvedObject": involved,
		"reason":         reason, "message": msg, "type": "Warning", "count": int64(1),
		"firstTimestamp": now, "lastTimestamp": now,
		"source":             map[string]any{"component": "clawnetd", "host": p.Node},
		"reportingComponent": "clawnet.dev/clawnetd",
		"reportingInstance":  p.Node,
	}}
	_, err := p.Client.Resource(eventResource).Namespace(ref.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}
