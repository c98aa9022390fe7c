// Package enginetest is what the container-engine tiers (test/docker and
// test/podman) share: an Engine driven through its CLI (the test image
// built locally in it, containers started, entered and removed), and a
// World of a test internet and a clawnetd following that engine, with the
// checks every attached container must pass. No registry is ever involved.
package enginetest

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// Engine is one container engine, driven with its own CLI.
type Engine struct {
	// URL is the engine's API (unix:///...) that the CLI is pointed at
	// and DOCKER_HOST names for clawnetd; empty for Docker's default.
	URL string

	cli   string   // docker or podman
	flags []string // before every subcommand
	rm    []string // force-removes a container without a grace period
	// startedAt is the inspect template of a container's start time in
	// RFC 3339.
	startedAt string
	build     func(ImageSpec) (string, error)

	imageOnce sync.Once
	image     string
	imageErr  error
}

var (
	dockerOnce sync.Once
	docker     *Engine
)

// Docker is the Docker engine DOCKER_HOST (or the default) names.
func Docker() *Engine {
	dockerOnce.Do(func() {
		docker = &Engine{cli: "docker", rm: []string{"rm", "-f"}, startedAt: "{{.State.StartedAt}}", build: buildDockerImage}
	})
	return docker
}

// Podman is the Podman API service at url (unix:///...), driven with the
// podman CLI as its remote client.
func Podman(url string) *Engine {
	return &Engine{
		URL: url, cli: "podman", flags: []string{"--url", url}, rm: []string{"rm", "-f", "-t", "0"},
		startedAt: `{{.State.StartedAt.Format "2006-01-02T15:04:05.999999999Z07:00"}}`,
		build:     func(spec ImageSpec) (string, error) { return buildPodmanImage(url, spec) },
	}
}

func (e *Engine) run(timeout time.Duration, args ...string) harness.Result {
	return harness.RunCmd(exec.Command(e.cli, append(append([]string(nil), e.flags...), args...)...), timeout)
}

// Run runs the engine's CLI with args.
func (e *Engine) Run(args ...string) harness.Result { return e.run(2*time.Minute, args...) }

// Must runs the engine's CLI with args, fails t unless it succeeds, and
// returns its trimmed output.
func (e *Engine) Must(t *testing.T, args ...string) string {
	t.Helper()
	r := e.Run(args...)
	if !r.OK() {
		t.Fatalf("%s %s: %v", e.cli, strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// TestImage builds (or finds) the test image in this engine: busybox and
// the probe, and no /etc/resolv.conf.
func (e *Engine) TestImage(t *testing.T) string {
	t.Helper()
	e.imageOnce.Do(func() {
		p, err := Probe()
		if err != nil {
			e.imageErr = err
			return
		}
		e.image, e.imageErr = e.build(ImageSpec{Binaries: []string{p}})
	})
	if e.imageErr != nil {
		t.Fatalf("build the test image: %v", e.imageErr)
	}
	return e.image
}

// Uniq returns prefix-<random>, a container name no other run uses.
func Uniq(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Start runs a detached container named name that sleeps, with extra run
// options, and removes it (and any holder of that agent) when t ends.
func (e *Engine) Start(t *testing.T, name string, opts ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name}, opts...)
	args = append(args, e.TestImage(t), "sleep", "3600")
	e.Must(t, args...)
	t.Cleanup(func() { e.Remove(name) })
}

// Remove removes the named containers and every container clawnet
// labelled as belonging to those agents.
func (e *Engine) Remove(names ...string) {
	for _, n := range names {
		e.Run(e.rmArgs(n)...)
		ids := e.Run("ps", "-aq", "--filter", "label=io.clawnet.agent="+n)
		for _, id := range strings.Fields(ids.Stdout) {
			e.Run(e.rmArgs(id)...)
		}
	}
}

// rmArgs are the CLI arguments that force-remove container name.
func (e *Engine) rmArgs(name string) []string {
	return append(append([]string(nil), e.rm...), name)
}

// Inside runs a command in a running container.
func (e *Engine) Inside(name string, args ...string) harness.Result {
	return e.run(30*time.Second, append([]string{"exec", name}, args...)...)
}

// PidOf returns the host PID of a running container's init process.
func (e *Engine) PidOf(t *testing.T, name string) string {
	t.Helper()
	return e.Must(t, "inspect", "--format", "{{.State.Pid}}", name)
}

// NoneLeft waits until no container labelled for agent name exists (a
// removal may still be under way when the CLI returns).
func (e *Engine) NoneLeft(t *testing.T, name string) {
	t.Helper()
	var left string
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		left = strings.TrimSpace(e.Run("ps", "-a", "--filter", "label=io.clawnet.agent="+name, "--format", "{{.Names}} {{.Status}}").Stdout)
		return left == ""
	}) {
		t.Errorf("containers left for agent %s: %s", name, left)
	}
}
