// Package suite runs the benchmark: it builds its own network namespaces,
// starts the servers and each system under test (kernel veth, slirp4netns,
// pasta and clawnet), measures them interleaved, several repetitions each,
// and hands the samples to package report. It sends traffic only to the
// namespaces it made, addressed from the benchmarking range 198.18.0.0/15,
// and removes everything it made when it returns.
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
	Flows        int // idle TCP flows held for the per-flow memory figure

	HTTPUpload time.Duration // each HTTP upload test: HTTPBody-byte POSTs, one at a time
	HTTPBody   int
	HTTPSmall  time.Duration // each test of small POSTs: HTTPSmallBody bytes, HTTPInFlight pipelined
	// HTTPSmallBody and HTTPInFlight make the small-request test spend its
	// time on request heads: many per read, none waiting on a round trip.
	HTTPSmallBody int
	HTTPInFlight  int

	// Only, when set, holds the metric keys to measure: the tests that give
	// them run, the others do not (see SelectMetrics).
	Only []string

	Systems []string
	OutDir  string
	Root    string // repository root: bench/probe lives there
	Bin     string // directory holding clawnetd and clawnet (default Root/bin)
	Log     io.Writer
}

// Preset returns the configuration of mode: "full" (make bench, ~15
// minutes), "quick" (make bench-quick, under 3½ minutes) or "smoke" (CI:
// proves every system still runs, about a minute; its figures mean little).
func Preset(mode string) (Config, error) {
	c := Config{Mode: mode, Systems: slices.Clone(report.Systems), Workers: 8, DNSWorkers: 4,
		HTTPBody: 64 << 20, HTTPSmallBody: 1 << 10, HTTPInFlight: 16}
	switch mode {
	case "full":
		c.Reps, c.IperfSeconds = 5, 5
		c.RR, c.Connects, c.DNS = 3*time.Second, 3*time.Second, 3*time.Second
		c.HTTPUpload, c.HTTPSmall = 3*time.Second, 2*time.Second
		c.Agents, c.Flows = 100, 5000
	case "quick":
		c.Reps, c.IperfSeconds = 3, 2
		c.RR, c.Connects, c.DNS = time.Second, time.Second, time.Second
		c.HTTPUpload, c.HTTPSmall = time.Second, 500*time.Millisecond
		c.Agents, c.Flows = 100, 5000
	case "smoke":
		c.Reps, c.IperfSeconds = 1, 1
		c.RR, c.Connects, c.DNS = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		// Smaller bodies, so that even pasta's upload stalls (NOTES.md)
		// leave the test near its half second.
		c.HTTPUpload, c.HTTPSmall, c.HTTPBody = 500*time.Millisecond, 300*time.Millisecond, 16<<20
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

// metrics lists the figures this run measures, in table order.
func (c Config) metrics() []report.Metric {
	if c.Only == nil {
		return report.Metrics
	}
	var out []report.Metric
	for _, m := range report.Metrics {
		if slices.Contains(c.Only, m.Key) {
			out = append(out, m)
		}
	}
	return out
}
