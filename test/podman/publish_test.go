package podmantest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// webPolicy lets the gateway host connect to the agent's port 8080, through
// a published port, and nothing else in or out.
const webPolicy = `version: v1
name: web
ingress:
  - ports: [8080]
    host: true
`

// TestPodmanRunPublish: `clawnet run -p 127.0.0.1:PORT:8080` on Podman
// publishes the agent's HTTP server on the host's loopback through the
// gateway; the listener follows the agent's container through Podman's
// events (gone when it stops, back when it starts, gone when it is
// removed), and Podman never sees a port.
func TestPodmanRunPublish(t *testing.T) {
	e := requirePodman(t)
	raceHolder(t)
	t.Setenv("DOCKER_HOST", e.url)
	in := harness.NewInternet(t)
	d := harness.StartDaemon(t, harness.DaemonConfig{
		Policies:      map[string]string{"canary": canaryPolicy(in), "web": webPolicy},
		DefaultPolicy: "canary",
		Internet:      in,
	})
	w := world{in: in, d: d, e: e}
	name := uniq("cn-pub")
	t.Cleanup(func() { e.remove(name) })

	port := freePort(t)
	spec := fmt.Sprintf("127.0.0.1:%d:8080", port)
	token := uniq("served")
	path := "/" + token + ".txt"
	r := d.CLI("run", "--name", name, "--policy", "web", "-d", "-p", spec, "--", e.testImage(t), "sh", "-c",
		"mkdir -p /www && echo "+token+" > /www"+path+" && exec httpd -f -p 8080 -h /www")
	if !r.OK() {
		t.Fatalf("clawnet run -p %s: %v", spec, r)
	}
	w.waitAgent(t, name, true, 5*time.Second)
	if got := e.must(t, "inspect", "--format", "{{json .HostConfig.PortBindings}}", name); got != "{}" && got != "null" {
		t.Errorf("the agent's container has port bindings %s; want none", got)
	}
	loop := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	getWorks(t, loop, path, token, "after clawnet run")

	e.must(t, "stop", "-t", "0", name)
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool { return dialRefused(loop) == nil }) {
		t.Errorf("%v 10s after podman stop; want the listener gone", dialRefused(loop))
	}
	e.must(t, "start", name)
	getWorks(t, loop, path, token, "after podman start")

	e.must(t, "rm", "-f", "-t", "0", name)
	w.waitAgent(t, name, false, 10*time.Second)
	e.noneLeft(t, name)
	if err := dialRefused(loop); err != nil {
		t.Errorf("after podman rm: %v", err)
	}
}

func getWorks(t *testing.T, loop netip.AddrPort, path, token, when string) {
	t.Helper()
	var body string
	var err error
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		body, err = httpGet("http://" + loop.String() + path)
		return err == nil
	}) {
		t.Fatalf("GET http://%s%s from the host %s: %v; want the agent's file", loop, path, when, err)
	}
	if body != token+"\n" {
		t.Errorf("GET http://%s%s %s = %q; want %q", loop, path, when, body, token+"\n")
	}
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %q", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func dialRefused(ap netip.AddrPort) error {
	c, err := net.DialTimeout("tcp", ap.String(), 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s accepts a connection; want it refused", ap)
	}
	if !harness.IsRefused(err) {
		return fmt.Errorf("dial %s: %v; want it refused", ap, err)
	}
	return nil
}
