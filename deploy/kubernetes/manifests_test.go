// Package kubernetes holds clawnet's Kubernetes manifests; its test checks
// them without an API server: every document decodes, the kinds are those
// the README lists, and each DaemonSet is consistent with itself, with the
// other objects, and with what the gateway and the policy package accept.
package kubernetes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/policy"
)

// object is one YAML document, with where it came from.
type object struct {
	file string
	doc  map[string]any
}

func (o object) kind() string { return str(o.doc, "kind") }
func (o object) name() string { return str(o.doc, "metadata", "name") }
func (o object) ns() string   { return str(o.doc, "metadata", "namespace") }

// get walks m by keys (a string key for a map, an int for a list).
func get(m any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[k]
		case int:
			l, ok := m.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			m = l[k]
		}
	}
	return m
}

func str(m any, path ...any) string {
	s, _ := get(m, path...).(string)
	return s
}

func list(m any, path ...any) []any {
	l, _ := get(m, path...).([]any)
	return l
}

// load decodes every document of every YAML file under this directory,
// crds/ included.
func load(t *testing.T) []object {
	t.Helper()
	var objs []object
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", path, i+1, err)
				break
			}
			if doc == nil {
				continue
			}
			o := object{file: path, doc: doc}
			if str(doc, "apiVersion") == "" || o.kind() == "" || o.name() == "" {
				t.Errorf("%s: document %d has no apiVersion, kind or metadata.name", path, i+1)
			}
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o, true
		}
	}
	return object{}, false
}

const namespace = "clawnet-system"

func TestManifestsDecode(t *testing.T) {
	objs := load(t)
	var kinds []string
	for _, o := range objs {
		if o.kind() != "CustomResourceDefinition" { // crds/ are another change's
			kinds = append(kinds, o.kind()+"/"+o.name())
		}
		switch o.kind() {
		case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterAgentNetworkPolicy":
			if o.ns() != "" {
				t.Errorf("%s: cluster-scoped %s %s has a namespace", o.file, o.kind(), o.name())
			}
		default:
			if o.ns() != namespace {
				t.Errorf("%s: %s %s is in namespace %q; want %s", o.file, o.kind(), o.name(), o.ns(), namespace)
			}
		}
	}
	sort.Strings(kinds)
	want := []string{
		"ClusterRole/clawnetd", "ClusterRoleBinding/clawnetd", "ConfigMap/clawnet-policies", "ConfigMap/clawnetd-config",
		"DaemonSet/clawnetd", "DaemonSet/clawnetd", "Namespace/clawnet-system", "ServiceAccount/clawnetd",
	}
	if !slices.Equal(kinds, want) {
		t.Errorf("objects = %q; want %q", kinds, want)
	}
}

// TestRBACIsLeast: the ClusterRole grants exactly what clawnetd needs, and
// is bound to its ServiceAccount. A widened rule fails here first.
func TestRBACIsLeast(t *testing.T) {
	objs := load(t)
	role, ok := find(objs, "ClusterRole", "clawnetd")
	if !ok {
		t.Fatal("no ClusterRole clawnetd")
	}
	var got []string
	for _, r := range list(role.doc, "rules") {
		for _, g := range list(r, "apiGroups") {
			for _, res := range list(r, "resources") {
				for _, v := range list(r, "verbs") {
					got = append(got, g.(string)+"/"+res.(string)+":"+v.(string))
				}
			}
		}
		if len(list(r, "resourceNames")) > 0 || len(list(r, "nonResourceURLs")) > 0 {
			t.Errorf("rule %v: unexpected resourceNames or nonResourceURLs", r)
		}
	}
	sort.Strings(got)
	want := []string{
		"/events:create", "/namespaces:get", "/pods:get",
		"clawnet.dev/agentnetworkpolicies/status:update",
		"clawnet.dev/agentnetworkpolicies:get", "clawnet.dev/agentnetworkpolicies:list", "clawnet.dev/agentnetworkpolicies:watch",
		"clawnet.dev/clusteragentnetworkpolicies/status:update",
		"clawnet.dev/clusteragentnetworkpolicies:get", "clawnet.dev/clusteragentnetworkpolicies:list", "clawnet.dev/clusteragentnetworkpolicies:watch",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ClusterRole clawnetd grants\n  %s\nwant exactly\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	b, ok := find(objs, "ClusterRoleBinding", "clawnetd")
	if !ok || str(b.doc, "roleRef", "name") != "clawnetd" || str(b.doc, "roleRef", "kind") != "ClusterRole" || len(list(b.doc, "subjects")) != 1 {
		t.Errorf("ClusterRoleBinding clawnetd = %v; want ClusterRole clawnetd bound to one subject", b.doc)
	}
	subj := get(b.doc, "subjects", 0)
	if str(subj, "kind") != "ServiceAccount" || str(subj, "name") != "clawnetd" || str(subj, "namespace") != namespace {
		t.Errorf("ClusterRoleBinding clawnetd binds %v; want ServiceAccount %s/clawnetd", subj, namespace)
	}
	if _, ok := find(objs, "ServiceAccount", "clawnetd"); !ok {
		t.Error("no ServiceAccount clawnetd")
	}
}

// TestConfigMapsParse: the configuration clawnetd gets is one the gateway
// accepts, and every policy file one the policy package compiles.
func TestConfigMapsParse(t *testing.T) {
	objs := load(t)
	cm, ok := find(objs, "ConfigMap", "clawnetd-config")
	if !ok {
		t.Fatal("no ConfigMap clawnetd-config")
	}
	cfg, err := gateway.ParseConfig("configmap.yaml:clawnetd.yaml", []byte(str(cm.doc, "data", "clawnetd.yaml")))
	if err != nil {
		t.Fatalf("clawnetd refuses the ConfigMap's clawnetd.yaml: %v", err)
	}
	if cfg.Socket != "/run/clawnet/clawnet.sock" || cfg.PolicyDir != "/etc/clawnet/policies" || cfg.StateDir != "/var/lib/clawnet" {
		t.Errorf("config: socket %q policy_dir %q state_dir %q; the DaemonSets mount /run/clawnet, /etc/clawnet/policies and /var/lib/clawnet", cfg.Socket, cfg.PolicyDir, cfg.StateDir)
	}
	pols, ok := find(objs, "ConfigMap", "clawnet-policies")
	if !ok {
		t.Fatal("no ConfigMap clawnet-policies")
	}
	data, _ := get(pols.doc, "data").(map[string]any)
	for key, body := range data {
		f, err := policy.Parse(key, []byte(body.(string)))
		if err != nil {
			t.Errorf("clawnet-policies %s: %v", key, err)
			continue
		}
		if f.Name+".yaml" != key {
			t.Errorf("clawnet-policies %s names policy %q; the key should be NAME.yaml", key, f.Name)
		}
		if _, err := policy.Compile(f, policy.Options{}); err != nil {
			t.Errorf("clawnet-policies %s: %v", key, err)
		}
	}
}

// TestDaemonSets: each DaemonSet mounts exactly the volumes it declares,
// runs privileged on the host's network with a readiness probe, sees pods'
// namespaces through /run/netns with HostToContainer propagation, keeps
// its state on the node, puts the socket where the installed plugin dials
// it, and installs the plugin in the mode its file says.
func TestDaemonSets(t *testing.T) {
	objs := load(t)
	modes := map[string]string{"daemonset-chained.yaml": "chained", "daemonset-agent-pool.yaml": "node"}
	seen := 0
	for _, o := range objs {
		if o.kind() != "DaemonSet" {
			continue
		}
		seen++
		t.Run(o.file, func(t *testing.T) { checkDaemonSet(t, objs, o, modes[o.file]) })
	}
	if seen != len(modes) {
		t.Errorf("%d DaemonSets; want %d (%v)", seen, len(modes), modes)
	}
}

func checkDaemonSet(t *testing.T, objs []object, ds object, mode string) {
	spec := get(ds.doc, "spec", "template", "spec")
	sel, _ := get(ds.doc, "spec", "selector", "matchLabels").(map[string]any)
	labels, _ := get(ds.doc, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("selector %s=%v does not match the template's labels %v", k, v, labels)
		}
	}
	if get(spec, "hostNetwork") != true {
		t.Error("hostNetwork is not true: clawnetd proxies from the node's sockets, and CNI must not be asked for its own pod")
	}
	if sa := str(spec, "serviceAccountName"); sa != "clawnetd" {
		t.Errorf("serviceAccountName %q; want clawnetd", sa)
	}
	volumes := map[string]any{}
	for _, v := range list(spec, "volumes") {
		name := str(v, "name")
		if _, dup := volumes[name]; dup {
			t.Errorf("volume %s declared twice", name)
		}
		volumes[name] = v
		if cm := str(v, "configMap", "name"); cm != "" {
			if _, ok := find(objs, "ConfigMap", cm); !ok {
				t.Errorf("volume %s names ConfigMap %s, which no manifest defines", name, cm)
			}
		}
	}
	used := map[string]bool{}
	mounts := map[string]any{} // mountPath → mount, of the clawnetd container
	var containers []any
	containers = append(containers, list(spec, "initContainers")...)
	containers = append(containers, list(spec, "containers")...)
	for _, c := range containers {
		for _, m := range list(c, "volumeMounts") {
			name := str(m, "name")
			if _, ok := volumes[name]; !ok {
				t.Errorf("container %s mounts %s, which is not among the volumes", str(c, "name"), name)
			}
			used[name] = true
			if str(c, "name") == "clawnetd" {
				mounts[str(m, "mountPath")] = m
			}
		}
	}
	for name := range volumes {
		if !used[name] {
			t.Errorf("volume %s is declared but no container mounts it", name)
		}
	}

	var clawnetd any
	for _, c := range list(spec, "containers") {
		if str(c, "name") == "clawnetd" {
			clawnetd = c
		}
	}
	if clawnetd == nil {
		t.Fatal("no container clawnetd")
	}
	if get(clawnetd, "securityContext", "privileged") != true {
		t.Error("clawnetd is not privileged: it creates TUNs inside pods' namespaces")
	}
	probe := list(clawnetd, "readinessProbe", "exec", "command")
	if len(probe) == 0 || !slices.Contains(probe, any("status")) {
		t.Errorf("readiness probe = %v; want an exec of clawnet status", probe)
	}
	hostPathOf := func(mountPath string) string {
		m, ok := mounts[mountPath]
		if !ok {
			t.Errorf("clawnetd mounts nothing at %s", mountPath)
			return ""
		}
		return str(volumes[str(m, "name")], "hostPath", "path")
	}
	// Pods' namespaces: the path runtimes name, propagated from the host.
	if hp := hostPathOf("/var/run/netns"); hp != "/run/netns" {
		t.Errorf("/var/run/netns comes from host path %q; want /run/netns (the shared mount itself, not through the /var/run link)", hp)
	}
	if p := str(mounts["/var/run/netns"], "mountPropagation"); p != "HostToContainer" {
		t.Errorf("/var/run/netns propagation %q; want HostToContainer (namespaces made after clawnetd started)", p)
	}
	if hp := hostPathOf("/var/lib/clawnet"); hp != "/var/lib/clawnet" {
		t.Errorf("state_dir comes from %q; want a host path, so that a restarted clawnetd attaches its pods again", hp)
	}
	sockDir := hostPathOf("/run/clawnet")

	// The installer: its mode, where it writes, and the socket the
	// installed plugin dials (the node's path of clawnetd's socket).
	inits := list(spec, "initContainers")
	if len(inits) != 1 {
		t.Fatalf("%d init containers; want one, install-cni", len(inits))
	}
	var cmd []string
	for _, a := range list(inits[0], "command") {
		cmd = append(cmd, a.(string))
	}
	flag := func(name string) string {
		if i := slices.Index(cmd, name); i >= 0 && i+1 < len(cmd) {
			return cmd[i+1]
		}
		return ""
	}
	if len(cmd) < 2 || cmd[1] != "install" || flag("--mode") != mode {
		t.Errorf("install-cni runs %q; want clawnet-cni install --mode %s", cmd, mode)
	}
	if want := sockDir + "/clawnet.sock"; flag("--socket") != want {
		t.Errorf("the plugin is installed dialing %q; clawnetd's socket is at %s on the node", flag("--socket"), want)
	}
	initMounts := map[string]string{}
	for _, m := range list(inits[0], "volumeMounts") {
		initMounts[str(m, "mountPath")] = str(volumes[str(m, "name")], "hostPath", "path")
	}
	if initMounts[flag("--bin-dir")] != "/opt/cni/bin" || initMounts[flag("--conf-dir")] != "/etc/cni/net.d" {
		t.Errorf("install-cni writes %s and %s, mounted from %v; want the node's /opt/cni/bin and /etc/cni/net.d", flag("--bin-dir"), flag("--conf-dir"), initMounts)
	}
	if mode == "node" {
		if get(spec, "nodeSelector", "clawnet.dev/agent-pool") != "true" {
			t.Error("node mode without nodeSelector clawnet.dev/agent-pool: it would take over every node's network")
		}
	}
}
