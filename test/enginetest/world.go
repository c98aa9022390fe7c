package enginetest

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// CanaryPolicy allows the canary's name on the echo and HTTP ports, and its
// primary address on the echo port by CIDR (so the data path can be checked
// by IP independently of the gateway's DNS); nothing else. other.canary.test
// and its address stay denied.
func CanaryPolicy(in *harness.Internet) string {
	return fmt.Sprintf(`version: v1
name: canary
egress:
  - domains: [canary.test]
    ports: [80, 7]
  - cidrs: [%s/32]
    ports: [7]
`, in.Server4)
}

// WebPolicy lets the gateway host connect to the agent's port 8080, through
// a published port, and nothing else in or out.
const WebPolicy = `version: v1
name: web
ingress:
  - ports: [8080]
    host: true
`

// World is a test internet, a clawnetd serving it, and the engine the
// tests drive.
type World struct {
	In *harness.Internet
	D  *harness.Daemon
	E  *Engine
}

// NewWorld starts a clawnetd following e with the canary policy. An engine
// with a URL is named to the daemon (and to the clawnet CLI, whose run
// uses it too) by DOCKER_HOST, set for the rest of t.
func NewWorld(t *testing.T, e *Engine) World {
	t.Helper()
	return newWorld(t, e, nil)
}

// NewWebWorld is NewWorld with WebPolicy, as web, beside the canary policy.
func NewWebWorld(t *testing.T, e *Engine) World {
	t.Helper()
	return newWorld(t, e, map[string]string{"web": WebPolicy})
}

func newWorld(t *testing.T, e *Engine, extra map[string]string) World {
	t.Helper()
	if e.URL != "" {
		t.Setenv("DOCKER_HOST", e.URL)
	}
	in := harness.NewInternet(t)
	return World{In: in, D: harness.StartDaemon(t, DaemonConfig(in, extra)), E: e}
}

// DaemonConfig serves in with the canary policy as the default and the
// extra policies (name to YAML) beside it.
func DaemonConfig(in *harness.Internet, extra map[string]string) harness.DaemonConfig {
	policies := map[string]string{"canary": CanaryPolicy(in)}
	maps.Copy(policies, extra)
	return harness.DaemonConfig{Policies: policies, DefaultPolicy: "canary", Internet: in}
}

// StartDaemon starts a clawnetd serving in with the canary policy.
func StartDaemon(t *testing.T, in *harness.Internet) *harness.Daemon {
	t.Helper()
	return harness.StartDaemon(t, DaemonConfig(in, nil))
}

// WaitAgent polls clawnet ls until the agent is present (or absent).
func (w World) WaitAgent(t *testing.T, name string, present bool, timeout time.Duration) harness.Agent {
	t.Helper()
	var a harness.Agent
	var ok bool
	harness.Poll(timeout, 50*time.Millisecond, func() bool {
		a, ok = w.D.Lookup(t, name)
		return ok == present
	})
	if ok != present {
		t.Fatalf("agent %s present=%v after %v; want %v; clawnet ls: %+v", name, ok, timeout, present, w.D.List(t))
	}
	return a
}

// LinesOf splits output into trimmed non-empty lines.
func LinesOf(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// EchoWorks sends a unique payload from inside the container to the
// canary's echo port by IP (allowed by CIDR rule) and checks that it came
// back and that the canary received it.
func (w World) EchoWorks(t *testing.T, name string) {
	t.Helper()
	payload := Uniq("echo")
	addr := netip.AddrPortFrom(w.In.Server4, 7).String()
	r := w.E.Inside(name, "probe", "tcp", addr, payload)
	if !r.OK() || r.Stdout != payload {
		t.Errorf("echo to %s inside %s: %v; want %q back", addr, name, r, payload)
		return
	}
	w.SawEcho(t, payload)
}

// SawEcho waits for the canary's record of an echo of payload.
func (w World) SawEcho(t *testing.T, payload string) {
	t.Helper()
	w.In.WaitFor(t, 5*time.Second, "the echo of "+payload, func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceEcho && e.Event == canarylog.EventClose && e.SHA256 == canarylog.Digest([]byte(payload))
	})
}

// elapsedRe reads the probe's failure line.
var elapsedRe = regexp.MustCompile(`error after (\d+)ms`)

// FailsFast checks that a probe failed, and within limit.
func FailsFast(t *testing.T, r harness.Result, limit time.Duration, what string) {
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

// CheckAgentWorks is what every attached container must show from inside:
// only lo and the TUN; an allowed destination reached by IP (a CIDR rule)
// and by name (the gateway's DNS), the canary seeing both; a denied name
// and a denied address failing fast with nothing arriving.
func (w World) CheckAgentWorks(t *testing.T, name string) {
	t.Helper()
	t.Run("only lo and the TUN", func(t *testing.T) {
		r := w.E.Inside(name, "probe", "ifaces")
		if !r.OK() {
			t.Fatalf("probe ifaces: %v", r)
		}
		got := LinesOf(r.Stdout)
		slices.Sort(got)
		if !slices.Equal(got, []string{"clawnet0", "lo"}) {
			t.Errorf("interfaces inside %s = %q; want exactly lo and clawnet0", name, got)
		}
	})
	t.Run("allowed by IP", func(t *testing.T) { w.EchoWorks(t, name) })
	t.Run("by name", func(t *testing.T) {
		r := w.E.Inside(name, "probe", "lookup", "canary.test")
		if !r.OK() || !strings.Contains(r.Stdout, w.In.Server4.String()) {
			t.Fatalf("lookup canary.test inside %s: %v; want %s", name, r, w.In.Server4)
		}
		token := "/" + Uniq("by-name")
		r = w.E.Inside(name, "probe", "http", "http://canary.test"+token)
		if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
			t.Errorf("GET http://canary.test%s inside %s: %v; want 200", token, name, r)
		}
		w.In.WaitFor(t, 5*time.Second, "the allowed request "+token, func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == token && e.Host == "canary.test"
		})
		// other.canary.test is in the zone but not in the policy.
		FailsFast(t, w.E.Inside(name, "probe", "tcp", "other.canary.test:7"), 2*time.Second, "tcp other.canary.test:7")
		if w.In.Saw(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceDNS && e.Qname == "other.canary.test."
		}) {
			t.Error("the denied name other.canary.test was sent upstream")
		}
	})
	t.Run("denied fails fast", func(t *testing.T) {
		// other.canary.test's address is the canary's too, but no rule
		// covers it and no allowed name resolved to it.
		other := w.In.Addr4(3)
		FailsFast(t, w.E.Inside(name, "probe", "tcp", netip.AddrPortFrom(other, 7).String()), 2*time.Second, "tcp "+other.String()+":7")
		w.In.NeverSaw(t, 300*time.Millisecond, "traffic to the denied "+other.String(), harness.To(other, 0))
		if w.In.Saw(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceDNS && e.Qname == "other.canary.test."
		}) {
			t.Error("the denied name other.canary.test was sent upstream")
		}
	})
}

// CheckRun is what `clawnet run` must show on every engine: the gateway on
// the agent's very first instruction, by IP and by name; nothing left
// behind with --rm; the exit status passed through; a network option
// refused with nothing created.
func (w World) CheckRun(t *testing.T) {
	t.Helper()
	img := w.E.TestImage(t)
	name := Uniq("cn-run")
	t.Cleanup(func() { w.E.Remove(name, name+"-n", name+"-x", name+"-dns") })

	// The container's first and only instruction is the connection.
	payload := Uniq("first")
	r := w.D.CLI("run", "--name", name, "--policy", "canary", "--rm", "--",
		img, "probe", "tcp", netip.AddrPortFrom(w.In.Server4, 7).String(), payload)
	if !r.OK() || r.Stdout != payload {
		t.Fatalf("clawnet run ... probe tcp (first instruction): %v", r)
	}
	w.SawEcho(t, payload)
	w.WaitAgent(t, name, false, 10*time.Second)
	w.E.NoneLeft(t, name)

	t.Run("by name", func(t *testing.T) {
		token := "/first-" + name
		r := w.D.CLI("run", "--name", name+"-dns", "--policy", "canary", "--rm", "--", img, "probe", "http", "http://canary.test"+token)
		if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
			t.Fatalf("clawnet run ... probe http (first instruction, by name): %v", r)
		}
		w.In.WaitFor(t, 5*time.Second, "the first instruction's request", func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Path == token
		})
	})
	t.Run("exit status", func(t *testing.T) {
		r := w.D.CLI("run", "--name", name+"-x", "--rm", "--", img, "sh", "-c", "exit 7")
		if r.Code != 7 {
			t.Errorf("clawnet run ... exit 7 = %v; want exit 7", r)
		}
	})
	t.Run("network option refused", func(t *testing.T) {
		r := w.D.CLI("run", "--name", name+"-n", "--network", "host", "--", img, "true")
		if r.OK() || !strings.Contains(r.Stderr, "--network") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Errorf("clawnet run --network host = %v; want a one-line refusal naming --network", r)
		}
		if left := w.E.Run("ps", "-aq", "--filter", "label=io.clawnet.agent="+name+"-n"); strings.TrimSpace(left.Stdout) != "" {
			t.Errorf("containers created for a refused run: %q", left.Stdout)
		}
	})
}

// CheckLifecycle: the daemon follows the engine. A restarted container
// (new PID, new namespace) is attached again with the same name and policy;
// a stopped one is detached, and attached again when started; a removed one
// is detached for good. Nothing is left behind.
func (w World) CheckLifecycle(t *testing.T) {
	t.Helper()
	name := Uniq("cn-life")
	w.E.Start(t, name, "--network", "none")
	w.D.MustCLI(t, "attach", "--name", "life", "--policy", "canary", name)
	w.WaitAgent(t, "life", true, 5*time.Second)
	// A restart is a new init process in a new namespace. (Namespace inode
	// numbers are recycled as soon as the old one is freed, so the PID is
	// what tells the runs apart.)
	pid1 := w.E.PidOf(t, name)
	w.E.Must(t, "restart", "-t", "0", name)
	pid2 := w.E.PidOf(t, name)
	if pid2 == pid1 {
		t.Fatal("restart kept the init process")
	}
	// Watch the new namespace from the host, and measure the window in
	// which the restarted container ran with no network (only lo).
	if !harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
		return harness.RunCmd(exec.Command("nsenter", "-t", pid2, "-n", "ip", "link", "show", "clawnet0"), 5*time.Second).OK()
	}) {
		t.Fatalf("no clawnet0 inside %s 10s after restart; clawnet ls: %+v", name, w.D.List(t))
	}
	seen := time.Now()
	if started, err := time.Parse(time.RFC3339Nano, w.E.Must(t, "inspect", "--format", w.E.startedAt, name)); err == nil {
		t.Logf("restarted container had no network for at most %v (start to TUN seen)", seen.Sub(started).Round(time.Millisecond))
	}
	a := w.WaitAgent(t, "life", true, 5*time.Second)
	if a.Policy != "canary" {
		t.Errorf("re-attached agent = %+v; want the same policy", a)
	}
	w.CheckAgentWorks(t, name)

	w.E.Must(t, "stop", "-t", "0", name)
	w.WaitAgent(t, "life", false, 10*time.Second)
	if st := w.D.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after stop = %+v; want no agent and no flow", st)
	}

	w.E.Must(t, "start", name)
	w.WaitAgent(t, "life", true, 10*time.Second)
	w.EchoWorks(t, name)

	w.E.Must(t, w.E.rmArgs(name)...)
	w.WaitAgent(t, "life", false, 10*time.Second)
	if st := w.D.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after rm = %+v; want no agent and no flow", st)
	}
}

// CheckRunDetached: a detached `clawnet run` agent keeps its holder while
// it exists, across restarts of its container and of clawnetd; removing the
// agent's container removes the holder and detaches the agent.
func (w World) CheckRunDetached(t *testing.T) {
	t.Helper()
	img := w.E.TestImage(t)
	name := Uniq("cn-rund")
	t.Cleanup(func() { w.E.Remove(name) })
	r := w.D.CLI("run", "--name", name, "--policy", "canary", "-d", "--", img, "sleep", "3600")
	if !r.OK() {
		t.Fatalf("clawnet run -d: %v", r)
	}
	w.WaitAgent(t, name, true, 5*time.Second)
	w.CheckAgentWorks(t, name)

	// Restarting the agent's container keeps the holder's namespace (and,
	// on Podman, its resolv.conf mount): the gateway is there from its
	// first instruction again.
	w.E.Must(t, "restart", "-t", "0", name)
	if r := w.E.Inside(name, "probe", "ifaces"); !slices.Contains(LinesOf(r.Stdout), "clawnet0") {
		t.Errorf("after restarting the agent container: %v; want clawnet0 at once", r)
	}
	if r := w.E.Inside(name, "probe", "lookup", "canary.test"); !r.OK() {
		t.Errorf("lookup after restarting the agent container: %v", r)
	}

	// A clawnetd that dies takes the agent's TUN with it (fail closed); the
	// next one finds the running holder and attaches it as it was.
	w.D.Kill()
	if r := w.E.Inside(name, "probe", "ifaces"); slices.Contains(LinesOf(r.Stdout), "clawnet0") {
		t.Errorf("clawnet0 still there with no daemon: %v", r)
	}
	w.D = StartDaemon(t, w.In)
	a := w.WaitAgent(t, name, true, 10*time.Second)
	if a.Policy != "canary" {
		t.Errorf("agent after a daemon restart = %+v; want policy canary", a)
	}
	w.EchoWorks(t, name)

	w.E.Must(t, w.E.rmArgs(name)...)
	w.WaitAgent(t, name, false, 10*time.Second)
	w.E.NoneLeft(t, name)
}

// CheckAttachedThenDetach checks the agent that `clawnet attach name` made
// of container name: named after it, under the canary policy, and working
// (CheckAgentWorks); then detaches it and wants only lo left inside.
func (w World) CheckAttachedThenDetach(t *testing.T, name string) {
	t.Helper()
	a := w.WaitAgent(t, name, true, 5*time.Second)
	if a.Policy != "canary" || !strings.Contains(a.Target, name) {
		t.Errorf("agent = %+v; want policy canary and a target naming the container", a)
	}
	w.CheckAgentWorks(t, name)

	w.D.MustCLI(t, "detach", name)
	w.WaitAgent(t, name, false, 5*time.Second)
	r := w.E.Inside(name, "probe", "ifaces")
	if got := LinesOf(r.Stdout); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("interfaces after detach = %q; want only lo", got)
	}
}

// Refusal is a target `clawnet attach` must refuse with one line
// containing Want.
type Refusal struct{ Target, Want string }

// CheckRefusals wants every attach of a refusal's target refused with its
// one-line message, and no agent afterwards.
func (w World) CheckRefusals(t *testing.T, refusals ...Refusal) {
	t.Helper()
	for _, tc := range refusals {
		r := w.D.CLI("attach", tc.Target)
		if r.OK() {
			t.Errorf("clawnet attach %s succeeded; want a refusal", tc.Target)
			continue
		}
		msg := strings.TrimSpace(r.Stderr)
		if !strings.Contains(msg, tc.Want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("clawnet attach %s: stderr %q; want one line containing %q", tc.Target, msg, tc.Want)
		}
	}
	if got := w.D.List(t); len(got) != 0 {
		t.Errorf("clawnet ls after refusals = %+v; want no agent", got)
	}
}

// RaceHolder makes `clawnet run` use the static probe as its holder when
// the harness builds clawnet with -race (such a binary cannot be static).
// Otherwise the real `clawnet pause` is what runs in the holder.
func RaceHolder(t *testing.T) {
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

// GetWorks polls a GET of path through the published port at loop until
// it answers the agent's file, token and a newline.
func GetWorks(t *testing.T, loop netip.AddrPort, path, token, when string) {
	t.Helper()
	var body string
	var err error
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		body, err = HTTPGet("http://" + loop.String() + path)
		return err == nil
	}) {
		t.Fatalf("GET http://%s%s from the host %s: %v; want the agent's file", loop, path, when, err)
	}
	if body != token+"\n" {
		t.Errorf("GET http://%s%s %s = %q; want %q", loop, path, when, body, token+"\n")
	}
}

// HTTPGet fetches url from the host, with a deadline.
func HTTPGet(url string) (string, error) {
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

// DialRefused is nil when a TCP connection to ap from the host is refused.
func DialRefused(ap netip.AddrPort) error {
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
