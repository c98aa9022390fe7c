package suite

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
	"github.com/clawnet/clawnet/bench/internal/report"
)

// dnsName is the one name the server's DNS server answers and the bench
// policy allows.
const dnsName = "bench.test"

// gatewayDefault is clawnet's gateway address in every agent namespace on
// the default config, used when attach does not print one.
const gatewayDefault = "100.96.0.1"

// flowsPerAgent keeps each agent well under the gateway's default limits:
// limits.flows_per_agent (4096) and limits.buffer_per_agent (512 MiB, which
// admits about 720 TCP flows: each reserves its netstack and copy buffers
// at their most). The per-flow figure spreads its flows over as many agents
// as that takes instead of changing the default config.
const flowsPerAgent = 600

// clawnetSystem is clawnetd (in the host namespace, on its default config
// plus a policy that allows the server) and one attached agent namespace.
// With inbound the agent runs the probe server too, and the attach
// publishes its port on the host's 127.0.0.1.
type clawnetSystem struct {
	t       *topology
	bin     string // directory holding clawnetd and clawnet
	inbound bool
	// noisyRun: this run has the noisy-neighbour test, which setup
	// prepares on a second daemon (noisy).
	noisyRun bool
	noisy    *noisyNet
	// defaults makes this daemon the noisy-neighbour test's: the default
	// config's limits, not the suite's lifted ones, and the victim's and
	// the neighbour's policies instead of the bench policy.
	defaults bool
	logFile  string // clawnetd's own log, kept with the results
	logF     *os.File
	dir      string // config, policy, socket, audit log, daemon log
	ns       string
	gateway  string
	d        *proc  // the running daemon
	port     uint16 // published on 127.0.0.1, to the agent's probePort
	srv      *proc  // the probe server in the agent's namespace
}

func (c *clawnetSystem) inboundAddr() netip.AddrPort {
	return onLoopback(c.port)
}

func (c *clawnetSystem) name() string       { return report.Clawnet }
func (c *clawnetSystem) netns() string      { return c.ns }
func (c *clawnetSystem) target() netip.Addr { return c.t.addr }

func (c *clawnetSystem) pid() int {
	if c.d == nil {
		return 0
	}
	return c.d.pid()
}

func (c *clawnetSystem) alive() error {
	if c.d == nil {
		return errors.New("clawnetd is not running")
	}
	if gone, err := c.d.exited(); gone {
		return err
	}
	return serverExited(c.srv)
}

func (c *clawnetSystem) socket() string { return filepath.Join(c.dir, "clawnet.sock") }

// prepare checks the binaries and writes the config and the policy.
func (c *clawnetSystem) prepare() error {
	for _, b := range []string{"clawnetd", "clawnet"} {
		if st, err := os.Stat(filepath.Join(c.bin, b)); err != nil || st.IsDir() {
			return fmt.Errorf("%s not found in %s: run `make build` first", b, c.bin)
		}
	}
	dir, err := os.MkdirTemp("", "clawbench-clawnet-")
	if err != nil {
		return err
	}
	c.dir = dir
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o755); err != nil {
		return err
	}
	srv := netip.PrefixFrom(c.t.addr, 24).Masked()
	if c.defaults {
		return c.prepareDefaults(srv)
	}
	// The ingress rule lets the host in, through the published port, to
	// the probe server the bench agent runs.
	policy := fmt.Sprintf(`version: v1
name: bench
egress:
  - cidrs: [%s]
    ports: [%d, %d, "%d-%d"]
  - domains: [%s]
    ports: [%d, %d]
ingress:
  - host: true
    ports: [%d]
`, srv, probePort, httpAddrPort, iperfBasePort, iperfBasePort+len(report.Systems)-1, dnsName, httpPort, httpsPort, probePort)
	if err := os.WriteFile(filepath.Join(dir, "policies", "bench.yaml"), []byte(policy), 0o644); err != nil {
		return err
	}
	// Only what the suite needs on top of the defaults: where its files
	// go, its DNS server, and its lab range declared public. The per-agent
	// DNS rate limit (200/s by default) guards against an abusive agent;
	// left in place, the DNS figure would measure the limiter, not the
	// resolver, so it is lifted here and nowhere else. The same goes for
	// the per-agent rate of new flows (500/s by default), which the
	// connects/s figure would otherwise measure. The packets a second into
	// an agent's stack (50,000 by default) stay at the default: every
	// figure here must hold under it. The shared answer cache
	// is off: the suite asks one name over and over, and the DNS figure is
	// the resolver's, not a cache hit's (1.8 µs in dnsproxy's benchmark).
	return c.writeConfig(`  queries_per_second: 1000000
  burst: 1000000
  cache_size: 0
limits:
  new_flows_per_second: 1000000
  new_flows_burst: 1000000
`)
}

// writeConfig writes clawnetd.yaml: the suite's files, its lab range
// declared public and its DNS server as the upstream, then more, YAML
// that goes on in the dns: block.
func (c *clawnetSystem) writeConfig(more string) error {
	config := fmt.Sprintf(`version: v1
socket: %s
policy_dir: %s
audit_log: %s
state_dir: %s
treat_as_public: [%s]
dns:
  upstream: ["%s"]
`, c.socket(), filepath.Join(c.dir, "policies"), c.auditLog(), filepath.Join(c.dir, "state"),
		benchRange, netip.AddrPortFrom(c.t.addr, dnsPort))
	return os.WriteFile(filepath.Join(c.dir, "clawnetd.yaml"), []byte(config+more), 0o644)
}

// prepareDefaults writes the noisy-neighbour test's config: clawnetd's
// defaults, every limit included, with only the suite's files, its DNS
// server and its lab range on top; and two policies. The victim may reach
// the clawnet iperf3 server and nothing else; the neighbour the probe's
// echo server (TCP), the UDP sink, and the name the DNS server answers.
func (c *clawnetSystem) prepareDefaults(srv netip.Prefix) error {
	policies := map[string]string{
		noisyVictim: fmt.Sprintf(`version: v1
name: %s
egress:
  - cidrs: [%s]
    ports: [%d]
`, noisyVictim, srv, iperfPort(report.Clawnet)),
		noisyNeighbour: fmt.Sprintf(`version: v1
name: %s
egress:
  - cidrs: [%s]
    ports: [%d]
  - cidrs: [%s]
    ports: [%d]
    protocol: udp
  - domains: [%s]
    ports: [%d]
`, noisyNeighbour, srv, probePort, srv, udpSinkPort, dnsName, httpPort),
	}
	for name, p := range policies {
		if err := os.WriteFile(filepath.Join(c.dir, "policies", name+".yaml"), []byte(p), 0o644); err != nil {
			return err
		}
	}
	return c.writeConfig("")
}

// startDaemon starts a fresh clawnetd and waits for its control socket.
func (c *clawnetSystem) startDaemon(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			c.stopDaemon()
		}
	}()
	os.Remove(c.socket())
	cmd := exec.Command(filepath.Join(c.bin, "clawnetd"), "--config", filepath.Join(c.dir, "clawnetd.yaml"))
	var log io.Writer
	if c.logFile != "" {
		f, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("clawnetd log: %w", err)
		}
		// Closed by stopDaemon once the daemon's output is drained.
		c.logF = f
		fmt.Fprintf(f, "---- clawnetd started %s\n", time.Now().Format(time.RFC3339))
		log = f
	}
	p, err := startProc("clawnetd", cmd, log)
	if err != nil {
		return err
	}
	c.d = p
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if gone, err := p.exited(); gone {
			return err
		}
		if conn, err := net.Dial("unix", c.socket()); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("clawnetd: no control socket at %s after 15s: %s", c.socket(), p.out.String())
}

func (c *clawnetSystem) stopDaemon() {
	if c.d != nil {
		c.d.stop()
		c.d = nil
	}
	if c.logF != nil {
		c.logF.Close()
		c.logF = nil
	}
}

// clawnetCLI runs the clawnet CLI against this run's daemon.
func (c *clawnetSystem) clawnetCLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "clawnet"), args...)
	cmd.Env = append(os.Environ(), "CLAWNET_SOCKET="+c.socket())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clawnet %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// attach creates namespace ns (lo only) and attaches it as agent name
// with the bench policy, with more flags of clawnet attach if given.
func (c *clawnetSystem) attach(ctx context.Context, ns, name string, flags ...string) (string, error) {
	return c.attachPolicy(ctx, ns, name, "bench", flags...)
}

// attachPolicy is attach with another policy.
func (c *clawnetSystem) attachPolicy(ctx context.Context, ns, name, policy string, flags ...string) (string, error) {
	if err := addNetns(ctx, ns); err != nil {
		return "", err
	}
	return c.clawnetCLI(ctx, append([]string{"attach", "--netns", netnsPath(ns), "--name", name, "--policy", policy}, flags...)...)
}

// gatewayFrom reads the IPv4 gateway from attach's output line
// "... gateway=100.96.0.1,fd63:..."; the default when it is absent.
func gatewayFrom(out string) string {
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "gateway="); ok {
			for _, a := range strings.Split(v, ",") {
				if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
					return ip.String()
				}
			}
		}
	}
	return gatewayDefault
}

func (c *clawnetSystem) setup(ctx context.Context) error {
	if c.dir == "" {
		if err := c.prepare(); err != nil {
			return err
		}
	}
	if err := c.startDaemon(ctx); err != nil {
		return err
	}
	c.ns = c.t.nsName("clawnet")
	var flags []string
	if c.inbound {
		var err error
		if c.port, err = freePort(); err != nil {
			return err
		}
		flags = []string{"--publish", fmt.Sprintf("127.0.0.1:%d:%d", c.port, probePort)}
	}
	out, err := c.attach(ctx, c.ns, "bench", flags...)
	if err != nil {
		return err
	}
	c.gateway = gatewayFrom(out)
	if c.noisyRun {
		n, err := newNoisyNet(ctx, c)
		if err != nil {
			return fmt.Errorf("noisy neighbour: %w", err)
		}
		c.noisy = n
	}
	if !c.inbound {
		return nil
	}
	if c.srv, err = inboundServer(c.ns, c.t.probe); err != nil {
		return err
	}
	return waitProbe(ctx, c.inboundAddr())
}

func (c *clawnetSystem) close() error {
	var errs []error
	if c.noisy != nil {
		errs = append(errs, c.noisy.close())
	}
	if c.srv != nil {
		c.srv.stop()
	}
	c.stopDaemon()
	errs = append(errs, delNetns(c.ns))
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
	return errors.Join(errs...)
}

func (c *clawnetSystem) auditLog() string { return filepath.Join(c.dir, "audit.log") }

// auditEnd is the audit log's size: where the lines of the next test start.
func (c *clawnetSystem) auditEnd() int64 {
	st, err := os.Stat(c.auditLog())
	if err != nil {
		return 0
	}
	return st.Size()
}

// auditEvent holds the fields of an audit line the suite checks.
type auditEvent struct {
	Kind, Event, Agent, Direction, Peer, Proto, Dst, Host, SNI, Verdict string
}

// allowedOpen reports an allowed flow's open line whose destination is
// on port.
func (ev auditEvent) allowedOpen(port uint16) bool {
	if ev.Kind != "flow" || ev.Event != "open" || ev.Verdict != "allow" {
		return false
	}
	dst, err := netip.ParseAddrPort(ev.Dst)
	return err == nil && dst.Port() == port
}

// auditSince counts the audit lines from offset off on that match.
func (c *clawnetSystem) auditSince(off int64, match func(auditEvent) bool) (int, error) {
	f, err := os.Open(c.auditLog())
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev auditEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil && match(ev) {
			n++
		}
	}
	return n, sc.Err()
}

// nameBoundSince counts the flows opened since offset off of the audit log
// that carried HTTP with Host dnsName to port httpPort, allowed: flows the
// bench policy allows by name only, so the gateway checked their requests.
func (c *clawnetSystem) nameBoundSince(off int64) (int, error) {
	return c.auditSince(off, func(ev auditEvent) bool {
		return ev.allowedOpen(httpPort) && strings.EqualFold(ev.Host, dnsName)
	})
}

// sniBoundSince counts the flows opened since offset off of the audit log
// that presented SNI dnsName to port httpsPort, allowed: flows the bench
// policy allows by name only, whose ClientHello the gateway checked.
func (c *clawnetSystem) sniBoundSince(off int64) (int, error) {
	return c.auditSince(off, func(ev auditEvent) bool {
		return ev.allowedOpen(httpsPort) && strings.EqualFold(ev.SNI, dnsName)
	})
}

// inboundSince counts the inbound connections from the host to the bench
// agent's probePort that the audit log shows opened, allowed, since
// offset off: proof that a figure labelled clawnet went through the
// gateway's published port and its ingress decision.
func (c *clawnetSystem) inboundSince(off int64) (int, error) {
	return c.auditSince(off, func(ev auditEvent) bool {
		return ev.allowedOpen(probePort) && ev.Agent == "bench" && ev.Direction == "in" && ev.Peer == "host"
	})
}

// rss samples the daemon's resident memory a few times after letting it
// settle, and returns the median, in KiB.
func (c *clawnetSystem) rss(ctx context.Context) (float64, error) {
	var samples []float64
	for i := range 5 {
		wait := 200 * time.Millisecond
		if i == 0 {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
		if err := c.alive(); err != nil {
			return 0, err
		}
		st, err := readProcStat(c.pid())
		if err != nil {
			return 0, err
		}
		samples = append(samples, st.rssKiB)
	}
	m, _ := report.Median(samples)
	return m, nil
}

// memory measures the gateway's resident memory: idle, per idle attached
// agent (with cfg.Agents, then with cfg.ManyAgents), and per idle TCP
// flow; each figure when its test runs. Each part runs on a fresh daemon,
// before any throughput test, so that heap a previous part freed does not
// hide what the next one costs.
func (c *clawnetSystem) memory(ctx context.Context, cfg Config, logf func(string, ...any)) (map[string]float64, error) {
	if err := c.prepare(); err != nil {
		return nil, err
	}
	out := map[string]float64{}

	// Idle, then with cfg.Agents idle agents, then with cfg.ManyAgents.
	if err := c.startDaemon(ctx); err != nil {
		return nil, err
	}
	idle, err := c.rss(ctx)
	if err != nil {
		c.stopDaemon()
		return nil, err
	}
	if cfg.runs(testMemory) {
		out[report.RSSIdleMiB] = idle / 1024
	}
	var agentNS []string
	defer func() {
		for _, ns := range agentNS {
			delNetns(ns)
		}
	}()
	attach := func(n int) error {
		start, from := time.Now(), len(agentNS)
		for i := from; i < n; i++ {
			ns := c.t.nsName(fmt.Sprintf("agent%03d", i))
			agentNS = append(agentNS, ns)
			if _, err := c.attach(ctx, ns, fmt.Sprintf("idle%03d", i)); err != nil {
				return fmt.Errorf("attach idle agent %d of %d: %w", i+1, n, err)
			}
		}
		logf("clawnet: attached %d idle agents (%d in all) in %.1fs", n-from, n, time.Since(start).Seconds())
		return nil
	}
	perAgent := func(n int) (float64, error) {
		if err := attach(n); err != nil {
			return 0, err
		}
		rss, err := c.rss(ctx)
		if err != nil {
			return 0, err
		}
		return (rss - idle) / float64(n), nil
	}
	if err := func() error {
		defer c.stopDaemon()
		v, err := perAgent(cfg.Agents)
		if err != nil {
			return err
		}
		if cfg.runs(testMemory) {
			out[report.RSSPerAgentKiB] = v
			logf("clawnet: RSS idle %.1f MiB, %.0f KiB per idle agent with %d attached", idle/1024, v, cfg.Agents)
		}
		if !cfg.runs(testFleet) {
			return nil
		}
		if v, err = perAgent(cfg.ManyAgents); err != nil {
			return err
		}
		out[report.RSSPerAgent200KiB] = v
		logf("clawnet: %.0f KiB per idle agent with %d attached", v, cfg.ManyAgents)
		return nil
	}(); err != nil {
		return out, err
	}
	for _, ns := range agentNS {
		delNetns(ns)
	}
	agentNS = nil
	if !cfg.runs(testMemory) {
		return out, nil
	}

	// Idle TCP flows held open through the gateway to the server.
	if err := c.startDaemon(ctx); err != nil {
		return out, err
	}
	defer c.stopDaemon()
	holders := (cfg.Flows + flowsPerAgent - 1) / flowsPerAgent
	for i := range holders {
		ns := c.t.nsName(fmt.Sprintf("flows%d", i))
		agentNS = append(agentNS, ns)
		if _, err := c.attach(ctx, ns, fmt.Sprintf("flows%d", i)); err != nil {
			return out, err
		}
	}
	before, err := c.rss(ctx)
	if err != nil {
		return out, err
	}
	start := time.Now()
	release, err := c.holdFlows(ctx, agentNS, cfg.Flows)
	if err != nil {
		return out, err
	}
	logf("clawnet: %d idle flows open through %d agents in %.1fs", cfg.Flows, holders, time.Since(start).Seconds())
	held, err := c.rss(ctx)
	if rerr := release(); err == nil {
		err = rerr
	}
	if err != nil {
		return out, err
	}
	out[report.RSSPerFlowKiB] = (held - before) / float64(cfg.Flows)
	logf("clawnet: %.1f KiB per idle flow", out[report.RSSPerFlowKiB])
	return out, nil
}

// holdFlows opens n connections to the probe server, spread over the
// agent namespaces, and returns once all are up; release closes them.
func (c *clawnetSystem) holdFlows(ctx context.Context, nss []string, n int) (release func() error, err error) {
	type holder struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *tailBuffer
	}
	var hs []holder
	release = func() error {
		var errs []error
		for _, h := range hs {
			h.stdin.Close()
		}
		// A probe still opening connections only looks at stdin once they
		// are all up; do not wait for that.
		kill := time.AfterFunc(10*time.Second, func() {
			for _, h := range hs {
				h.cmd.Process.Kill()
			}
		})
		defer kill.Stop()
		for _, h := range hs {
			if err := h.cmd.Wait(); err != nil {
				errs = append(errs, fmt.Errorf("probe hold: %w: %s", err, h.out.String()))
			}
		}
		return errors.Join(errs...)
	}
	ready := make(chan error, len(nss))
	for i, ns := range nss {
		share := n / len(nss)
		if i < n%len(nss) {
			share++
		}
		cmd := nsCommand(ctx, ns, c.t.probe, "hold", "-addr", netip.AddrPortFrom(c.t.addr, probePort).String(),
			"-n", fmt.Sprint(share), "-workers", "16")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			release()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			release()
			return nil, err
		}
		h := holder{cmd: cmd, stdin: stdin, out: &tailBuffer{max: 2048}}
		cmd.Stderr = h.out
		if err := cmd.Start(); err != nil {
			release()
			return nil, fmt.Errorf("start probe hold: %w", err)
		}
		hs = append(hs, h)
		go func() {
			line, err := bufio.NewReader(stdout).ReadBytes('\n')
			if err != nil {
				ready <- fmt.Errorf("probe hold in %s: %w", ns, err)
				return
			}
			r, err := probe.ParseResult(line)
			if err == nil && r.Ops != int64(share) {
				err = fmt.Errorf("probe hold in %s: %d connections up, want %d", ns, r.Ops, share)
			}
			ready <- err
			io.Copy(io.Discard, stdout)
		}()
	}
	timeout := time.After(2 * time.Minute)
	for range hs {
		select {
		case err := <-ready:
			if err != nil {
				rerr := release()
				return nil, errors.Join(err, rerr)
			}
		case <-timeout:
			release()
			return nil, fmt.Errorf("%d flows not up after 2 minutes", n)
		}
	}
	return release, nil
}

// Interfaces checked at compile time.
var (
	_ system = (*vethSystem)(nil)
	_ system = (*slirpSystem)(nil)
	_ system = (*pastaSystem)(nil)
	_ system = (*clawnetSystem)(nil)
	_ system = (*dockerSystem)(nil)

	_ inbounder = (*vethSystem)(nil)
	_ inbounder = (*pastaSystem)(nil)
	_ inbounder = (*clawnetSystem)(nil)
	_ inbounder = (*dockerSystem)(nil)
)
