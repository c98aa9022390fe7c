package dockertest

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

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

// checkAgentWorks is what every attached container must show from inside:
// only lo and the TUN; an allowed destination reached by IP (a CIDR rule)
// and by name (the gateway's DNS), the canary seeing both; a denied name
// and a denied address failing fast with nothing arriving.
func checkAgentWorks(t *testing.T, w world, name string) {
	t.Helper()
	t.Run("only lo and the TUN", func(t *testing.T) {
		r := inside(name, "probe", "ifaces")
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
		r := inside(name, "probe", "lookup", "canary.test")
		if !r.OK() || !strings.Contains(r.Stdout, w.in.Server4.String()) {
			t.Fatalf("lookup canary.test inside %s: %v; want %s", name, r, w.in.Server4)
		}
		token := "/" + uniq("by-name")
		r = inside(name, "probe", "http", "http://canary.test"+token)
		if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
			t.Errorf("GET http://canary.test%s inside %s: %v; want 200", token, name, r)
		}
		w.in.WaitFor(t, 5*time.Second, "the allowed request "+token, func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == token && e.Host == "canary.test"
		})
		// other.canary.test is in the zone but not in the policy.
		failsFast(t, inside(name, "probe", "tcp", "other.canary.test:7"), 2*time.Second, "tcp other.canary.test:7")
		if w.in.Saw(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceDNS && e.Qname == "other.canary.test."
		}) {
			t.Error("the denied name other.canary.test was sent upstream")
		}
	})
	t.Run("denied fails fast", func(t *testing.T) {
		// other.canary.test's address is the canary's too, but no rule
		// covers it and no allowed name resolved to it.
		other := w.in.Addr4(3)
		failsFast(t, inside(name, "probe", "tcp", netip.AddrPortFrom(other, 7).String()), 2*time.Second, "tcp "+other.String()+":7")
		w.in.NeverSaw(t, 300*time.Millisecond, "traffic to the denied "+other.String(), harness.To(other, 0))
		if w.in.Saw(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceDNS && e.Qname == "other.canary.test."
		}) {
			t.Error("the denied name other.canary.test was sent upstream")
		}
	})
}

// TestDockerAttach attaches a --network none container by name, as a
// person would, and checks it from inside.
func TestDockerAttach(t *testing.T) {
	requireDocker(t)
	w := newWorld(t)
	name := uniq("cn-attach")
	startContainer(t, name, "--network", "none")

	out := w.d.MustCLI(t, "attach", name)
	if !strings.Contains(out, "attached "+name) {
		t.Errorf("clawnet attach %s printed %q; want the agent named after the container", name, out)
	}
	a := w.waitAgent(t, name, true, 5*time.Second)
	if a.Policy != "canary" || !strings.Contains(a.Target, name) {
		t.Errorf("agent = %+v; want policy canary and a target naming the container", a)
	}
	checkAgentWorks(t, w, name)

	w.d.MustCLI(t, "detach", name)
	w.waitAgent(t, name, false, 5*time.Second)
	r := inside(name, "probe", "ifaces")
	if got := linesOf(r.Stdout); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("interfaces after detach = %q; want only lo", got)
	}
}

// TestDockerAttachLoopbackDNS: a container whose nameserver is on its own
// loopback (never reaching the TUN) gets the gateway as its nameserver.
func TestDockerAttachLoopbackDNS(t *testing.T) {
	requireDocker(t)
	w := newWorld(t)
	name := uniq("cn-dns")
	startContainer(t, name, "--network", "none", "--dns", "127.0.0.11", "--dns-search", "corp.test")
	w.d.MustCLI(t, "attach", "--policy", "canary", name)

	r := inside(name, "cat", "/etc/resolv.conf")
	if !strings.Contains(r.Stdout, "nameserver 100.96.0.1") || regexp.MustCompile(`(?m)^nameserver 127\.`).MatchString(r.Stdout) {
		t.Errorf("resolv.conf inside after attach:\n%s\nwant the gateway instead of 127.0.0.11", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "search corp.test") {
		t.Errorf("resolv.conf lost its search line:\n%s", r.Stdout)
	}
	r = inside(name, "probe", "lookup", "canary.test")
	if !r.OK() || !strings.Contains(r.Stdout, w.in.Server4.String()) {
		t.Errorf("lookup canary.test: %v", r)
	}

	// A read-only root changes nothing: Docker's copy of the file, on the
	// host, is what is rewritten.
	ro := uniq("cn-dns-ro")
	startContainer(t, ro, "--network", "none", "--read-only", "--dns", "127.0.0.11")
	if out := w.d.MustCLI(t, "attach", "--policy", "canary", ro); strings.Contains(out, "read-only") {
		t.Errorf("clawnet attach of a read-only container printed %q; want no read-only note", out)
	}
	if r := inside(ro, "probe", "lookup", "canary.test"); !r.OK() || !strings.Contains(r.Stdout, w.in.Server4.String()) {
		t.Errorf("lookup canary.test in a read-only container: %v", r)
	}
}

// TestDockerAttachRefusals: a container with any other network, a stopped
// one and an unknown one are refused with one line saying what to do.
func TestDockerAttachRefusals(t *testing.T) {
	requireDocker(t)
	w := newWorld(t)
	bridged := uniq("cn-bridge")
	startContainer(t, bridged) // the default bridge network
	hosted := uniq("cn-host")
	startContainer(t, hosted, "--network", "host")
	stopped := uniq("cn-stopped")
	startContainer(t, stopped, "--network", "none")
	mustDocker(t, "stop", "-t", "0", stopped)

	for _, tc := range []struct{ target, want string }{
		{bridged, `container "` + bridged + `" uses network "bridge": run it with --network none (or use clawnet run)`},
		{hosted, `container "` + hosted + `" uses the host network: run it with --network none (or use clawnet run)`},
		{stopped, `container "` + stopped + `" is not running`},
		{"cn-no-such-container", `container "cn-no-such-container" not found`},
	} {
		r := w.d.CLI("attach", tc.target)
		if r.OK() {
			t.Errorf("clawnet attach %s succeeded; want a refusal", tc.target)
			continue
		}
		msg := strings.TrimSpace(r.Stderr)
		if !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("clawnet attach %s: stderr %q; want one line containing %q", tc.target, msg, tc.want)
		}
	}
	if got := w.d.List(t); len(got) != 0 {
		t.Errorf("clawnet ls after refusals = %+v; want no agent", got)
	}
	// The bridged container's own interface is still its only one: nothing
	// was added to it.
	if r := inside(bridged, "probe", "ifaces"); slices.Contains(linesOf(r.Stdout), "clawnet0") {
		t.Errorf("refused container got a TUN: %v", r)
	}
}

// TestDockerLifecycle: the daemon follows the engine. A restarted container
// (new PID, new namespace) is attached again with the same name and policy;
// a stopped one is detached, and attached again when started; a removed one
// is detached for good. Nothing is left behind.
func TestDockerLifecycle(t *testing.T) {
	requireDocker(t)
	w := newWorld(t)
	name := uniq("cn-life")
	startContainer(t, name, "--network", "none")
	w.d.MustCLI(t, "attach", "--name", "life", "--policy", "canary", name)
	w.waitAgent(t, "life", true, 5*time.Second)
	// A restart is a new init process in a new namespace. (Namespace inode
	// numbers are recycled as soon as the old one is freed, so the PID is
	// what tells the runs apart.)
	pid1 := pidOf(t, name)
	mustDocker(t, "restart", "-t", "0", name)
	pid2 := pidOf(t, name)
	if pid2 == pid1 {
		t.Fatal("restart kept the init process")
	}
	// Watch the new namespace from the host, and measure the window in
	// which the restarted container ran with no network (only lo).
	if !harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
		return runTimeout(5*time.Second, "nsenter", "-t", pid2, "-n", "ip", "link", "show", "clawnet0").OK()
	}) {
		t.Fatalf("no clawnet0 inside %s 10s after restart; clawnet ls: %+v", name, w.d.List(t))
	}
	seen := time.Now()
	if started, err := time.Parse(time.RFC3339Nano, mustDocker(t, "inspect", "--format", "{{.State.StartedAt}}", name)); err == nil {
		t.Logf("restarted container had no network for at most %v (start to TUN seen)", seen.Sub(started).Round(time.Millisecond))
	}
	a := w.waitAgent(t, "life", true, 5*time.Second)
	if a.Policy != "canary" {
		t.Errorf("re-attached agent = %+v; want the same policy", a)
	}
	checkAgentWorks(t, w, name)

	mustDocker(t, "stop", "-t", "0", name)
	w.waitAgent(t, "life", false, 10*time.Second)
	if st := w.d.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after stop = %+v; want no agent and no flow", st)
	}

	mustDocker(t, "start", name)
	w.waitAgent(t, "life", true, 10*time.Second)
	w.echoWorks(t, name)

	mustDocker(t, "rm", "-f", name)
	w.waitAgent(t, "life", false, 10*time.Second)
	if st := w.d.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after rm = %+v; want no agent and no flow", st)
	}
}

// TestDockerRun: `clawnet run` has the gateway on its very first
// instruction, and leaves nothing behind with --rm.
func TestDockerRun(t *testing.T) {
	requireDocker(t)
	raceHolder(t)
	w := newWorld(t)
	img := testImage(t)
	name := uniq("cn-run")
	t.Cleanup(func() { removeContainers(t, name, name+"-n", name+"-x", name+"-dns") })

	// The container's first and only instruction is the connection.
	payload := uniq("first")
	r := w.d.CLI("run", "--name", name, "--policy", "canary", "--rm", "--",
		img, "probe", "tcp", netip.AddrPortFrom(w.in.Server4, 7).String(), payload)
	if !r.OK() || r.Stdout != payload {
		t.Fatalf("clawnet run ... probe tcp (first instruction): %v", r)
	}
	w.sawEcho(t, payload)
	w.waitAgent(t, name, false, 10*time.Second)
	noneLeft(t, name)

	t.Run("by name", func(t *testing.T) {
		token := "/first-" + name
		r := w.d.CLI("run", "--name", name+"-dns", "--policy", "canary", "--rm", "--", img, "probe", "http", "http://canary.test"+token)
		if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
			t.Fatalf("clawnet run ... probe http (first instruction, by name): %v", r)
		}
		w.in.WaitFor(t, 5*time.Second, "the first instruction's request", func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceHTTP && e.Path == token
		})
	})
	t.Run("exit status", func(t *testing.T) {
		r := w.d.CLI("run", "--name", name+"-x", "--rm", "--", img, "sh", "-c", "exit 7")
		if r.Code != 7 {
			t.Errorf("clawnet run ... exit 7 = %v; want exit 7", r)
		}
	})
	t.Run("network option refused", func(t *testing.T) {
		r := w.d.CLI("run", "--name", name+"-n", "--network", "host", "--", img, "true")
		if r.OK() || !strings.Contains(r.Stderr, "--network") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Errorf("clawnet run --network host = %v; want a one-line refusal naming --network", r)
		}
		if left := docker("ps", "-aq", "--filter", "label=io.clawnet.agent="+name+"-n"); strings.TrimSpace(left.Stdout) != "" {
			t.Errorf("containers created for a refused run: %q", left.Stdout)
		}
	})
}

// TestDockerRunDetached: a detached `clawnet run` agent keeps its holder
// while it exists, across restarts of its container and of clawnetd;
// removing the agent's container removes the holder and detaches the agent.
func TestDockerRunDetached(t *testing.T) {
	requireDocker(t)
	raceHolder(t)
	w := newWorld(t)
	img := testImage(t)
	name := uniq("cn-rund")
	t.Cleanup(func() { removeContainers(t, name) })
	r := w.d.CLI("run", "--name", name, "--policy", "canary", "-d", "--", img, "sleep", "3600")
	if !r.OK() {
		t.Fatalf("clawnet run -d: %v", r)
	}
	w.waitAgent(t, name, true, 5*time.Second)
	checkAgentWorks(t, w, name)

	// Restarting the agent's container keeps the holder's namespace: the
	// agent has its network from its first instruction again.
	mustDocker(t, "restart", "-t", "0", name)
	if r := inside(name, "probe", "ifaces"); !slices.Contains(linesOf(r.Stdout), "clawnet0") {
		t.Errorf("after restarting the agent container: %v; want clawnet0 at once", r)
	}

	// A clawnetd that dies takes the agent's TUN with it (fail closed); the
	// next one finds the running holder and attaches it as it was.
	w.d.Kill()
	if r := inside(name, "probe", "ifaces"); slices.Contains(linesOf(r.Stdout), "clawnet0") {
		t.Errorf("clawnet0 still there with no daemon: %v", r)
	}
	w.d = startDaemon(t, w.in)
	a := w.waitAgent(t, name, true, 10*time.Second)
	if a.Policy != "canary" {
		t.Errorf("agent after a daemon restart = %+v; want policy canary", a)
	}
	w.echoWorks(t, name)

	mustDocker(t, "rm", "-f", name)
	w.waitAgent(t, name, false, 10*time.Second)
	noneLeft(t, name)
}
