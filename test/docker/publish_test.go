package dockertest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// TestDockerRunPublish: `clawnet run -p 127.0.0.1:PORT:8080` publishes the
// agent's HTTP server on the host's loopback through the gateway, never
// through the engine: a GET from the host reaches the server (it serves a
// file only the container has, and logs the request), the port is closed on
// the host's other addresses, the listener goes when the container stops and
// comes back when it starts, comes back with a clawnetd that restarts, and
// goes for good when the container is removed.
func TestDockerRunPublish(t *testing.T) {
	requireDocker(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWebWorld(t, docker)
	in, d := w.In, w.D
	img := docker.TestImage(t)
	name := enginetest.Uniq("cn-pub")
	t.Cleanup(func() { docker.Remove(name) })

	port := harness.FreePortOn(t, "0.0.0.0")
	spec := fmt.Sprintf("127.0.0.1:%d:8080", port)
	token := enginetest.Uniq("served")
	path := "/" + token + ".txt"
	r := d.CLI("run", "--name", name, "--policy", "web", "-d", "-p", spec, "--", img, "sh", "-c",
		"mkdir -p /www && echo "+token+" > /www"+path+" && exec httpd -f -vv -p 8080 -h /www")
	if !r.OK() {
		t.Fatalf("clawnet run -p %s: %v", spec, r)
	}
	w.WaitAgent(t, name, true, 5*time.Second)
	if a := lsAgent(t, d, name); !slices.Contains(a.Published, spec+"/tcp") {
		t.Fatalf("clawnet ls: agent %s publishes %q after clawnet run -p %s; want %s/tcp (publishing is not built yet?)", name, a.Published, spec, spec)
	}

	// The engine saw no port: the holder keeps --network none, the agent
	// joins it, and neither has a port binding.
	holder := container.HolderName(name)
	for _, c := range []struct{ name, mode string }{{holder, "none"}, {name, "container:"}} {
		got := docker.Must(t, "inspect", "--format", "{{.HostConfig.NetworkMode}} {{json .HostConfig.PortBindings}}", c.name)
		mode, bindings, _ := strings.Cut(got, " ")
		if !strings.HasPrefix(mode, c.mode) || (bindings != "{}" && bindings != "null") {
			t.Errorf("docker inspect %s: network %s, port bindings %s; want %s and none", c.name, mode, bindings, c.mode)
		}
	}

	loop := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	var body string
	var err error
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		body, err = enginetest.HTTPGet("http://" + loop.String() + path)
		return err == nil
	}) {
		t.Fatalf("GET http://%s%s from the host: %v; want the agent's file", loop, path, err)
	}
	if body != token+"\n" {
		t.Errorf("GET http://%s%s = %q; want %q, the file only the container has", loop, path, body, token+"\n")
	}
	if !harness.Poll(5*time.Second, 100*time.Millisecond, func() bool {
		return strings.Contains(docker.Run("logs", name).Stderr, "url:"+path)
	}) {
		t.Errorf("the agent's httpd never logged url:%s; docker logs: %s", path, docker.Run("logs", name).Stderr)
	}

	// Published on loopback only: the same port on the host's other
	// addresses (another loopback address, the host's end of the test
	// internet's link) refuses.
	for _, a := range []netip.Addr{netip.MustParseAddr("127.0.0.2"), in.Host4} {
		if err := enginetest.DialRefused(netip.AddrPortFrom(a, port)); err != nil {
			t.Error(err)
		}
	}

	// Stopped: the holder stays (docker start needs it), its listener does
	// not. Started again: the port answers again.
	docker.Must(t, "stop", "-t", "0", name)
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool { return enginetest.DialRefused(loop) == nil }) {
		t.Errorf("%v 10s after docker stop %s; want the listener gone; clawnet ls: %+v", enginetest.DialRefused(loop), name, lsAgent(t, d, name))
	}
	if a := lsAgent(t, d, name); a.ContainerID == "" || len(a.Published) != 0 {
		t.Errorf("clawnet ls after docker stop: %+v; want the holder attached and nothing published", a)
	}
	docker.Must(t, "start", name)
	enginetest.GetWorks(t, loop, path, token, "after docker start "+name)
	if a := lsAgent(t, d, name); !slices.Contains(a.Published, spec+"/tcp") {
		t.Errorf("clawnet ls after docker start: agent publishes %q; want %s/tcp", a.Published, spec)
	}

	// A clawnetd that dies takes its listeners with it; the next one attaches
	// the running holder again and publishes the ports recorded on it.
	d.Kill()
	if err := enginetest.DialRefused(loop); err != nil {
		t.Errorf("with no daemon: %v", err)
	}
	d = harness.StartDaemon(t, enginetest.DaemonConfig(in, map[string]string{"web": enginetest.WebPolicy}))
	w.D = d
	w.WaitAgent(t, name, true, 10*time.Second)
	enginetest.GetWorks(t, loop, path, token, "after a clawnetd restart")

	// Removed: the holder goes with it, and the listener with the agent.
	docker.Must(t, "rm", "-f", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	docker.NoneLeft(t, name)
	if err := enginetest.DialRefused(loop); err != nil {
		t.Errorf("after docker rm: %v", err)
	}
}

// TestDockerAttachPublishFollowsRestarts: the ports of a plain container
// attached with `clawnet attach --publish` come back with every new run of
// the container (a new namespace the daemon attaches again), and go while
// it is stopped (its agent is detached) or removed.
func TestDockerAttachPublishFollowsRestarts(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWebWorld(t, docker)
	d := w.D
	name := enginetest.Uniq("cn-apub")
	token := enginetest.Uniq("served")
	path := "/" + token + ".txt"
	docker.Must(t, "run", "-d", "--network", "none", "--name", name, docker.TestImage(t), "sh", "-c",
		"mkdir -p /www && echo "+token+" > /www"+path+" && exec httpd -f -vv -p 8080 -h /www")
	t.Cleanup(func() { docker.Remove(name) })

	port := harness.FreePortOn(t, "0.0.0.0")
	spec := fmt.Sprintf("127.0.0.1:%d:8080", port)
	loop := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	d.MustCLI(t, "attach", "--policy", "web", "--publish", spec, name)
	enginetest.GetWorks(t, loop, path, token, "after clawnet attach --publish")

	docker.Must(t, "restart", "-t", "0", name)
	enginetest.GetWorks(t, loop, path, token, "after docker restart")
	if a := lsAgent(t, d, name); !slices.Contains(a.Published, spec+"/tcp") {
		t.Errorf("clawnet ls after docker restart: agent publishes %q; want %s/tcp", a.Published, spec)
	}

	docker.Must(t, "stop", "-t", "0", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	if err := enginetest.DialRefused(loop); err != nil {
		t.Errorf("after docker stop: %v", err)
	}
	docker.Must(t, "start", name)
	enginetest.GetWorks(t, loop, path, token, "after docker start")

	docker.Must(t, "rm", "-f", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	if err := enginetest.DialRefused(loop); err != nil {
		t.Errorf("after docker rm: %v", err)
	}
}

// lsAgent returns clawnet ls --json's entry for name, published ports
// included (zero if it is not attached).
func lsAgent(t *testing.T, d *harness.Daemon, name string) control.Agent {
	t.Helper()
	var as []control.Agent
	if err := json.Unmarshal([]byte(d.MustCLI(t, "ls", "--json")), &as); err != nil {
		t.Fatalf("clawnet ls --json: %v", err)
	}
	for _, a := range as {
		if a.Name == name {
			return a
		}
	}
	return control.Agent{Name: name}
}
