package cnitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// Podman's state for this tier, apart from the host's and from the Podman
// tier's API service: its own storage (images stay between runs), run
// directory and file locks (the default shared-memory locks are one set per
// host, whatever the storage).
const (
	podmanRoot    = "/var/lib/clawnet-ci/podman"
	podmanRunRoot = "/run/clawnet-ci/podman"
)

// podman runs the podman CLI on the tier's private configuration, with one
// CNI network, clawnet-cni on the test's clawnetd.
type podman struct {
	env     []string
	network string
}

func newPodman(t *testing.T, w *world) *podman {
	t.Helper()
	return newPodmanWith(t, w, w.conflist)
}

// newPodmanWith is newPodman with the network's configuration list made by
// conflist from the network's name.
func newPodmanWith(t *testing.T, w *world, conflist func(name string) string) *podman {
	t.Helper()
	requireCNI(t, "podman")
	dir := filepath.Join(w.dir, "podman")
	netDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pm := &podman{network: "clawnet-" + fmt.Sprintf("%x", harness.RandomBytes(4))}
	conf := fmt.Sprintf(`[containers]
# No CAP_SYS_RESOURCE here: podman's default rlimits cannot be applied.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[network]
network_backend = "cni"
cni_plugin_dirs = [%q, "/usr/lib/cni"]
network_config_dir = %q

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%s/events.log"
lock_type = "file"
tmp_dir = "%s/libpod"
`, w.binDir, netDir, podmanRunRoot, podmanRunRoot)
	storage := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = \"%s/storage\"\n", podmanRoot, podmanRunRoot)
	files := map[string]string{
		filepath.Join(dir, "containers.conf"):               conf,
		filepath.Join(dir, "storage.conf"):                  storage,
		filepath.Join(netDir, "50-"+pm.network+".conflist"): conflist(pm.network),
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pm.env = []string{"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"), "CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf")}
	if !pm.run("image", "exists", agentImage).OK() {
		rootfs := filepath.Join(dir, "rootfs.tar")
		if err := os.WriteFile(rootfs, agentLayer(t), 0o644); err != nil {
			t.Fatal(err)
		}
		pm.must(t, "import", "--change", `CMD ["/bin/sh"]`, rootfs, agentImage)
	}
	return pm
}

func (pm *podman) run(args ...string) harness.Result {
	return run(2*time.Minute, pm.env, "podman", args...)
}

func (pm *podman) must(t *testing.T, args ...string) string {
	t.Helper()
	r := pm.run(args...)
	if !r.OK() {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// TestPodmanRunGetsTheTUN: a container on the clawnet network has lo and
// the TUN (eth0) only, under the network's policy; podman took the plugin's
// result (its inspect shows the agent's address); podman rm detaches it.
func TestPodmanRunGetsTheTUN(t *testing.T) {
	requireCNI(t, "podman")
	w := newWorld(t)
	pm := newPodman(t, w)
	name := "agent-pm-" + fmt.Sprintf("%x", harness.RandomBytes(4))
	pm.must(t, "run", "-d", "--name", name, "--network", pm.network, agentImage, "sleep", "3600")
	t.Cleanup(func() { pm.run("rm", "-f", "-t", "0", name) })

	// podman passes K8S_POD_NAME (the container's name) and no namespace.
	a := w.mustAgent(t, name)
	if a.Interface != "eth0" || a.Policy != "canary" || !strings.HasPrefix(a.Netns, "/run/netns/") {
		t.Errorf("agent = %+v; want interface eth0, policy canary, a /run/netns namespace", a)
	}
	ip := pm.must(t, "inspect", "--format", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, pm.network), name)
	if ip != addr4(t, a).String() {
		t.Errorf("podman inspect says the container's address is %q; the agent's is %s", ip, addr4(t, a))
	}
	if recs := w.records(t, pm.network); len(recs) != 1 {
		t.Errorf("attachment records = %q; want one", recs)
	}

	checkPodNetwork(t, w, func(t *testing.T, script string) harness.Result {
		return pm.run("exec", name, "sh", "-c", script)
	})

	pm.must(t, "rm", "-f", "-t", "0", name)
	w.waitGone(t, name, 10*time.Second)
	if recs := w.records(t, pm.network); len(recs) != 0 {
		t.Errorf("attachment records after podman rm: %q", recs)
	}
}

// TestPodmanFirstInstruction: the TUN is there before the container's
// first instruction, whose request the canary sees; run --rm detaches.
func TestPodmanFirstInstruction(t *testing.T) {
	requireCNI(t, "podman")
	w := newWorld(t)
	pm := newPodman(t, w)
	name := "agent-once-" + fmt.Sprintf("%x", harness.RandomBytes(4))
	p := token("first")
	r := pm.run("run", "--rm", "--name", name, "--network", pm.network, agentImage, "sh", "-c", httpGet(w.in.Server4.String(), p))
	if !r.OK() || !strings.Contains(r.Stdout, "200 OK") {
		t.Errorf("the container's first instruction, GET %s: %v; want 200", p, r)
	}
	w.in.WaitFor(t, 5*time.Second, "the first instruction's request "+p, requested(p))
	w.waitGone(t, name, 10*time.Second)
}

// TestPodmanPassesNoAnnotations records what docs/kubernetes.md says of
// podman 4.3 (CNI backend): it hands the plugin no runtimeConfig, so a
// container's clawnet.dev/policy annotation never reaches it, even on a
// network that declares the pod-annotations capability: the container is
// attached under the daemon's default policy. Should podman start passing
// them, this test fails and the documentation needs the change.
func TestPodmanPassesNoAnnotations(t *testing.T) {
	requireCNI(t, "podman")
	w := newWorld(t)
	pm := newPodmanWith(t, w, func(name string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
  {"type": "clawnet-cni", "socket": %q, "dataDir": %q, "capabilities": {"io.kubernetes.cri.pod-annotations": true}}]}`,
			name, w.socket, w.dataDir())
	})
	name := "agent-ann-" + fmt.Sprintf("%x", harness.RandomBytes(4))
	pm.must(t, "run", "-d", "--name", name, "--annotation", "clawnet.dev/policy=canary", "--network", pm.network, agentImage, "sleep", "3600")
	t.Cleanup(func() { pm.run("rm", "-f", "-t", "0", name) })
	if a := w.mustAgent(t, name); a.Policy != "default" {
		t.Errorf("agent = %+v; podman 4.3 passes no annotations, so want the default policy (docs/kubernetes.md says so)", a)
	}
}
