package dockertest

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvDockerTests must be 1 for these tests to run (make docker-test sets it).
const EnvDockerTests = "CLAWNET_DOCKER_TESTS"

// requireDocker skips t unless Docker tests were asked for, and fails it if
// they were asked for but no engine answers: a silent skip there would hide
// a broken CI setup.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvDockerTests) != "1" {
		t.Skipf("Docker tests run only with %s=1 (make docker-test)", EnvDockerTests)
	}
	harness.RequireRoot(t)
	if r := runTimeout(30*time.Second, "docker", "info", "--format", "{{.ServerVersion}}"); !r.OK() {
		t.Fatalf("%s=1 but no Docker engine answers (run scripts/docker-setup.sh): %v", EnvDockerTests, r)
	}
}

var (
	imageOnce sync.Once
	imageRef  string
	imageErr  error
)

// testImage builds (or finds) the test image: busybox and the probe.
func testImage(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		p, err := Probe()
		if err != nil {
			imageErr = err
			return
		}
		imageRef, imageErr = BuildImage(ImageSpec{Binaries: []string{p}})
	})
	if imageErr != nil {
		t.Fatalf("build the test image: %v", imageErr)
	}
	return imageRef
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

func docker(args ...string) harness.Result { return runTimeout(2*time.Minute, "docker", args...) }

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	r := docker(args...)
	if !r.OK() {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// uniq returns prefix-<random>, a container name no other run uses.
func uniq(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// startContainer runs a detached container named name that sleeps, with
// extra docker run options, and removes it (and any holder of that agent)
// when t ends.
func startContainer(t *testing.T, name string, opts ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name}, opts...)
	args = append(args, testImage(t), "sleep", "3600")
	mustDocker(t, args...)
	t.Cleanup(func() { removeContainers(t, name) })
}

// removeContainers removes the named containers and every container clawnet
// labelled as belonging to those agents.
func removeContainers(t *testing.T, names ...string) {
	for _, n := range names {
		docker("rm", "-f", n)
		ids := docker("ps", "-aq", "--filter", "label=io.clawnet.agent="+n)
		for _, id := range strings.Fields(ids.Stdout) {
			docker("rm", "-f", id)
		}
	}
}

// inside runs a command in a running container.
func inside(name string, args ...string) harness.Result {
	return runTimeout(30*time.Second, "docker", append([]string{"exec", name}, args...)...)
}

// pidOf returns the host PID of a running container's init process.
func pidOf(t *testing.T, name string) string {
	t.Helper()
	return mustDocker(t, "inspect", "--format", "{{.State.Pid}}", name)
}

// canaryPolicy allows the canary's name on the echo and HTTP ports, and its
// primary address on the echo port by CIDR (so the data path can be checked
// by IP independently of the gateway's DNS); nothing else. other.canary.test
// and its address stay denied.
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

// world is a test internet and a clawnetd serving it.
type world struct {
	in *harness.Internet
	d  *harness.Daemon
}

func newWorld(t *testing.T) world {
	t.Helper()
	in := harness.NewInternet(t)
	return world{in: in, d: startDaemon(t, in)}
}

// startDaemon starts a clawnetd serving in with the canary policy.
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
	r := inside(name, "probe", "tcp", addr, payload)
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

// noneLeft waits until no container labelled for agent name exists (a
// removal may still be under way when the CLI returns).
func noneLeft(t *testing.T, name string) {
	t.Helper()
	var left string
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		left = strings.TrimSpace(docker("ps", "-a", "--filter", "label=io.clawnet.agent="+name, "--format", "{{.Names}} {{.Status}}").Stdout)
		return left == ""
	}) {
		t.Errorf("containers left for agent %s: %s", name, left)
	}
}

// raceHolder makes `clawnet run` use the static probe as its holder when
// the harness builds clawnet with -race (such a binary cannot be static).
// Otherwise the real `clawnet pause` is what runs in the holder.
func raceHolder(t *testing.T) {
	t.Helper()
	if os.Getenv(harness.EnvRace) != "1" {
		return
	}
	p, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(container.EnvHolderBinary, p)
}
