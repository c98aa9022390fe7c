package cnitest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// EnvCrictl names the crictl binary; scripts/cni-setup.sh builds it into
// /var/cache/clawnet-ci/crictl-VERSION and make cni-test passes that path.
const EnvCrictl = "CLAWNET_CRICTL"

// containerd is a containerd 1.6 of the test's own: its root, state,
// sockets and CNI configuration directory are private, so it runs beside
// the host's (Docker's) containerd and any other test run's. Its CRI
// plugin calls clawnet-cni for every pod sandbox, as under kubelet.
type containerd struct {
	dir    string // config, logs, pod logs
	netDir string // the CRI's CNI configuration directory
	root   string // images and snapshots
	state  string // sockets and runtime state
	crictl []string
	cmd    *exec.Cmd
	exited chan struct{}
	// ids are the sandboxes and containers made, whose cgroups are
	// removed at the end.
	ids []string
}

func crictlPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvCrictl); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v (run scripts/cni-setup.sh)", EnvCrictl, p, err)
		}
		return p
	}
	p, err := exec.LookPath("crictl")
	if err != nil {
		t.Fatalf("%s=1 but no crictl: set %s or put it on PATH (scripts/cni-setup.sh builds it)", EnvCNITests, EnvCrictl)
	}
	return p
}

// startContainerd starts a private containerd whose CRI networks pods with
// clawnet-cni on w's clawnetd, and loads the agent and pause images into
// it. Everything it made is removed when t ends: pods, then containerd,
// then its directories and the pods' cgroups.
func startContainerd(t *testing.T, w *world) *containerd {
	t.Helper()
	return startContainerdWith(t, w, w.conflist("clawnet-cri"))
}

// startContainerdWith is startContainerd with conflist as the CRI's only
// network; with "", the directory is left empty for a test to fill (the
// CRI reports its network not ready until then).
func startContainerdWith(t *testing.T, w *world, conflist string) *containerd {
	t.Helper()
	requireCNI(t, "containerd", "ctr", "runc")
	crictl := crictlPath(t)
	id := fmt.Sprintf("cri-%d-%x", os.Getpid(), harness.RandomBytes(3))
	c := &containerd{
		dir:   filepath.Join(w.dir, "containerd"),
		root:  filepath.Join("/var/lib/clawnet-ci", id),
		state: filepath.Join("/run/clawnet-ci", id),
	}
	netDir := filepath.Join(c.dir, "net.d")
	c.netDir = netDir
	for _, d := range []string{netDir, c.state, filepath.Join(c.dir, "pods")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(c.state, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = "%s.ttrpc"
[debug]
  address = "%s/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  # any free port: two test runs, or a CRI containerd of the host, never meet
  stream_server_port = "0"
  # no CAP_SYS_RESOURCE here: the pause container's -998 cannot be set
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, c.root, c.state, sock, sock, c.state, pauseImage, w.binDir, netDir)
	crictlConf := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", sock, sock)
	files := map[string]string{
		filepath.Join(c.dir, "config.toml"): config,
		filepath.Join(c.dir, "crictl.yaml"): crictlConf,
	}
	if conflist != "" {
		files[filepath.Join(netDir, "10-clawnet.conflist")] = conflist
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.crictl = []string{crictl, "--config", filepath.Join(c.dir, "crictl.yaml")}

	logf, err := os.Create(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// containerd dies with the test process; its shims and pods do not,
	// which is why the cleanup removes every pod first.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start containerd: %v", err)
	}
	logf.Close()
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.stop(t) })
	if !harness.Poll(20*time.Second, 100*time.Millisecond, func() bool { return c.run("info").OK() }) {
		t.Fatalf("containerd's CRI does not answer after 20s; log:\n%s", c.logTail())
	}

	if err := os.Mkdir(filepath.Join(c.dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.importImage(t, agentImage, agentLayer(t), []string{"/bin/sh"})
	c.importImage(t, pauseImage, pauseLayer(t), []string{"/pause"})
	return c
}

// importImage loads an image made of layer, running cmd, into containerd's
// k8s.io namespace, where its CRI finds images.
func (c *containerd) importImage(t *testing.T, name string, layer []byte, cmd []string) {
	t.Helper()
	archive := filepath.Join(c.dir, "images", filepath.Base(strings.ReplaceAll(name, ":", "_"))+".tar")
	ociArchive(t, name, layer, cmd, archive)
	sock := filepath.Join(c.state, "containerd.sock")
	if r := run(time.Minute, nil, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", archive); !r.OK() {
		t.Fatalf("import %s into containerd: %v", name, r)
	}
}

func (c *containerd) logTail() string {
	b, err := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// stop removes every pod (their shims outlive containerd), stops
// containerd, and removes its directories and the pods' cgroups.
func (c *containerd) stop(t *testing.T) {
	if r := c.run("rmp", "-af"); !r.OK() {
		t.Errorf("crictl rmp -af: %v", r)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("containerd did not exit within 10s of SIGTERM; killed it")
		c.cmd.Process.Kill()
		<-c.exited
	}
	if t.Failed() {
		t.Logf("containerd log:\n%s", c.logTail())
	}
	for _, d := range []string{c.root, c.state} {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("remove containerd's %s: %v", d, err)
		}
	}
	// cgroup v1 leaves empty k8s.io/<id> directories in every controller.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	for _, d := range dirs {
		for _, id := range c.ids {
			os.Remove(filepath.Join(d, id))
		}
		os.Remove(d) // only when no other run uses it
	}
}

func (c *containerd) run(args ...string) harness.Result {
	return run(time.Minute, nil, c.crictl[0], append(c.crictl[1:], args...)...)
}

func (c *containerd) must(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(args...)
	if !r.OK() {
		t.Fatalf("crictl %s: %v", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// writeJSON writes v as JSON into the containerd's directory and returns
// the path.
func (c *containerd) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, mustJSON(t, v), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCRIPodSandbox drives containerd's CRI the way kubelet does: the pod
// sandbox is attached as agent NAMESPACE_POD before any container exists,
// the pod's IP is the agent's address, the container's first instruction
// already goes through the gateway, and stopping then removing the sandbox
// (DEL with the namespace, then DEL without it and without prevResult)
// detaches it and succeeds twice.
func TestCRIPodSandbox(t *testing.T) {
	requireCNI(t)
	w := newWorld(t)
	c := startContainerd(t, w)
	podConfig := c.writeJSON(t, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "agent-1", "namespace": "clawnet-test", "uid": "agent-1-uid", "attempt": 0},
		"log_directory": filepath.Join(c.dir, "pods", "agent-1"),
		"linux":         map[string]any{},
	})
	pod := c.must(t, "runp", podConfig)
	c.ids = append(c.ids, pod)

	a := w.mustAgent(t, "clawnet-test_agent-1")
	if got := c.must(t, "ps", "-a", "-q", "--pod", pod); got != "" {
		t.Errorf("containers in the pod right after runp: %q; want none yet", got)
	}
	if a.Interface != "eth0" || a.Policy != "canary" || !strings.Contains(a.Netns, "/netns/cni-") {
		t.Errorf("agent = %+v; want interface eth0, policy canary, containerd's cni-* namespace", a)
	}
	var status struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.must(t, "inspectp", pod)), &status); err != nil {
		t.Fatalf("crictl inspectp: %v", err)
	}
	if status.Status.Network.IP != addr4(t, a).String() {
		t.Errorf("the pod's IP is %q; the agent's address is %s", status.Status.Network.IP, addr4(t, a))
	}

	first := token("first")
	ctrConfig := c.writeJSON(t, "container.json", map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": agentImage},
		"command":  []string{"/bin/sh", "-c", httpGet(w.in.Server4.String(), first) + "; exec sleep 3600"},
		"log_path": "agent.log",
		"linux":    map[string]any{},
	})
	ctr := c.must(t, "create", pod, ctrConfig, podConfig)
	c.ids = append(c.ids, ctr)
	c.must(t, "start", ctr)
	w.in.WaitFor(t, 10*time.Second, "the container's first request "+first, requested(first))

	checkPodNetwork(t, w, func(t *testing.T, script string) harness.Result {
		return c.run("exec", ctr, "sh", "-c", script)
	})

	c.must(t, "stopp", pod)
	w.waitGone(t, a.Name, 10*time.Second)
	c.must(t, "rmp", pod)
	if recs := w.records(t, "clawnet-cri"); len(recs) != 0 {
		t.Errorf("attachment records after the pod was removed: %q", recs)
	}
}

// TestCRIPodAnnotation: containerd 1.6's CRI passes the pod's annotations
// to a plugin that declares the capability io.kubernetes.cri.pod-annotations,
// so a pod annotated clawnet.dev/policy is attached under that policy on a
// network that names none, and reaches what it allows; a pod without the
// annotation gets the daemon's default_policy (no pod policy source here).
func TestCRIPodAnnotation(t *testing.T) {
	requireCNI(t)
	w := newWorld(t)
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "clawnet-cri-ann",
  "plugins": [
    {"type": "clawnet-cni", "socket": %q, "dataDir": %q,
     "capabilities": {"io.kubernetes.cri.pod-annotations": true}}
  ]
}`, w.socket, w.dataDir())
	c := startContainerdWith(t, w, conflist)
	runp := func(name string, ann map[string]string) string {
		cfg := c.writeJSON(t, name+".json", map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "clawnet-test", "uid": name + "-uid", "attempt": 0},
			"annotations":   ann,
			"log_directory": filepath.Join(c.dir, "pods", name),
			"linux":         map[string]any{},
		})
		pod := c.must(t, "runp", cfg)
		c.ids = append(c.ids, pod)
		return pod
	}
	annotated := runp("annotated", map[string]string{"clawnet.dev/policy": "canary"})
	plain := runp("plain", nil)
	if a := w.mustAgent(t, "clawnet-test_annotated"); a.Policy != "canary" {
		t.Errorf("annotated pod attached under %q; want canary, its annotation's", a.Policy)
	}
	if a := w.mustAgent(t, "clawnet-test_plain"); a.Policy != "default" {
		t.Errorf("pod without the annotation attached under %q; want the default", a.Policy)
	}

	ctrConfig := c.writeJSON(t, "container.json", map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": agentImage},
		"command":  []string{"/bin/sh", "-c", "exec sleep 3600"},
		"log_path": "agent.log",
		"linux":    map[string]any{},
	})
	ctr := c.must(t, "create", annotated, ctrConfig, filepath.Join(c.dir, "annotated.json"))
	c.ids = append(c.ids, ctr)
	c.must(t, "start", ctr)
	checkPodNetwork(t, w, func(t *testing.T, script string) harness.Result {
		return c.run("exec", ctr, "sh", "-c", script)
	})
	for _, p := range []string{annotated, plain} {
		c.must(t, "stopp", p)
		c.must(t, "rmp", p)
	}
	w.waitGone(t, "clawnet-test_annotated", 10*time.Second)
	w.waitGone(t, "clawnet-test_plain", 10*time.Second)
}
