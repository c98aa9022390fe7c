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

	Systems []string
	OutDir  string
	Root    string // repository root: bin/ and bench/probe live there
	Log     io.Writer
}

// Preset returns the configuration of mode: "full" (make bench, ~15
// minutes), "quick" (make bench-quick, under 3 minutes) or "smoke" (CI:
// proves every system still runs, about a minute; its figures mean little).
func Preset(mode string) (Config, error) {
	c := Config{Mode: mode, Systems: slices.Clone(report.Systems), Workers: 8, DNSWorkers: 4}
	switch mode {
	case "full":
		c.Reps, c.IperfSeconds = 5, 5
		c.RR, c.Connects, c.DNS = 3*time.Second, 3*time.Second, 3*time.Second
		c.Agents, c.Flows = 100, 5000
	case "quick":
		c.Reps, c.IperfSeconds = 3, 2
		c.RR, c.Connects, c.DNS = time.Second, time.Second, time.Second
		c.Agents, c.Flows = 100, 5000
	case "smoke":
		c.Reps, c.IperfSeconds = 1, 1
		c.RR, c.Connects, c.DNS = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
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
