package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// The memory figure of DESIGN.md invariant 7 (issue 8): one agent tries to
// make the gateway hold as much memory as it can, and another agent's
// download goes on meanwhile.
const (
	// pinBudget is limits.buffer_per_agent for the test: small enough to
	// reach in a few seconds.
	pinBudget = 128 << 20
	// pinMargin is what the gateway may hold beyond the attacker's budget:
	// the Go runtime (a heap grows past its live data before the collector
	// runs), the attacker's per-flow structures (goroutines, gVisor
	// endpoints, sockets, audit lines: a few KiB each for ~200 flows) and
	// the victim's own flow (its budget is its own, up to 8.125 MiB).
	// Measured: see test/README.md.
	pinMargin = 64 << 20
	// envPinBudget sets the daemon's limits.buffer_per_agent in place of
	// pinBudget (and lifts limits.flows_per_agent), to show what the same
	// attack does with the cap effectively off: for example
	// CLAWNET_PIN_BUDGET=8GiB. The assertions stay those of pinBudget, so
	// the test is then expected to fail.
	envPinBudget = "CLAWNET_PIN_BUDGET"
	// envPinHeap names a file to write the daemon's heap profile to at the
	// peak of the attack (go tool pprof FILE).
	envPinHeap = "CLAWNET_PIN_HEAP"

	portSource = 19
	portTarpit = 8083 // canarylog.ServiceTarpit: accepts, never reads

	// maxAttackFlows and openFor bound the attacker when nothing refuses
	// it (the budget lifted): it never opens more flows, nor for longer.
	// 400 flows already hold gigabytes in clawnetd and, with the kernel's
	// socket buffers on both sides, some hundreds of MiB of the host's TCP
	// memory (net.ipv4.tcp_mem), which other tests on the host share.
	maxAttackFlows = 400
	openFor        = 10 * time.Second
	// fillFor bounds the wait for the gateway's memory to stop growing once
	// the attacker has all its flows.
	fillFor = 15 * time.Second
	// victimFor is how long the victim downloads, alone and under attack.
	victimFor = 3 * time.Second
	// sourceAsk is what one source request asks for: the canary's most.
	sourceAsk = 1 << 30
)

// TestAgentCannotPinMemory runs clawnetd with a small limits.buffer_per_agent
// and lets one agent try to pin as much of the gateway's memory as it can:
// flow after flow until the gateway refuses one, to the canary's source
// (sends a gigabyte and reads nothing meanwhile, and the attacker never reads
// it: a slow-reading agent and a slow-reading upstream at once) and, one in
// four, to its tarpit (accepts, never reads: a slow-reading upstream),
// writing as fast as it can on every flow so every buffer on the way fills. Meanwhile a second agent downloads from
// the source. It asserts that the gateway's resident memory grew by no more
// than the budget and a margin, that the attacker hit the limit (a
// builtin:limit deny naming the buffer budget), that the canary accepted no
// connection for a refused flow, and that the victim's download still moved.
func TestAgentCannotPinMemory(t *testing.T) {
	harness.RequireRoot(t)
	if os.Getenv(harness.EnvRace) == "1" {
		t.Skipf("%s=1: the race detector's shadow memory makes clawnetd's RSS no measure of what it holds", harness.EnvRace)
	}
	budget, flowsLimit, lifted := pinLimits(t)
	in := harness.NewInternet(t)
	d := harness.StartDaemon(t, harness.DaemonConfig{
		Internet: in,
		Policies: map[string]string{"pin": fmt.Sprintf(`version: v1
name: pin
egress:
  - cidrs: [%q]
    ports: [%d, %d]
`, netip.PrefixFrom(in.Server4, 32), portSource, portTarpit)},
		ExtraConfig: fmt.Sprintf("limits:\n  buffer_per_agent: %d\n  flows_per_agent: %d\n", budget, flowsLimit),
	})
	e := &env{t: t, in: in, d: d}
	attacker := e.attach("attacker", "pin")
	victim := e.attach("victim", "pin")
	source, tarpit := ap(in.Server4, portSource), ap(in.Server4, portTarpit)

	idle := mustMemory(t, d)
	solo := download(t, victim, source, victimFor)
	if solo.bytes == 0 {
		t.Fatalf("the victim's download alone moved nothing")
	}
	// Let the victim's flow end in the gateway, then count the peak from
	// here: everything the attack makes the gateway hold is after this.
	waitFlows(t, d, 0)
	warm := mustMemory(t, d)
	if err := d.ResetPeakRSS(); err != nil {
		t.Fatal(err)
	}

	mark := in.Mark()
	auditMark := len(d.Audit(t))
	atk := &attack{}
	t.Cleanup(atk.stop)
	atk.open(t, attacker, source, tarpit)

	// The canary's testimony: exactly the admitted flows reached it, none
	// past the refusal.
	attackOpens := func() int {
		n := 0
		for _, ce := range in.Since(mark) {
			if ce.Event == canarylog.EventOpen && (ce.Service == canarylog.ServiceTarpit || ce.Service == canarylog.ServiceSource) {
				n++
			}
		}
		return n
	}
	harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { return attackOpens() >= atk.admitted })
	if got := attackOpens(); got != atk.admitted {
		t.Errorf("the canary accepted %d attacker connections; the gateway admitted %d flows", got, atk.admitted)
	}

	reserved := agentReserved(t, d, attacker.name)
	fill := waitPlateau(t, d, fillFor)
	during := download(t, victim, source, victimFor)
	peak := mustMemory(t, d)
	peakHeap := mustGoHeap(t, d, false)
	peakKernel := upstreamSockets(t, in.Server4)
	if path := os.Getenv(envPinHeap); path != "" {
		writeHeapProfile(t, d, path)
	}

	// The attacker leaves: the gateway must let go of all of it.
	d.MustCLI(t, "detach", attacker.name)
	atk.stop()
	waitFlows(t, d, 0)
	// Two collections: the second empties the sync.Pools the first left
	// in their victim caches.
	mustGoHeap(t, d, true)
	afterHeap := mustGoHeap(t, d, true)
	after := mustMemory(t, d)
	afterKernel := upstreamSockets(t, in.Server4)

	// The far side of the detach: the gateway closed its upstream sockets
	// with data unread in them, so every source connection is reset and
	// logs its close. (A tarpit connection may not: a socket closed with
	// unsent data keeps it, and its FIN, until the peer reads or the
	// kernel gives up, and the tarpit never reads.)
	var opened, closed, tarpitsClosed int
	harness.Poll(5*time.Second, 50*time.Millisecond, func() bool {
		opened, closed, tarpitsClosed = 0, 0, 0
		for _, ce := range in.Since(mark) {
			switch {
			case ce.Service == canarylog.ServiceSource && ce.Event == canarylog.EventOpen:
				opened++
			case ce.Service == canarylog.ServiceSource && ce.Event == canarylog.EventClose:
				closed++
			case ce.Service == canarylog.ServiceTarpit && ce.Event == canarylog.EventClose:
				tarpitsClosed++
			}
		}
		return closed >= opened
	})

	grew := peak.Peak - idle.RSS
	ratio := 0.0
	if solo.rate() > 0 {
		ratio = during.rate() / solo.rate()
	}
	refusal := "never refused"
	if atk.refused {
		refusal = fmt.Sprintf("refused flow %d", atk.admitted+1)
	}
	t.Logf("pin figure: budget %s MiB; attacker admitted %d flows, %s; clawnetd RSS baseline %s MiB, peak %s MiB (+%s MiB), after detach %s MiB; victim alone %.0f MB/s, under attack %.0f MB/s (ratio %.2f)",
		harness.MiB(budget), atk.admitted, refusal, harness.MiB(idle.RSS), harness.MiB(peak.Peak), harness.MiB(grew), harness.MiB(after.RSS),
		solo.rate()/1e6, during.rate()/1e6, ratio)
	t.Logf("pin detail: flows_per_agent %d; attacker %d source + %d tarpit flows, %s MiB written, %s MiB reserved; RSS warm (after the victim alone) %s MiB, plateau after %v; "+
		"Go heap at the peak %s MiB in use of %s MiB from the OS, after detach %s MiB live (%s MiB released); "+
		"gateway's upstream sockets in the kernel (not in RSS) at the peak: %d, %s MiB received + %s MiB to send (at most %s + %s MiB on one); after detach: %d, %s MiB to send, %d in FIN-WAIT-1; "+
		"canary: %d of %d tarpit connections closed after detach",
		flowsLimit, atk.admitted-atk.tarpits, atk.tarpits, harness.MiB(atk.written.Load()), harness.MiB(reserved), harness.MiB(warm.RSS), fill.Round(100*time.Millisecond),
		harness.MiB(peakHeap.HeapInuse), harness.MiB(peakHeap.Sys), harness.MiB(afterHeap.HeapInuse), harness.MiB(afterHeap.HeapReleased),
		peakKernel.n, harness.MiB(peakKernel.recv), harness.MiB(peakKernel.send), harness.MiB(peakKernel.maxRecv), harness.MiB(peakKernel.maxSend), afterKernel.n, harness.MiB(afterKernel.send), afterKernel.finWait,
		tarpitsClosed, atk.tarpits)

	if limit := int64(pinBudget + pinMargin); grew > limit {
		t.Errorf("clawnetd's peak RSS grew by %s MiB over idle, more than the budget (%s MiB) and the margin (%s MiB)",
			harness.MiB(grew), harness.MiB(pinBudget), harness.MiB(pinMargin))
	}
	if !atk.refused {
		t.Errorf("the gateway admitted every one of the attacker's %d flows (%s MiB reserved): the budget was never reached", atk.admitted, harness.MiB(reserved))
	} else if !harness.IsRefused(atk.refusedErr) {
		t.Errorf("the attacker's flow past the limit failed with %v, want connection refused (RST)", atk.refusedErr)
	}
	if !sawLimitDeny(t, d, auditMark, attacker.name) {
		t.Errorf("the audit log has no builtin:limit deny naming limits.buffer_per_agent for %s", attacker.name)
	}
	if during.bytes == 0 {
		t.Errorf("the victim's download moved nothing while the attacker held its flows")
	}
	if closed < opened {
		t.Errorf("after the attacker detached, the canary saw %d of the %d source connections since the attack closed", closed, opened)
	}
	if lifted {
		t.Logf("%s=%s: the budget is lifted, so this run is expected to fail", envPinBudget, os.Getenv(envPinBudget))
	}
}

// pinLimits returns limits.buffer_per_agent and limits.flows_per_agent for
// the test, and whether CLAWNET_PIN_BUDGET changed them.
func pinLimits(t *testing.T) (budget int64, flows int, lifted bool) {
	s := os.Getenv(envPinBudget)
	if s == "" {
		return pinBudget, 4096, false
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a size such as 8GiB", envPinBudget, os.Getenv(envPinBudget))
	}
	return n * mult, 100000, true
}

func mustGoHeap(t *testing.T, d *harness.Daemon, gc bool) harness.GoHeap {
	t.Helper()
	h, err := d.GoHeap(gc)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustMemory(t *testing.T, d *harness.Daemon) harness.Memory {
	t.Helper()
	m, err := d.Memory()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitFlows waits until the daemon has n live flows.
func waitFlows(t *testing.T, d *harness.Daemon, n int) {
	t.Helper()
	var s harness.Status
	if !harness.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		s = d.MustStatus(t)
		return s.Flows == n
	}) {
		t.Fatalf("clawnetd still has %d flows, want %d", s.Flows, n)
	}
}

// waitPlateau waits until clawnetd's RSS has stopped growing (less than
// 1 MiB in a second) or limit passes, and returns how long it took.
func waitPlateau(t *testing.T, d *harness.Daemon, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	last := mustMemory(t, d).RSS
	for time.Since(start) < limit {
		time.Sleep(time.Second)
		now := mustMemory(t, d).RSS
		if now-last < 1<<20 {
			break
		}
		last = now
	}
	return time.Since(start)
}

// agentReserved reads buffer_reserved of one agent from clawnet ls --json.
func agentReserved(t *testing.T, d *harness.Daemon, name string) int64 {
	t.Helper()
	var agents []struct {
		Name           string `json:"name"`
		BufferReserved int64  `json:"buffer_reserved"`
	}
	if err := json.Unmarshal([]byte(d.MustCLI(t, "ls", "--json")), &agents); err != nil {
		t.Fatalf("clawnet ls --json: %v", err)
	}
	for _, a := range agents {
		if a.Name == name {
			return a.BufferReserved
		}
	}
	t.Fatalf("clawnet ls does not list %s", name)
	return 0
}

// sawLimitDeny reports whether the audit log has, after mark, a deny of the
// agent by builtin:limit for its buffer budget.
func sawLimitDeny(t *testing.T, d *harness.Daemon, mark int, agent string) bool {
	t.Helper()
	return harness.Poll(2*time.Second, 20*time.Millisecond, func() bool {
		all := d.Audit(t)
		if mark > len(all) {
			return false
		}
		for _, ae := range all[mark:] {
			if ae.Agent == agent && ae.Verdict == "deny" && ae.Rule == "builtin:limit" && strings.Contains(ae.Reason, "buffer_per_agent") {
				return true
			}
		}
		return false
	})
}

func writeHeapProfile(t *testing.T, d *harness.Daemon, path string) {
	t.Helper()
	b, err := d.Get("/debug/pprof/heap?gc=1")
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	t.Logf("clawnetd heap profile at the peak: %s", path)
}

// kernelSockets is what ss says of the host namespace's TCP sockets to one
// address: the gateway's upstream sockets (the agents' and the canary's
// are in their own namespaces).
type kernelSockets struct {
	n, finWait int
	// recv and send are the sockets' receive and send queues as the
	// kernel accounts them (skmem r and w: buffers with their overhead).
	recv, send int64
	// maxRecv and maxSend are the largest of one socket.
	maxRecv, maxSend int64
}

func upstreamSockets(t *testing.T, server netip.Addr) kernelSockets {
	t.Helper()
	out, err := exec.Command("ss", "-tmnaH", "dst", server.String()).Output()
	if err != nil {
		t.Logf("ss: %v", err)
		return kernelSockets{}
	}
	var k kernelSockets
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && !strings.HasPrefix(f[0], "skmem"):
			k.n++
			if f[0] == "FIN-WAIT-1" {
				k.finWait++
			}
		case len(f) == 1 && strings.HasPrefix(f[0], "skmem:("):
			for _, kv := range strings.Split(strings.Trim(strings.TrimPrefix(f[0], "skmem:"), "()"), ",") {
				if len(kv) < 2 || kv[1] < '0' || kv[1] > '9' {
					continue // rb, tb: the limits, not the use
				}
				n, _ := strconv.ParseInt(kv[1:], 10, 64)
				switch kv[0] {
				case 'r':
					k.recv += n
					k.maxRecv = max(k.maxRecv, n)
				case 'w':
					k.send += n
					k.maxSend = max(k.maxSend, n)
				}
			}
		}
	}
	return k
}

// transfer is what one download moved.
type transfer struct {
	bytes int64
	took  time.Duration
}

func (x transfer) rate() float64 {
	if x.took <= 0 {
		return 0
	}
	return float64(x.bytes) / x.took.Seconds()
}

// download reads from the canary's source through the agent for about
// dur, on as many connections as it takes, and returns what it moved.
func download(t *testing.T, a *agent, src netip.AddrPort, dur time.Duration) transfer {
	t.Helper()
	buf := make([]byte, 256<<10)
	start := time.Now()
	end := start.Add(dur)
	var n int64
	for time.Now().Before(end) {
		c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), "tcp", src.String())
		if err != nil {
			t.Errorf("agent %s: dial %s: %v", a.name, src, err)
			break
		}
		c.SetDeadline(end)
		if _, err := fmt.Fprintf(c, "%d\n", sourceAsk); err != nil {
			c.Close()
			t.Errorf("agent %s: source request: %v", a.name, err)
			break
		}
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("agent %s: download: %v", a.name, err)
				}
				break
			}
		}
		c.Close()
	}
	return transfer{bytes: n, took: time.Since(start)}
}

// attack is the attacker's flows and the goroutines writing on them.
type attack struct {
	mu    sync.Mutex // guards conns and done
	conns []net.Conn
	done  bool
	wg    sync.WaitGroup

	admitted, tarpits int
	refused           bool
	refusedErr        error
	written           atomic.Int64
}

// junk is what the attacker writes: never read by anyone.
var junk = make([]byte, 64<<10)

// open opens flows from a until the gateway refuses one (or
// maxAttackFlows, or openFor), and starts a writer on each: three in four
// to the source, which first asks for a gigabyte it never reads (and reads
// nothing more itself while it sends, so both directions fill), one in four
// to the tarpit (only the upstream direction fills).
func (k *attack) open(t *testing.T, a *agent, source, tarpit netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(openFor)
	for k.admitted < maxAttackFlows && time.Now().Before(deadline) {
		dst := source
		if k.admitted%4 == 3 {
			dst = tarpit
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := a.ns.Dial(ctx, "tcp", dst.String())
		cancel()
		if err != nil {
			k.refused, k.refusedErr = true, err
			return
		}
		// Small socket buffers on the attacker's side: the kernel of the
		// agent's namespace holds little, the gateway's side fills as soon.
		tc := c.(*net.TCPConn)
		tc.SetWriteBuffer(64 << 10)
		tc.SetReadBuffer(64 << 10)
		if dst.Port() == portSource {
			if _, err := fmt.Fprintf(c, "%d\n", sourceAsk); err != nil {
				c.Close()
				t.Fatalf("attacker: source request: %v", err)
			}
		} else {
			k.tarpits++
		}
		k.admitted++
		if !k.add(c) {
			return
		}
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			for {
				n, err := c.Write(junk)
				k.written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
}

func (k *attack) add(c net.Conn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done {
		c.Close()
		return false
	}
	k.conns = append(k.conns, c)
	return true
}

// stop closes every flow of the attacker and waits for its writers.
func (k *attack) stop() {
	k.mu.Lock()
	k.done = true
	conns := k.conns
	k.conns = nil
	k.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	k.wg.Wait()
}
