package cnitest

import (
	"context"
	"crypto/tls"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// kernelTunables are the sysctls kubelet sets at start unless told to
// refuse to run (protectKernelDefaults); the test puts back what it found.
var kernelTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// startKubelet starts a kubelet on c. When t ends it is stopped, every pod
// removed, its root directory unmounted and removed, and the kernel
// tunables it changed put back.
func startKubelet(t *testing.T, c *containerd) *kubelet {
	t.Helper()
	bin := kubeletPath(t)
	id := filepath.Base(c.state)
	k := &kubelet{
		c:         c,
		dir:       filepath.Join(c.dir, "kubelet"),
		root:      filepath.Join("/var/lib/clawnet-ci", id+"-kubelet"),
		manifests: filepath.Join(c.dir, "manifests"),
		port:      freePort(t),
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
`, sock, k.manifests, k.port, freePort(t), filepath.Join(k.dir, "pod-logs"))
	if err := os.WriteFile(filepath.Join(k.dir, "kubelet.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(k.dir, "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	k.cmd = exec.Command(bin, "--config", filepath.Join(k.dir, "kubelet.yaml"), "--root-dir", k.root,
		"--hostname-override", nodeName, "--cert-dir", filepath.Join(k.dir, "pki"))
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
	requireCNI(t)
	kubeletPath(t)
	w := newWorld(t)
	c := startContainerdWith(t, w, agentConflist(w))
	k := startKubelet(t, c)

	mark := w.in.Mark()
	first, sentinel := token("kubelet-first"), token("kubelet-sentinel")
	k.writeManifest(t, "agent", agentManifest(w, first, sentinel))
	a := w.waitAgent(t, kubeletAgent, "", 60*time.Second)
	if a.Policy != "canary" || a.Interface != "eth0" {
		t.Errorf("agent = %+v; want policy canary (the pod's annotation), interface eth0", a)
	}
	checkAgentPod(t, w, mark, first, sentinel)
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
		checkAgentPod(t, w, mark, first, sentinel)
		if got := len(w.records(t, "clawnet-kubelet")); got != 1 {
			t.Errorf("%d attachment records; want 1 (the old sandbox's DEL removed its own)", got)
		}
	})

	t.Run("manifest deleted, agent detached", func(t *testing.T) {
		k.removeManifest(t, "agent")
		w.waitGone(t, kubeletAgent, 60*time.Second)
	})
}

// TestKubeletClawnetdPod runs clawnetd itself as a privileged static pod
// on the host's network, as the DaemonSet in deploy/kubernetes does:
// the socket and the namespaces reach it through hostPath volumes (/run/netns
// with HostToContainer propagation, so namespaces made after it started are
// visible in it), its readiness probe is `clawnet status`, and the agent
// pod kubelet starts next is attached by it and reaches only what its
// policy allows.
func TestKubeletClawnetdPod(t *testing.T) {
	requireCNI(t)
	kubeletPath(t)
	in := harness.NewInternet(t)
	// The socket path must fit in 108 bytes: a short directory of its own.
	dir, err := os.MkdirTemp("", "cnk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	host := map[string]string{ // host directory → path inside the pod
		filepath.Join(dir, "etc"):   "/etc/clawnet",
		filepath.Join(dir, "run"):   "/run/clawnet",
		filepath.Join(dir, "state"): "/var/lib/clawnet",
		filepath.Join(dir, "log"):   "/var/log/clawnet",
	}
	for d := range host {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "etc", "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(dir, "etc", "policies", "canary.yaml"): canaryPolicy(in),
		filepath.Join(dir, "etc", "clawnetd.yaml"): fmt.Sprintf(`version: v1
socket: /run/clawnet/clawnet.sock
policy_dir: /etc/clawnet/policies
default_policy: default
llm_provider: anthropic
mcp_servers: []
dns:
  upstream: ["%s:53"]
audit_log: /var/log/clawnet/audit.log
state_dir: /var/lib/clawnet
treat_as_public: ["198.18.0.0/15", "2001:db8::/32"]
`, in.Server4),
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "run", "clawnet.sock")
	w := &world{in: in, socket: sock, dir: t.TempDir(), ctl: control.NewClient(sock)}
	w.setupBinDir(t)
	c := startContainerdWith(t, w, agentConflist(w))
	c.importImage(t, clawnetdImage, clawnetdLayer(t), []string{"/clawnetd"})
	k := startKubelet(t, c)

	k.writeManifest(t, "clawnetd", clawnetdManifest(host))
	if !harness.Poll(90*time.Second, 200*time.Millisecond, func() bool { return k.podReady("clawnetd") }) {
		t.Fatalf("the clawnetd pod is not Ready (readiness: clawnet status) after 90s; its log:\n%s", podLog(k, "clawnetd"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.ctl.Status(ctx); err != nil {
		t.Fatalf("clawnetd's socket through the hostPath volume: %v", err)
	}

	mark := w.in.Mark()
	first, sentinel := token("pod-first"), token("pod-sentinel")
	k.writeManifest(t, "agent", agentManifest(w, first, sentinel))
	a := w.waitAgent(t, kubeletAgent, "", 60*time.Second)
	if a.Policy != "canary" {
		t.Errorf("agent = %+v; want policy canary", a)
	}
	checkAgentPod(t, w, mark, first, sentinel)
	audit, err := os.ReadFile(filepath.Join(dir, "log", "audit.log"))
	if err != nil || !strings.Contains(string(audit), `"agent":"`+kubeletAgent+`"`) {
		t.Errorf("the pod's audit log (hostPath) has no line of %s (%v)", kubeletAgent, err)
	}
	k.removeManifest(t, "agent")
	w.waitGone(t, kubeletAgent, 60*time.Second)
	if t.Failed() {
		t.Logf("clawnetd pod log:\n%s", podLog(k, "clawnetd"))
	}
}

const clawnetdImage = "localhost/clawnet-test/clawnetd:dev"

// clawnetdManifest is clawnetd as a privileged static pod on the host's
// network, its directories from the host as host maps them.
func clawnetdManifest(host map[string]string) string {
	var mounts, vols strings.Builder
	i := 0
	for h, p := range host {
		fmt.Fprintf(&mounts, "    - {name: v%d, mountPath: %s}\n", i, p)
		fmt.Fprintf(&vols, "  - {name: v%d, hostPath: {path: %s, type: Directory}}\n", i, h)
		i++
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: clawnetd, namespace: kube-system}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: clawnetd
    image: %s
    imagePullPolicy: Never
    command: ["/clawnetd", "--config", "/etc/clawnet/clawnetd.yaml", "--log-format", "json"]
    securityContext: {privileged: true}
    readinessProbe:
      exec: {command: ["/clawnet", "--socket", "/run/clawnet/clawnet.sock", "status"]}
      periodSeconds: 1
    volumeMounts:
%s    - {name: netns, mountPath: /run/netns, mountPropagation: HostToContainer}
  volumes:
%s  - {name: netns, hostPath: {path: /run/netns, type: Directory}}
`, clawnetdImage, mounts.String(), vols.String())
}

// clawnetdLayer is the clawnetd image's layer: the static clawnetd and
// clawnet binaries, and /var/run as a link to /run (CNI runtimes name
// namespaces under /var/run/netns).
func clawnetdLayer(t *testing.T) []byte {
	t.Helper()
	bins := harness.ClawnetBinaries(t)
	es := []entry{{name: "tmp", dir: true}, {name: "proc", dir: true}, {name: "sys", dir: true}, {name: "dev", dir: true},
		{name: "run", dir: true}, {name: "var", dir: true}, {name: "var/run", link: "../run"}, {name: "etc", dir: true}}
	for name, p := range map[string]string{"clawnetd": bins.Clawnetd, "clawnet": bins.Clawnet} {
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
