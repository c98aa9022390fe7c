// Package suite runs the benchmark: it builds its own network namespaces,
// starts the servers and each system under test (kernel veth, slirp4netns,
// pasta and clawnet; and, for the inbound figures, a Docker container
// with a published port), measures them interleaved, several repetitions
// each, and hands the samples to package report. It sends traffic only to
// the namespaces and the container it made, addressed from the
// benchmarking range 198.18.0.0/15 or through ports it published on
// 127.0.0.1, and removes everything it made when it returns.
package suite

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/report"
)

// Config sets what one run measures and for how long.
type Config struct {
	Mode string // "full", "quick" or "smoke"
	Reps int    // repetitions of every system, interleaved

	IperfSeconds int // duration of each iperf3 test
	RR           time.Duration
	Connects     time.Duration
	Workers      int // concurrent connections in the connects test
	DNS          time.Duration
	DNSWorkers   int
	Agents       int // idle agents attached for the per-agent memory figure
	// ManyAgents idle agents (more than Agents; 0: the mode leaves the
	// figure out) give the per-agent memory of a fleet.
	ManyAgents int
	Flows      int // idle TCP flows held for the per-flow memory figure

	// The noisy-neighbour test: each download of the victim lasts
	// NoisySeconds (0: the mode leaves the test out); a flood runs
	// NoisyWarmup before it starts, and NoisySettle passes after it.
	NoisySeconds int
	NoisyWarmup  time.Duration
	NoisySettle  time.Duration
	// Profile saves a CPU profile of clawnetd over each of its iperf3,
	// request/response and connect tests and each noisy-neighbour
	// download, in OutDir/pprof.
	Profile bool

	HTTPUpload time.Duration // each HTTP upload test: HTTPBody-byte POSTs, one at a time
	HTTPBody   int
	HTTPSmall  time.Duration // each test of small POSTs: HTTPSmallBody bytes, HTTPInFlight pipelined
	// HTTPSmallBody and HTTPInFlight make the small-request test spend its
	// time on request heads: many per read, none waiting on a round trip.
	HTTPSmallBody int
	HTTPInFlight  int

	// The agent's workloads over HTTPS by name: calls one after another
	// for HTTPS; a streamed answer for Stream; and a package install of
	// InstallFetches fetches over InstallConns kept-alive connections.
	HTTPS          time.Duration
	Stream         time.Duration
	InstallFetches int
	InstallConns   int

	// The inbound tests, from the host through each system's published
	// port: request/response over one connection, and connects with
	// Workers at once.
	InRR       time.Duration
	InConnects time.Duration

	// Only, when set, holds the metric keys to measure: the tests that give
	// them run, the others do not (see SelectMetrics).
	Only []string

	Systems []string
	// DockerOptional lets the run go on without docker when no Docker
	// engine answers (the smoke run's default systems only): anywhere
	// else a missing engine fails the docker system, and so the run.
	DockerOptional bool
	OutDir         string
	Root           string // repository root: bench/probe lives there
	Bin            string // directory holding clawnetd and clawnet (default Root/bin)
	Log            io.Writer
}

// Preset returns the configuration of mode: "full" (make bench, ~28
// minutes), "quick" (make bench-quick, about 5 minutes) or "smoke" (CI:
// proves every system still runs, about a minute; its figures mean little;
// it leaves out the noisy neighbour and the fleet's memory, see
// bench/README.md).
func Preset(mode string) (Config, error) {
	c := Config{Mode: mode, Systems: slices.Clone(report.Systems), Workers: 8, DNSWorkers: 4,
		HTTPBody: 64 << 20, HTTPSmallBody: 1 << 10, HTTPInFlight: 16, InstallFetches: 500, InstallConns: 8}
	switch mode {
	case "full":
		c.Reps, c.IperfSeconds = 5, 5
		c.RR, c.Connects, c.DNS = 3*time.Second, 3*time.Second, 3*time.Second
		c.HTTPUpload, c.HTTPSmall = 3*time.Second, 2*time.Second
		c.InRR, c.InConnects = 2*time.Second, 2*time.Second
		c.HTTPS, c.Stream = 3*time.Second, 30*time.Second
		c.Agents, c.ManyAgents, c.Flows = 100, 200, 5000
		c.NoisySeconds, c.NoisyWarmup, c.NoisySettle = 4, 500*time.Millisecond, time.Second
	case "quick":
		c.Reps, c.IperfSeconds = 3, 2
		c.RR, c.Connects, c.DNS = time.Second, time.Second, time.Second
		c.HTTPUpload, c.HTTPSmall = time.Second, 500*time.Millisecond
		c.InRR, c.InConnects = 500*time.Millisecond, 500*time.Millisecond
		c.HTTPS, c.Stream = time.Second, 3*time.Second
		c.Agents, c.ManyAgents, c.Flows = 100, 200, 5000
		c.NoisySeconds, c.NoisyWarmup, c.NoisySettle = 2, 300*time.Millisecond, 500*time.Millisecond
	case "smoke":
		c.Reps, c.IperfSeconds = 1, 1
		c.RR, c.Connects, c.DNS = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		// Smaller bodies, so that even pasta's upload stalls (NOTES.md)
		// leave the test near its half second.
		c.HTTPUpload, c.HTTPSmall, c.HTTPBody = 500*time.Millisecond, 300*time.Millisecond, 16<<20
		c.InRR, c.InConnects = 500*time.Millisecond, 500*time.Millisecond
		c.HTTPS, c.Stream = 500*time.Millisecond, 2*time.Second
		c.Agents, c.Flows = 20, 1000
	default:
		return Config{}, fmt.Errorf("unknown mode %q (want full, quick or smoke)", mode)
	}
	return c, nil
}

// ParseSystems parses a comma-separated list of system names.
func ParseSystems(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(report.Systems, name) {
			return nil, fmt.Errorf("unknown system %q (want some of %s)", name, strings.Join(report.Systems, ","))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no system named in %q", s)
	}
	// Always run in the canonical order so that tables line up across runs.
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(report.Systems, a) - slices.Index(report.Systems, b)
	})
	return out, nil
}

// Tests of one repetition, each with the figures it gives and the CPU
// figure measured over it. Selecting a CPU figure selects every test it is
// measured over.
const (
	testUpload    = "upload"
	testDownload  = "download"
	testUpload4   = "upload4"
	testDownload4 = "download4"
	testRR        = "rr"
	testConnects  = "connects"
	testDNS       = "dns"
	testMemory    = "memory"
	testHTTP      = "http"
	testHTTPAddr  = "http-addr"
	testSmall     = "http-small"
	testSmallAddr = "http-small-addr"
	// The agent's workloads over HTTPS by name.
	testHTTPS   = "https"
	testStream  = "stream"
	testInstall = "install"
	// Inbound: from the host to the server behind the system.
	testInRR       = "inbound-rr"
	testInConnects = "inbound-connects"
	// clawnet only: the memory of many idle agents, and a victim agent's
	// download beside a noisy neighbour.
	testFleet = "memory-fleet"
	testNoisy = "noisy"
)

var tests = []struct {
	name    string
	figures []string
	cpu     string
}{
	{testUpload, []string{report.UploadGbps}, report.CPUsPerGB},
	{testDownload, []string{report.DownloadGbps}, report.CPUsPerGB},
	{testUpload4, []string{report.Upload4Gbps}, report.CPUsPerGB},
	{testDownload4, []string{report.Download4Gbps}, report.CPUsPerGB},
	{testRR, []string{report.RRPerS, report.RRP50us, report.RRP99us}, ""},
	{testConnects, []string{report.ConnectsPerS}, ""},
	{testDNS, []string{report.DNSQPS, report.DNSP50us}, ""},
	{testMemory, []string{report.RSSIdleMiB, report.RSSPerAgentKiB, report.RSSPerFlowKiB}, ""},
	{testHTTP, []string{report.HTTPUploadGbps}, report.HTTPCPUsPerGB},
	{testHTTPAddr, []string{report.HTTPUploadAddrGbps}, report.HTTPAddrCPUsPerGB},
	{testSmall, []string{report.HTTPSmallPerS}, report.HTTPSmallCPUus},
	{testSmallAddr, []string{report.HTTPSmallAddrPerS}, report.HTTPSmallAddrCPUus},
	{testHTTPS, []string{report.HTTPSPerS, report.HTTPSP50us, report.HTTPSP99us}, ""},
	{testStream, []string{report.StreamP50us, report.StreamP99us}, ""},
	{testInstall, []string{report.InstallS}, ""},
	{testInRR, []string{report.InboundRRPerS, report.InboundRRP50us, report.InboundRRP99us}, ""},
	{testInConnects, []string{report.InboundConnectsPerS}, ""},
	{testFleet, []string{report.RSSPerAgent200KiB}, ""},
	{testNoisy, []string{report.NoisySoloGbps,
		report.NoisyConnectGbps, report.NoisyConnectHostGbps, report.NoisyConnectRatio,
		report.NoisyDNSGbps, report.NoisyDNSHostGbps, report.NoisyDNSRatio,
		report.NoisyUDPGbps, report.NoisyUDPHostGbps, report.NoisyUDPRatio}, ""},
}

// inMode reports whether the run's mode has test at all: the smoke run
// leaves some out.
func (c Config) inMode(test string) bool {
	switch test {
	case testFleet:
		return c.ManyAgents > c.Agents
	case testNoisy:
		return c.NoisySeconds > 0
	}
	return true
}

// testOf returns the test that gives figure.
func testOf(figure string) string {
	for _, t := range tests {
		if slices.Contains(t.figures, figure) || t.cpu == figure {
			return t.name
		}
	}
	return ""
}

// SelectMetrics restricts the run to the tests that give any of the
// comma-separated metric keys in s; the figures measured are every figure
// of those tests, with their CPU figures.
func (c *Config) SelectMetrics(s string) error {
	var keys []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if _, ok := report.MetricByKey(k); !ok {
			var all []string
			for _, m := range report.Metrics {
				all = append(all, m.Key)
			}
			return fmt.Errorf("unknown metric %q (want some of %s)", k, strings.Join(all, ","))
		}
		if t := testOf(k); !c.inMode(t) {
			return fmt.Errorf("the %s run does not measure %s", c.Mode, k)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return fmt.Errorf("no metric named in %q", s)
	}
	var only []string
	for _, t := range tests {
		if slices.Contains(keys, t.cpu) || slices.ContainsFunc(t.figures, func(f string) bool { return slices.Contains(keys, f) }) {
			only = append(only, t.figures...)
			if t.cpu != "" {
				only = append(only, t.cpu)
			}
		}
	}
	slices.Sort(only)
	c.Only = slices.Compact(only)
	return nil
}

// runs reports whether test is part of this run.
func (c Config) runs(test string) bool {
	if !c.inMode(test) {
		return false
	}
	if c.Only == nil {
		return true
	}
	for _, t := range tests {
		if t.name == test {
			return slices.ContainsFunc(t.figures, func(f string) bool { return slices.Contains(c.Only, f) })
		}
	}
	return false
}

// runsFor reports whether test runs on system: it is part of this run and
// gives a figure system reports (no outbound test runs on docker, no
// inbound one on slirp4netns, DNS only on clawnet).
func (c Config) runsFor(test, system string) bool {
	if !c.runs(test) {
		return false
	}
	for _, t := range tests {
		if t.name == test {
			return slices.ContainsFunc(t.figures, func(f string) bool {
				m, ok := report.MetricByKey(f)
				return ok && m.Required(system)
			})
		}
	}
	return false
}

// measures reports whether this run measures any figure of system; one
// with none is not set up at all.
func (c Config) measures(system string) bool {
	return slices.ContainsFunc(c.metrics(), func(m report.Metric) bool { return m.Required(system) })
}

// metrics lists the figures this run measures, in table order.
func (c Config) metrics() []report.Metric {
	var out []report.Metric
	for _, m := range report.Metrics {
		if c.inMode(testOf(m.Key)) && (c.Only == nil || slices.Contains(c.Only, m.Key)) {
			out = append(out, m)
		}
	}
	return out
}
