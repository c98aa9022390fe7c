// Package cnitest drives clawnet-cni from real CNI callers against a real
// clawnetd: libcni in process (the library every runtime links, and the only
// caller of CHECK), podman 4.3 with its CNI backend, and containerd 1.6's CRI
// driven by crictl, the path kubelet takes. Every test asserts on what
// reached the canary, not only on what the pod saw.
//
// The tier runs only with CLAWNET_CNI_TESTS=1 (make cni-test, which runs
// scripts/cni-setup.sh first), as root. Asked for on a host that lacks an
// engine, it fails naming what is missing. Podman and containerd run on
// private configuration, storage and sockets (under /run/clawnet-ci and
// /var/lib/clawnet-ci), never on the host's own or another tier's.
package cnitest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvCNITests must be 1 for this tier to run (make cni-test sets it).
const EnvCNITests = "CLAWNET_CNI_TESTS"

func TestMain(m *testing.M) {
	// The tier needs the host the harness checks for (root, TUN, ip,
	// nsenter); the harness answers to the integration switch, so this
	// tier's own switch turns that on for this process only.
	if os.Getenv(EnvCNITests) == "1" {
		os.Setenv(harness.EnvIntegration, "1")
	}
	harness.Main(m)
}

// requireCNI skips t unless the tier was asked for, and fails it when it
// was asked for but a command it needs is missing.
func requireCNI(t *testing.T, cmds ...string) {
	t.Helper()
	if os.Getenv(EnvCNITests) != "1" {
		t.Skipf("CNI tier: runs only with %s=1 (make cni-test)", EnvCNITests)
	}
	harness.RequireRoot(t)
	var missing []string
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s=1 but %s missing (run scripts/cni-setup.sh)", EnvCNITests, strings.Join(missing, ", "))
	}
}

// world is one test's test internet, a clawnetd serving it that names its
// TUNs as CNI runtimes want (eth0), and a CNI bin directory holding the
// plugin under test and loopback.
type world struct {
	in     *harness.Internet
	d      *harness.Daemon // nil when clawnetd runs as a pod (kubelet tier)
	socket string          // clawnetd's control socket, as the plugin sees it
	dir    string          // the test's own files
	binDir string          // CNI_PATH: clawnet-cni and loopback
	ctl    *control.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t)
}

// newWorldWith is newWorld with args added to clawnetd's command line
// (--kubeconfig FILE --node-name NODE).
func newWorldWith(t *testing.T, args ...string) *world {
	t.Helper()
	in := harness.NewInternet(t)
	d := harness.StartDaemon(t, harness.DaemonConfig{
		Args: args,
		// The default (built in: the LLM provider and MCP servers, none
		// of them here) stays the default: a pod attached without the
		// network's policy would reach nothing, which the tests notice.
		// network.interface stays clawnet0: the TUN is named as the
		// runtime asks (CNI_IFNAME) through the attach request.
		Policies: map[string]string{"canary": canaryPolicy(in)},
		Internet: in,
	})
	w := &world{in: in, d: d, socket: d.Socket, dir: t.TempDir(), ctl: control.NewClient(d.Socket)}
	w.setupBinDir(t)
	return w
}

// setupBinDir makes w's CNI bin directory: clawnet-cni and loopback.
func (w *world) setupBinDir(t *testing.T) {
	t.Helper()
	w.binDir = filepath.Join(w.dir, "bin")
	if err := os.Mkdir(w.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	installPlugin(t, filepath.Join(w.binDir, "clawnet-cni"))
	// containerd runs loopback from its bin_dir for every sandbox.
	if err := os.Symlink("/usr/lib/cni/loopback", filepath.Join(w.binDir, "loopback")); err != nil {
		t.Fatal(err)
	}
}

// canaryPolicy allows HTTP to the canary by name and by its primary
// address, nothing else (its echo port on the same address stays denied).
func canaryPolicy(in *harness.Internet) string {
	return fmt.Sprintf(`version: v1
name: canary
egress:
  - domains: [canary.test]
    ports: [80]
  - cidrs: [%s/32]
    ports: [80]
`, in.Server4)
}

// conflist is the network configuration for clawnet-cni on w's daemon.
func (w *world) conflist(name string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "clawnet-cni", "socket": %q, "policy": "canary", "dataDir": %q}
  ]
}
`, name, w.socket, w.dataDir())
}

// dataDir is where the plugin keeps its attachment records in this test.
func (w *world) dataDir() string { return filepath.Join(w.dir, "cni-data") }

// records lists the plugin's attachment records of network net.
func (w *world) records(t *testing.T, net string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(w.dataDir(), net))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// agent returns the attached agent called name, as the control API has it.
func (w *world) agent(t *testing.T, name string) (control.Agent, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	as, err := w.ctl.Agents(ctx)
	if err != nil {
		t.Fatalf("list agents: %v", err)
	}
	for _, a := range as {
		if a.Name == name {
			return a, true
		}
	}
	return control.Agent{}, false
}

func (w *world) mustAgent(t *testing.T, name string) control.Agent {
	t.Helper()
	a, ok := w.agent(t, name)
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		as, _ := w.ctl.Agents(ctx)
		t.Fatalf("no agent %s attached; attached: %+v", name, as)
	}
	return a
}

// waitGone waits until no agent called name is attached.
func (w *world) waitGone(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	if !harness.Poll(timeout, 50*time.Millisecond, func() bool { _, ok := w.agent(t, name); return !ok }) {
		t.Fatalf("agent %s still attached %v after its sandbox went", name, timeout)
	}
}

// addr4 is the agent's IPv4 address.
func addr4(t *testing.T, a control.Agent) netip.Addr {
	t.Helper()
	for _, s := range a.Addresses {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Addr()
		}
	}
	t.Fatalf("agent %s has no IPv4 address: %v", a.Name, a.Addresses)
	return netip.Addr{}
}

// httpGet is a shell command for inside a container (busybox): an HTTP/1.0
// GET of path from host (an address or a name) on port 80, printing the
// answer.
func httpGet(host, path string) string {
	return fmt.Sprintf(`printf 'GET %s HTTP/1.0\r\nHost: canary.test\r\n\r\n' | nc -w 5 %s 80`, path, host)
}

// requested is a predicate for the canary's line of an HTTP request for path.
func requested(path string) func(canarylog.Entry) bool {
	return func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == path
	}
}

// token is a path no other request of any run uses.
func token(what string) string {
	return "/" + what + "-" + fmt.Sprintf("%x", harness.RandomBytes(4))
}

// runIn runs a shell command in a container through exec, a function of the
// engine under test.
type runIn func(t *testing.T, script string) harness.Result

// checkPodNetwork is what every attached pod must show from inside: lo and
// the TUN named eth0 only; HTTP to the canary allowed by address and by
// name, arriving there; the canary's echo port on the same address refused,
// and nothing of it arriving.
func checkPodNetwork(t *testing.T, w *world, exec runIn) {
	t.Helper()
	t.Run("only lo and eth0", func(t *testing.T) {
		r := exec(t, "ip -o link")
		if !r.OK() {
			t.Fatalf("ip -o link: %v", r)
		}
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
			if f := strings.Fields(l); len(f) > 1 {
				names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"eth0", "lo"}) {
			t.Errorf("interfaces inside = %q; want exactly eth0 (the TUN) and lo:\n%s", names, r.Stdout)
		}
	})
	t.Run("allowed by address", func(t *testing.T) {
		p := token("by-address")
		if r := exec(t, httpGet(w.in.Server4.String(), p)); !r.OK() || !strings.Contains(r.Stdout, "200 OK") {
			t.Errorf("GET http://%s%s: %v; want 200", w.in.Server4, p, r)
		}
		w.in.WaitFor(t, 5*time.Second, "the allowed request "+p, requested(p))
	})
	t.Run("allowed by name", func(t *testing.T) {
		p := token("by-name")
		if r := exec(t, httpGet("canary.test", p)); !r.OK() || !strings.Contains(r.Stdout, "200 OK") {
			t.Errorf("GET http://canary.test%s: %v; want 200", p, r)
		}
		w.in.WaitFor(t, 5*time.Second, "the allowed request "+p, requested(p))
	})
	t.Run("denied is refused", func(t *testing.T) {
		mark := w.in.Mark()
		r := exec(t, fmt.Sprintf("echo denied | nc -w 5 %s 7", w.in.Server4))
		if r.OK() || !strings.Contains(r.Stderr+r.Stdout, "refused") {
			t.Errorf("nc %s 7 (not in the policy): %v; want the connection refused", w.in.Server4, r)
		}
		p := token("sentinel")
		if r := exec(t, httpGet(w.in.Server4.String(), p)); !r.OK() {
			t.Errorf("sentinel GET: %v", r)
		}
		w.in.NeverSawBefore(t, mark, 5*time.Second, "the sentinel "+p, requested(p), "the denied echo connection", harness.To(w.in.Server4, 7))
	})
}
