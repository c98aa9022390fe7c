package podmantest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// TestPodmanRunPublish: `clawnet run -p 127.0.0.1:PORT:8080` on Podman
// publishes the agent's HTTP server on the host's loopback through the
// gateway; the listener follows the agent's container through Podman's
// events (gone when it stops, back when it starts, gone when it is
// removed), and Podman never sees a port.
func TestPodmanRunPublish(t *testing.T) {
	e := requirePodman(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWebWorld(t, e)
	d := w.D
	name := enginetest.Uniq("cn-pub")
	t.Cleanup(func() { e.Remove(name) })

	port := harness.FreePortOn(t, "0.0.0.0")
	spec := fmt.Sprintf("127.0.0.1:%d:8080", port)
	token := enginetest.Uniq("served")
	path := "/" + token + ".txt"
	r := d.CLI("run", "--name", name, "--policy", "web", "-d", "-p", spec, "--", e.TestImage(t), "sh", "-c",
		"mkdir -p /www && echo "+token+" > /www"+path+" && exec httpd -f -p 8080 -h /www")
	if !r.OK() {
		t.Fatalf("clawnet run -p %s: %v", spec, r)
	}
	w.WaitAgent(t, name, true, 5*time.Second)
	if got := e.Must(t, "inspect", "--format", "{{json .HostConfig.PortBindings}}", name); got != "{}" && got != "null" {
		t.Errorf("the agent's container has port bindings %s; want none", got)
	}
	loop := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	enginetest.GetWorks(t, loop, path, token, "after clawnet run")

	e.Must(t, "stop", "-t", "0", name)
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool { return enginetest.DialRefused(loop) == nil }) {
		t.Errorf("%v 10s after podman stop; want the listener gone", enginetest.DialRefused(loop))
	}
	e.Must(t, "start", name)
	enginetest.GetWorks(t, loop, path, token, "after podman start")

	e.Must(t, "rm", "-f", "-t", "0", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	e.NoneLeft(t, name)
	if err := enginetest.DialRefused(loop); err != nil {
		t.Errorf("after podman rm: %v", err)
	}
}
