package kube

import (
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/policy"
)

// PolicyName is the name in the gateway of the AgentNetworkPolicy name in
// namespace ns. Policy files cannot have a '/' in their names, and neither
// can namespaces or object names, so it names one object and no file.
func PolicyName(ns, name string) string { return ns + "/" + name }

// FieldError is a problem in an object's spec, at a field path such as
// spec.egress[1].domains[0].
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Keys a spec may not have: the object says them.
var objectKeys = map[string]string{
	"version": "the object's apiVersion says it",
	"name":    "the object's name is the policy's",
}

// Keys of a ClusterAgentNetworkPolicy's spec: it may only deny.
var clusterKeys = []string{"description", "deny", "ingress_deny"}

// header is what an object's spec lacks of a policy file; its name is
// replaced after parsing, since object names need not be policy names.
const header = "version: v1\nname: placeholder\n"

// policyFile turns the spec of an AgentNetworkPolicy (ns is its
// namespace) or a ClusterAgentNetworkPolicy (ns is "") into a policy File
// through the policy package's own parser, so that a spec means exactly
// what the same YAML in a policy file means. A problem is a *FieldError
// naming the field. The File is named as the gateway knows it
// (PolicyName, or the cluster object's name), and its rules are named
// after the object ("NAMESPACE:NAME egress[0]",
// "ClusterAgentNetworkPolicy:NAME deny[0]").
func policyFile(ns, name string, spec map[string]any) (*policy.File, error) {
	filename := ns + ":" + name
	if ns == "" {
		filename = KindCluster + ":" + name
	}
	keys := make([]string, 0, len(spec))
	for k := range spec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if why, ok := objectKeys[k]; ok {
			return nil, &FieldError{"spec." + k, "not a key of the spec: " + why}
		}
		if ns == "" && !slices.Contains(clusterKeys, k) {
			return nil, &FieldError{"spec." + k, "a " + KindCluster + " can only deny: its spec has " + strings.Join(clusterKeys, ", ")}
		}
	}
	src := []byte(header)
	paths := map[int]string{}
	if len(spec) > 0 {
		body, err := yaml.Marshal(spec)
		if err != nil {
			return nil, &FieldError{"spec", err.Error()}
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(body, &doc); err != nil {
			return nil, &FieldError{"spec", err.Error()}
		}
		offset := strings.Count(header, "\n")
		for _, n := range doc.Content {
			fieldPaths(n, "spec", offset, paths, false)
		}
		src = append(src, body...)
	}
	f, err := policy.Parse(filename, src)
	if err != nil {
		var pe *policy.ParseError
		if errors.As(err, &pe) {
			p := paths[pe.Line]
			if p == "" {
				p = "spec"
			}
			return nil, &FieldError{p, pe.Msg}
		}
		return nil, &FieldError{"spec", err.Error()}
	}
	f.Name = name
	if ns != "" {
		f.Name = PolicyName(ns, name)
	}
	// Lines of a YAML made from the spec mean nothing to the object's
	// author: rules are named by object and position only.
	for i := range f.Presets {
		f.Presets[i].Line = 0
	}
	for _, rs := range [][]policy.Rule{f.Egress, f.Deny} {
		for i := range rs {
			rs[i].Line = 0
		}
	}
	for _, rs := range [][]policy.IngressRule{f.Ingress, f.IngressDeny} {
		for i := range rs {
			rs[i].Line = 0
		}
	}
	return f, nil
}

// fieldPaths records, for each line of the YAML n was decoded from, the
// path of what is written there: a value where there is one (the item of
// "- 10.0.0.0/8" is spec.deny[0].cidrs[0]), a list item where one starts
// (the rule of "- domains:" is spec.egress[1]), else the key (spec.egres).
// item says that n is a list item.
func fieldPaths(n *yaml.Node, path string, offset int, paths map[int]string, item bool) {
	line := n.Line + offset
	setIfNew := func(l int, p string) {
		if _, ok := paths[l]; !ok {
			paths[l] = p
		}
	}
	switch n.Kind {
	case yaml.ScalarNode:
		paths[line] = path
	case yaml.MappingNode:
		if item || len(n.Content) == 0 {
			setIfNew(line, path)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			setIfNew(k.Line+offset, path+"."+k.Value)
			fieldPaths(v, path+"."+k.Value, offset, paths, false)
		}
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			setIfNew(line, path)
		}
		for i, it := range n.Content {
			fieldPaths(it, path+"["+strconv.Itoa(i)+"]", offset, paths, true)
		}
	}
}

// specError turns an error the gateway gave for a File made by
// policyFile, which names the rule as "FILENAME egress[2]", into one
// naming the field.
func specError(f *policy.File, err error) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, f.Filename+" ", "spec.")
	msg = strings.ReplaceAll(msg, f.Filename+": ", "spec: ")
	return msg
}
