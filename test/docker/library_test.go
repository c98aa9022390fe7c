package dockertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// These tests drive the container package itself against the real engine
// and the real clawnetd, attaching by PID through the real CLI: they cover
// the Watcher and Run whatever the state of the daemon's own engine wiring.

func engineClient(t *testing.T) *container.Client {
	t.Helper()
	c, err := container.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// cliAttacher is the daemon side of the Watcher's seam, played by the real
// CLI: clawnet attach --pid / clawnet detach.
type cliAttacher struct {
	d     *harness.Daemon
	mu    sync.Mutex
	names map[string]string // container ID → agent
	log   []string
}

func (a *cliAttacher) AttachContainer(_ context.Context, at container.Attachment) error {
	args := []string{"attach", "--pid", strconv.Itoa(at.Pid), "--name", at.Agent}
	if at.Policy != "" {
		args = append(args, "--policy", at.Policy)
	}
	r := a.d.CLI(args...)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = append(a.log, "attach "+at.Agent)
	if !r.OK() {
		return fmt.Errorf("clawnet attach: %s", strings.TrimSpace(r.Stderr))
	}
	a.names[at.ContainerID] = at.Agent
	return nil
}

func (a *cliAttacher) DetachContainer(_ context.Context, id string) error {
	a.mu.Lock()
	name, ok := a.names[id]
	delete(a.names, id)
	a.log = append(a.log, "detach "+name)
	a.mu.Unlock()
	if !ok {
		return nil
	}
	if r := a.d.CLI("detach", name); !r.OK() {
		return fmt.Errorf("clawnet detach: %s", strings.TrimSpace(r.Stderr))
	}
	return nil
}

func (a *cliAttacher) PublishPorts(_ context.Context, agent string, specs []string) error {
	return a.ports("publish", agent, specs)
}

func (a *cliAttacher) UnpublishPorts(_ context.Context, agent string, specs []string) error {
	return a.ports("unpublish", agent, specs)
}

// ports runs clawnet publish or unpublish.
func (a *cliAttacher) ports(verb, agent string, specs []string) error {
	r := a.d.CLI(append([]string{verb, agent}, specs...)...)
	a.mu.Lock()
	a.log = append(a.log, verb+" "+agent)
	a.mu.Unlock()
	if !r.OK() {
		return fmt.Errorf("clawnet %s: %s", verb, strings.TrimSpace(r.Stderr))
	}
	return nil
}

func (a *cliAttacher) calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.log)
}

// TestDockerClientInspect checks the thin client against the real engine's
// answers: the fields clawnet relies on and its refusals.
func TestDockerClientInspect(t *testing.T) {
	requireDocker(t)
	c := engineClient(t)
	ctx := context.Background()
	none, bridged := enginetest.Uniq("cn-insp-none"), enginetest.Uniq("cn-insp-bridge")
	docker.Start(t, none, "--network", "none")
	docker.Start(t, bridged)

	info, err := c.Inspect(ctx, none)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != none || !info.Running || info.Pid <= 0 || info.NetworkMode != "none" || len(info.ID) != 64 ||
		info.StartedAt == "" || info.ResolvConfPath == "" {
		t.Errorf("Inspect(%s) = %+v", none, info)
	}
	if err := container.CheckAttachable(info); err != nil {
		t.Errorf("CheckAttachable(none) = %v", err)
	}
	info, err = c.Inspect(ctx, bridged)
	if err != nil {
		t.Fatal(err)
	}
	want := `container "` + bridged + `" uses network "bridge": run it with --network none (or use clawnet run)`
	if err := container.CheckAttachable(info); err == nil || err.Error() != want {
		t.Errorf("CheckAttachable(bridge) = %v; want %q", err, want)
	}
	if _, err := c.Inspect(ctx, "cn-no-such"); err == nil || err.Error() != `container "cn-no-such" not found` {
		t.Errorf("Inspect(cn-no-such) = %v", err)
	}
}

// TestDockerWatcher follows a real container through restart, stop, start
// and removal with the real daemon behind the Attacher seam.
func TestDockerWatcher(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	at := &cliAttacher{d: w.D, names: map[string]string{}}
	wt := container.NewWatcher(container.WatcherConfig{Client: engineClient(t), Attacher: at})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if !harness.Poll(10*time.Second, 20*time.Millisecond, wt.Connected) {
		t.Fatal("watcher never connected to the engine's events")
	}

	name := enginetest.Uniq("cn-watch")
	docker.Start(t, name, "--network", "none", "--dns", "127.0.0.11")
	if _, err := wt.Attach(ctx, name, "", "canary", nil); err != nil {
		t.Fatalf("Attach(%s) = %v", name, err)
	}
	w.WaitAgent(t, name, true, 5*time.Second)
	w.CheckAgentWorks(t, name) // also proves the loopback resolver was replaced

	// A restart is a new init process in a new namespace. (Namespace inode
	// numbers are recycled as soon as the old one is freed, so the PID is
	// what tells the runs apart.)
	pid1 := docker.PidOf(t, name)
	docker.Must(t, "restart", "-t", "0", name)
	if docker.PidOf(t, name) == pid1 {
		t.Fatal("restart kept the init process")
	}
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		return slices.Contains(enginetest.LinesOf(docker.Inside(name, "probe", "ifaces").Stdout), "clawnet0")
	}) {
		t.Fatalf("not re-attached 10s after restart; calls %v", at.calls())
	}
	w.EchoWorks(t, name)

	docker.Must(t, "stop", "-t", "0", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	docker.Must(t, "start", name)
	w.WaitAgent(t, name, true, 10*time.Second)

	docker.Must(t, "rm", "-f", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	if !harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { return len(wt.Tracked()) == 0 }) {
		t.Errorf("still following %+v after removal", wt.Tracked())
	}
	if st := w.D.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("daemon status after removal = %+v; want nothing left", st)
	}
	t.Logf("attacher calls: %v", at.calls())
}

// TestDockerRunLibrary runs container.Run against the real engine and the
// real daemon, attaching the holder by PID: the agent's very first
// instruction reaches the canary by name.
func TestDockerRunLibrary(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	img := docker.TestImage(t)
	probe, err := enginetest.Probe()
	if err != nil {
		t.Fatal(err)
	}
	c := engineClient(t)
	name := enginetest.Uniq("cn-runlib")
	t.Cleanup(func() { docker.Remove(name) })
	attach := func(ctx context.Context, r container.AttachRequest) (container.AttachResult, error) {
		info, err := c.Inspect(ctx, r.Container)
		if err != nil {
			return container.AttachResult{}, err
		}
		res := w.D.CLI("attach", "--pid", strconv.Itoa(info.Pid), "--name", r.Name, "--policy", r.Policy)
		if !res.OK() {
			return container.AttachResult{}, errors.New(strings.TrimSpace(res.Stderr))
		}
		// What the daemon's Watcher does for a container attach.
		_, err = container.FixResolvConf(info, container.DefaultGatewayDNS)
		return container.AttachResult{}, err
	}
	run := func(t *testing.T, name string, cmd ...string) string {
		t.Helper()
		t.Cleanup(func() { docker.Remove(name) })
		var out, errb bytes.Buffer
		code, err := container.Run(context.Background(), container.RunOptions{
			Name: name, Policy: "canary", Image: img, DockerArgs: []string{"--rm", "--dns", "127.0.0.11"},
			Cmd: cmd, Stdout: &out, Stderr: &errb, Client: c, HolderBinary: probe,
		}, attach)
		if err != nil || code != 0 {
			t.Fatalf("Run = %d, %v; stdout %q stderr %q", code, err, out.String(), errb.String())
		}
		// --rm: the agent's container is gone, so Run removed the holder
		// (or found a daemon's Watcher already removing it).
		docker.NoneLeft(t, name)
		// The holder's removal took the namespace and TUN away; the
		// daemon's own Watcher would detach it, here the test does.
		w.D.CLI("detach", name)
		w.WaitAgent(t, name, false, 5*time.Second)
		return out.String()
	}

	// The container's first and only instruction is the connection.
	payload := enginetest.Uniq("first")
	if out := run(t, name, "probe", "tcp", netip.AddrPortFrom(w.In.Server4, 7).String(), payload); out != payload {
		t.Errorf("first instruction echoed %q; want %q", out, payload)
	}
	w.SawEcho(t, payload)

	t.Run("by name", func(t *testing.T) {
		token := "/first-" + name
		if out := run(t, name+"-dns", "probe", "http", "http://canary.test"+token); !strings.HasPrefix(out, "200 ") {
			t.Errorf("first instruction by name printed %q; want 200", out)
		}
		w.In.WaitFor(t, 5*time.Second, "the first instruction's request", func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Path == token
		})
	})
}
