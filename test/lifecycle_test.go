package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// TestAttachInterface checks what attach leaves in the namespace: lo and
// one TUN, clawnet0, up, MTU 65520, an address of each family from the
// agent ranges and default routes for both through it; and that clawnet ls
// reports the same.
func TestAttachInterface(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("iface", "echo-only")
	links, err := a.ns.Links()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
		if l.Name != tunName {
			continue
		}
		if !l.Up() {
			t.Errorf("%s is not up: %v", tunName, l.Flags)
		}
		if l.MTU != tunMTU {
			t.Errorf("%s MTU %d, want %d", tunName, l.MTU, tunMTU)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{tunName, "lo"}) {
		t.Errorf("namespace has %v, want lo and %s only", names, tunName)
	}
	if !agentNet4.Contains(a.v4) || !agentNet6.Contains(a.v6) {
		t.Errorf("%s addresses %v, %v; want them in %v and %v", tunName, a.v4, a.v6, agentNet4, agentNet6)
	}
	if a.v4 == gatewayV4 || a.v6 == gatewayV6 {
		t.Errorf("agent got the gateway's own address: %v %v", a.v4, a.v6)
	}
	for _, fam := range []string{"-4", "-6"} {
		routes, err := a.ns.Routes(fam)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, line := range strings.Split(routes, "\n") {
			if strings.HasPrefix(line, "default") && strings.Contains(line, "dev "+tunName) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no %s default route via %s:\n%s", fam, tunName, routes)
		}
	}

	info := a.info
	if info.Name != "iface" || info.Policy != "echo-only" || info.Interface != tunName || info.Target == "" {
		t.Errorf("clawnet ls: %+v", info)
	}
	if !sameAddrs(info.Addresses, a.v4, a.v6) {
		t.Errorf("clawnet ls addresses %v, the namespace has %v and %v", info.Addresses, a.v4, a.v6)
	}
	if !sameAddrs(info.Gateway, gatewayV4, gatewayV6) {
		t.Errorf("clawnet ls gateway %v, want %v and %v", info.Gateway, gatewayV4, gatewayV6)
	}
}

// TestListCounters checks clawnet ls --json: the live flow shows, and the
// byte counters grow by at least what went each way.
func TestListCounters(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("counters", "echo-only")
	before := a.info

	live := a.dial(t, "tcp", ap(e.in.Server4, 7))
	io.WriteString(live, "x")
	if !harness.Poll(3*time.Second, 20*time.Millisecond, func() bool {
		info, _ := e.d.Lookup(t, "counters")
		return info.Flows >= 1
	}) {
		info, _ := e.d.Lookup(t, "counters")
		t.Errorf("clawnet ls shows %d flows while one is open", info.Flows)
	}
	live.Close()

	const up, down = 300_000, 500_000
	c := a.dial(t, "tcp", ap(e.in.Server4, 9))
	if _, err := c.Write(harness.RandomBytes(up)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = a.dial(t, "tcp", ap(e.in.Server6, 19))
	fmt.Fprintf(c, "%d\n", down)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, c); err != nil || n != down {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	c.Close()
	e.in.WaitFor(t, 5*time.Second, "the upload's end", func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceDiscard && ce.Event == canarylog.EventClose && ce.Bytes == up
	})

	var after harness.Agent
	ok := harness.Poll(5*time.Second, 50*time.Millisecond, func() bool {
		after, _ = e.d.Lookup(t, "counters")
		return after.BytesUp >= before.BytesUp+up && after.BytesDown >= before.BytesDown+down
	})
	if !ok {
		t.Errorf("clawnet ls counters went from up=%d down=%d to up=%d down=%d; want growth of at least %d and %d",
			before.BytesUp, before.BytesDown, after.BytesUp, after.BytesDown, up, down)
	}
}

// TestAuditLog checks the audit trail of a flow: an allow line naming the
// rule, a close line whose byte counts match what was sent each way, and a
// deny line for a refused flow.
func TestAuditLog(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("audited", "echo-only")

	const up = 123_457
	c := a.dial(t, "tcp", ap(e.in.Server4, 9))
	src := localOf(c)
	if _, err := c.Write(harness.RandomBytes(up)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	const down = 234_567
	c2 := a.dial(t, "tcp", ap(e.in.Server6, 19))
	src2 := localOf(c2)
	req := strconv.Itoa(down) + "\n"
	io.WriteString(c2, req)
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, c2); err != nil || n != down {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	c2.Close()

	denied := ap(e.in.Addr4(3), 7)
	a.expectRefused(t, denied)

	flow := func(src netip.AddrPort, event string) func(harness.AuditEntry) bool {
		return func(ae harness.AuditEntry) bool { return ae.SrcAddr() == src && ae.Event == event }
	}
	common := func(ae harness.AuditEntry, dst netip.AddrPort, verdict string) {
		t.Helper()
		if len(ae.Time) == 0 || ae.Agent != "audited" || ae.Policy != "echo-only" || ae.Proto != "tcp" ||
			ae.DstAddr() != dst || ae.Verdict != verdict || ae.Rule == "" || ae.Reason == "" {
			t.Errorf("audit line lacks or misstates time/agent/policy/proto/dst/verdict/rule/reason (want dst %s, %s):\n%s", dst, verdict, ae.Line)
		}
	}

	open := e.d.WaitAudit(t, 5*time.Second, "the open line of the upload", flow(src, "open"))
	common(open, ap(e.in.Server4, 9), "allow")
	cl := e.d.WaitAudit(t, 5*time.Second, "the close line of the upload", flow(src, "close"))
	if cl.BytesUp == nil || *cl.BytesUp != up || cl.BytesDown == nil || *cl.BytesDown != 0 || cl.DurationMS == nil {
		t.Errorf("upload close line: want bytes_up=%d bytes_down=0 and duration_ms:\n%s", up, cl.Line)
	}

	open2 := e.d.WaitAudit(t, 5*time.Second, "the open line of the download", flow(src2, "open"))
	common(open2, ap(e.in.Server6, 19), "allow")
	cl2 := e.d.WaitAudit(t, 5*time.Second, "the close line of the download", flow(src2, "close"))
	if cl2.BytesUp == nil || *cl2.BytesUp != int64(len(req)) || cl2.BytesDown == nil || *cl2.BytesDown != down || cl2.DurationMS == nil {
		t.Errorf("download close line: want bytes_up=%d bytes_down=%d and duration_ms:\n%s", len(req), down, cl2.Line)
	}

	deny := e.d.WaitAudit(t, 5*time.Second, "the deny line", func(ae harness.AuditEntry) bool {
		return ae.DstAddr() == denied && ae.Verdict == "deny"
	})
	common(deny, denied, "deny")
	if deny.Event != "deny" || deny.SrcAddr().Addr() != a.v4 {
		t.Errorf("deny line: want event deny from %s:\n%s", a.v4, deny.Line)
	}
}

// TestDaemonKilled checks fail-closed: after SIGKILL of clawnetd the agent
// namespace has nothing but lo, no route, and nothing it sends reaches the
// far side.
func TestDaemonKilled(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("orphan", "echo-only")
	live := a.dial(t, "tcp", ap(e.in.Server4, 7))
	live.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(live, "before")
	buf := make([]byte, 6)
	if _, err := io.ReadFull(live, buf); err != nil {
		t.Fatalf("echo before the kill: %v", err)
	}
	mark := e.in.Mark()

	e.d.Kill()

	if !harness.Poll(3*time.Second, 20*time.Millisecond, func() bool { ok, _ := onlyLo(a.ns); return ok }) {
		_, names := onlyLo(a.ns)
		t.Errorf("3s after SIGKILL the namespace still has %v, want only lo", names)
	}
	for _, fam := range []string{"-4", "-6"} {
		if routes, err := a.ns.Routes(fam); err != nil || strings.TrimSpace(routes) != "" {
			t.Errorf("%s routes left after SIGKILL (%v):\n%s", fam, err, routes)
		}
	}
	live.SetDeadline(time.Now().Add(time.Second))
	io.WriteString(live, "after")
	if n, err := live.Read(buf); err == nil {
		t.Errorf("the live flow still echoed %q after SIGKILL", buf[:n])
	}
	for _, fam := range families {
		dst := ap(server(e.in, fam.n), 7)
		if c, err := a.ns.Dial(ctxTimeout(t, time.Second), "tcp", dst.String()); err == nil {
			c.Close()
			t.Errorf("agent reached %s after SIGKILL", dst)
		}
		if c, err := a.ns.Dial(ctxTimeout(t, time.Second), "udp", dst.String()); err == nil {
			c.Write([]byte("after"))
			c.Close()
		}
	}
	// Barrier: with the gateway dead no flow of the agent is allowed, so
	// the sentinel comes from the host, over the same last hop the
	// gateway's flows took, after every attempt above.
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the host's sentinel datagram", e.in.HostSentinel(t, e.in.Server4),
		"traffic after the gateway died", func(ce canarylog.Entry) bool {
			// The one thing allowed: the canary noticing the dead gateway's
			// end of the live flow close, with only the bytes sent before.
			return !(ce.Service == canarylog.ServiceEcho && ce.Event == canarylog.EventClose && ce.Bytes == int64(len("before")))
		})
}

// TestDetach checks that detach closes the agent's live flows (the far side
// sees them end), removes its TUN, and returns the daemon's goroutines and
// open FDs to their level before the attach, over two attach/detach cycles.
func TestDetach(t *testing.T) {
	e := newEnv(t, echoOnly)
	const slackG, slackFD = 3, 2
	baseline := settledStatus(t, e.d)
	t.Logf("before attach: %+v", baseline)
	ns := harness.NewNetNS(t, "agent")

	for cycle := 1; cycle <= 2; cycle++ {
		e.d.Attach(t, ns, "detached", "echo-only")
		a := &agent{name: "detached", ns: ns}
		live := a.dial(t, "tcp", ap(e.in.Server4, 7))
		live.SetDeadline(time.Now().Add(5 * time.Second))
		marker := fmt.Sprintf("live flow of cycle %d", cycle)
		io.WriteString(live, marker)
		buf := make([]byte, len(marker))
		if _, err := io.ReadFull(live, buf); err != nil {
			t.Fatalf("cycle %d: echo: %v", cycle, err)
		}
		u := a.dial(t, "udp", ap(e.in.Server6, 7))
		if _, err := harness.UDPExchange(u, []byte(marker), 5*time.Second); err != nil {
			t.Fatalf("cycle %d: udp echo: %v", cycle, err)
		}
		if s := e.d.MustStatus(t); s.Agents != 1 || s.Flows < 1 {
			t.Errorf("cycle %d: status with one agent and live flows: %+v", cycle, s)
		}

		e.d.MustCLI(t, "detach", "detached")

		e.in.WaitFor(t, 3*time.Second, "the live flow closed by detach", func(ce canarylog.Entry) bool {
			return ce.Service == canarylog.ServiceEcho && ce.Event == canarylog.EventClose && ce.SHA256 == canarylog.Digest([]byte(marker))
		})
		live.SetDeadline(time.Now().Add(time.Second))
		if _, err := live.Read(buf); err == nil {
			t.Errorf("cycle %d: the live flow still carries data after detach", cycle)
		}
		live.Close()
		u.Close()
		if ok, names := onlyLo(ns); !ok {
			t.Errorf("cycle %d: after detach the namespace has %v, want only lo", cycle, names)
		}
		if _, listed := e.d.Lookup(t, "detached"); listed {
			t.Errorf("cycle %d: clawnet ls still lists the detached agent", cycle)
		}
		var s harness.Status
		ok := harness.Poll(5*time.Second, 50*time.Millisecond, func() bool {
			s = e.d.MustStatus(t)
			return s.Agents == 0 && s.Flows == 0 && s.Goroutines <= baseline.Goroutines+slackG && s.OpenFDs <= baseline.OpenFDs+slackFD
		})
		if !ok {
			t.Errorf("cycle %d: 5s after detach status is %+v; before attach it was %+v (slack %d goroutines, %d FDs)", cycle, s, baseline, slackG, slackFD)
			if body, err := e.d.Get("/debug/pprof/goroutine?debug=1"); err == nil {
				t.Logf("goroutines:\n%s", body)
			}
		}
	}
}

// TestAttachFirstPackets checks that attach returns only once the agent can
// be answered: over attach/detach cycles of one namespace, one datagram of
// each family sent right after each attach, with no retry, gets its echo.
// The kernel installs an IPv6 address's local route after the request that
// adds the address has returned, from a work queue that needs the rtnl lock;
// until then the agent already sends from the address, but the gateway's
// answers to it are dropped as packets to forward. Namespaces coming and
// going elsewhere on the host hold that lock, so the test churns some
// throughout to open the window wide.
func TestAttachFirstPackets(t *testing.T) {
	e := newEnv(t, echoOnly)
	churnNamespaces(t, 2)
	ns := harness.NewNetNS(t, "agent")
	a := &agent{name: "first", ns: ns}
	const cycles = 20
	for cycle := 1; cycle <= cycles; cycle++ {
		// Not e.d.Attach: its clawnet ls afterwards would give the kernel
		// time the agent does not wait for.
		e.d.MustCLI(t, "attach", "--name", a.name, "--policy", "echo-only", "--netns", ns.Path)
		for _, fam := range []int{6, 4} {
			marker := []byte(fmt.Sprintf("first datagram, IPv%d, cycle %d", fam, cycle))
			u := a.dial(t, "udp", ap(server(e.in, fam), 7))
			_, err := harness.UDPExchange(u, marker, 2*time.Second)
			u.Close()
			if err != nil {
				arrived := e.in.Saw(func(ce canarylog.Entry) bool {
					return ce.Service == canarylog.ServiceUDPEcho && ce.SHA256 == canarylog.Digest(marker)
				})
				t.Fatalf("cycle %d: the agent's first IPv%d datagram after attach got no echo (the canary saw it: %v): %v", cycle, fam, arrived, err)
			}
		}
		e.d.MustCLI(t, "detach", a.name)
	}
}

// churnNamespaces creates and destroys network namespaces on n goroutines
// until t ends. Tearing one down runs the kernel's namespace cleanup, which
// holds the rtnl lock, as on a host where other agents come and go.
func churnNamespaces(t *testing.T, n int) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := throwawayNamespace(); err != nil {
					t.Errorf("namespace churn: %v", err)
					return
				}
			}
		}()
	}
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}

// throwawayNamespace makes a network namespace with a few dummy links and
// lets it go. The thread goes back to its own namespace rather than exit:
// the harness's children die with the thread that started them.
func throwawayNamespace() error {
	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("unshare: %w", err)
	}
	if h, err := netlink.NewHandle(); err == nil {
		for i := range 4 {
			la := netlink.NewLinkAttrs()
			la.Name = fmt.Sprintf("churn%d", i)
			h.LinkAdd(&netlink.Dummy{LinkAttrs: la})
		}
		h.Close()
	}
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// Left locked: the thread is thrown away with its namespace.
		return fmt.Errorf("return from the namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return nil
}

// settledStatus waits for the daemon's goroutine count to stop moving (its
// start-up work done) and returns that status.
func settledStatus(t *testing.T, d *harness.Daemon) harness.Status {
	t.Helper()
	prev := d.MustStatus(t)
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		s := d.MustStatus(t)
		if s == prev {
			return s
		}
		prev = s
	}
	return prev
}

// TestAttachRefusals checks every attach clawnet must refuse, each with a
// non-zero exit and a one-line error, and that a refused attach leaves
// nothing behind: no TUN in the namespace, no agent listed.
func TestAttachRefusals(t *testing.T) {
	e := newEnv(t, echoOnly)
	nothingAttached := func(t *testing.T, name string, ns *harness.NetNS) {
		t.Helper()
		if _, listed := e.d.Lookup(t, name); listed {
			t.Errorf("refused attach %s is listed by clawnet ls", name)
		}
		if ns != nil {
			for _, n := range ns.LinkNames(t) {
				if n == tunName {
					t.Errorf("refused attach left %s in the namespace", tunName)
				}
			}
		}
	}

	t.Run("another interface", func(t *testing.T) {
		ns := harness.NewNetNS(t, "agent")
		ns.MustRun(t, "ip", "link", "add", "side0", "type", "veth", "peer", "name", "side1")
		r := e.d.CLI("attach", "--name", "extra-if", "--policy", "echo-only", "--netns", ns.Path)
		oneLine(t, "attach of a namespace with a veth", r)
		nothingAttached(t, "extra-if", ns)

		e.d.MustCLI(t, "attach", "--force", "--name", "extra-if", "--policy", "echo-only", "--netns", ns.Path)
		if !slices.Contains(ns.LinkNames(t), tunName) {
			t.Errorf("attach --force did not make %s", tunName)
		}
		e.d.MustCLI(t, "detach", "extra-if")
	})

	t.Run("already attached", func(t *testing.T) {
		ns := harness.NewNetNS(t, "agent")
		e.d.MustCLI(t, "attach", "--name", "first", "--policy", "echo-only", "--netns", ns.Path)
		r := e.d.CLI("attach", "--name", "second", "--policy", "echo-only", "--netns", ns.Path)
		oneLine(t, "second attach of one namespace", r)
		nothingAttached(t, "second", nil)
		// The first attachment is untouched.
		a := &agent{name: "first", ns: ns}
		c := a.dial(t, "tcp", ap(e.in.Server4, 7))
		if got, err := harness.EchoHalfClose(c, []byte("first"), 5*time.Second); err != nil || string(got) != "first" {
			t.Errorf("first attachment broken by the refused second: %q, %v", got, err)
		}
		e.d.MustCLI(t, "detach", "first")
	})

	t.Run("unknown pid", func(t *testing.T) {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid // reaped: nothing has this PID now
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Skipf("PID %d was reused at once", pid)
		}
		r := e.d.CLI("attach", "--name", "ghost", "--policy", "echo-only", "--pid", strconv.Itoa(pid))
		oneLine(t, "attach of a PID that does not exist", r)
		nothingAttached(t, "ghost", nil)
	})

	t.Run("unknown netns path", func(t *testing.T) {
		path := filepath.Join("/run/netns", fmt.Sprintf("cnt%d-no-such-namespace", os.Getpid()))
		r := e.d.CLI("attach", "--name", "nowhere", "--policy", "echo-only", "--netns", path)
		oneLine(t, "attach of a netns path that does not exist", r)
		if !strings.Contains(r.Stderr, path) {
			t.Errorf("error does not name the path %s: %s", path, r.Stderr)
		}
		nothingAttached(t, "nowhere", nil)
	})

	t.Run("not a namespace", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "plain-file")
		os.WriteFile(f, nil, 0o644)
		r := e.d.CLI("attach", "--name", "plain", "--policy", "echo-only", "--netns", f)
		oneLine(t, "attach of a plain file as netns", r)
		nothingAttached(t, "plain", nil)
	})

	t.Run("unknown policy", func(t *testing.T) {
		ns := harness.NewNetNS(t, "agent")
		r := e.d.CLI("attach", "--name", "unpoliced", "--policy", "no-such-policy", "--netns", ns.Path)
		oneLine(t, "attach with an unknown policy", r)
		if !strings.Contains(r.Stderr, "no-such-policy") {
			t.Errorf("error does not name the policy: %s", r.Stderr)
		}
		nothingAttached(t, "unpoliced", ns)
	})

	t.Run("by pid", func(t *testing.T) {
		// The positive case of --pid: a process inside a namespace.
		ns := harness.NewNetNS(t, "agent")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sleeper := ns.Command(ctx, "sleep", "60")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer sleeper.Wait()
		defer cancel()
		e.d.MustCLI(t, "attach", "--name", "by-pid", "--policy", "echo-only", "--pid", strconv.Itoa(sleeper.Process.Pid))
		if !slices.Contains(ns.LinkNames(t), tunName) {
			t.Errorf("attach --pid did not make %s in the process's namespace", tunName)
		}
		e.d.MustCLI(t, "detach", "by-pid")
	})

	if s := e.d.MustStatus(t); s.Agents != 0 {
		t.Errorf("after the refusals and detaches, status shows %d agents", s.Agents)
	}
}
