package cnitest

import (
	"bytes"
	"context"
	"crypto/tls"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvKubelet names the kubelet binary; scripts/kubelet-setup.sh builds it
// into /var/cache/clawnet-ci/kubelet-VERSION and make kubelet-test passes
// that path. Without it the kubelet tests skip: make cni-test leaves them
// to make kubelet-test.
const EnvKubelet = "CLAWNET_KUBELET"

// nodeName is the kubelet's node; static pods are called NAME-nodeName.
const nodeName = "clawnet-node"

// kubelet is a standalone kubelet (no API server: static pods from a
// manifest directory) on a containerd of the test's own, with a private
// root directory and its API on loopback ports of its own.
type kubelet struct {
	c         *containerd
	dir       string // config, log
	root      string // --root-dir
	manifests string // staticPodPath
	port      int    // the kubelet API (HTTPS, anonymous, loopback)
	cmd       *exec.Cmd
	exited    chan struct{}
}

func kubeletPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv(EnvKubelet)
	if p == "" {
		t.Skipf("kubelet tier: runs only with %s=PATH (make kubelet-test builds it with scripts/kubelet-setup.sh)", EnvKubelet)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s=%s: %v (run scripts/kubelet-setup.sh)", EnvKubelet, p, err)
	}
	return p
}

// kernelTunables are the sysctls kubelet sets at start unless told to
// refuse to run (protectKernelDefaults); the test puts back what it found.
var kernelTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// startKubelet starts a kubelet on c. When t ends it is stopped, every pod
// removed, its root directory unmounted and removed, and the kernel
// tunables it changed put back.
func startKubelet(t *testing.T, c *containerd) *kubelet {
	t.Helper()
	return startKubeletWith(t, c, "")
}

// startKubeletWith is startKubelet joined to the API server of kubeconfig
// (registered as node nodeName, running the pods bound to it besides the
// static ones); with "", standalone.
func startKubeletWith(t *testing.T, c *containerd, kubeconfig string) *kubelet {
	t.Helper()
	bin := kubeletPath(t)
	id := filepath.Base(c.state)
	k := &kubelet{
		c:         c,
		dir:       filepath.Join(c.dir, "kubelet"),
		root:      filepath.Join("/var/lib/clawnet-ci", id+"-kubelet"),
		manifests: filepath.Join(c.dir, "manifests"),
		port:      int(harness.FreePort(t)),
	}
	for _, d := range []string{k.dir, k.root, k.manifests, filepath.Join(k.dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	saved := map[string][]byte{}
	for _, s := range kernelTunables {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			saved[s] = b
		}
	}
	sock := filepath.Join(c.state, "containerd.sock")
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
staticPodPath: %s
fileCheckFrequency: 1s
syncFrequency: 5s
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
podLogsDir: %s
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
localStorageCapacityIsolation: false
`, sock, k.manifests, k.port, harness.FreePort(t), filepath.Join(k.dir, "pod-logs"))
	if err := os.WriteFile(filepath.Join(k.dir, "kubelet.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(k.dir, "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", filepath.Join(k.dir, "kubelet.yaml"), "--root-dir", k.root,
		"--hostname-override", nodeName, "--cert-dir", filepath.Join(k.dir, "pki")}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig", kubeconfig)
	}
	k.cmd = exec.Command(bin, args...)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start kubelet: %v", err)
	}
	logf.Close()
	k.exited = make(chan struct{})
	go func() { k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(func() {
		k.stop(t)
		for s, b := range saved {
			if err := os.WriteFile("/proc/sys/"+s, b, 0o644); err != nil {
				t.Errorf("put back %s: %v", s, err)
			}
		}
	})
	if !harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		select {
		case <-k.exited:
			return true
		default:
		}
		_, err := k.get("/healthz")
		return err == nil
	}) {
		t.Fatalf("kubelet does not answer after 60s; log:\n%s", k.logTail())
	}
	select {
	case <-k.exited:
		t.Fatalf("kubelet exited at start; log:\n%s", k.logTail())
	default:
	}
	return k
}

// get is a GET on the kubelet's API (self-signed, on loopback).
func (k *kubelet) get(path string) ([]byte, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the kubelet's own self-signed certificate, on loopback
		DisableKeepAlives: true,
	}}
	resp, err := hc.Get("https://127.0.0.1:" + strconv.Itoa(k.port) + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("kubelet answered %s: %s", resp.Status, b)
	}
	return b, err
}

// podReady reports whether the kubelet has the static pod name (without
// the node suffix) Ready, from its /pods.
func (k *kubelet) podReady(name string) bool {
	b, err := k.get("/pods")
	if err != nil {
		return false
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status string `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if json.Unmarshal(b, &list) != nil {
		return false
	}
	for _, p := range list.Items {
		if p.Metadata.Name != name+"-"+nodeName {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				return true
			}
		}
	}
	return false
}

func (k *kubelet) logTail() string {
	b, err := os.ReadFile(filepath.Join(k.dir, "kubelet.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-60):], "\n")
}

// stop stops the kubelet, removes every pod (kubelet leaves them running),
// then unmounts and removes its root directory.
func (k *kubelet) stop(t *testing.T) {
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		k.cmd.Process.Kill()
		<-k.exited
	}
	if t.Failed() {
		t.Logf("kubelet log:\n%s", k.logTail())
	}
	// Agent pods first: their DEL needs clawnetd, which may run as a pod.
	daemonPods := strings.Fields(k.c.run("pods", "--name", "^clawnetd-", "-q").Stdout)
	for _, id := range strings.Fields(k.c.run("pods", "-q").Stdout) {
		if !slices.Contains(daemonPods, id) {
			if r := k.c.run("rmp", "-f", id); !r.OK() {
				t.Errorf("crictl rmp -f %s: %v", id, r)
			}
		}
	}
	if r := k.c.run("rmp", "-af"); !r.OK() {
		t.Errorf("crictl rmp -af: %v", r)
	}
	// kubelet bind-mounts its root directory onto itself.
	run(30*time.Second, nil, "umount", "-R", k.root)
	if err := os.RemoveAll(k.root); err != nil {
		t.Errorf("remove kubelet's %s: %v", k.root, err)
	}
}

// writeManifest puts a static pod manifest in place, atomically (the
// kubelet reads the directory every second).
func (k *kubelet) writeManifest(t *testing.T, name, body string) {
	t.Helper()
	tmp := filepath.Join(k.dir, name+".yaml.tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.manifests, name+".yaml")); err != nil {
		t.Fatal(err)
	}
}

func (k *kubelet) removeManifest(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.manifests, name+".yaml")); err != nil {
		t.Fatal(err)
	}
}

// agentManifest is a static agent pod whose container's first instruction
// is an allowed request for first, then a connection the policy denies (the
// canary's echo port), then an allowed request for sentinel; then it
// sleeps. Its policy is its clawnet.dev/policy annotation.
func agentManifest(w *world, first, sentinel string) string {
	script := httpGet(w.in.Server4.String(), first) + "; echo denied | nc -w 3 " + w.in.Server4.String() + " 7; " +
		httpGet(w.in.Server4.String(), sentinel) + "; exec sleep 3600"
	cmd, _ := json.Marshal([]string{"/bin/sh", "-c", script})
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: agent
  namespace: clawnet-test
  annotations:
    clawnet.dev/policy: canary
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: agent
    image: %s
    imagePullPolicy: Never
    command: %s
`, agentImage, cmd)
}

// agentConflist is the network for the kubelet tier: clawnet-cni on the
// socket, the policy from the pod's annotation.
func agentConflist(w *world) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "clawnet-kubelet",
  "plugins": [
    {"type": "clawnet-cni", "socket": %q, "dataDir": %q,
     "capabilities": {"io.kubernetes.cri.pod-annotations": true}}
  ]
}`, w.socket, w.dataDir())
}

// agentName is the agent the static agent pod is attached as.
const kubeletAgent = "clawnet-test_agent-" + nodeName

// waitSince waits for the canary to log, after mark, an entry pred
// accepts.
func waitSince(t *testing.T, w *world, mark int, timeout time.Duration, what string, pred func(canarylog.Entry) bool) {
	t.Helper()
	if !harness.Poll(timeout, 50*time.Millisecond, func() bool {
		for _, e := range w.in.Since(mark) {
			if pred(e) {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("canary never logged %s within %v; it logged:\n%s", what, timeout, w.in.Dump())
	}
}

// waitAgent waits for the agent called name to be attached in a namespace
// other than notIn, and returns it.
func (w *world) waitAgent(t *testing.T, name, notIn string, timeout time.Duration) control.Agent {
	t.Helper()
	var a control.Agent
	if !harness.Poll(timeout, 100*time.Millisecond, func() bool {
		var ok bool
		a, ok = w.agent(t, name)
		return ok && a.Netns != notIn
	}) {
		t.Fatalf("agent %s not attached (in a namespace other than %q) within %v; now: %+v", name, notIn, timeout, a)
	}
	return a
}

// checkAgentPod is what the static agent pod must show, from the canary's
// side: its container's first instruction already went through the gateway
// (the request for first arrived), and the denied connection to the echo
// port, made before the sentinel, never arrived.
func checkAgentPod(t *testing.T, w *world, mark int, first, sentinel string) {
	t.Helper()
	waitSince(t, w, mark, 60*time.Second, "the container's first request "+first, requested(first))
	w.in.NeverSawBefore(t, mark, 30*time.Second, "the sentinel "+sentinel, requested(sentinel),
		"the denied echo connection", harness.To(w.in.Server4, 7))
}

// startKubeletNode starts what a standalone kubelet test runs on: clawnetd
// serving a test internet (newWorld), a containerd of the test's own whose
// network is conflist(w), and kubelet on it.
func startKubeletNode(t *testing.T, conflist func(*world) string) (*world, *containerd, *kubelet) {
	t.Helper()
	requireCNI(t)
	kubeletPath(t)
	w := newWorld(t)
	c := startContainerdWith(t, w, conflist(w))
	return w, c, startKubelet(t, c)
}

// agentPod is the static agent pod of agentManifest, with its tokens.
type agentPod struct {
	control.Agent
	first, sentinel string
}

// startAgentPod writes the static agent pod's manifest (tokens named after
// what) and waits until it is attached under canary with the TUN as eth0
// and its container's first instruction went through the gateway
// (checkAgentPod).
func startAgentPod(t *testing.T, w *world, k *kubelet, what string) agentPod {
	t.Helper()
	mark := w.in.Mark()
	p := agentPod{first: token(what + "-first"), sentinel: token(what + "-sentinel")}
	k.writeManifest(t, "agent", agentManifest(w, p.first, p.sentinel))
	p.Agent = w.waitAgent(t, kubeletAgent, "", 60*time.Second)
	if p.Policy != "canary" || p.Interface != "eth0" {
		t.Errorf("agent = %+v; want policy canary (the pod's annotation), interface eth0", p.Agent)
	}
	checkAgentPod(t, w, mark, p.first, p.sentinel)
	return p
}

// removeAgentPod deletes the static agent pod's manifest and waits until
// its agent is detached.
func removeAgentPod(t *testing.T, w *world, k *kubelet) {
	t.Helper()
	k.removeManifest(t, "agent")
	w.waitGone(t, kubeletAgent, 60*time.Second)
}

// webManifest is a static pod without the clawnet.dev/policy annotation:
// chained, it keeps the cluster's network.
var webManifest = fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: web, namespace: clawnet-test}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: %s
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "exec sleep 3600"]
`, agentImage)

// checkWebPod: the pod of webManifest runs with the bridge's eth0 and
// address, and is no agent.
func checkWebPod(t *testing.T, w *world, c *containerd) {
	t.Helper()
	var web string
	if !harness.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		web = strings.TrimSpace(c.run("ps", "--name", "^web$", "--state", "running", "-q").Stdout)
		return web != ""
	}) {
		t.Fatal("the pod without the annotation is not running after 60s")
	}
	if r := c.run("exec", web, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !r.OK() || !strings.Contains(r.Stdout, "192.0.2.") {
		t.Errorf("eth0 of the pod without the annotation: %v; want the bridge's 192.0.2.0/24 address", r)
	}
	if _, ok := w.agent(t, "clawnet-test_web-"+nodeName); ok {
		t.Error("the pod without the annotation was attached")
	}
}

// sandboxPID is the pid of the pause process of the pod's ready sandbox.
func (c *containerd) sandboxPID(t *testing.T, pod string) (string, int) {
	t.Helper()
	id := c.must(t, "pods", "--name", "^"+pod+"$", "--state", "ready", "-q")
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("ready sandboxes of %s: %q; want one", pod, id)
	}
	var info struct {
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.must(t, "inspectp", id)), &info); err != nil || info.Info.PID == 0 {
		t.Fatalf("crictl inspectp %s: no pid (%v)", id, err)
	}
	return id, info.Info.PID
}

// TestKubeletStaticAgentPod runs the node path the way a cluster does:
// kubelet → containerd's CRI → clawnet-cni → clawnetd. A static agent pod
// is attached under its annotation's policy before its container runs (the
// container's very first instruction reaches the canary through the
// gateway, and what the policy denies never arrives); killing the sandbox
// makes kubelet create a new one, which is attached again under the same
// name in its new namespace; deleting the manifest detaches it.
func TestKubeletStaticAgentPod(t *testing.T) {
	w, c, k := startKubeletNode(t, agentConflist)
	a := startAgentPod(t, w, k, "kubelet")
	var audited bool
	for _, e := range w.d.Audit(t) {
		if e.Agent == kubeletAgent && e.Verdict == "deny" && e.DstAddr().Port() == 7 {
			audited = true
		}
	}
	if !audited {
		t.Errorf("no deny of the echo connection for %s in the audit log", kubeletAgent)
	}

	t.Run("sandbox killed, new sandbox attached", func(t *testing.T) {
		_, pid := c.sandboxPID(t, "agent-"+nodeName)
		mark := w.in.Mark()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the sandbox's pause process %d: %v", pid, err)
		}
		b := w.waitAgent(t, kubeletAgent, a.Netns, 90*time.Second)
		if b.Policy != "canary" {
			t.Errorf("re-attached agent = %+v; want policy canary", b)
		}
		// The container starts again in the new sandbox: its first
		// instruction goes through the gateway again.
		checkAgentPod(t, w, mark, a.first, a.sentinel)
		if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool { return len(w.records(t, "clawnet-kubelet")) == 1 }) {
			t.Errorf("attachment records %q; want 1 (the old sandbox's DEL removed its own)", w.records(t, "clawnet-kubelet"))
		}
	})

	t.Run("manifest deleted, agent detached", func(t *testing.T) { removeAgentPod(t, w, k) })
}

// TestKubeletChained runs chained mode under kubelet: the reference bridge
// plugin is the cluster's network and clawnet-cni comes after it. The
// annotated agent pod has only lo and the TUN, and reaches only what its
// policy allows; a pod without the annotation keeps the bridge's eth0 and
// address and is no agent.
func TestKubeletChained(t *testing.T) {
	w, c, k := startKubeletNode(t, func(w *world) string { return w.chainedConflist(t, "clawnet-kubelet-chained") })
	k.writeManifest(t, "web", webManifest)
	startAgentPod(t, w, k, "chained")
	ctr := c.must(t, "ps", "--name", "^agent$", "--state", "running", "-q")
	checkPodNetwork(t, w, func(t *testing.T, script string) harness.Result {
		return c.run("exec", ctr, "sh", "-c", script)
	})
	checkWebPod(t, w, c)
	k.removeManifest(t, "web")
	removeAgentPod(t, w, k)
}

// TestKubeletWaitsForClawnetd: with clawnetd not running, ADD fails, so the
// agent pod waits (no container runs, nothing of it reaches the canary);
// once clawnetd is back, kubelet's retry attaches the pod and its
// container's first instruction goes through the gateway.
func TestKubeletWaitsForClawnetd(t *testing.T) {
	w, c, k := startKubeletNode(t, agentConflist)
	w.d.Kill()

	mark := w.in.Mark()
	first, sentinel := token("waited-first"), token("waited-sentinel")
	k.writeManifest(t, "agent", agentManifest(w, first, sentinel))
	// Long enough for kubelet to have tried (it reads the manifest
	// directory every second) and failed.
	if !harness.Poll(30*time.Second, 200*time.Millisecond, func() bool {
		b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
		return strings.Contains(string(b), "clawnetd is not running")
	}) {
		t.Fatalf("no failed ADD (clawnetd is not running) in containerd's log within 30s:\n%s", c.logTail())
	}
	if got := c.run("ps", "--name", "^agent$", "-q").Stdout; strings.TrimSpace(got) != "" {
		t.Errorf("agent containers while clawnetd is down: %q; want none", got)
	}
	if got := w.in.Since(mark); len(got) != 0 {
		t.Errorf("the canary logged traffic while clawnetd was down: %v", got)
	}

	w.d.Restart(t)
	a := w.waitAgent(t, kubeletAgent, "", 90*time.Second)
	if a.Policy != "canary" {
		t.Errorf("agent = %+v; want policy canary", a)
	}
	checkAgentPod(t, w, mark, first, sentinel)
	removeAgentPod(t, w, k)
}

// TestKubeletDaemonSetPod runs clawnetd the way deploy/kubernetes does:
// the pod of each DaemonSet, as a static pod (no API server here, so no
// DaemonSet controller), with only what a test must change: the image
// (built here from the tree's binaries), ConfigMaps as host directories,
// and host paths moved into the test's own directories (the node's
// /run/netns stays). Its init container installs clawnet-cni and its
// configuration into the CRI's directories: an empty one for the agent
// pool, one holding the cluster's network (the bridge plugin) for chained;
// its readiness probe (clawnet status) makes it Ready; the agent pod
// kubelet starts next is attached by it and reaches only what its policy
// allows (chained: a pod without the annotation keeps the bridge's
// network). Killed, clawnetd is restarted by kubelet and attaches the
// running agent pod again from its state directory, and the pod's network
// works again.
func TestKubeletDaemonSetPod(t *testing.T) {
	requireCNI(t)
	kubeletPath(t)
	for _, file := range []string{"daemonset-agent-pool.yaml", "daemonset-chained.yaml"} {
		t.Run(file, func(t *testing.T) { testDaemonSetPod(t, file) })
	}
}

func testDaemonSetPod(t *testing.T, file string) {
	chained := file == "daemonset-chained.yaml"
	in := harness.NewInternet(t)
	// The socket path must fit in 108 bytes: a short directory of its own.
	dir, err := os.MkdirTemp("", "cnk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "clawnet.sock")
	w := &world{in: in, socket: sock, dir: t.TempDir(), ctl: control.NewClient(sock)}
	// The CNI bin directory has loopback only: install-cni puts the plugin there.
	w.binDir = filepath.Join(w.dir, "bin")
	if err := os.Mkdir(w.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/cni/loopback", filepath.Join(w.binDir, "loopback")); err != nil {
		t.Fatal(err)
	}
	// The installed configuration keeps the plugin's records where a node
	// keeps them; each DEL removes its own, and the emptied directories go
	// here (os.Remove leaves one that is not empty).
	t.Cleanup(func() {
		os.Remove(filepath.Join(defaultRecords, "clawnet"))
		os.Remove(filepath.Join(defaultRecords, "k8s-pod-network"))
		os.Remove(defaultRecords)
	})
	cluster, installed := "", "00-clawnet.conflist"
	if chained {
		cluster = fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [%s]}`, w.bridgePlugin(t))
		installed = "10-clawnet.conflist" // the cluster's, as startContainerdWith names it
	}
	c := startContainerdWith(t, w, cluster)
	c.importImage(t, clawnetdImage, clawnetdLayer(t), []string{"/clawnetd"})
	manifest := daemonSetPod(t, file, dir, w, c)
	k := startKubelet(t, c)

	k.writeManifest(t, "clawnetd", manifest)
	if !harness.Poll(90*time.Second, 200*time.Millisecond, func() bool { return k.podReady("clawnetd") }) {
		t.Fatalf("the clawnetd pod is not Ready (readiness: clawnet status) after 90s; its log:\n%s", podLog(k, "clawnetd"))
	}
	if _, err := os.Stat(filepath.Join(w.binDir, "clawnet-cni")); err != nil {
		t.Fatalf("install-cni did not install the plugin: %v", err)
	}
	conf, err := os.ReadFile(filepath.Join(c.netDir, installed))
	if err != nil || !strings.Contains(string(conf), `"clawnet-cni"`) || chained != strings.Contains(string(conf), `"chained": true`) {
		t.Fatalf("install-cni left %s as %s (%v)", installed, conf, err)
	}
	if chained {
		k.writeManifest(t, "web", webManifest)
	}

	a := startAgentPod(t, w, k, "ds")
	if log := podLog(k, "clawnetd"); !strings.Contains(log, `"agent":"`+kubeletAgent+`"`) || !strings.Contains(log, `"verdict":"deny"`) {
		t.Errorf("clawnetd's pod log (audit_log: -) has no deny of %s:\n%s", kubeletAgent, log)
	}

	if chained {
		checkWebPod(t, w, c)
		k.removeManifest(t, "web")
	}

	t.Run("clawnetd killed, restarted, agent attached again", func(t *testing.T) {
		id := c.must(t, "ps", "--name", "^clawnetd$", "--state", "running", "-q")
		var info struct {
			Info struct {
				PID int `json:"pid"`
			} `json:"info"`
		}
		if err := json.Unmarshal([]byte(c.must(t, "inspect", id)), &info); err != nil || info.Info.PID == 0 {
			t.Fatalf("crictl inspect %s: no pid (%v)", id, err)
		}
		if err := syscall.Kill(info.Info.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// kubelet starts the container again; the restarted clawnetd
		// attaches the agent again from state_dir, same name, same
		// namespace, same since-time.
		var b control.Agent
		if !harness.Poll(90*time.Second, 200*time.Millisecond, func() bool {
			// A new clawnetd container, running, that answers.
			now := strings.TrimSpace(c.run("ps", "--name", "^clawnetd$", "--state", "running", "-q").Stdout)
			if now == "" || now == id {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			as, err := w.ctl.Agents(ctx)
			if err != nil {
				return false
			}
			for _, x := range as {
				if x.Name == kubeletAgent {
					b = x
					return true
				}
			}
			return false
		}) {
			t.Fatalf("agent %s not attached again within 90s of killing clawnetd; its log:\n%s", kubeletAgent, podLog(k, "clawnetd"))
		}
		if b.Netns != a.Netns || !b.AttachedAt.Equal(a.AttachedAt) {
			t.Errorf("after the restart: %s since %v; want %s since %v", b.Netns, b.AttachedAt, a.Netns, a.AttachedAt)
		}
		ctr := c.must(t, "ps", "--name", "^agent$", "--state", "running", "-q")
		p := token("after-restart")
		if r := c.run("exec", ctr, "sh", "-c", httpGet(w.in.Server4.String(), p)); !r.OK() || !strings.Contains(r.Stdout, "200 OK") {
			t.Errorf("GET from the agent pod after clawnetd's restart: %v", r)
		}
		w.in.WaitFor(t, 10*time.Second, "the request after the restart "+p, requested(p))
	})

	removeAgentPod(t, w, k)
	if t.Failed() {
		t.Logf("clawnetd pod log:\n%s", podLog(k, "clawnetd"))
	}
}

const clawnetdImage = "localhost/clawnet-test/clawnetd:dev"

// defaultRecords is clawnet-cni's default dataDir.
const defaultRecords = "/var/lib/cni/clawnet"

// daemonSetPod is the pod of the DaemonSet in deploy/kubernetes/file as a
// static pod for this test's kubelet: the same containers, probes,
// security context, mounts and propagation, with the image built here,
// the ConfigMaps as directories under dir (the config's DNS upstream and
// test addresses set to the test internet's, the canary policy as the only
// policy file), the node's /run/clawnet and /var/lib/clawnet as directories
// under dir, and the CNI directories as the test containerd's. What needs
// an API server goes (ServiceAccount, priority class, node selector).
func daemonSetPod(t *testing.T, file, dir string, w *world, c *containerd) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) map[string]any {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", name))
		if err != nil {
			t.Fatal(err)
		}
		var docs []map[string]any
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); err != nil {
				break
			}
			docs = append(docs, d)
		}
		if len(docs) == 0 {
			t.Fatalf("%s: no document", name)
		}
		return docs[0]
	}
	ds := read(file)
	cm := read("configmap.yaml")

	// The ConfigMap's clawnetd.yaml, pointed at the test internet.
	var cfg map[string]any
	cmData, _ := cm["data"].(map[string]any)
	if err := yaml.Unmarshal([]byte(cmData["clawnetd.yaml"].(string)), &cfg); err != nil {
		t.Fatalf("configmap.yaml clawnetd.yaml: %v", err)
	}
	cfg["dns"] = map[string]any{"upstream": []string{w.in.Server4.String() + ":53"}}
	cfg["treat_as_public"] = []string{"198.18.0.0/15", "2001:db8::/32"}
	cfgYAML, _ := yaml.Marshal(cfg)
	hostDirs := map[string]string{ // volume → host directory
		"config":      filepath.Join(dir, "config"),
		"policies":    filepath.Join(dir, "policies"),
		"run-clawnet": filepath.Join(dir, "run"),
		"state":       filepath.Join(dir, "state"),
		"cni-bin":     w.binDir,
		"cni-conf":    c.netDir,
	}
	for _, d := range hostDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, body := range map[string]string{
		filepath.Join(hostDirs["config"], "clawnetd.yaml"): string(cfgYAML),
		filepath.Join(hostDirs["policies"], "canary.yaml"): canaryPolicy(w.in),
	} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tmpl, _ := ds["spec"].(map[string]any)["template"].(map[string]any)
	spec, _ := tmpl["spec"].(map[string]any)
	for _, k := range []string{"serviceAccountName", "priorityClassName", "nodeSelector"} {
		delete(spec, k)
	}
	spec["terminationGracePeriodSeconds"] = 5
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		vm := v.(map[string]any)
		name := vm["name"].(string)
		if name == "netns" {
			continue // the node's own: the agent pods' namespaces are there
		}
		d, ok := hostDirs[name]
		if !ok {
			t.Fatalf("%s has volume %s, which this test does not know how to give", file, name)
		}
		for k := range vm {
			if k != "name" {
				delete(vm, k)
			}
		}
		vm["hostPath"] = map[string]any{"path": d, "type": "Directory"}
	}
	var containers []any
	containers = append(containers, spec["initContainers"].([]any)...)
	containers = append(containers, spec["containers"].([]any)...)
	for _, ctr := range containers {
		cm := ctr.(map[string]any) // the container
		cm["image"], cm["imagePullPolicy"] = clawnetdImage, "Never"
		if cm["name"] != "install-cni" {
			continue
		}
		cmd := cm["command"].([]any)
		for i := range cmd {
			if cmd[i] == "--socket" && i+1 < len(cmd) {
				cmd[i+1] = w.socket // the node's path of the socket, here under dir
			}
		}
	}
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "clawnetd", "namespace": "kube-system", "labels": tmpl["metadata"].(map[string]any)["labels"]},
		"spec":     spec,
	}
	out, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// clawnetdLayer is the clawnetd image's layer: the static clawnetd,
// clawnet and clawnet-cni binaries at /, as deploy/kubernetes expects.
func clawnetdLayer(t *testing.T) []byte {
	t.Helper()
	bins := harness.ClawnetBinaries(t)
	cni := filepath.Join(t.TempDir(), "clawnet-cni")
	installPlugin(t, cni)
	es := []entry{{name: "tmp", dir: true}, {name: "proc", dir: true}, {name: "sys", dir: true}, {name: "dev", dir: true},
		{name: "run", dir: true}, {name: "etc", dir: true}}
	for name, p := range map[string]string{"clawnetd": bins.Clawnetd, "clawnet": bins.Clawnet, "clawnet-cni": cni} {
		if f, err := elf.Open(p); err == nil {
			static := true
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					static = false
				}
			}
			f.Close()
			if !static {
				p = filepath.Join(t.TempDir(), name)
				goBuild(t, "./cmd/"+name, p)
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{name: name, mode: 0o755, body: b})
	}
	return layer(t, es)
}

// podLog is the end of the log of a static pod's container.
func podLog(k *kubelet, pod string) string {
	ms, _ := filepath.Glob(filepath.Join(k.dir, "pod-logs", "*_"+pod+"-"+nodeName+"_*", "*", "*.log"))
	var b strings.Builder
	for _, m := range ms {
		data, _ := os.ReadFile(m)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "%s:\n%s\n", m, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}
