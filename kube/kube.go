// Package kube is clawnet's Kubernetes side in the node daemon: it watches
// the AgentNetworkPolicy and ClusterAgentNetworkPolicy objects, turns each
// spec into a policy through the policy package's own parser (so a spec
// means what the same YAML in a policy file means), hands them to the
// gateway as one source (gateway.SetPolicies), and writes each object's
// status back. It also answers which policy a pod runs under, and reports
// refused attaches as events on the pod. It decides no flow, and nothing
// here runs on a node without an API server.
package kube

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The API group, its version, the kinds and the annotation this package
// reads. See README.md.
const (
	Group       = "clawnet.dev"
	Version     = "v1alpha1"
	Kind        = "AgentNetworkPolicy"
	KindCluster = "ClusterAgentNetworkPolicy"
	// PolicyAnnotation on a pod names the AgentNetworkPolicy, in the pod's
	// namespace, that the pod runs under. On a Namespace (as a label or an
	// annotation) it names the default for the namespace's pods.
	PolicyAnnotation = "clawnet.dev/policy"
	// Source is the name under which the policies of the API server are
	// set in the gateway.
	Source = "kubernetes"
)

// The resources of the two kinds.
var (
	PolicyResource        = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "agentnetworkpolicies"}
	ClusterPolicyResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "clusteragentnetworkpolicies"}
)
