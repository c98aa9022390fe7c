package kube

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzPolicyFile: whatever JSON-like spec the API server hands over,
// policyFile does not panic, and a refusal is one line naming a field
// under spec.
func FuzzPolicyFile(f *testing.F) {
	for _, s := range []string{
		"egress:\n  - domains: [api.github.com]\n    ports: [443]\n",
		"deny:\n  - cidrs: [10.0.0.0/8]\ningress_deny:\n  - host: true\n",
		"egress: [{domains: ['*.com'], ports: [443]}]",
		"presets: [anthropic]\nenforcement: audit\n",
		"ingress:\n  - ports: [80]\n    proxy_protocol: v2\n    host: true\n",
		"egress:\n  - ports: [\"1-2\", 3]\n    cidrs: ['::/0']\nunsafe_allow_any_address: true\n",
		"description: \"multi\\nline\"\n",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, src string, cluster bool) {
		var spec map[string]any
		if yaml.Unmarshal([]byte(src), &spec) != nil {
			return
		}
		ns := "agents"
		if cluster {
			ns = ""
		}
		file, err := policyFile(ns, "p", spec)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "spec") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line starting with a field path", msg)
			}
			return
		}
		if file == nil {
			t.Fatal("no error and no policy")
		}
	})
}
