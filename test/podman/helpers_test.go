package podmantest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	dockertest "github.com/clawnet/clawnet/test/docker"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvPodmanTests must be 1 for these tests to run (make podman-test sets it).
const EnvPodmanTests = "CLAWNET_PODMAN_TESTS"

// RootlessUser owns the rootless Podman service scripts/podman-setup.sh
// starts, on /run/user/UID/podman/podman.sock.
const RootlessUser = "clawnet-rootless"

// engine is one Podman API service, driven with the podman CLI as its
// remote client: the same engine clawnetd and `clawnet run` talk to.
type engine struct {
	url string // unix:///...

	imageOnce sync.Once
	image     string
	imageErr  error
}

var (
	rootfulOnce, rootlessOnce sync.Once
	rootfulEng, rootlessEng   *engine
	rootfulErr, rootlessErr   error
)

// requirePodman skips t unless Podman tests were asked for, and fails it if
// they were asked for but DOCKER_HOST does not name a Podman that answers: a
// silent skip there would hide a broken CI setup. It returns that engine.
func requirePodman(t *testing.T) *engine {
	t.Helper()
	if os.Getenv(EnvPodmanTests) != "1" {
		t.Skipf("Podman tests run only with %s=1 (make podman-test)", EnvPodmanTests)
	}
	harness.RequireRoot(t)
	rootfulOnce.Do(func() {
		h := os.Getenv("DOCKER_HOST")
		p, ok := strings.CutPrefix(h, "unix://")
		if !ok {
			rootfulErr = fmt.Errorf("DOCKER_HOST=%q: want Podman's socket, unix://... (make podman-test sets it)", h)
			return
		}
		rootfulEng, rootfulErr = podmanAt(p)
	})
	if rootfulErr != nil {
		t.Fatalf("%s=1 but %v (run scripts/podman-setup.sh)", EnvPodmanTests, rootfulErr)
	}
	return rootfulEng
}

// requireRootless is requirePodman for the rootless service of RootlessUser.
// scripts/podman-setup.sh starts it unless PODMAN_SETUP_ROOTLESS=0, which
// skips these tests.
func requireRootless(t *testing.T) *engine {
	t.Helper()
	requirePodman(t)
	if os.Getenv("PODMAN_SETUP_ROOTLESS") == "0" {
		t.Skip("rootless Podman not set up (PODMAN_SETUP_ROOTLESS=0)")
	}
	rootlessOnce.Do(func() {
		u, err := user.Lookup(RootlessUser)
		if err != nil {
			rootlessErr = err
			return
		}
		rootlessEng, rootlessErr = podmanAt("/run/user/" + u.Uid + "/podman/podman.sock")
	})
	if rootlessErr != nil {
		t.Fatalf("%s=1 but no rootless Podman: %v (run scripts/podman-setup.sh)", EnvPodmanTests, rootlessErr)
	}
	return rootlessEng
}

// podmanAt checks that the service on socket is a Podman.
func podmanAt(socket string) (*engine, error) {
	c := container.NewClient(socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Engine(ctx)
	if err != nil {
		return nil, err
	}
	if info.Name != container.EnginePodman {
		return nil, fmt.Errorf("the engine on %s is %s, not Podman", socket, info.Name)
	}
	return &engine{url: "unix://" + socket}, nil
}

// socket is the engine's socket path.
func (e *engine) socket() string { return strings.TrimPrefix(e.url, "unix://") }

// testImage builds (or finds) the test image in this engine: busybox and
// the probe, and no /etc/resolv.conf.
func (e *engine) testImage(t *testing.T) string {
	t.Helper()
	e.imageOnce.Do(func() {
		p, err := dockertest.Probe()
		if err != nil {
			e.imageErr = err
			return
		}
		e.image, e.imageErr = BuildImage(e.url, dockertest.ImageSpec{Binaries: []string{p}})
	})
	if e.imageErr != nil {
		t.Fatalf("build the test image: %v", e.imageErr)
	}
	return e.image
}

// runTimeout runs a host command with a timeout and captures its output.
func runTimeout(timeout time.Duration, name string, args ...string) harness.Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := harness.Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code, r.Err = -1, fmt.Errorf("%s %s timed out after %v", name, strings.Join(args, " "), timeout)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		r.Code, r.Err = -1, err
	}
	return r
}

func (e *engine) podman(args ...string) harness.Result {
	return runTimeout(2*time.Minute, "podman", append([]string{"--url", e.url}, args...)...)
}

func (e *engine) must(t *testing.T, args ...string) string {
	t.Helper()
	r := e.podman(args...)
	if !r.OK() {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// uniq returns prefix-<random>, a container name no other run uses.
func uniq(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// start runs a detached container named name that sleeps, with extra
// podman run options, and removes it (and any holder of that agent) when t
// ends.
func (e *engine) start(t *testing.T, name string, opts ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name}, opts...)
	args = append(args, e.testImage(t), "sleep", "3600")
	e.must(t, args...)
	t.Cleanup(func() { e.remove(name) })
}

// remove removes the named containers and every container clawnet labelled
// as belonging to those agents.
func (e *engine) remove(names ...string) {
	for _, n := range names {
		e.podman("rm", "-f", "-t", "0", n)
		ids := e.podman("ps", "-aq", "--filter", "label=io.clawnet.agent="+n)
		for _, id := range strings.Fields(ids.Stdout) {
			e.podman("rm", "-f", "-t", "0", id)
		}
	}
}

// inside runs a command in a running container.
func (e *engine) inside(name string, args ...string) harness.Result {
	return runTimeout(30*time.Second, "podman", append([]string{"--url", e.url, "exec", name}, args...)...)
}

// pidOf returns the host PID of a running container's init process.
func (e *engine) pidOf(t *testing.T, name string) string {
	t.Helper()
	return e.must(t, "inspect", "--format", "{{.State.Pid}}", name)
}

// noneLeft waits until no container labelled for agent name exists (a
// removal may still be under way when the CLI returns).
func (e *engine) noneLeft(t *testing.T, name string) {
	t.Helper()
	var left string
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		left = strings.TrimSpace(e.podman("ps", "-a", "--filter", "label=io.clawnet.agent="+name, "--format", "{{.Names}} {{.Status}}").Stdout)
		return left == ""
	}) {
		t.Errorf("containers left for agent %s: %s", name, left)
	}
}

// canaryPolicy allows the canary's name on the echo and HTTP ports, and its
// primary address on the echo port by CIDR; nothing else. other.canary.test
// and its address stay denied. (test/docker's.)
func canaryPolicy(in *harness.Internet) string {
	return fmt.Sprintf(`version: v1
name: canary
egress:
  - domains: [canary.test]
    ports: [80, 7]
  - cidrs: [%s/32]
    ports: [7]
`, in.Server4)
}

// world is a test internet, a clawnetd serving it, and the engine the
// tests drive.
type world struct {
	in *harness.Internet
	d  *harness.Daemon
	e  *engine
}

// newWorld starts a clawnetd following e: it reads DOCKER_HOST, set here
// for the daemon (and for the clawnet CLI, whose run uses it too).
func newWorld(t *testing.T, e *engine) world {
	t.Helper()
	t.Setenv("DOCKER_HOST", e.url)
	in := harness.NewInternet(t)
	return world{in: in, d: startDaemon(t, in), e: e}
}

func startDaemon(t *testing.T, in *harness.Internet) *harness.Daemon {
	t.Helper()
	return harness.StartDaemon(t, harness.DaemonConfig{
		Policies:      map[string]string{"canary": canaryPolicy(in)},
		DefaultPolicy: "canary",
		Internet:      in,
	})
}

// waitAgent polls clawnet ls until the agent is present (or absent).
func (w world) waitAgent(t *testing.T, name string, present bool, timeout time.Duration) harness.Agent {
	t.Helper()
	var a harness.Agent
	var ok bool
	harness.Poll(timeout, 50*time.Millisecond, func() bool {
		a, ok = w.d.Lookup(t, name)
		return ok == present
	})
	if ok != present {
		t.Fatalf("agent %s present=%v after %v; want %v; clawnet ls: %+v", name, ok, timeout, present, w.d.List(t))
	}
	return a
}

// linesOf splits output into trimmed non-empty lines.
func linesOf(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// echoWorks sends a unique payload from inside the container to the canary's
// echo port by IP (allowed by CIDR rule) and checks that it came back and
// that the canary received it.
func (w world) echoWorks(t *testing.T, name string) {
	t.Helper()
	payload := uniq("echo")
	addr := netip.AddrPortFrom(w.in.Server4, 7).String()
	r := w.e.inside(name, "probe", "tcp", addr, payload)
	if !r.OK() || r.Stdout != payload {
		t.Errorf("echo to %s inside %s: %v; want %q back", addr, name, r, payload)
		return
	}
	w.sawEcho(t, payload)
}

// sawEcho waits for the canary's record of an echo of payload.
func (w world) sawEcho(t *testing.T, payload string) {
	t.Helper()
	w.in.WaitFor(t, 5*time.Second, "the echo of "+payload, func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceEcho && e.Event == canarylog.EventClose && e.SHA256 == canarylog.Digest([]byte(payload))
	})
}

// elapsedRe reads the probe's failure line.
var elapsedRe = regexp.MustCompile(`error after (\d+)ms`)

// failsFast checks that a probe failed, and within limit.
func failsFast(t *testing.T, r harness.Result, limit time.Duration, what string) {
	t.Helper()
	if r.OK() {
		t.Errorf("%s succeeded; want it denied: %v", what, r)
		return
	}
	m := elapsedRe.FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Errorf("%s: no probe failure line: %v", what, r)
		return
	}
	ms, _ := strconv.Atoi(m[1])
	if time.Duration(ms)*time.Millisecond > limit {
		t.Errorf("%s failed after %dms; want a deny within %v (a reset, not a timeout): %s", what, ms, limit, r.Stdout)
	}
}

// checkAgentWorks is what every attached container must show from inside
// (test/docker's checks): only lo and the TUN; an allowed destination
// reached by IP (a CIDR rule) and by name (the gateway's DNS), the canary
// seeing both; a denied name and a denied address failing fast with
// nothing arriving.
func checkAgentWorks(t *testing.T, w world, name string) {
	t.Helper()
	t.Run("only lo and the TUN", func(t *testing.T) {
		r := w.e.inside(name, "probe", "ifaces")
		if !r.OK() {
			t.Fatalf("probe ifaces: %v", r)
		}
		got := linesOf(r.Stdout)
		slices.Sort(got)
		if !slices.Equal(got, []string{"clawnet0", "lo"}) {
			t.Errorf("interfaces inside %s = %q; want exactly lo and clawnet0", name, got)
		}
	})
	t.Run("allowed by IP", func(t *testing.T) { w.echoWorks(t, name) })
	t.Run("by name", func(t *testing.T) {
		r := w.e.inside(name, "probe", "lookup", "canary.test")
		if !r.OK() || !strings.Contains(r.Stdout, w.in.Server4.String()) {
			t.Fatalf("lookup canary.test inside %s: %v; want %s", name, r, w.in.Server4)
		}
		token := "/" + uniq("by-name")
		r = w.e.inside(name, "probe", "http", "http://canary.test"+token)
		if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
			t.Errorf("GET http://canary.test%s inside %s: %v; want 200", token, name, r)
		}
		w.in.WaitFor(t, 5*time.Second, "the allowed request "+token, func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == token && e.Host == "canary.test"
		})
		// other.canary.test is in the zone but not in the policy.
		failsFast(t, w.e.inside(name, "probe", "tcp", "other.canary.test:7"), 2*time.Second, "tcp other.canary.test:7")
		if w.in.Saw(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceDNS && e.Qname == "other.canary.test."
		}) {
			t.Error("the denied name other.canary.test was sent upstream")
		}
	})
	t.Run("denied fails fast", func(t *testing.T) {
		other := w.in.Addr4(3)
		failsFast(t, w.e.inside(name, "probe", "tcp", netip.AddrPortFrom(other, 7).String()), 2*time.Second, "tcp "+other.String()+":7")
		w.in.NeverSaw(t, 300*time.Millisecond, "traffic to the denied "+other.String(), harness.To(other, 0))
	})
}

// raceHolder makes `clawnet run` use the static probe as its holder when
// the harness builds clawnet with -race (such a binary cannot be static).
func raceHolder(t *testing.T) {
	t.Helper()
	if os.Getenv(harness.EnvRace) != "1" {
		return
	}
	p, err := dockertest.Probe()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(container.EnvHolderBinary, p)
}
