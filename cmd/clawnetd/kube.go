package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/kube"
)

// kubeSyncWait bounds how long the daemon waits at start for the policy
// objects before it re-attaches what it had (and goes on without them,
// still watching, if they do not come).
const kubeSyncWait = 30 * time.Second

// kubeWiring is the daemon's Kubernetes side: nil on a node without an
// API server (no --kubeconfig, not in a pod).
type kubeWiring struct {
	node    string
	log     hclog.Logger
	dyn     dynamic.Interface
	pods    *kube.Pods
	watcher *kube.Watcher
}

// connectKube reads the API server's address and credentials: from
// --kubeconfig, else from the pod's service account when
// KUBERNETES_SERVICE_HOST says the daemon runs in a cluster. Neither:
// nil, and none of this runs.
func connectKube(f *flags, log hclog.Logger) (*kubeWiring, error) {
	var cfg *rest.Config
	var err error
	switch {
	case f.kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", f.kubeconfig, err)
		}
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
		}
	default:
		return nil, nil
	}
	cfg.UserAgent = "clawnetd"
	node := f.nodeName
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	if node == "" {
		if node, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("node name: give --node-name: %w", err)
		}
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("Kubernetes client: %w", err)
	}
	log = log.Named("kube")
	log.Info("policies and pods from the API server", "server", cfg.Host, "node", node)
	return &kubeWiring{node: node, log: log, dyn: dyn, pods: &kube.Pods{Client: dyn, Node: node, Log: log}}, nil
}

// options sets the gateway's hooks: a pod's policy from the API server,
// refused attaches as events on the pod.
func (k *kubeWiring) options(opts *gateway.Options) {
	if k == nil {
		return
	}
	opts.PodPolicy = k.pods.PodPolicy
	opts.AttachRefused = k.pods.AttachRefused
}

// start watches the policy objects for g, waiting (at most kubeSyncWait)
// until g has them. The function it returns stops watching and waits for
// the watcher and the events being posted.
func (k *kubeWiring) start(ctx context.Context, g *gateway.Gateway) (stop func()) {
	if k == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	k.watcher = kube.NewWatcher(kube.Options{Client: k.dyn, Gateway: g, Node: k.node, Log: k.log})
	k.pods.Policies = k.watcher
	if err := k.watcher.Start(ctx, kubeSyncWait); err != nil {
		k.log.Error("policy objects", "error", err)
	}
	return func() {
		cancel()
		k.watcher.Wait()
		k.pods.Close()
	}
}
