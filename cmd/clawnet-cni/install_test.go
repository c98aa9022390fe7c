package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// install runs `clawnet-cni install ARGS` as the init container does: the
// test binary as the plugin binary.
func install(t *testing.T, args ...string) exitStatus {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"install"}, args...)...)
	cmd.Env = []string{envAsPlugin + "=1", "GORACE=atexit_sleep_ms=0"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	st := exitStatus{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		st.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return st
}

// loadList reads a configuration list as runtimes do (libcni).
func loadList(t *testing.T, path string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("libcni reads %s: %v", path, err)
	}
	return l
}

// asRuntimeSends is plugin i of l as a runtime hands it to the plugin, with
// the list's name and version put in.
func asRuntimeSends(t *testing.T, l *libcni.NetworkConfigList, i int) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(l.Plugins[i].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = l.Name, l.CNIVersion
	b, _ := json.Marshal(m)
	return b
}

func pluginTypes(l *libcni.NetworkConfigList) []string {
	var ts []string
	for _, p := range l.Plugins {
		ts = append(ts, p.Network.Type)
	}
	return ts
}

func TestInstallNodeMode(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for range 2 { // idempotent
		st := install(t, "--mode", "node", "--bin-dir", bin, "--conf-dir", conf, "--socket", "/run/clawnet/clawnet.sock", "--policy", "coder")
		if st.code != 0 || !strings.Contains(st.stdout, "node mode") {
			t.Fatalf("install = %+v", st)
		}
	}
	if fi, err := os.Stat(filepath.Join(bin, "clawnet-cni")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed binary: %v %v; want mode 0755", fi, err)
	}
	l := loadList(t, filepath.Join(conf, ourConf))
	if l.Name != "clawnet" || len(l.Plugins) != 1 {
		t.Fatalf("list = %s", l.Bytes)
	}
	c, err := parseConf(asRuntimeSends(t, l, 0))
	if err != nil {
		t.Fatalf("the plugin refuses its own installed configuration: %v", err)
	}
	if c.Policy != "coder" || c.Chained || c.Socket != "/run/clawnet/clawnet.sock" || !c.Capabilities["io.kubernetes.cri.pod-annotations"] {
		t.Errorf("installed conf = %+v", c)
	}
	es, _ := os.ReadDir(conf)
	if len(es) != 1 {
		t.Errorf("files in the configuration directory: %v; want only %s", es, ourConf)
	}
}

func TestInstallChained(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	os.MkdirAll(conf, 0o755)
	cluster := `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.244.0.0/24"}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	os.WriteFile(filepath.Join(conf, "10-cluster.conflist"), []byte(cluster), 0o644)
	os.WriteFile(filepath.Join(conf, "99-other.conflist"), []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}`), 0o644)
	for range 2 {
		if st := install(t, "--mode", "chained", "--bin-dir", bin, "--conf-dir", conf); st.code != 0 {
			t.Fatalf("install = %+v", st)
		}
	}
	l := loadList(t, filepath.Join(conf, "10-cluster.conflist"))
	if got := strings.Join(pluginTypes(l), ","); got != "bridge,portmap,clawnet-cni" || l.Name != "k8s-pod-network" {
		t.Fatalf("chained list = %s (%s); want the cluster's plugins then clawnet-cni, once", got, l.Bytes)
	}
	c, err := parseConf(asRuntimeSends(t, l, 2))
	if err != nil || !c.Chained {
		t.Errorf("appended conf = %+v, %v; want chained", c, err)
	}
	if l := loadList(t, filepath.Join(conf, "99-other.conflist")); len(l.Plugins) != 1 {
		t.Errorf("a list the runtime does not use was changed: %s", l.Bytes)
	}
}

func TestInstallChainedAfterASingleConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "net.d")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "10-flannel.conf"), []byte(`{"cniVersion":"0.4.0","name":"cbr0","type":"flannel","delegate":{"isDefaultGateway":true}}`), 0o644)
	for range 2 {
		if st := install(t, "--mode", "chained", "--bin-dir", filepath.Join(dir, "bin"), "--conf-dir", conf); st.code != 0 {
			t.Fatalf("install = %+v", st)
		}
	}
	l := loadList(t, filepath.Join(conf, "10-flannel.conflist"))
	if got := strings.Join(pluginTypes(l), ","); got != "flannel,clawnet-cni" || l.Name != "cbr0" || l.CNIVersion != "0.4.0" {
		t.Errorf("list = %s; want flannel then clawnet-cni, as network cbr0 0.4.0", l.Bytes)
	}
	var delegate map[string]any
	json.Unmarshal(l.Plugins[0].Bytes, &delegate)
	if _, ok := delegate["delegate"]; !ok {
		t.Errorf("the plugin's own keys were lost: %s", l.Plugins[0].Bytes)
	}
	if _, err := os.Stat(filepath.Join(conf, "10-flannel.conf")); !os.IsNotExist(err) {
		t.Errorf("the .conf is still where the runtime reads it (%v)", err)
	}
}

func TestInstallRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--mode must be node or chained"},
		{[]string{"--mode", "bridge"}, `not "bridge"`},
		{[]string{"--mode", "chained", "--policy", "coder"}, "--policy is for node mode"},
		{[]string{"--mode", "node", "--socket", "rel.sock"}, "not an absolute path"},
		{[]string{"--mode", "node", "--frob"}, "flag provided but not defined: -frob"},
		{[]string{"--mode", "chained", "--conf-dir", dir, "--bin-dir", filepath.Join(dir, "bin")}, "no network configuration in " + dir},
	} {
		st := install(t, tc.args...)
		if st.code != 2 || !strings.Contains(st.stderr, tc.want) || strings.Count(strings.TrimSpace(st.stderr), "\n") != 0 {
			t.Errorf("install %q = %+v; want exit 2 and one line with %q", tc.args, st, tc.want)
		}
	}
}
