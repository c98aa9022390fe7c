package report

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Status is the outcome of checking one target.
type Status string

const (
	Pass    Status = "PASS"
	Fail    Status = "FAIL"
	Unknown Status = "n/a" // a figure it needs is missing
)

// Target is one of the goals the gateway's data path is tuned against,
// always a ratio between systems measured in the same run.
type Target struct {
	Name string
	// Check returns the status and the measured figure it judged.
	Check func(Results) (Status, string)
}

// ratioTarget wants clawnet's metric to be at least factor times that of
// the reference the ref function picks.
func ratioTarget(name, metric string, factor float64, refName string, ref func(Results, Metric) (float64, bool)) Target {
	return relTarget(name, metric, refName, ref, func(got float64) bool { return got >= factor })
}

// relTarget judges clawnet's metric divided by the reference ref picks.
func relTarget(name, metric, refName string, ref func(Results, Metric) (float64, bool), ok func(ratio float64) bool) Target {
	return Target{Name: name, Check: func(r Results) (Status, string) {
		m, _ := MetricByKey(metric)
		c, ok1 := r.Get(Clawnet, metric)
		v, ok2 := ref(r, m)
		if !ok1 || !ok2 || v <= 0 {
			return Unknown, ""
		}
		got := c / v
		st := Fail
		if ok(got) {
			st = Pass
		}
		return st, fmt.Sprintf("%.2f× %s", got, refName)
	}}
}

func of(system string) func(Results, Metric) (float64, bool) {
	return func(r Results, m Metric) (float64, bool) { return r.Get(system, m.Key) }
}

func bestUserspace(r Results, m Metric) (float64, bool) {
	v, _, ok := r.BestUserspace(m)
	return v, ok
}

func ceilingTarget(name, metric string, limit float64, unit string) Target {
	return Target{Name: name, Check: func(r Results) (Status, string) {
		v, ok := r.Get(Clawnet, metric)
		if !ok {
			return Unknown, ""
		}
		st := Fail
		if v <= limit {
			st = Pass
		}
		return st, fmt.Sprintf("%s %s", format(v), unit)
	}}
}

// floorTarget wants clawnet's metric, a ratio, to be at least limit.
func floorTarget(name, metric string, limit float64) Target {
	return Target{Name: name, Check: func(r Results) (Status, string) {
		v, ok := r.Get(Clawnet, metric)
		if !ok {
			return Unknown, ""
		}
		st := Fail
		if v >= limit {
			st = Pass
		}
		return st, fmt.Sprintf("%.2f×", v)
	}}
}

// atMostTarget wants clawnet's metric, where lower is better, to be at
// most factor times that of the reference.
func atMostTarget(name, metric string, factor float64, refName string, ref func(Results, Metric) (float64, bool)) Target {
	return relTarget(name, metric, refName, ref, func(got float64) bool { return got <= factor })
}

// addedTarget wants clawnet's latency metric to exceed veth's by at most
// limit µs.
func addedTarget(name, metric string, limit float64) Target {
	return Target{Name: name, Check: func(r Results) (Status, string) {
		c, ok1 := r.Get(Clawnet, metric)
		v, ok2 := r.Get(Veth, metric)
		if !ok1 || !ok2 {
			return Unknown, ""
		}
		st := Fail
		if c <= v+limit {
			st = Pass
		}
		return st, fmt.Sprintf("veth %+.1f µs", c-v)
	}}
}

// Targets are issue 14's goals for clawnet's data path (they replaced issue
// 5's), issue 11's for a victim agent beside a noisy neighbour, and issue
// 14's for the agent's workloads.
var Targets = []Target{
	ratioTarget("download ≥ 1.0× best of slirp4netns and pasta", DownloadGbps, 1.0, "best", bestUserspace),
	ratioTarget("download ≥ 0.45× veth", DownloadGbps, 0.45, "veth", of(Veth)),
	ratioTarget("upload ≥ 3× slirp4netns", UploadGbps, 3, "slirp4netns", of(Slirp)),
	ratioTarget("upload ≥ 0.55× veth", UploadGbps, 0.55, "veth", of(Veth)),
	atMostTarget("request/response p50 ≤ slirp4netns's", RRP50us, 1.0, "slirp4netns", of(Slirp)),
	ratioTarget("connects/s ≥ 1.0× pasta", ConnectsPerS, 1.0, "pasta", of(Pasta)),
	ratioTarget("connects/s ≥ 0.5× veth", ConnectsPerS, 0.5, "veth", of(Veth)),
	atMostTarget("CPU seconds per GB ≤ pasta's", CPUsPerGB, 1.0, "pasta", of(Pasta)),
	ceilingTarget("≤ 32 KiB per idle TCP flow", RSSPerFlowKiB, 32, "KiB"),
	ceilingTarget("≤ 256 KiB per idle attached agent", RSSPerAgentKiB, 256, "KiB"),
	floorTarget("victim, agent's connect flood ≥ 0.8× host's", NoisyConnectRatio, 0.8),
	floorTarget("victim, agent's DNS flood ≥ 0.8× host's", NoisyDNSRatio, 0.8),
	floorTarget("victim, agent's UDP flood ≥ 0.8× host's", NoisyUDPRatio, 0.8),
	// Issue 14: the agent's workloads.
	atMostTarget("HTTPS by name p50 ≤ 1.2× veth", HTTPSP50us, 1.2, "veth", of(Veth)),
	addedTarget("streamed chunk p99 ≤ veth + 100 µs", StreamP99us, 100),
	atMostTarget("package install time ≤ 1.1× veth", InstallS, 1.1, "veth", of(Veth)),
}

// format prints v with about three significant digits.
func format(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func ratio(v, ref float64) string {
	if ref == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v/ref)
}

// Write prints the results table of metrics for systems (in that order)
// and the targets: each figure, its ratio to veth, clawnet's ratio to the
// better of slirp4netns and pasta and, when docker is among systems, to
// docker. With markdown it writes a Markdown table.
func Write(w io.Writer, r Results, systems []string, metrics []Metric, failed map[string]string, markdown bool) error {
	header := []string{"metric", "unit"}
	for _, s := range systems {
		if s == Veth {
			header = append(header, s)
		} else {
			header = append(header, s, "÷veth")
		}
	}
	header = append(header, "clawnet÷best(slirp4netns,pasta)")
	// Inbound, the engine's published port is the reference a Docker
	// user knows.
	withDocker := slices.Contains(systems, Docker)
	if withDocker {
		header = append(header, "clawnet÷docker")
	}
	var rows [][]string
	for _, m := range metrics {
		row := []string{m.Label, m.Unit}
		any := false
		for _, s := range systems {
			v, ok := r.Get(s, m.Key)
			cell, rc := "—", ""
			switch {
			case ok:
				cell, any = format(v), true
				if ref, ok := r.Get(Veth, m.Key); ok && s != Veth {
					rc = ratio(v, ref)
				}
			case failed[s] != "" && m.Required(s):
				cell = "failed"
			}
			row = append(row, cell)
			if s != Veth {
				row = append(row, rc)
			}
		}
		best := ""
		if c, ok := r.Get(Clawnet, m.Key); ok {
			if b, _, ok := r.BestUserspace(m); ok {
				best = ratio(c, b)
			}
		}
		row = append(row, best)
		if withDocker {
			rc := ""
			c, ok1 := r.Get(Clawnet, m.Key)
			d, ok2 := r.Get(Docker, m.Key)
			if ok1 && ok2 {
				rc = ratio(c, d)
			}
			row = append(row, rc)
		}
		// A row no system here reports (clawnet's own figures in a run
		// without clawnet) says nothing.
		if any || slices.ContainsFunc(systems, m.Required) {
			rows = append(rows, row)
		}
	}

	if markdown {
		fmt.Fprintf(w, "| %s |\n", strings.Join(header, " | "))
		fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(header)))
		for _, row := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}

	if markdown {
		fmt.Fprintln(w, "| target (clawnet) | status | measured |")
		fmt.Fprintln(w, "| --- | --- | --- |")
	}
	for _, t := range Targets {
		st, got := t.Check(r)
		if markdown {
			fmt.Fprintf(w, "| %s | %s | %s |\n", t.Name, st, got)
		} else {
			fmt.Fprintf(w, "  %-4s  %-48s %s\n", st, t.Name, got)
		}
	}
	for _, s := range systems {
		if msg := failed[s]; msg != "" {
			if markdown {
				fmt.Fprintf(w, "\n**%s failed:** %s\n", s, msg)
			} else {
				fmt.Fprintf(w, "\n%s FAILED: %s\n", s, msg)
			}
		}
	}
	return nil
}
