package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/clawnet/clawnet/gateway/control"
)

// installUsage is the one line `clawnet-cni install` prints on a bad
// argument.
const installUsage = "usage: clawnet-cni install --mode node|chained [--bin-dir DIR] [--conf-dir DIR] [--socket PATH] [--policy NAME] [--name NAME]"

// ourConf is the name of the configuration list install writes in node
// mode: first in the directory, since runtimes (containerd's CRI with
// max_conf_num = 1) use the first list they find.
const ourConf = "00-clawnet.conflist"

// installOpts are install's flags.
type installOpts struct {
	mode    string
	binDir  string
	confDir string
	socket  string
	policy  string
	name    string
}

// runInstall is `clawnet-cni install`: what the DaemonSet's init container
// runs on every node. It copies this binary into the CNI bin directory and
// writes the network configuration:
//
//   - mode node: clawnet-cni is the node's network (an agent node pool):
//     00-clawnet.conflist, sorted before any other list;
//   - mode chained: clawnet-cni runs after the cluster's own plugin: it is
//     appended, with "chained": true, to the first configuration in the
//     directory that is not its own (a .conf is turned into a list of one);
//     a list that has it already is left as it is.
//
// Both ask for the pod-annotations capability. Files are replaced
// atomically, so a runtime never reads half of one. It is idempotent: the
// init container runs it at every start of the daemon's pod.
func runInstall(args []string, stdout io.Writer) error {
	o := installOpts{binDir: "/opt/cni/bin", confDir: "/etc/cni/net.d", socket: control.DefaultSocket}
	fs := flag.NewFlagSet("clawnet-cni install", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.mode, "mode", "", "node (clawnet is the node's network) or chained (after the cluster's plugin)")
	fs.StringVar(&o.binDir, "bin-dir", o.binDir, "the runtime's CNI plugin directory")
	fs.StringVar(&o.confDir, "conf-dir", o.confDir, "the runtime's CNI configuration directory")
	fs.StringVar(&o.socket, "socket", o.socket, "clawnetd's control socket on the node")
	fs.StringVar(&o.policy, "policy", "", "node mode: the policy of pods that name none (default: clawnetd's)")
	fs.StringVar(&o.name, "name", "clawnet", "node mode: the network's name")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("install: %v (%s)", err, installUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("install: unexpected argument %q (%s)", fs.Arg(0), installUsage)
	}
	switch {
	case o.mode != "node" && o.mode != "chained":
		return fmt.Errorf("install: --mode must be node or chained, not %q (%s)", o.mode, installUsage)
	case o.mode == "chained" && o.policy != "":
		return fmt.Errorf("install: --policy is for node mode; chained, a pod's policy comes from its %s annotation or from clawnetd", policyAnnotation)
	case !filepath.IsAbs(o.socket):
		return fmt.Errorf("install: --socket %q is not an absolute path", o.socket)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install: find this binary: %w", err)
	}
	if err := installBinary(self, filepath.Join(o.binDir, "clawnet-cni")); err != nil {
		return err
	}
	path, err := installConf(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "clawnet-cni installed in %s, %s mode, network configuration %s\n", o.binDir, o.mode, path)
	return nil
}

// ourPlugin is clawnet-cni's entry in a configuration list.
func ourPlugin(o installOpts) map[string]any {
	p := map[string]any{
		"type":         "clawnet-cni",
		"socket":       o.socket,
		"capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true},
	}
	if o.mode == "chained" {
		p["chained"] = true
	}
	if o.policy != "" {
		p["policy"] = o.policy
	}
	return p
}

// installConf writes the configuration for o's mode and returns its path.
func installConf(o installOpts) (string, error) {
	if err := os.MkdirAll(o.confDir, 0o755); err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	if o.mode == "node" {
		list := map[string]any{"cniVersion": "1.0.0", "name": o.name, "plugins": []any{ourPlugin(o)}}
		path := filepath.Join(o.confDir, ourConf)
		return path, writeJSONFile(path, list)
	}
	primary, err := primaryConf(o.confDir)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(primary)
	if err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return "", fmt.Errorf("install: %s: %v", primary, err)
	}
	out := primary
	if _, isList := conf["plugins"]; !isList {
		// A single plugin's .conf: the same network as a list of one,
		// written beside it under a name that sorts just before it, and
		// the .conf set aside so the runtime does not read both.
		plugin := map[string]any{}
		for k, v := range conf {
			if k != "cniVersion" && k != "name" {
				plugin[k] = v
			}
		}
		conf = map[string]any{"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": []any{plugin}}
		out = strings.TrimSuffix(primary, filepath.Ext(primary)) + ".conflist"
	}
	plugins, ok := conf["plugins"].([]any)
	if !ok || len(plugins) == 0 {
		return "", fmt.Errorf("install: %s: \"plugins\" is not a list of plugins", primary)
	}
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == "clawnet-cni" && out == primary {
			return primary, nil // there already
		}
	}
	if v, _ := conf["cniVersion"].(string); v != "" && !slices.Contains([]string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}, v) {
		return "", fmt.Errorf("install: %s: cniVersion %q: clawnet-cni chains after 0.3.0 and later", primary, v)
	}
	conf["plugins"] = append(plugins, ourPlugin(o))
	if err := writeJSONFile(out, conf); err != nil {
		return "", err
	}
	if out != primary {
		if err := os.Rename(primary, primary+".clawnet-chained"); err != nil {
			return "", fmt.Errorf("install: set %s aside: %w", primary, err)
		}
	}
	return out, nil
}

// primaryConf is the configuration the runtime uses: the first .conflist,
// .conf or .json file in dir, by name, that is not node mode's own.
func primaryConf(dir string) (string, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	var names []string
	for _, e := range es {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if e.Name() != ourConf && !e.IsDir() {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", fmt.Errorf("install: chained: no network configuration in %s to chain after (is the cluster's own plugin installed yet?)", dir)
	}
	return filepath.Join(dir, names[0]), nil
}

// installBinary copies src to dst through a temporary file and a rename: a
// runtime running the old binary meanwhile keeps it.
func installBinary(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := writeFileAtomic(dst, data, 0o755); err != nil {
		return fmt.Errorf("install: copy to %s: %w", dst, err)
	}
	return nil
}

// writeJSONFile writes v as indented JSON to path atomically, unless path
// says that already.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
