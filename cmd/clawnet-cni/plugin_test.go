package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// world is one test's plugin, fake clawnetd and data directory.
type world struct {
	t       *testing.T
	d       *fakeDaemon
	p       *plugin
	out     *bytes.Buffer
	dataDir string
	// cleared are the namespaces chained mode cleared; clearErr fails it.
	cleared  []string
	clearErr error
}

func newWorld(t *testing.T) *world {
	t.Helper()
	out := &bytes.Buffer{}
	p := newPlugin(out)
	w := &world{t: t, d: newFakeDaemon(t), p: p, out: out, dataDir: t.TempDir()}
	// Chained mode's namespace work is tested on real namespaces in
	// netns_test.go; here it is recorded.
	p.clearNetns = func(path string) error {
		w.cleared = append(w.cleared, path)
		return w.clearErr
	}
	p.hostHas = func(name string) bool { return name == "cni0" }
	return w
}

// conf is the plugin's configuration as a runtime hands it, with extra
// keys (a JSON object's members, or "") added.
func (w *world) conf(extra string) []byte {
	c := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"clawnet","type":"clawnet-cni","socket":%q,"dataDir":%q,"policy":"canary"`, w.d.socket, w.dataDir)
	if extra != "" {
		c += "," + extra
	}
	return []byte(c + "}")
}

// k8sArgs is CNI_ARGS as containerd's CRI passes them.
func k8sArgs(ns, pod, sandbox string) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s-uid", ns, pod, sandbox, pod)
}

func (w *world) args(id, netns, cniArgs string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: netns, IfName: "eth0", Args: cniArgs, Path: "/opt/cni/bin", StdinData: conf}
}

// add runs ADD on w's configuration and parses its result.
func (w *world) add(id, netns, cniArgs string) (*current.Result, error) {
	w.t.Helper()
	return w.addConf(id, netns, cniArgs, w.conf(""))
}

// addConf runs ADD on conf and parses its result.
func (w *world) addConf(id, netns, cniArgs string, conf []byte) (*current.Result, error) {
	w.t.Helper()
	w.out.Reset()
	if err := w.p.add(w.args(id, netns, cniArgs, conf)); err != nil {
		return nil, err
	}
	r, err := current.NewResult(w.out.Bytes())
	if err != nil {
		w.t.Fatalf("ADD printed no 1.0.0 result (%v): %s", err, w.out)
	}
	res, err := current.GetResult(r)
	if err != nil {
		w.t.Fatal(err)
	}
	return res, nil
}

func (w *world) mustAdd(id, netns, cniArgs string) *current.Result {
	w.t.Helper()
	r, err := w.add(id, netns, cniArgs)
	if err != nil {
		w.t.Fatalf("ADD %s %s: %v", id, netns, err)
	}
	return r
}

func (w *world) del(id, netns string) error {
	return w.p.del(w.args(id, netns, "", w.conf("")))
}

func (w *world) mustDel(id, netns string) {
	w.t.Helper()
	if err := w.del(id, netns); err != nil {
		w.t.Fatalf("DEL %s netns=%q: %v", id, netns, err)
	}
}

func (w *world) recordExists(id string) bool {
	_, err := os.Stat(filepath.Join(w.dataDir, "clawnet", id+":eth0"))
	return err == nil
}

func (w *world) wantAgents(want ...string) {
	w.t.Helper()
	if got := w.d.agentList(); !slices.Equal(got, want) {
		w.t.Errorf("attached agents = %q; want %q", got, want)
	}
}

// cniCode returns the CNI error code of err, or -1 when err is not one.
func cniCode(err error) int {
	var e *types.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -1
}

func TestAddAttachesThePodAndAnswersItsTUN(t *testing.T) {
	w := newWorld(t)
	res := w.mustAdd("sandbox1", "/var/run/netns/cni-1", k8sArgs("clawnet-test", "agent-1", "sandbox1"))
	req := w.d.lastAttach()
	if req.Name != "clawnet-test_agent-1" || req.Netns != "/var/run/netns/cni-1" || req.Interface != "eth0" || req.Policy != "canary" {
		t.Errorf("attach request = %+v; want agent clawnet-test_agent-1 in /var/run/netns/cni-1, interface eth0, policy canary", req)
	}
	var raw struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(w.out.Bytes(), &raw); err != nil || raw.CNIVersion != "1.0.0" {
		t.Errorf("result version = %q (%v); want the configuration's 1.0.0", raw.CNIVersion, err)
	}
	if len(res.Interfaces) != 1 || *res.Interfaces[0] != (current.Interface{Name: "eth0", Mac: zeroMAC, Sandbox: "/var/run/netns/cni-1"}) {
		t.Errorf("interfaces = %v; want only eth0 with the zero MAC in the sandbox", res.Interfaces)
	}
	var ips, routes []string
	for _, ip := range res.IPs {
		if ip.Interface == nil || *ip.Interface != 0 {
			t.Errorf("IP %v is not on interface 0", ip)
		}
		ips = append(ips, ip.Address.String()+" via "+ip.Gateway.String())
	}
	for _, r := range res.Routes {
		routes = append(routes, r.Dst.String()+" gw "+r.GW.String())
	}
	wantIPs := []string{"100.96.0.2/16 via 100.96.0.1", "fd63:6c61:776e:1::2/64 via fd63:6c61:776e:1::1"}
	if !slices.Equal(ips, wantIPs) {
		t.Errorf("IPs = %q; want %q", ips, wantIPs)
	}
	if want := []string{"0.0.0.0/0 gw <nil>", "::/0 gw <nil>"}; !slices.Equal(routes, want) {
		t.Errorf("routes = %q; want %q (on-link defaults through the TUN)", routes, want)
	}
	if want := []string{"100.96.0.1", "fd63:6c61:776e:1::1"}; !slices.Equal(res.DNS.Nameservers, want) {
		t.Errorf("DNS = %q; want the gateway %q", res.DNS.Nameservers, want)
	}
	if !w.recordExists("sandbox1") {
		t.Error("no attachment record after ADD")
	}
}

func TestAddOlderResultVersion(t *testing.T) {
	w := newWorld(t)
	conf := bytes.Replace(w.conf(""), []byte(`"1.0.0"`), []byte(`"0.4.0"`), 1)
	if err := w.p.add(w.args("c1", "/run/netns/n1", "", conf)); err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Version string `json:"version"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(w.out.Bytes(), &got); err != nil || got.CNIVersion != "0.4.0" || len(got.IPs) != 2 || got.IPs[0].Version != "4" {
		t.Errorf("ADD with cniVersion 0.4.0 printed %s (%v); want a 0.4.0 result", w.out, err)
	}
}

func TestAgentName(t *testing.T) {
	long := strings.Repeat("a", 60)
	for _, tc := range []struct {
		args, id, want string
	}{
		{k8sArgs("clawnet-test", "agent-1", "s"), "s", "clawnet-test_agent-1"},
		{"IgnoreUnknown=1;K8S_POD_NAME=agent-pm", "0123456789abcdef", "agent-pm"},
		{"", "0123456789abcdef0123", "0123456789ab"},
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web.v1", "s", "ns_web.v1"},
		{k8sArgs("kube-system", long, "s"), "s", "kube-system_" + long[:54-len("kube-system_")] + "-" + hash8("kube-system_"+long)},
		{"IgnoreUnknown=1;K8S_POD_NAME=_agent", "s", "x_agent-" + hash8("_agent")},
		{"IgnoreUnknown=1;K8S_POD_NAME=a b", "s", "a-b-" + hash8("a b")},
	} {
		pa, err := parsePodArgs(tc.args)
		if err != nil {
			t.Fatalf("parsePodArgs(%q): %v", tc.args, err)
		}
		if got := agentName(pa, tc.id); got != tc.want {
			t.Errorf("agentName(%q, %q) = %q; want %q", tc.args, tc.id, got, tc.want)
		}
	}
}

func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashLen]
}

func TestParsePodArgsStrict(t *testing.T) {
	if _, err := parsePodArgs("K8S_POD_NAME=p;FOO=bar"); err == nil {
		t.Error("parsePodArgs with an unknown key and no IgnoreUnknown = nil error; want one")
	}
	if _, err := parsePodArgs("IgnoreUnknown=1;K8S_POD_NAME=p;FOO=bar"); err != nil {
		t.Errorf("parsePodArgs with IgnoreUnknown=1: %v", err)
	}
}

func TestAddFailsClosedWithoutDaemon(t *testing.T) {
	w := newWorld(t)
	w.d.stop()
	_, err := w.add("c1", "/run/netns/n1", "")
	if cniCode(err) != int(types.ErrTryAgainLater) || !strings.Contains(err.Error(), "clawnetd is not running") {
		t.Errorf("ADD without clawnetd = %v (code %d); want 'clawnetd is not running', code %d", err, cniCode(err), types.ErrTryAgainLater)
	}
	if w.recordExists("c1") {
		t.Error("a failed ADD left its record")
	}
}

func TestAddRefusesAMisnamedTUN(t *testing.T) {
	w := newWorld(t)
	w.d.ignoreInterface = true
	_, err := w.add("c1", "/run/netns/n1", "")
	if err == nil || !strings.Contains(err.Error(), "network.interface: eth0") {
		t.Errorf("ADD when clawnetd names the TUN clawnet0 = %v; want an error that says to set network.interface: eth0", err)
	}
	w.wantAgents()
	if w.recordExists("c1") {
		t.Error("a failed ADD left its record")
	}
}

func TestAddRefusedKeepsTheOtherAttachment(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("old", "/run/netns/n1", k8sArgs("ns", "p", "old"))
	// A new sandbox of the same pod before the old one's DEL: refused (the
	// runtime retries), the old attachment and its record untouched.
	if _, err := w.add("new", "/run/netns/n2", k8sArgs("ns", "p", "new")); err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Errorf("ADD of a second sandbox of ns/p = %v; want 'already attached'", err)
	}
	w.wantAgents("ns_p")
	if !w.recordExists("old") || w.recordExists("new") {
		t.Errorf("records: old=%v new=%v; want only old's", w.recordExists("old"), w.recordExists("new"))
	}
	if _, err := w.add("old", "/run/netns/n1", k8sArgs("ns", "p", "old")); err == nil || !strings.Contains(err.Error(), "DEL it first") {
		t.Errorf("a second ADD of the same container = %v; want 'DEL it first'", err)
	}
	w.wantAgents("ns_p")
	if !w.recordExists("old") {
		t.Error("a refused second ADD removed the first one's record")
	}
}

func TestAddRefusesChaining(t *testing.T) {
	w := newWorld(t)
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}`
	err := w.p.add(w.args("c1", "/run/netns/n1", "", w.conf(prev)))
	if cniCode(err) != int(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), "first plugin") {
		t.Errorf("ADD after another plugin = %v; want an invalid-config error saying clawnet-cni must come first", err)
	}
	w.wantAgents()
}

func TestConfStrict(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct{ extra, want string }{
		{`"polcy":"x"`, `unknown key "polcy"`},
		{`"socket":"relative.sock"`, "not an absolute path"},
		{`"policy":" canary"`, "surrounding spaces"},
	} {
		conf := w.conf(tc.extra)
		err := w.p.add(w.args("c1", "/run/netns/n1", "", conf))
		if cniCode(err) != int(types.ErrInvalidNetworkConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ADD with %s = %v; want an invalid-config error with %q", tc.extra, err, tc.want)
		}
	}
	w.wantAgents()
	if c, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"clawnet-cni","runtimeConfig":{},"args":{"cni":{}}}`)); err != nil {
		t.Errorf("parseConf with the runtime's keys: %v", err)
	} else if c.Socket != "/run/clawnet/clawnet.sock" || c.DataDir != defaultDataDir {
		t.Errorf("defaults: socket %q dataDir %q", c.Socket, c.DataDir)
	}
}

func TestDelIsIdempotent(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", k8sArgs("ns", "p", "s1"))
	// containerd: StopPodSandbox with the namespace, RemovePodSandbox
	// without it; neither carries prevResult.
	w.mustDel("s1", "/run/netns/n1")
	w.wantAgents()
	if w.recordExists("s1") {
		t.Error("record left after DEL")
	}
	w.mustDel("s1", "")
	w.mustDel("s1", "/run/netns/n1")
	w.d.mu.Lock()
	before := w.d.lists
	w.d.mu.Unlock()
	// Nothing recorded and no namespace: nothing to look for, nothing asked.
	w.mustDel("never-added", "")
	w.mustDel("s1", "")
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	if w.d.lists != before {
		t.Errorf("DEL with nothing recorded and no namespace listed the agents %d times; want none", w.d.lists-before)
	}
}

func TestDelWithoutNetnsUsesTheRecord(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", k8sArgs("ns", "p", "s1"))
	w.mustDel("s1", "")
	w.wantAgents()
}

func TestDelAfterDaemonLostTheAgent(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", k8sArgs("ns", "p", "s1"))
	w.d.forget("ns_p")
	w.mustDel("s1", "/run/netns/n1")
	if w.recordExists("s1") {
		t.Error("record left after DEL")
	}
}

func TestDelWithoutDaemonSucceeds(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", "")
	w.d.stop()
	w.mustDel("s1", "/run/netns/n1")
}

func TestDelSparesTheNewerSandbox(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("old", "/run/netns/n1", k8sArgs("ns", "p", "old"))
	w.d.forget("ns_p") // the old sandbox's agent was lost (clawnetd restart)
	w.mustAdd("new", "/run/netns/n2", k8sArgs("ns", "p", "new"))
	// The old sandbox's DELs come late, with and without its namespace.
	w.mustDel("old", "")
	w.mustDel("old", "/run/netns/n1")
	w.wantAgents("ns_p")
	w.mustDel("new", "/run/netns/n2")
	w.wantAgents()
}

func TestDelDetachesByNamespaceWithoutRecord(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", "")
	os.RemoveAll(filepath.Join(w.dataDir, "clawnet"))
	w.mustDel("s1", "/run/netns/n1")
	w.wantAgents()
}

func TestCheck(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", k8sArgs("ns", "p", "s1"))
	conf := w.conf(`"prevResult":` + w.out.String())
	if err := w.p.check(w.args("s1", "/run/netns/n1", "", conf)); err != nil {
		t.Errorf("CHECK of a live attachment: %v", err)
	}
	for _, tc := range []struct {
		name string
		args *skel.CmdArgs
		lose bool
		want string
	}{
		{"other namespace", w.args("s1", "/run/netns/n2", "", conf), false, "was attached in /run/netns/n1"},
		{"unknown container", w.args("s2", "/run/netns/n1", "", conf), false, "no attachment recorded"},
		{"no prevResult", w.args("s1", "/run/netns/n1", "", w.conf("")), false, "needs prevResult"},
		{"lost agent", w.args("s1", "/run/netns/n1", "", conf), true, "clawnetd lost it"},
	} {
		if tc.lose {
			w.d.forget("ns_p")
		}
		if err := w.p.check(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CHECK, %s = %v; want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckAddresses(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", "")
	prev := strings.Replace(w.out.String(), "100.96.0.2/16", "100.96.0.9/16", 1)
	err := w.p.check(w.args("s1", "/run/netns/n1", "", w.conf(`"prevResult":`+prev)))
	if err == nil || !strings.Contains(err.Error(), "the runtime was given") {
		t.Errorf("CHECK with other addresses = %v; want an address mismatch", err)
	}
}

func TestDelWithADamagedRecord(t *testing.T) {
	w := newWorld(t)
	w.mustAdd("s1", "/run/netns/n1", "")
	if err := os.WriteFile(filepath.Join(w.dataDir, "clawnet", "s1:eth0"), []byte("{trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.mustDel("s1", "/run/netns/n1")
	w.wantAgents()
	if w.recordExists("s1") {
		t.Error("the damaged record is still there after DEL")
	}
}
