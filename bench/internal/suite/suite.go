package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
	"github.com/clawnet/clawnet/bench/internal/report"
)

// runner holds one run's state.
type runner struct {
	cfg      Config
	t        *topology
	samples  report.Samples
	failures map[string][]string // system → what went wrong, in order
	warnings []string
	start    time.Time
	load     string // /proc/loadavg when the run started
	docker   string // the engine and its forwarder, when docker ran
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "[%5.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *runner) fail(system string, err error) {
	if r.cfg.Mode == "smoke" && system != "clawnet" {
		// The smoke run checks clawnet's data path in CI. A stall of
		// another tool (pasta's upload now and then under load) is
		// reported, but is not clawnet's failure; full and quick runs
		// still fail on it.
		r.warn("%s: %v (another system; the smoke run goes on)", system, err)
		return
	}
	r.failures[system] = append(r.failures[system], err.Error())
	r.logf("%s: FAILED: %v", system, err)
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.warnings = append(r.warnings, msg)
	r.logf("warning: %s", msg)
}

// Run measures cfg.Systems, writes results.json, results.md, raw.json and
// chart.svg to cfg.OutDir and prints the table on stdout. It returns an
// error when any system failed to run or misses a figure, after writing
// whatever it did measure.
func Run(ctx context.Context, cfg Config, stdout io.Writer) error {
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if cfg.Bin == "" {
		cfg.Bin = filepath.Join(cfg.Root, "bin")
	}
	r := &runner{cfg: cfg, samples: report.Samples{}, failures: map[string][]string{}, start: time.Now(), load: loadavg()}
	if os.Geteuid() != 0 {
		return errors.New("clawbench needs root: it creates network namespaces, veth pairs and TUN devices")
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	// A system none of whose figures is selected is not set up at all.
	var systems []string
	for _, s := range cfg.Systems {
		if cfg.measures(s) {
			systems = append(systems, s)
		} else {
			r.logf("%s: measures none of the selected figures; left out", s)
		}
	}
	if len(systems) == 0 {
		return errors.New("no system named measures any of the selected figures")
	}
	if slices.Contains(systems, report.Docker) {
		if _, err := dockerEngine(ctx); err == nil {
			removeStaleContainers(ctx, r.logf)
		} else if cfg.DockerOptional {
			// Smoke only: `make deps` installs the engine, so CI has one;
			// a developer without it still gets the other systems checked.
			r.warn("docker left out of this smoke run: %v", err)
			systems = slices.DeleteFunc(systems, func(s string) bool { return s == report.Docker })
		}
	}
	cfg.Systems = systems
	r.cfg = cfg
	if err := ensureTools(ctx, cfg.Systems, r.logf); err != nil {
		return err
	}
	removeStale(r.logf)

	tmp, err := os.MkdirTemp("", "clawbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// A name no other tool on the machine is likely to share, so that
	// nobody's clean-up by process name takes the suite's servers down.
	probeBin := filepath.Join(tmp, "clawbench-probe")
	if err := buildProbe(ctx, cfg.Root, probeBin); err != nil {
		return err
	}

	t, err := newTopology(ctx, probeBin, tmp, cfg.Systems)
	if err != nil {
		return fmt.Errorf("build the server namespace: %w", err)
	}
	r.t = t
	defer func() {
		if err := t.close(); err != nil {
			r.logf("cleanup: %v", err)
		}
	}()
	r.logf("server namespace %s at %s (run prefix %s)", t.serverNS, t.addr, t.prefix)

	active := r.setupSystems(ctx)
	defer func() {
		for _, s := range slices.Backward(active) {
			if err := s.close(); err != nil {
				r.logf("cleanup %s: %v", s.name(), err)
			}
		}
	}()

	for rep := 1; rep <= cfg.Reps && ctx.Err() == nil; rep++ {
		for _, s := range active {
			if len(r.failures[s.name()]) > 0 && s.alive() != nil {
				continue // its data path died in an earlier repetition
			}
			if ctx.Err() != nil {
				break
			}
			r.measure(ctx, s, rep)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}

	results := r.samples.Medians()
	if err := r.write(results, stdout); err != nil {
		return err
	}
	var problems []string
	for _, s := range cfg.Systems {
		if len(r.failures[s]) > 0 {
			problems = append(problems, fmt.Sprintf("%s failed: %s", s, r.failures[s][0]))
		}
	}
	checked := cfg.Systems
	if cfg.Mode == "smoke" {
		checked = []string{"clawnet"} // see fail: other tools' stalls are warnings here
	}
	if missing := results.Missing(checked, cfg.metrics()); len(missing) > 0 {
		problems = append(problems, "missing or zero: "+strings.Join(missing, ", "))
	}
	r.logf("done in %.0fs; results in %s", time.Since(r.start).Seconds(), cfg.OutDir)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// setupSystems builds every system's path; the ones that fail are
// recorded and left out of the measurements.
func (r *runner) setupSystems(ctx context.Context) []system {
	var active []system
	for _, name := range r.cfg.Systems {
		// Only when the inbound tests run do pasta and clawnet forward or
		// publish a port, so that the outbound figures are taken on the
		// same setup as ever.
		inbound := r.cfg.runsFor(testInRR, name) || r.cfg.runsFor(testInConnects, name)
		var s system
		switch name {
		case report.Veth:
			s = &vethSystem{t: r.t}
		case report.Slirp:
			s = &slirpSystem{t: r.t}
		case report.Pasta:
			s = &pastaSystem{t: r.t, inbound: inbound}
		case report.Docker:
			s = &dockerSystem{t: r.t}
		case report.Clawnet:
			logFile := filepath.Join(r.cfg.OutDir, "clawnetd.log")
			os.Remove(logFile)
			c := &clawnetSystem{t: r.t, bin: r.cfg.Bin, inbound: inbound, logFile: logFile, noisyRun: r.cfg.runs(testNoisy)}
			if r.cfg.runs(testMemory) || r.cfg.runs(testFleet) {
				// Memory first, on fresh daemons, before any traffic.
				mem, err := c.memory(ctx, r.cfg, r.logf)
				for k, v := range mem {
					r.samples.Add(name, k, v)
				}
				if err != nil {
					r.fail(name, fmt.Errorf("memory: %w", err))
				}
			}
			s = c
		}
		if err := s.setup(ctx); err != nil {
			r.fail(name, fmt.Errorf("setup: %w", err))
			if err := s.close(); err != nil {
				r.logf("cleanup %s: %v", name, err)
			}
			continue
		}
		switch {
		case name == report.Docker:
			d := s.(*dockerSystem)
			r.docker = d.info
			r.logf("%s: ready (container %s, %s, published at %s)", name, d.container, d.info, d.inboundAddr())
		case inbound:
			r.logf("%s: ready (client namespace %s, server at %s; inbound at %s)", name, s.netns(), s.target(), s.(inbounder).inboundAddr())
		default:
			r.logf("%s: ready (client namespace %s, server at %s)", name, s.netns(), s.target())
		}
		active = append(active, s)
	}
	return active
}

var iperfTests = []struct {
	test    string
	key     string
	label   string
	reverse bool
	streams int
}{
	{testUpload, report.UploadGbps, "up", false, 1},
	{testDownload, report.DownloadGbps, "down", true, 1},
	{testUpload4, report.Upload4Gbps, "up×4", false, 4},
	{testDownload4, report.Download4Gbps, "down×4", true, 4},
}

// measure runs one repetition of every test against s.
func (r *runner) measure(ctx context.Context, s system, rep int) {
	name := s.name()
	var line []string
	var cpu time.Duration
	var moved float64
	for _, tt := range iperfTests {
		if !r.cfg.runsFor(tt.test, name) {
			continue
		}
		var res iperfResult
		used, cpuOK, err := cpuOf(s, func() (err error) {
			return r.profiled(ctx, s, rep, tt.key, time.Duration(r.cfg.IperfSeconds)*time.Second, func() (err error) {
				res, err = runIperf(ctx, s.netns(), s.target(), iperfPort(name), r.cfg.IperfSeconds, tt.reverse, tt.streams)
				return err
			})
		})
		if ctx.Err() != nil {
			return // interrupted: nothing here is the system's fault
		}
		if err != nil {
			r.fail(name, fmt.Errorf("%s: %w", tt.key, err))
			continue
		}
		if cpuOK {
			cpu += used
			moved += res.bytes
		}
		r.samples.Add(name, tt.key, res.gbps)
		line = append(line, fmt.Sprintf("%s %.2f", tt.label, res.gbps))
	}
	if moved > 0 {
		r.samples.Add(name, report.CPUsPerGB, cpu.Seconds()/(moved/1e9))
		line = append(line, fmt.Sprintf("cpu %.2fs/GB", cpu.Seconds()/(moved/1e9)))
	}

	addr := netip.AddrPortFrom(s.target(), probePort).String()
	if r.cfg.runsFor(testRR, name) {
		var res probe.Result
		err := r.profiled(ctx, s, rep, "rr", r.cfg.RR, func() (err error) {
			res, err = runProbe(ctx, s.netns(), r.t.probe, r.cfg.RR, "rr", "-addr", addr, "-duration", r.cfg.RR.String())
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(name, fmt.Errorf("rr: %w", err))
		} else {
			r.samples.Add(name, report.RRPerS, res.PerSec)
			r.samples.Add(name, report.RRP50us, res.P50us)
			r.samples.Add(name, report.RRP99us, res.P99us)
			line = append(line, fmt.Sprintf("rr %.0f/s p50 %.0fµs p99 %.0fµs", res.PerSec, res.P50us, res.P99us))
		}
	}
	if r.cfg.runsFor(testConnects, name) {
		var res probe.Result
		err := r.profiled(ctx, s, rep, "connects", r.cfg.Connects, func() (err error) {
			res, err = runProbe(ctx, s.netns(), r.t.probe, r.cfg.Connects, "connects", "-addr", addr,
				"-workers", fmt.Sprint(r.cfg.Workers), "-duration", r.cfg.Connects.String())
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(name, fmt.Errorf("connects: %w", err))
		} else {
			r.samples.Add(name, report.ConnectsPerS, res.PerSec)
			line = append(line, fmt.Sprintf("connects %.0f/s", res.PerSec))
			r.warnErrors(name, res)
		}
	}
	c, isClawnet := s.(*clawnetSystem)
	if isClawnet && r.cfg.runsFor(testDNS, name) {
		res, err := runProbe(ctx, s.netns(), r.t.probe, r.cfg.DNS, "dns", "-server", c.gateway+":53",
			"-name", dnsName, "-workers", fmt.Sprint(r.cfg.DNSWorkers), "-duration", r.cfg.DNS.String())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(name, fmt.Errorf("dns: %w", err))
		} else {
			r.samples.Add(name, report.DNSQPS, res.PerSec)
			r.samples.Add(name, report.DNSP50us, res.P50us)
			line = append(line, fmt.Sprintf("dns %.0f q/s p50 %.0fµs", res.PerSec, res.P50us))
			r.warnErrors(name, res)
		}
	}
	for _, ht := range r.httpTests(s) {
		if !r.cfg.runsFor(ht.test, name) {
			continue
		}
		var auditOff int64
		if ht.byName {
			auditOff = c.auditEnd()
		}
		var res probe.Result
		used, cpuOK, err := cpuOf(s, func() (err error) {
			res, err = runProbe(ctx, s.netns(), r.t.probe, ht.d, append([]string{"http", "-duration", ht.d.String()}, ht.args...)...)
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(name, fmt.Errorf("%s: %w", ht.key, err))
			continue
		}
		if ht.byName {
			// A figure labelled "by name" that went by address would
			// measure nothing of the request checks: prove the flow.
			if n, err := c.nameBoundSince(auditOff); err != nil || n == 0 {
				r.fail(name, fmt.Errorf("%s: no allowed flow to port %d with Host %s in the audit log (%v): the test did not go through a name-bound flow", ht.key, httpPort, dnsName, err))
				continue
			}
		}
		if ht.rate {
			r.samples.Add(name, ht.key, res.PerSec)
			line = append(line, fmt.Sprintf("%s %.0f/s", ht.label, res.PerSec))
			if cpuOK && res.Ops > 0 {
				perReq := float64(used.Microseconds()) / float64(res.Ops)
				r.samples.Add(name, ht.cpuKey, perReq)
				line = append(line, fmt.Sprintf("cpu %.1fµs", perReq))
			}
			continue
		}
		r.samples.Add(name, ht.key, res.Gbps)
		line = append(line, fmt.Sprintf("%s %.2f", ht.label, res.Gbps))
		if cpuOK && res.Bytes > 0 {
			perGB := used.Seconds() / (float64(res.Bytes) / 1e9)
			r.samples.Add(name, ht.cpuKey, perGB)
			line = append(line, fmt.Sprintf("cpu %.2fs/GB", perGB))
		}
	}
	r.measureWorkloads(ctx, s, &line)
	if ctx.Err() != nil {
		return
	}
	// Inbound last, so that the outbound tests run as they always have.
	if in, ok := s.(inbounder); ok {
		r.measureInbound(ctx, s, in.inboundAddr().String(), &line)
		if ctx.Err() != nil {
			return
		}
	}
	r.logf("rep %d/%d %-11s %s", rep, r.cfg.Reps, name, strings.Join(line, "  "))
	if isClawnet && c.noisy != nil && r.cfg.runsFor(testNoisy, name) {
		r.measureNoisy(ctx, c, rep)
		if ctx.Err() != nil {
			return
		}
	}

	if err := s.alive(); err != nil {
		r.fail(name, err)
	}
	if err := r.t.checkServers(); err != nil {
		r.fail(name, err)
	}
}

// workloadSeed draws the stream's gaps and the install's sizes: the same
// for every system and repetition.
const workloadSeed = 1

// installTimeout bounds the install test, which runs until its fetches
// are done rather than for a set time.
const installTimeout = 60 * time.Second

// profiled runs test; with -pprof and on clawnet, it also saves a CPU
// profile of clawnetd over the test's whole seconds (at least one) to
// OUT/pprof/repN-TEST.pb.gz. A profile that fails is a warning, not the
// test's failure.
func (r *runner) profiled(ctx context.Context, s system, rep int, test string, d time.Duration, fn func() error) error {
	c, ok := s.(*clawnetSystem)
	if !r.cfg.Profile || !ok {
		return fn()
	}
	secs := max(time.Second, d.Truncate(time.Second))
	done := make(chan error, 1)
	go func() {
		done <- c.cpuProfile(ctx, secs, filepath.Join(r.cfg.OutDir, "pprof", fmt.Sprintf("rep%d-%s.pb.gz", rep, test)))
	}()
	err := fn()
	if perr := <-done; perr != nil {
		r.warn("clawnet: CPU profile of %s: %v", test, perr)
	}
	return err
}

// measureWorkloads runs the agent's workloads over HTTPS from s's client
// namespace, all by name: the client resolves dnsName through the
// system's resolver path (on clawnet the gateway, whose policy allows
// httpsPort only by that name, so the gateway checks every ClientHello's
// SNI; elsewhere the server's DNS server, through the system's NAT) and
// connects where the answer points.
func (r *runner) measureWorkloads(ctx context.Context, s system, line *[]string) {
	name := s.name()
	resolver := netip.AddrPortFrom(r.t.addr, dnsPort).String()
	c, isClawnet := s.(*clawnetSystem)
	if isClawnet {
		resolver = c.gateway + ":53"
	}
	target := []string{"-addr", fmt.Sprintf("%s:%d", dnsName, httpsPort), "-dns", resolver, "-ca", r.t.certFile}
	for _, w := range []struct {
		test string
		d    time.Duration
		args []string
	}{
		{testHTTPS, r.cfg.HTTPS, []string{"https", "-duration", r.cfg.HTTPS.String()}},
		{testStream, r.cfg.Stream, []string{"stream", "-duration", r.cfg.Stream.String(), "-seed", fmt.Sprint(workloadSeed)}},
		{testInstall, installTimeout, []string{"install", "-fetches", fmt.Sprint(r.cfg.InstallFetches),
			"-workers", fmt.Sprint(r.cfg.InstallConns), "-seed", fmt.Sprint(workloadSeed)}},
	} {
		if !r.cfg.runsFor(w.test, name) {
			continue
		}
		var auditOff int64
		if isClawnet {
			auditOff = c.auditEnd()
		}
		res, err := runProbe(ctx, s.netns(), r.t.probe, w.d, slices.Concat(w.args, target)...)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(name, fmt.Errorf("%s: %w", w.test, err))
			continue
		}
		if isClawnet {
			// A figure labelled "by name" that went by address would
			// measure nothing of the SNI check: prove the flow.
			if n, err := c.sniBoundSince(auditOff); err != nil || n == 0 {
				r.fail(name, fmt.Errorf("%s: no allowed flow to port %d with SNI %s in the audit log (%v): the test did not go through a name-bound flow", w.test, httpsPort, dnsName, err))
				continue
			}
		}
		switch w.test {
		case testHTTPS:
			r.samples.Add(name, report.HTTPSPerS, res.PerSec)
			r.samples.Add(name, report.HTTPSP50us, res.P50us)
			r.samples.Add(name, report.HTTPSP99us, res.P99us)
			// Each step's median, for raw.json: where a fetch's time goes.
			for step, v := range res.Steps {
				r.samples.Add(name, "https_"+step+"_p50_us", v)
			}
			*line = append(*line, fmt.Sprintf("https %.0f/s p50 %.0fµs (dns %.0f connect %.0f tls %.0f get %.0f) p99 %.0fµs",
				res.PerSec, res.P50us, res.Steps["dns"], res.Steps["connect"], res.Steps["tls"], res.Steps["get"], res.P99us))
		case testStream:
			r.samples.Add(name, report.StreamP50us, res.P50us)
			r.samples.Add(name, report.StreamP99us, res.P99us)
			*line = append(*line, fmt.Sprintf("stream %d chunks p50 %.0fµs p99 %.0fµs", res.Ops, res.P50us, res.P99us))
		case testInstall:
			r.samples.Add(name, report.InstallS, res.Seconds)
			*line = append(*line, fmt.Sprintf("install %.2fs (%.2f Gbit/s)", res.Seconds, res.Gbps))
		}
		r.warnErrors(name, res)
	}
}

// measureInbound runs the inbound tests of system: the probe's clients in
// the host namespace, to addr, the published or forwarded port (veth: the
// server namespace over the host's veth). The same clients as the
// outbound request/response and connects tests.
func (r *runner) measureInbound(ctx context.Context, s system, addr string, line *[]string) {
	system := s.name()
	if !r.cfg.runsFor(testInRR, system) && !r.cfg.runsFor(testInConnects, system) {
		return // -metrics left the inbound tests out: nothing to check
	}
	c, isClawnet := s.(*clawnetSystem)
	var auditOff int64
	if isClawnet {
		auditOff = c.auditEnd()
	}
	if r.cfg.runsFor(testInRR, system) {
		res, err := runProbe(ctx, "", r.t.probe, r.cfg.InRR, "rr", "-addr", addr, "-duration", r.cfg.InRR.String())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(system, fmt.Errorf("inbound rr: %w", err))
		} else {
			r.samples.Add(system, report.InboundRRPerS, res.PerSec)
			r.samples.Add(system, report.InboundRRP50us, res.P50us)
			r.samples.Add(system, report.InboundRRP99us, res.P99us)
			*line = append(*line, fmt.Sprintf("in-rr %.0f/s p50 %.0fµs p99 %.0fµs", res.PerSec, res.P50us, res.P99us))
		}
	}
	if r.cfg.runsFor(testInConnects, system) {
		res, err := runProbe(ctx, "", r.t.probe, r.cfg.InConnects, "connects", "-addr", addr,
			"-workers", fmt.Sprint(r.cfg.Workers), "-duration", r.cfg.InConnects.String())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.fail(system, fmt.Errorf("inbound connects: %w", err))
		} else {
			r.samples.Add(system, report.InboundConnectsPerS, res.PerSec)
			*line = append(*line, fmt.Sprintf("in-connects %.0f/s", res.PerSec))
			r.warnErrors(system, res)
		}
	}
	if isClawnet {
		// Only clawnetd listens on that port, but a figure that skipped
		// the ingress decision and its audit lines would flatter it.
		if n, err := c.inboundSince(auditOff); err != nil || n == 0 {
			r.fail(system, fmt.Errorf("inbound: no allowed connection from the host to port %d in the audit log (%v)", probePort, err))
		}
	}
}

// httpTest is one run of the probe's HTTP client.
type httpTest struct {
	test, key, cpuKey, label string
	rate                     bool // report requests per second, not Gbit/s
	byName                   bool // clawnet, through a flow allowed by name
	d                        time.Duration
	args                     []string
}

// httpTests lists the HTTP tests for s: large POSTs one at a time, and
// small ones pipelined. On clawnet each runs twice: to port 80, which the
// bench policy allows only by name, so the client resolves bench.test
// through the gateway and every request head is checked; and to
// httpAddrPort, allowed by address, which the gateway splices unread. The
// other systems have no names to bind: they send the same requests to the
// server's address.
func (r *runner) httpTests(s system) []httpTest {
	large := []string{"-size", fmt.Sprint(r.cfg.HTTPBody), "-inflight", "1"}
	small := []string{"-size", fmt.Sprint(r.cfg.HTTPSmallBody), "-inflight", fmt.Sprint(r.cfg.HTTPInFlight)}
	byAddr := []string{"-addr", netip.AddrPortFrom(s.target(), httpPort).String(), "-host", dnsName}
	c, ok := s.(*clawnetSystem)
	if !ok {
		return []httpTest{
			{testHTTP, report.HTTPUploadGbps, report.HTTPCPUsPerGB, "http", false, false, r.cfg.HTTPUpload, slices.Concat(large, byAddr)},
			{testSmall, report.HTTPSmallPerS, report.HTTPSmallCPUus, "http-small", true, false, r.cfg.HTTPSmall, slices.Concat(small, byAddr)},
		}
	}
	byName := []string{"-addr", fmt.Sprintf("%s:%d", dnsName, httpPort), "-dns", c.gateway + ":53"}
	byAddr = []string{"-addr", netip.AddrPortFrom(s.target(), httpAddrPort).String(), "-host", dnsName}
	return []httpTest{
		{testHTTP, report.HTTPUploadGbps, report.HTTPCPUsPerGB, "http", false, true, r.cfg.HTTPUpload, slices.Concat(large, byName)},
		{testHTTPAddr, report.HTTPUploadAddrGbps, report.HTTPAddrCPUsPerGB, "http-addr", false, false, r.cfg.HTTPUpload, slices.Concat(large, byAddr)},
		{testSmall, report.HTTPSmallPerS, report.HTTPSmallCPUus, "http-small", true, true, r.cfg.HTTPSmall, slices.Concat(small, byName)},
		{testSmallAddr, report.HTTPSmallAddrPerS, report.HTTPSmallAddrCPUus, "http-small-addr", true, false, r.cfg.HTTPSmall, slices.Concat(small, byAddr)},
	}
}

// cpuOf runs f and returns the CPU time s's data-path process spent
// meanwhile; ok is false when s has none or it could not be read.
func cpuOf(s system, f func() error) (used time.Duration, ok bool, err error) {
	pid := s.pid()
	var before procStat
	if pid > 0 {
		var serr error
		before, serr = readProcStat(pid)
		ok = serr == nil
	}
	if err := f(); err != nil {
		return 0, false, err
	}
	if !ok {
		return 0, false, nil
	}
	after, serr := readProcStat(pid)
	if serr != nil {
		return 0, false, nil
	}
	return after.cpu - before.cpu, true, nil
}

// warnErrors notes a test that counted some failed operations: the figure
// stands, but a reader should know.
func (r *runner) warnErrors(system string, res probe.Result) {
	if res.Errors > 0 {
		r.warn("%s %s: %d of %d operations failed (first: %s)", system, res.Mode, res.Errors, res.Errors+res.Ops, res.FirstError)
	}
}

// write saves every output file and prints the table.
func (r *runner) write(results report.Results, stdout io.Writer) error {
	failed := map[string]string{}
	for s, errs := range r.failures {
		failed[s] = errs[0]
		if len(errs) > 1 {
			failed[s] += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
	}
	meta := runMeta(r.cfg, r.t.prefix)
	if out, err := exec.Command(filepath.Join(r.cfg.Bin, "clawnet"), "version").Output(); err == nil {
		meta.Clawnet = strings.TrimPrefix(strings.TrimSpace(string(out)), "clawnet ")
	}
	// Other work on the machine skews every system alike, since they
	// interleave, but a reader should know how busy it was.
	meta.Load = r.load + " → " + loadavg()
	meta.Docker = r.docker
	meta.Seconds = time.Since(r.start).Round(time.Second).Seconds()
	subtitle := meta.subtitle()

	writeFile := func(name string, fill func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(r.cfg.OutDir, name))
		if err != nil {
			return err
		}
		if err := fill(f); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", name, err)
		}
		return f.Close()
	}
	err := errors.Join(
		writeFile("results.json", func(w io.Writer) error {
			b, err := json.MarshalIndent(results, "", "  ")
			if err != nil {
				return err
			}
			_, err = w.Write(append(b, '\n'))
			return err
		}),
		writeFile("raw.json", func(w io.Writer) error {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(map[string]any{
				"meta": meta, "samples": r.samples, "failures": r.failures, "warnings": r.warnings,
			})
		}),
		writeFile("results.md", func(w io.Writer) error {
			fmt.Fprintf(w, "Benchmark: %s. clawnet %s. Tools: %s. Load average %s.\n\n", subtitle, meta.Clawnet, meta.Tools, meta.Load)
			if meta.Docker != "" {
				fmt.Fprintf(w, "Docker: %s.\n\n", meta.Docker)
			}
			if err := report.Write(w, results, r.cfg.Systems, r.cfg.metrics(), failed, true); err != nil {
				return err
			}
			if len(r.warnings) > 0 {
				fmt.Fprintf(w, "\nWarnings:\n\n")
				for _, warning := range r.warnings {
					fmt.Fprintf(w, "- %s\n", warning)
				}
			}
			return nil
		}),
		writeFile("chart.svg", func(w io.Writer) error {
			return report.Chart(w, results, r.cfg.Systems, subtitle)
		}),
	)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s\n\n", subtitle)
	if err := report.Write(stdout, results, r.cfg.Systems, r.cfg.metrics(), failed, false); err != nil {
		return err
	}
	for _, w := range r.warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return nil
}

// Redraw reads a results.json, writes chart.svg beside it and prints the
// table, for changing the chart without measuring again.
func Redraw(resultsFile string, stdout io.Writer) error {
	b, err := os.ReadFile(resultsFile)
	if err != nil {
		return err
	}
	var results report.Results
	if err := json.Unmarshal(b, &results); err != nil {
		return fmt.Errorf("%s: %w", resultsFile, err)
	}
	var systems []string
	for _, s := range report.Systems {
		if results[s] != nil {
			systems = append(systems, s)
		}
	}
	subtitle := "redrawn from " + filepath.Base(resultsFile)
	// The run's raw.json, when it is beside the results, tells what run it was.
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(resultsFile), "raw.json")); err == nil {
		var raw struct{ Meta meta }
		if json.Unmarshal(b, &raw) == nil && raw.Meta.Mode != "" {
			subtitle = raw.Meta.subtitle()
		}
	}
	f, err := os.Create(filepath.Join(filepath.Dir(resultsFile), "chart.svg"))
	if err != nil {
		return err
	}
	if err := report.Chart(f, results, systems, subtitle); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return report.Write(stdout, results, systems, report.Metrics, nil, false)
}

type meta struct {
	Date    string        `json:"date"`
	Mode    string        `json:"mode"`
	Reps    int           `json:"reps"`
	Kernel  string        `json:"kernel"`
	CPU     string        `json:"cpu"`
	CPUs    int           `json:"cpus"`
	Tools   string        `json:"tools"`
	Prefix  string        `json:"prefix"`
	Load    string        `json:"loadavg"`
	Clawnet string        `json:"clawnet"`
	Seconds float64       `json:"seconds"`
	Iperf   int           `json:"iperf_seconds"`
	RR      time.Duration `json:"rr_ns"`
	Conns   time.Duration `json:"connects_ns"`
	Workers int           `json:"connect_workers"`
	Agents  int           `json:"idle_agents"`
	Many    int           `json:"idle_agents_fleet,omitempty"`
	Flows   int           `json:"idle_flows"`
	// The noisy-neighbour test: each download's seconds, and the pause
	// before it (the flood's start) and after it.
	Noisy       int           `json:"noisy_seconds,omitempty"`
	NoisyWarmup time.Duration `json:"noisy_warmup_ns,omitempty"`
	NoisySettle time.Duration `json:"noisy_settle_ns,omitempty"`
	// The HTTP tests: body sizes, requests in flight, and durations.
	HTTPBody      int           `json:"http_body"`
	HTTPUpload    time.Duration `json:"http_upload_ns"`
	HTTPSmallBody int           `json:"http_small_body"`
	HTTPInFlight  int           `json:"http_inflight"`
	HTTPSmall     time.Duration `json:"http_small_ns"`
	// The agent's workloads: the HTTPS calls' and the stream's durations,
	// the install's fetches and connections.
	HTTPS          time.Duration `json:"https_ns"`
	Stream         time.Duration `json:"stream_ns"`
	InstallFetches int           `json:"install_fetches"`
	InstallConns   int           `json:"install_conns"`
	InRR           time.Duration `json:"inbound_rr_ns"`
	InConnects     time.Duration `json:"inbound_connects_ns"`
	// Only lists the figures measured when not all were (-metrics).
	Only []string `json:"metrics,omitempty"`
	// Docker is the engine's version and what forwarded its published
	// port, when docker ran.
	Docker string `json:"docker,omitempty"`
}

func (m meta) subtitle() string {
	return fmt.Sprintf("%s run, median of %d, %s, %d CPUs, Linux %s", m.Mode, m.Reps, m.Date, m.CPUs, m.Kernel)
}

func runMeta(cfg Config, prefix netip.Prefix) meta {
	m := meta{
		Date: time.Now().UTC().Format("2006-01-02"), Mode: cfg.Mode, Reps: cfg.Reps,
		CPUs: runtime.NumCPU(), Prefix: prefix.String(), Iperf: cfg.IperfSeconds,
		RR: cfg.RR, Conns: cfg.Connects, Workers: cfg.Workers, Agents: cfg.Agents, Flows: cfg.Flows,
		HTTPBody: cfg.HTTPBody, HTTPUpload: cfg.HTTPUpload, HTTPSmallBody: cfg.HTTPSmallBody,
		HTTPInFlight: cfg.HTTPInFlight, HTTPSmall: cfg.HTTPSmall, Only: cfg.Only,
		InRR: cfg.InRR, InConnects: cfg.InConnects, Many: cfg.ManyAgents,
		Noisy: cfg.NoisySeconds, NoisyWarmup: cfg.NoisyWarmup, NoisySettle: cfg.NoisySettle,
		HTTPS: cfg.HTTPS, Stream: cfg.Stream, InstallFetches: cfg.InstallFetches, InstallConns: cfg.InstallConns,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var tools []string
	for _, pkg := range []string{"iperf3", "slirp4netns", "passt"} {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
		if err == nil && len(out) > 0 {
			tools = append(tools, pkg+" "+string(out))
		}
	}
	m.Tools = strings.Join(tools, ", ")
	return m
}

// loadavg returns the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// buildProbe builds the probe as a static binary.
func buildProbe(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", out, "./bench/probe")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build bench/probe: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// goTool finds the go command: the one that built this program if it is
// still there (go run), else the one on PATH.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// ensureTools installs what the selected systems need when it is missing,
// with the distribution's package manager.
func ensureTools(ctx context.Context, systems []string, logf func(string, ...any)) error {
	need := map[string]string{"ip": "iproute2"}
	if slices.ContainsFunc(systems, func(s string) bool { return slices.Contains(report.Outbound, s) }) {
		need["iperf3"] = "iperf3"
	}
	if slices.Contains(systems, report.Docker) {
		// The container image is a static busybox and the probe; the
		// engine itself is `make deps`'s to install, never the suite's.
		need["busybox"] = "busybox-static"
	}
	if slices.Contains(systems, report.Slirp) {
		need["slirp4netns"] = "slirp4netns"
	}
	if slices.Contains(systems, report.Pasta) {
		need["pasta"] = "passt"
	}
	var pkgs []string
	for bin, pkg := range need {
		if _, err := exec.LookPath(bin); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	slices.Sort(pkgs)
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing %s and no apt-get to install them: install them and run again", strings.Join(pkgs, ", "))
	}
	logf("installing %s", strings.Join(pkgs, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	for bin := range need {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s still missing after installing %s", bin, strings.Join(pkgs, ", "))
		}
	}
	return nil
}
