package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// Invariant 9: a gateway restart re-attaches what it had attached. These
// tests restart clawnetd as systemctl restart does (SIGTERM, wait for the
// exit, start again on the same config) and check that the agents attached
// by --netns and --pid are back, as they were, without any clawnet command.

// echoIn is echo-only's egress plus an ingress rule for a published port.
func echoIn(in *harness.Internet) (string, string) {
	return "echo-in", fmt.Sprintf(`version: v1
name: echo-in
egress:
  - cidrs: [%q, %q]
    ports: [7]
ingress:
  - ports: [%d]
    host: true
`, in.Net4, in.Net6, portPlain)
}

// restartEnv is newEnv with a state directory of the test's own.
func restartEnv(t *testing.T, policies ...policy) (*env, string) {
	t.Helper()
	harness.RequireRoot(t)
	in := harness.NewInternet(t)
	files := make(map[string]string)
	for _, p := range policies {
		name, body := p(in)
		files[name] = body
	}
	stateDir, err := os.MkdirTemp("", "cnstate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in, Policies: files, ExtraConfig: "state_dir: " + stateDir + "\n"})
	return &env{t: t, in: in, d: d}, stateDir
}

// lsAgents is clawnet ls --json, whole.
func lsAgents(t *testing.T, d *harness.Daemon) map[string]control.Agent {
	t.Helper()
	var as []control.Agent
	if err := json.Unmarshal([]byte(d.MustCLI(t, "ls", "--json")), &as); err != nil {
		t.Fatal(err)
	}
	out := map[string]control.Agent{}
	for _, a := range as {
		out[a.Name] = a
	}
	return out
}

// lsSince reads the SINCE column of clawnet ls by agent name.
func lsSince(t *testing.T, d *harness.Daemon) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(d.MustCLI(t, "ls")), "\n")
	head := strings.Fields(lines[0])
	col := slices.Index(head, "SINCE")
	if col < 0 {
		t.Fatalf("clawnet ls has no SINCE column: %q", lines[0])
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		out[f[0]] = f[col]
	}
	return out
}

// sigterm stops clawnetd as systemctl stop does and waits for its exit.
func sigterm(t *testing.T, d *harness.Daemon) {
	t.Helper()
	if err := syscall.Kill(d.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(10*time.Second, 5*time.Millisecond, d.Exited) {
		t.Fatal("clawnetd did not exit within 10s of SIGTERM")
	}
}

// ownNetns makes a named namespace outside the harness's, which the test
// may delete early; it is deleted at the end if still there.
func ownNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cnrestart%d-%s", os.Getpid(), uniq())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return filepath.Join("/run/netns", name)
}

// netnsProcess starts a process in a new network namespace of its own,
// which lives exactly as long as the process.
func netnsProcess(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// echoOnce sends a fresh marker through the canary's TCP echo from the
// agent and returns the predicate for the canary's line of it.
func (a *agent) echoOnce(t *testing.T, e *env) func(canarylog.Entry) bool {
	t.Helper()
	marker := []byte("echo from " + a.name + " " + uniq())
	c := a.dial(t, "tcp", ap(e.in.Server4, 7))
	if got, err := harness.EchoHalfClose(c, marker, 5*time.Second); err != nil || string(got) != string(marker) {
		t.Fatalf("agent %s: echo: %q, %v", a.name, got, err)
	}
	c.Close()
	sum := canarylog.Digest(marker)
	return func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceEcho && ce.Event == canarylog.EventClose && ce.SHA256 == sum
	}
}

// TestRestartReattaches: agents attached by --netns and by --pid are
// attached again by a restart of clawnetd, with their names, policies,
// addresses, published ports and since-times, and their next connection
// reaches the far side without any clawnet command. A namespace deleted
// and a process gone while clawnetd was down are reported in its log and
// not attached; neither is kept in the state file.
func TestRestartReattaches(t *testing.T) {
	e, stateDir := restartEnv(t, echoOnly, echoIn)
	hostPort := harness.FreePort(t)
	byNetns := e.attachPublish("by-netns", "echo-in", fmt.Sprintf("%d:%d", hostPort, portPlain))
	srv := byNetns.ns.Serve(t, fmt.Sprintf(":%d", portPlain), false)

	ns2 := harness.NewNetNS(t, "agent")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleeper := ns2.Command(ctx, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Wait()
	defer cancel()
	e.d.MustCLI(t, "attach", "--name", "by-pid", "--policy", "echo-only", "--pid", strconv.Itoa(sleeper.Process.Pid))
	byPID := &agent{name: "by-pid", ns: ns2}

	gonePath := ownNetns(t)
	e.d.MustCLI(t, "attach", "--name", "gone-netns", "--policy", "echo-only", "--netns", gonePath)
	goneProc := netnsProcess(t)
	e.d.MustCLI(t, "attach", "--name", "gone-pid", "--policy", "echo-only", "--pid", strconv.Itoa(goneProc.Process.Pid))

	for _, a := range []*agent{byNetns, byPID} {
		e.in.WaitFor(t, 5*time.Second, a.name+"'s echo before the restart", a.echoOnce(t, e))
	}
	before, sinceBefore := lsAgents(t, e.d), lsSince(t, e.d)
	if len(before) != 4 {
		t.Fatalf("before the restart clawnet ls lists %v", before)
	}

	sigterm(t, e.d)
	if ok, names := onlyLo(byNetns.ns); !ok {
		t.Fatalf("with clawnetd stopped %s still has %v", byNetns.name, names)
	}
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(gonePath)).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	goneProc.Process.Kill()
	goneProc.Wait()
	e.d.Restart(t) // only starts it: it has exited

	// No clawnet command: the first connection of each agent after the
	// restart reaches the canary.
	for _, a := range []*agent{byNetns, byPID} {
		e.in.WaitFor(t, 5*time.Second, a.name+"'s echo after the restart", a.echoOnce(t, e))
	}

	after, sinceAfter := lsAgents(t, e.d), lsSince(t, e.d)
	for _, name := range []string{"by-netns", "by-pid"} {
		b, a := before[name], after[name]
		if a.Name != name || a.Policy != b.Policy || a.Target != b.Target || !slices.Equal(a.Addresses, b.Addresses) ||
			!slices.Equal(a.Published, b.Published) || !a.AttachedAt.Equal(b.AttachedAt) {
			t.Errorf("after the restart %s is\n%+v\nwas\n%+v", name, a, b)
		}
		if sinceAfter[name] != sinceBefore[name] || sinceAfter[name] == "-" {
			t.Errorf("clawnet ls SINCE of %s went from %q to %q", name, sinceBefore[name], sinceAfter[name])
		}
	}
	// The namespace's own view of its addresses.
	if v4, v6 := tunAddrs(t, byNetns.ns); v4 != byNetns.v4 || v6 != byNetns.v6 {
		t.Errorf("%s's TUN has %s and %s after the restart, %s and %s before", byNetns.name, v4, v6, byNetns.v4, byNetns.v6)
	}

	// The published port is open again.
	c := hostDial(t, "tcp", ap(loopback4, hostPort))
	marker := exchange(t, c, "host client after the restart")
	c.Close()
	srv.WaitFor(t, sentinelWithin, "the published port's connection after the restart", line(marker))

	for name, why := range map[string]string{"gone-netns": gonePath + " is gone", "gone-pid": fmt.Sprintf("process %d is gone", goneProc.Process.Pid)} {
		if _, listed := after[name]; listed {
			t.Errorf("%s is attached after the restart: %+v", name, after[name])
		}
		var lines []string
		for _, l := range strings.Split(e.d.LogTail(400), "\n") {
			if strings.Contains(l, `"agent":"`+name+`"`) && strings.Contains(l, "recorded agent not attached again") && strings.Contains(l, why) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: %d daemon log lines saying it is not attached again because %q, want 1; log:\n%s", name, len(lines), why, e.d.LogTail(40))
		}
	}
	raw, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int `json:"version"`
		Agents  []struct {
			Name string `json:"name"`
		} `json:"agents"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var recorded []string
	for _, a := range f.Agents {
		recorded = append(recorded, a.Name)
	}
	if f.Version != 1 || !slices.Equal(recorded, []string{"by-netns", "by-pid"}) {
		t.Errorf("state file after the restart: version %d, agents %v; want 1, [by-netns by-pid]", f.Version, recorded)
	}

	// A detach is remembered: the next restart leaves it detached.
	e.d.MustCLI(t, "detach", "by-pid")
	e.d.Restart(t)
	if got := lsAgents(t, e.d); len(got) != 1 || got["by-netns"].Name == "" {
		t.Errorf("after detaching by-pid and restarting, clawnet ls lists %v", got)
	}
	if ok, names := onlyLo(ns2); !ok {
		t.Errorf("the detached by-pid was attached again: its namespace has %v", names)
	}
}

// TestRestartWindow measures how long an agent has no network across a
// restart of clawnetd (SIGTERM, wait for the exit, start; as systemctl
// restart does): the agent starts an exchange with the canary's echo every
// 10 ms, and the window is the time from the last exchange that completed
// before the restart to the first that completed after it. It logs the
// median of several restarts as "restart window:".
func TestRestartWindow(t *testing.T) {
	const runs = 7
	e, _ := restartEnv(t, echoOnly)
	a := e.attach("pinger", "echo-only")
	dst := ap(e.in.Server4, 7)
	var windows []time.Duration
	for run := 1; run <= runs; run++ {
		p := startPinger(a, dst)
		if !p.waitOK(5*time.Second, 20) {
			p.stop()
			t.Fatalf("run %d: the agent's exchanges do not succeed before the restart", run)
		}
		restartAt := time.Now()
		sigterm(t, e.d)
		stopped := time.Since(restartAt)
		e.d.Restart(t) // starts it: it has exited
		if !p.waitOKSince(restartAt, 10*time.Second, 20) {
			p.stop()
			t.Fatalf("run %d: the agent's exchanges did not succeed again within 10s of the restart", run)
		}
		w := window(p.stop(), restartAt)
		t.Logf("run %d: %v without network; the old clawnetd exited %v after the SIGTERM, the new one attached the agent again %v after the SIGTERM",
			run, w.Round(time.Millisecond), stopped.Round(time.Millisecond), reattachedAfter(t, e.d, "pinger", restartAt).Round(time.Millisecond))
		windows = append(windows, w)
	}
	sorted := slices.Clone(windows)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	t.Logf("restart window: median %v over %d restarts (min %v, max %v); every run %v",
		median.Round(time.Millisecond), runs, sorted[0].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), roundAll(windows))
	if median > 3*time.Second {
		t.Errorf("median window %v: a restart leaves agents without network for too long", median)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// window is the longest gap between two successive completed exchanges
// that ends after at: the restart's, from the last exchange the old
// clawnetd carried to the first the new one did.
func window(oks []time.Time, at time.Time) time.Duration {
	var w time.Duration
	for i := 1; i < len(oks); i++ {
		if oks[i].After(at) {
			w = max(w, oks[i].Sub(oks[i-1]))
		}
	}
	return w
}

// reattachedAfter reads from clawnetd's log when it attached agent name
// again, after at.
func reattachedAfter(t *testing.T, d *harness.Daemon, name string, at time.Time) time.Duration {
	t.Helper()
	for _, l := range strings.Split(d.LogTail(100), "\n") {
		var v struct {
			Time    time.Time `json:"@timestamp"`
			Message string    `json:"@message"`
			Agent   string    `json:"agent"`
		}
		if json.Unmarshal([]byte(l), &v) == nil && v.Message == "agent attached again" && v.Agent == name {
			return v.Time.Sub(at)
		}
	}
	t.Errorf("clawnetd's log has no line for %s attached again:\n%s", name, d.LogTail(20))
	return 0
}

// pinger starts an exchange of one byte with the canary's echo from an
// agent every 10 ms, each on a new connection and without waiting for the
// ones before (a SYN lost into a TUN nobody reads any more would otherwise
// hold the loop for its whole timeout), and records when each exchange
// completed.
type pinger struct {
	mu   sync.Mutex
	oks  []time.Time
	done chan struct{}
	wg   sync.WaitGroup
}

func startPinger(a *agent, dst netip.AddrPort) *pinger {
	p := &pinger{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				if exchangeOnce(a, dst) == nil {
					p.mu.Lock()
					p.oks = append(p.oks, time.Now())
					p.mu.Unlock()
				}
			}()
		}
	}()
	return p
}

// exchangeOnce connects from the agent, sends a byte and reads it back.
func exchangeOnce(a *agent, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := a.ns.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

// waitOK waits until n exchanges have completed.
func (p *pinger) waitOK(timeout time.Duration, n int) bool {
	return p.waitOKSince(time.Time{}, timeout, n)
}

// waitOKSince waits until n exchanges have completed after at.
func (p *pinger) waitOKSince(at time.Time, timeout time.Duration, n int) bool {
	return harness.Poll(timeout, 10*time.Millisecond, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		k := 0
		for _, ok := range p.oks {
			if ok.After(at) {
				k++
			}
		}
		return k >= n
	})
}

// stop ends the pinger and returns when each exchange completed.
func (p *pinger) stop() []time.Time {
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	slices.SortFunc(p.oks, func(a, b time.Time) int { return a.Compare(b) })
	return p.oks
}
