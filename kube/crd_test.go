package kube

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// crdSpec reads the spec schema of the CRD in file.
func crdSpec(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", "crds", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	v := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
	if v["name"] != Version {
		t.Errorf("%s: version %v, want %s", file, v["name"], Version)
	}
	return v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)["spec"].(map[string]any)
}

func props(t *testing.T, schema map[string]any, path ...string) []string {
	t.Helper()
	for _, p := range path {
		schema = schema["properties"].(map[string]any)[p].(map[string]any)
		if items, ok := schema["items"].(map[string]any); ok {
			schema = items
		}
	}
	var keys []string
	for k := range schema["properties"].(map[string]any) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestCRDSchemaIsThePolicyFile: the CRDs' spec schemas have exactly the
// keys the policy parser takes (less version and name; deny-only for the
// cluster kind), so a field the API server would prune is never one
// clawnet reads, and every key the schema allows is accepted by
// policyFile.
func TestCRDSchemaIsThePolicyFile(t *testing.T) {
	anp := crdSpec(t, "agentnetworkpolicies.yaml")
	rule := []string{"agents", "cidrs", "domains", "from", "ports", "protocol"}
	ingress := []string{"agents", "allow_any", "cidrs", "from", "host", "ports", "protocol", "proxy_protocol"}
	for _, tc := range []struct {
		path []string
		want []string
	}{
		{nil, []string{"deny", "description", "egress", "enforcement", "ingress", "ingress_deny", "presets", "unsafe_allow_any_address"}},
		{[]string{"egress"}, rule},
		{[]string{"deny"}, rule},
		{[]string{"ingress"}, ingress},
		{[]string{"ingress_deny"}, ingress},
	} {
		if got := props(t, anp, tc.path...); !slices.Equal(got, tc.want) {
			t.Errorf("AgentNetworkPolicy spec.%s keys = %v, want %v", strings.Join(tc.path, "."), got, tc.want)
		}
	}
	canp := crdSpec(t, "clusteragentnetworkpolicies.yaml")
	if got := props(t, canp); !slices.Equal(got, []string{"deny", "description", "ingress_deny"}) {
		t.Errorf("ClusterAgentNetworkPolicy spec keys = %v", got)
	}
	if got := props(t, canp, "deny"); !slices.Equal(got, rule) {
		t.Errorf("ClusterAgentNetworkPolicy spec.deny keys = %v", got)
	}

	// Every key of the schema, used at once, is a policy clawnet accepts.
	all := spec(t, `
description: every key
enforcement: audit
presets: [anthropic]
unsafe_allow_any_address: true
egress:
  - {domains: [a.example.com], cidrs: [10.1.0.0/16], agents: [db], ports: [443, "8000-8100"], protocol: tcp, from: here}
deny:
  - {domains: [b.example.com], cidrs: [10.1.2.0/24], agents: [x], ports: [22], protocol: udp, from: there}
ingress:
  - {ports: [8080], protocol: tcp, agents: [orchestrator], host: true, cidrs: [192.0.2.0/24], allow_any: false, proxy_protocol: v2, from: web}
ingress_deny:
  - {ports: [8080], protocol: tcp, agents: [bad], host: true, cidrs: [192.0.2.128/25], from: nope}
`)
	if _, err := policyFile("agents", "all", all); err != nil {
		t.Errorf("a spec with every key: %v", err)
	}
}

// TestREADMEExamples: the objects in this package's README.md and in the
// project's are accepted (a block may hold several documents).
func TestREADMEExamples(t *testing.T) {
	for _, file := range []string{"README.md", "../README.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, b := range strings.Split(string(data), "```yaml\n")[1:] {
			b = strings.SplitN(b, "```", 2)[0]
			for _, doc := range strings.Split(b, "\n---\n") {
				var obj struct {
					Kind     string
					Metadata struct{ Name, Namespace string }
					Spec     map[string]any
				}
				if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
					t.Fatalf("%s: example %q: %v", file, doc, err)
				}
				if obj.Kind != Kind && obj.Kind != KindCluster {
					continue
				}
				kinds[obj.Kind]++
				f, err := policyFile(obj.Metadata.Namespace, obj.Metadata.Name, obj.Spec)
				if err != nil {
					t.Errorf("%s: example %s %s: %v", file, obj.Kind, obj.Metadata.Name, err)
					continue
				}
				if obj.Kind == Kind && f.Name != obj.Metadata.Namespace+"/"+obj.Metadata.Name {
					t.Errorf("%s: example %s: policy name %q", file, obj.Metadata.Name, f.Name)
				}
			}
		}
		if kinds[Kind] == 0 || kinds[KindCluster] == 0 {
			t.Errorf("%s: examples %v; want at least one of each kind", file, kinds)
		}
	}
}
