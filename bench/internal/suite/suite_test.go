package suite

import (
	"archive/tar"
	"bytes"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/bench/internal/report"
)

func TestParseIperf(t *testing.T) {
	good := `{"start":{},"end":{"sum_sent":{"bytes":3000,"bits_per_second":99},"sum_received":{"bytes":2500000000,"bits_per_second":2.0e10}}}`
	r, err := parseIperf([]byte(good))
	if err != nil || r.gbps != 20 || r.bytes != 2.5e9 {
		t.Errorf("parseIperf(good) = %+v, %v; want 20 Gbit/s, 2.5e9 bytes", r, err)
	}
	for _, tt := range []struct{ in, want string }{
		{`{"error":"the server is busy running a test. try again later"}`, "busy"},
		{`{"end":{"sum_received":{"bytes":0,"bits_per_second":0}}}`, "nothing received"},
		{`iperf3: error - unable to connect`, "parse iperf3 output"},
	} {
		if _, err := parseIperf([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseIperf(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name holds a space and a ')' to trip naive splitting.
	stat := "1234 (clawn etd) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU(stat)
	if want := 4 * time.Second; err != nil || got != want {
		t.Errorf("parseStatCPU() = %v, %v; want %v", got, err, want)
	}
	if _, err := parseStatCPU("1234 (x) S 1 2"); err == nil {
		t.Error("parseStatCPU(short line) = nil error, want an error")
	}
}

func TestReadProcStatSelf(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.rssKiB <= 0 {
		t.Errorf("readProcStat(self).rssKiB = %v, want > 0", st.rssKiB)
	}
}

func TestFreePrefix(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		used []netip.Prefix
		seed int
		want string
	}{
		{nil, 0, "198.19.0.0/22"},
		{nil, 1, "198.19.4.0/22"},
		{nil, 64, "198.19.0.0/22"},
		{nil, 63, "198.19.252.0/22"},
		{pp("0.0.0.0/0", "198.19.1.7/32"), 0, "198.19.4.0/22"},
		{pp("198.19.0.0/16"), 3, "198.18.0.0/22"}, // wraps into 198.18.0.0/16
	}
	for _, tt := range tests {
		got, err := freePrefix(tt.used, tt.seed)
		if err != nil || got.String() != tt.want {
			t.Errorf("freePrefix(%v, %d) = %v, %v; want %s", tt.used, tt.seed, got, err, tt.want)
		}
		if !benchRange.Contains(got.Addr()) {
			t.Errorf("freePrefix(%v, %d) = %v, outside %v", tt.used, tt.seed, got, benchRange)
		}
	}
	if got, err := freePrefix(pp("198.18.0.0/15"), 5); err == nil {
		t.Errorf("freePrefix(all used) = %v, nil; want an error", got)
	}
}

func TestPrefixesIn(t *testing.T) {
	out := `default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
local 198.18.0.1 dev cbh1 table local proto kernel scope host src 198.18.0.1
2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0`
	got := prefixesIn(out)
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("192.0.2.2/32"),
		netip.MustParsePrefix("198.18.0.1/32"),
		netip.MustParsePrefix("198.18.0.1/32"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("192.0.2.255/32"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("prefixesIn() = %v, want %v", got, want)
	}
}

func TestAddrIn(t *testing.T) {
	p := netip.MustParsePrefix("198.19.252.0/22")
	if got := addrIn(p, 3, 2); got.String() != "198.19.255.2" {
		t.Errorf("addrIn(%v, 3, 2) = %v, want 198.19.255.2", p, got)
	}
}

func TestGatewayFrom(t *testing.T) {
	out := "attached bench (netns:/run/netns/x) policy=bench interface=clawnet0 addresses=100.96.0.2/16,fd63::2/64 gateway=fd63::1,100.96.7.1\n"
	if got := gatewayFrom(out); got != "100.96.7.1" {
		t.Errorf("gatewayFrom() = %q, want 100.96.7.1", got)
	}
	if got := gatewayFrom("attached bench\n"); got != gatewayDefault {
		t.Errorf("gatewayFrom(no gateway) = %q, want %q", got, gatewayDefault)
	}
}

func TestParseSystems(t *testing.T) {
	got, err := ParseSystems("clawnet, veth,pasta,veth")
	if want := []string{"veth", "pasta", "clawnet"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ParseSystems() = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", " , ", "veth,kvm"} {
		if _, err := ParseSystems(bad); err == nil {
			t.Errorf("ParseSystems(%q) = nil error, want one", bad)
		}
	}
}

func TestPresetsFitTheirBudgets(t *testing.T) {
	// A model of one repetition of one outbound system, from timed runs:
	// four iperf3 tests (plus ~0.2s start-up each), request/response,
	// connects, the two HTTP tests (~0.1s start-up each), the agent's three
	// workloads and ~1s of slack;
	// DNS and clawnet's two HTTP tests by address once per repetition;
	// ~15s for clawnet's memory phase. Inbound, the two tests (~0.2s
	// start-up each) on each inbound system, and ~5s to start docker's
	// container. The noisy-neighbour test: seven downloads a repetition,
	// each with ~0.2s of iperf3 start-up, the flood's warm-up and the
	// settling time, and ~2s to start its daemon and agents; the fleet's
	// memory, ~20ms an attach. It must leave 10% of the budget for
	// building. The model is generous: a whole quick run took 183 s at a
	// load average of 10 (2026-11-26), against its 207 s, before the
	// noisy neighbour; with it and the workloads, 335 s at a load of 6-13
	// without docker, against 351 s with it.
	budget := map[string]time.Duration{"full": 32 * time.Minute, "quick": 400 * time.Second, "smoke": 2 * time.Minute}
	for mode, limit := range budget {
		c, err := Preset(mode)
		if err != nil {
			t.Fatal(err)
		}
		if c.InRR <= 0 || c.InConnects <= 0 {
			t.Errorf("Preset(%s) has no inbound durations", mode)
		}
		http := c.HTTPUpload + c.HTTPSmall + 200*time.Millisecond
		// The workloads: the HTTPS calls, the stream, ~2s for the
		// install (0.05-2s measured under load), ~0.1s start-up each.
		workloads := c.HTTPS + c.Stream + 2*time.Second + 300*time.Millisecond
		perRep := 4*(time.Duration(c.IperfSeconds)*time.Second+200*time.Millisecond) + c.RR + c.Connects + http + workloads + time.Second
		inbound := c.InRR + c.InConnects + 400*time.Millisecond
		reps := time.Duration(c.Reps)
		total := reps*time.Duration(len(report.Outbound))*perRep + reps*(c.DNS+http) + 15*time.Second +
			reps*time.Duration(len(report.Inbound))*inbound + 5*time.Second
		if c.inMode(testNoisy) {
			total += reps*7*(time.Duration(c.NoisySeconds)*time.Second+200*time.Millisecond+c.NoisyWarmup+c.NoisySettle) + 2*time.Second
		}
		if c.inMode(testFleet) {
			total += time.Duration(c.ManyAgents-c.Agents)*20*time.Millisecond + 2*time.Second
		}
		t.Logf("Preset(%s): about %v of %v", mode, total, limit)
		if total > limit*9/10 {
			t.Errorf("Preset(%s) needs about %v, over 90%% of its %v budget", mode, total, limit)
		}
	}
	if _, err := Preset("long"); err == nil {
		t.Error("Preset(long) = nil error, want one")
	}
}

func TestSelectMetrics(t *testing.T) {
	tests := []struct {
		in       string
		only     []string
		runs     []string
		skips    []string
		wantsErr string
	}{
		{
			in:    "upload_gbps, http_upload_gbps",
			only:  []string{"cpu_s_per_gb", "http_cpu_s_per_gb", "http_upload_gbps", "upload_gbps"},
			runs:  []string{testUpload, testHTTP},
			skips: []string{testDownload, testUpload4, testMemory, testHTTPAddr, testSmall, testRR},
		},
		{
			// A CPU figure brings the tests it is measured over.
			in:    "cpu_s_per_gb",
			only:  []string{"cpu_s_per_gb", "download4_gbps", "download_gbps", "upload4_gbps", "upload_gbps"},
			runs:  []string{testUpload, testDownload, testUpload4, testDownload4},
			skips: []string{testHTTP, testConnects},
		},
		{
			in:    "rr_p99_us,rss_idle_mib",
			only:  []string{"rr_p50_us", "rr_p99_us", "rr_per_s", "rss_idle_mib", "rss_per_agent_kib", "rss_per_flow_kib"},
			runs:  []string{testRR, testMemory},
			skips: []string{testUpload, testDNS},
		},
		{
			// The agent's workloads, each its own test.
			in:    "install_s,https_p50_us",
			only:  []string{"https_p50_us", "https_p99_us", "https_per_s", "install_s"},
			runs:  []string{testHTTPS, testInstall},
			skips: []string{testStream, testHTTP, testRR},
		},
		{in: "upload_gbps,fast", wantsErr: `unknown metric "fast"`},
		{in: " , ", wantsErr: "no metric named"},
	}
	for _, tt := range tests {
		c, _ := Preset("smoke")
		err := c.SelectMetrics(tt.in)
		if tt.wantsErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantsErr) {
				t.Errorf("SelectMetrics(%q) = %v, want an error containing %q", tt.in, err, tt.wantsErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(c.Only, tt.only) {
			t.Errorf("SelectMetrics(%q) = %v, Only %v; want %v", tt.in, err, c.Only, tt.only)
		}
		for _, test := range tt.runs {
			if !c.runs(test) {
				t.Errorf("SelectMetrics(%q): runs(%s) = false, want true", tt.in, test)
			}
		}
		for _, test := range tt.skips {
			if c.runs(test) {
				t.Errorf("SelectMetrics(%q): runs(%s) = true, want false", tt.in, test)
			}
		}
		if got := len(c.metrics()); got != len(tt.only) {
			t.Errorf("SelectMetrics(%q): %d metrics in the table, want %d", tt.in, got, len(tt.only))
		}
	}
	c, _ := Preset("full")
	if !c.runs(testHTTPAddr) || len(c.metrics()) != len(report.Metrics) {
		t.Error("without a selection, every test runs and every figure is in the table")
	}
}

func TestEveryMetricHasATest(t *testing.T) {
	for _, m := range report.Metrics {
		c, _ := Preset("full")
		if err := c.SelectMetrics(m.Key); err != nil || !slices.Contains(c.Only, m.Key) {
			t.Errorf("SelectMetrics(%s) = %v, Only %v: no test gives it", m.Key, err, c.Only)
		}
	}
}

func TestSmokeLeavesOutTheNoisyNeighbourAndTheFleet(t *testing.T) {
	for _, mode := range []string{"full", "quick"} {
		c, _ := Preset(mode)
		if !c.runsFor(testNoisy, report.Clawnet) || !c.runs(testFleet) || c.runsFor(testNoisy, report.Veth) {
			t.Errorf("Preset(%s): the noisy neighbour and the fleet's memory must run, on clawnet only", mode)
		}
		if c.ManyAgents != 200 {
			t.Errorf("Preset(%s): %d agents for the fleet's memory, want 200", mode, c.ManyAgents)
		}
	}
	c, _ := Preset("smoke")
	if c.runs(testNoisy) || c.runs(testFleet) || !c.runs(testMemory) {
		t.Error("Preset(smoke) runs the noisy neighbour or the fleet's memory, or not the memory test")
	}
	for _, m := range c.metrics() {
		if strings.HasPrefix(m.Key, "noisy_") || m.Key == report.RSSPerAgent200KiB {
			t.Errorf("Preset(smoke) lists %s among its figures: its Missing check would fail", m.Key)
		}
	}
	if err := c.SelectMetrics("upload_gbps,noisy_udp_ratio"); err == nil || !strings.Contains(err.Error(), "smoke run does not measure noisy_udp_ratio") {
		t.Errorf("smoke SelectMetrics(noisy_udp_ratio) = %v, want an error saying smoke does not measure it", err)
	}
	c, _ = Preset("quick")
	if err := c.SelectMetrics("noisy_udp_ratio"); err != nil || len(c.metrics()) != 10 || !c.runs(testNoisy) || c.runs(testMemory) {
		t.Errorf("quick SelectMetrics(noisy_udp_ratio) = %v, %d figures; want the noisy test's 10 alone", err, len(c.metrics()))
	}
	if err := c.SelectMetrics("rss_per_agent_200_kib"); err != nil || !c.runs(testFleet) || c.runs(testMemory) {
		t.Errorf("quick SelectMetrics(rss_per_agent_200_kib) = %v; want the fleet's memory alone", err)
	}
}

func TestRunsForKeepsEachTestToItsSystems(t *testing.T) {
	c, _ := Preset("quick")
	for _, tt := range []struct {
		test, system string
		want         bool
	}{
		{testUpload, report.Veth, true},
		{testUpload, report.Docker, false}, // the container is no client of the server
		{testRR, report.Docker, false},
		{testInRR, report.Docker, true},
		{testInConnects, report.Clawnet, true},
		{testInConnects, report.Veth, true},
		{testInRR, report.Slirp, false}, // no way in is measured for slirp4netns
		{testDNS, report.Pasta, false},
		{testDNS, report.Clawnet, true},
		{testHTTPAddr, report.Veth, false},
		{testHTTPS, report.Veth, true}, // the workloads run on every outbound system
		{testStream, report.Slirp, true},
		{testInstall, report.Pasta, true},
		{testStream, report.Clawnet, true},
		{testInstall, report.Docker, false},
	} {
		if got := c.runsFor(tt.test, tt.system); got != tt.want {
			t.Errorf("runsFor(%s, %s) = %v, want %v", tt.test, tt.system, got, tt.want)
		}
	}
	if err := c.SelectMetrics("inbound_rr_p50_us,inbound_connects_per_s"); err != nil {
		t.Fatal(err)
	}
	want := []string{"inbound_connects_per_s", "inbound_rr_p50_us", "inbound_rr_p99_us", "inbound_rr_per_s"}
	if !reflect.DeepEqual(c.Only, want) {
		t.Errorf("SelectMetrics(inbound) Only = %v, want %v", c.Only, want)
	}
	for _, s := range report.Systems {
		if got, want := c.measures(s), s != report.Slirp; got != want {
			t.Errorf("inbound only: measures(%s) = %v, want %v", s, got, want)
		}
	}
	if c.runsFor(testUpload, report.Veth) {
		t.Error("inbound only: runsFor(upload, veth) = true, want false")
	}
}

func TestWriteRootfsIsDeterministic(t *testing.T) {
	if err := checkStatic(busyboxPath); err != nil {
		t.Skip(err)
	}
	files := map[string]string{"bin/busybox": busyboxPath, "usr/local/bin/x": busyboxPath}
	var a, b bytes.Buffer
	if err := writeRootfs(&a, files); err != nil {
		t.Fatal(err)
	}
	if err := writeRootfs(&b, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("writeRootfs() gave different bytes for the same files: every run would import a new image")
	}
	tr := tar.NewReader(&a)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	for _, want := range []string{"bin/busybox", "usr/local/bin/x", "bin/sh", "tmp/"} {
		if !slices.Contains(names, want) {
			t.Errorf("rootfs lacks %s (has %d entries)", want, len(names))
		}
	}
}

func TestCheckStaticRefusesADynamicBinary(t *testing.T) {
	// The test binary itself: dynamically linked wherever cgo is on, and
	// static otherwise; a shell from the host is dynamic on Debian.
	for _, p := range []string{"/bin/bash", "/usr/bin/env"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := checkStatic(p); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			t.Errorf("checkStatic(%s) = %v, want it refused as dynamically linked", p, err)
		}
		return
	}
	t.Skip("no dynamically linked binary at hand")
}

func TestSNIBoundSince(t *testing.T) {
	// Only an allowed flow to the HTTPS port that presented the name
	// counts: one by address, a denied one, or one before the offset do
	// not.
	c := &clawnetSystem{dir: t.TempDir()}
	before := `{"kind":"flow","event":"open","agent":"bench","proto":"tcp","dst":"198.18.0.2:443","verdict":"allow","name":"bench.test","sni":"bench.test"}` + "\n"
	after := `{"kind":"flow","event":"open","agent":"bench","proto":"tcp","dst":"198.18.0.2:443","verdict":"allow","name":"bench.test","sni":"Bench.Test"}
{"kind":"flow","event":"open","agent":"bench","proto":"tcp","dst":"198.18.0.2:443","verdict":"allow","rule":"bench.yaml:3 egress[0]"}
{"kind":"flow","event":"deny","agent":"bench","proto":"tcp","dst":"198.18.0.2:443","verdict":"deny","sni":"bench.test"}
{"kind":"flow","event":"open","agent":"bench","proto":"tcp","dst":"198.18.0.2:80","verdict":"allow","host":"bench.test"}
`
	if err := os.WriteFile(c.auditLog(), []byte(before+after), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := c.sniBoundSince(int64(len(before))); n != 1 || err != nil {
		t.Errorf("sniBoundSince(after the first line) = %d, %v; want 1", n, err)
	}
	if n, err := c.sniBoundSince(0); n != 2 || err != nil {
		t.Errorf("sniBoundSince(0) = %d, %v; want 2", n, err)
	}
}
