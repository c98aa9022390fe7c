// Package report turns the suite's samples into its outputs: medians per
// system and metric, the results.json object, the printed table with ratios
// and targets, and the SVG chart. It does no measuring and no I/O beyond the
// writers it is handed.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
)

// System names, in the order they run and are shown.
const (
	Veth    = "veth"
	Slirp   = "slirp4netns"
	Pasta   = "pasta"
	Clawnet = "clawnet"
	// Docker is a container on Docker's default bridge with a published
	// port (`docker run -p`): it has inbound figures only.
	Docker = "docker"
)

// Systems lists every system the suite knows, in run order.
var Systems = []string{Veth, Slirp, Pasta, Clawnet, Docker}

// Outbound lists the systems whose client namespace reaches the server
// namespace: every outbound figure is theirs.
var Outbound = []string{Veth, Slirp, Pasta, Clawnet}

// Inbound lists the systems measured from the host to a server behind
// them: a published or forwarded port (pasta, clawnet, docker) or, for
// veth, the server namespace straight over the host's veth.
var Inbound = []string{Veth, Pasta, Clawnet, Docker}

// Metric describes one figure.
type Metric struct {
	Key   string // the key in results.json
	Label string // the row label in the table
	Unit  string
	// HigherBetter is false for latencies, memory and CPU cost.
	HigherBetter bool
	// For lists the systems that report it, and must.
	For []string
}

// Metric keys.
const (
	UploadGbps    = "upload_gbps"
	DownloadGbps  = "download_gbps"
	Upload4Gbps   = "upload4_gbps"
	Download4Gbps = "download4_gbps"
	RRPerS        = "rr_per_s"
	RRP50us       = "rr_p50_us"
	RRP99us       = "rr_p99_us"
	ConnectsPerS  = "connects_per_s"
	CPUsPerGB     = "cpu_s_per_gb"
	// The HTTP figures: on clawnet the plain ones go through a flow allowed
	// only by a DNS name, where the gateway checks every request head; the
	// "addr" ones through a flow allowed by address, which it splices.
	HTTPUploadGbps     = "http_upload_gbps"
	HTTPUploadAddrGbps = "http_upload_addr_gbps"
	HTTPCPUsPerGB      = "http_cpu_s_per_gb"
	HTTPAddrCPUsPerGB  = "http_addr_cpu_s_per_gb"
	HTTPSmallPerS      = "http_small_per_s"
	HTTPSmallAddrPerS  = "http_small_addr_per_s"
	HTTPSmallCPUus     = "http_small_cpu_us"
	HTTPSmallAddrCPUus = "http_small_addr_cpu_us"
	// The agent's workloads, over HTTPS to a name (on clawnet, resolved
	// through the gateway and allowed by name, so the SNI is checked):
	// one call after another, each a lookup, a connection, a handshake and
	// a GET; a streamed answer's chunk latency; a package install's time.
	HTTPSPerS      = "https_per_s"
	HTTPSP50us     = "https_p50_us"
	HTTPSP99us     = "https_p99_us"
	StreamP50us    = "stream_p50_us"
	StreamP99us    = "stream_p99_us"
	InstallS       = "install_s"
	DNSQPS         = "dns_qps"
	DNSP50us       = "dns_p50_us"
	RSSIdleMiB     = "rss_idle_mib"
	RSSPerAgentKiB = "rss_per_agent_kib"
	RSSPerFlowKiB  = "rss_per_flow_kib"
	// Inbound: from the host namespace to the probe server inside the
	// system's namespace, through a published port on 127.0.0.1 (veth:
	// straight to the server namespace).
	InboundRRPerS       = "inbound_rr_per_s"
	InboundRRP50us      = "inbound_rr_p50_us"
	InboundRRP99us      = "inbound_rr_p99_us"
	InboundConnectsPerS = "inbound_connects_per_s"
	// RSSPerAgent200KiB is the per-agent memory with 200 idle agents.
	RSSPerAgent200KiB = "rss_per_agent_200_kib"
	// The noisy neighbour (clawnet only, on a daemon with the default
	// limits): a victim agent's one-stream download alone, beside a flood
	// from a neighbour agent, and beside the same flood from the host
	// straight to the server; the ratio is agent's ÷ host's, taken within
	// each repetition.
	NoisySoloGbps        = "noisy_solo_gbps"
	NoisyConnectGbps     = "noisy_connect_gbps"
	NoisyConnectHostGbps = "noisy_connect_host_gbps"
	NoisyConnectRatio    = "noisy_connect_ratio"
	NoisyDNSGbps         = "noisy_dns_gbps"
	NoisyDNSHostGbps     = "noisy_dns_host_gbps"
	NoisyDNSRatio        = "noisy_dns_ratio"
	NoisyUDPGbps         = "noisy_udp_gbps"
	NoisyUDPHostGbps     = "noisy_udp_host_gbps"
	NoisyUDPRatio        = "noisy_udp_ratio"
)

// Metrics lists every figure in table order.
var Metrics = []Metric{
	{UploadGbps, "upload, 1 stream", "Gbit/s", true, Outbound},
	{DownloadGbps, "download, 1 stream", "Gbit/s", true, Outbound},
	{Upload4Gbps, "upload, 4 streams", "Gbit/s", true, Outbound},
	{Download4Gbps, "download, 4 streams", "Gbit/s", true, Outbound},
	{RRPerS, "request/response", "1/s", true, Outbound},
	{RRP50us, "request/response p50", "µs", false, Outbound},
	{RRP99us, "request/response p99", "µs", false, Outbound},
	{ConnectsPerS, "connects", "1/s", true, Outbound},
	// CPU cost is the data-path process's own CPU; the kernel path has none
	// to single out, so veth does not report it.
	{CPUsPerGB, "CPU per GB moved", "s/GB", false, []string{Slirp, Pasta, Clawnet}},
	{HTTPUploadGbps, "HTTP upload (clawnet: by name)", "Gbit/s", true, Outbound},
	{HTTPUploadAddrGbps, "HTTP upload, by address", "Gbit/s", true, []string{Clawnet}},
	{HTTPCPUsPerGB, "CPU per GB, HTTP upload", "s/GB", false, []string{Slirp, Pasta, Clawnet}},
	{HTTPAddrCPUsPerGB, "CPU per GB, HTTP by address", "s/GB", false, []string{Clawnet}},
	{HTTPSmallPerS, "HTTP 1 KiB POSTs (clawnet: by name)", "1/s", true, Outbound},
	{HTTPSmallAddrPerS, "HTTP 1 KiB POSTs, by address", "1/s", true, []string{Clawnet}},
	{HTTPSmallCPUus, "CPU per 1 KiB POST", "µs", false, []string{Slirp, Pasta, Clawnet}},
	{HTTPSmallAddrCPUus, "CPU per 1 KiB POST, by address", "µs", false, []string{Clawnet}},
	{HTTPSPerS, "HTTPS by name: lookup, connect, TLS, GET", "1/s", true, Outbound},
	{HTTPSP50us, "HTTPS by name p50", "µs", false, Outbound},
	{HTTPSP99us, "HTTPS by name p99", "µs", false, Outbound},
	{StreamP50us, "streamed 2 KB chunk latency p50", "µs", false, Outbound},
	{StreamP99us, "streamed 2 KB chunk latency p99", "µs", false, Outbound},
	{InstallS, "package install: 500 fetches, 8 connections", "s", false, Outbound},
	{DNSQPS, "DNS via gateway", "q/s", true, []string{Clawnet}},
	{DNSP50us, "DNS via gateway p50", "µs", false, []string{Clawnet}},
	{RSSIdleMiB, "RSS idle gateway", "MiB", false, []string{Clawnet}},
	{RSSPerAgentKiB, "RSS per idle agent", "KiB", false, []string{Clawnet}},
	{RSSPerFlowKiB, "RSS per idle TCP flow", "KiB", false, []string{Clawnet}},
	{InboundRRPerS, "inbound request/response", "1/s", true, Inbound},
	{InboundRRP50us, "inbound request/response p50", "µs", false, Inbound},
	{InboundRRP99us, "inbound request/response p99", "µs", false, Inbound},
	{InboundConnectsPerS, "inbound connects", "1/s", true, Inbound},
	{RSSPerAgent200KiB, "RSS per idle agent, 200 attached", "KiB", false, []string{Clawnet}},
	{NoisySoloGbps, "victim download, neighbour idle", "Gbit/s", true, []string{Clawnet}},
	{NoisyConnectGbps, "victim, agent's connect flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyConnectHostGbps, "victim, host's connect flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyConnectRatio, "victim, connect flood: agent's ÷ host's", "×", true, []string{Clawnet}},
	{NoisyDNSGbps, "victim, agent's DNS flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyDNSHostGbps, "victim, host's DNS flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyDNSRatio, "victim, DNS flood: agent's ÷ host's", "×", true, []string{Clawnet}},
	{NoisyUDPGbps, "victim, agent's UDP flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyUDPHostGbps, "victim, host's UDP flood beside", "Gbit/s", true, []string{Clawnet}},
	{NoisyUDPRatio, "victim, UDP flood: agent's ÷ host's", "×", true, []string{Clawnet}},
}

// MetricByKey returns the metric named key.
func MetricByKey(key string) (Metric, bool) {
	for _, m := range Metrics {
		if m.Key == key {
			return m, true
		}
	}
	return Metric{}, false
}

// Required reports whether system must report m.
func (m Metric) Required(system string) bool {
	return slices.Contains(m.For, system)
}

// Samples holds every repetition's value: system → metric → values.
type Samples map[string]map[string][]float64

// Add records one value.
func (s Samples) Add(system, metric string, v float64) {
	if s[system] == nil {
		s[system] = map[string][]float64{}
	}
	s[system][metric] = append(s[system][metric], v)
}

// Results is what results.json holds: system → metric → median.
type Results map[string]map[string]float64

// Medians reduces samples to their medians, skipping non-finite values.
func (s Samples) Medians() Results {
	r := Results{}
	for sys, ms := range s {
		for m, vs := range ms {
			if med, ok := Median(vs); ok {
				if r[sys] == nil {
					r[sys] = map[string]float64{}
				}
				r[sys][m] = med
			}
		}
	}
	return r
}

// Median returns the median of the finite values in vs (the mean of the
// middle two for an even count), and false when there are none.
func Median(vs []float64) (float64, bool) {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0, false
	}
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2], true
	}
	return (xs[n/2-1] + xs[n/2]) / 2, true
}

// Get returns the value of metric for system.
func (r Results) Get(system, metric string) (float64, bool) {
	v, ok := r[system][metric]
	return v, ok
}

// MarshalJSON rounds every value to 4 significant digits beyond the
// integer part so that committed results diff readably.
func (r Results) MarshalJSON() ([]byte, error) {
	out := map[string]map[string]float64{}
	for sys, ms := range r {
		out[sys] = map[string]float64{}
		for k, v := range ms {
			out[sys][k] = round(v)
		}
	}
	return json.Marshal(out)
}

func round(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	digits := 4 - int(math.Floor(math.Log10(math.Abs(v)))) - 1
	digits = max(digits, 0)
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// Missing lists, for each system in systems, the metrics among metrics it
// must report but has no positive value for. The smoke run fails on any.
func (r Results) Missing(systems []string, metrics []Metric) []string {
	var out []string
	for _, sys := range systems {
		for _, m := range metrics {
			if !m.Required(sys) {
				continue
			}
			if v, ok := r.Get(sys, m.Key); !ok || !(v > 0) {
				out = append(out, fmt.Sprintf("%s %s", sys, m.Key))
			}
		}
	}
	return out
}

// BestUserspace returns the better of slirp4netns and pasta for metric m,
// by m's direction, and which system that was.
func (r Results) BestUserspace(m Metric) (float64, string, bool) {
	var (
		best    float64
		bestSys string
	)
	for _, sys := range []string{Slirp, Pasta} {
		v, ok := r.Get(sys, m.Key)
		if !ok {
			continue
		}
		if bestSys == "" || (m.HigherBetter && v > best) || (!m.HigherBetter && v < best) {
			best, bestSys = v, sys
		}
	}
	return best, bestSys, bestSys != ""
}
