package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in     []float64
		want   float64
		wantOK bool
	}{
		{nil, 0, false},
		{[]float64{math.NaN()}, 0, false},
		{[]float64{3}, 3, true},
		{[]float64{5, 1, 3}, 3, true},
		{[]float64{4, 1, 3, 2}, 2.5, true},
		{[]float64{1, math.Inf(1), 2, math.NaN(), 3}, 2, true},
	}
	for _, tt := range tests {
		got, ok := Median(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Median(%v) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

// full returns results in which every system reports every figure it must.
func full() Results {
	r := Results{}
	for i, s := range Systems {
		r[s] = map[string]float64{}
		for _, m := range Metrics {
			if m.Required(s) {
				r[s][m.Key] = float64(10 * (i + 1))
			}
		}
	}
	return r
}

func TestMissing(t *testing.T) {
	r := full()
	if got := r.Missing(Systems, Metrics); len(got) != 0 {
		t.Fatalf("Missing() on full results = %v, want none", got)
	}
	r[Pasta][RRP99us] = 0
	delete(r[Clawnet], RSSPerFlowKiB)
	delete(r, Slirp)
	got := r.Missing(Systems, Metrics)
	for _, want := range []string{"pasta rr_p99_us", "clawnet rss_per_flow_kib", "slirp4netns upload_gbps", "slirp4netns cpu_s_per_gb"} {
		if !slices.Contains(got, want) {
			t.Errorf("Missing() = %v, want it to contain %q", got, want)
		}
	}
	// veth never reports the gateway-only figures, so none is missing.
	if got := r.Missing([]string{Veth}, Metrics); len(got) != 0 {
		t.Errorf("Missing(veth) = %v, want none", got)
	}
}

func TestBestUserspace(t *testing.T) {
	r := Results{Slirp: {DownloadGbps: 4, RRP50us: 80}, Pasta: {DownloadGbps: 9, RRP50us: 120}}
	dl, _ := MetricByKey(DownloadGbps)
	p50, _ := MetricByKey(RRP50us)
	if v, s, _ := r.BestUserspace(dl); v != 9 || s != Pasta {
		t.Errorf("BestUserspace(download) = %v, %s; want 9, pasta", v, s)
	}
	if v, s, _ := r.BestUserspace(p50); v != 80 || s != Slirp {
		t.Errorf("BestUserspace(p50) = %v, %s; want 80, slirp4netns (lower is better)", v, s)
	}
}

func TestTargets(t *testing.T) {
	r := Results{
		Veth: {DownloadGbps: 20, UploadGbps: 20, RRP50us: 20, ConnectsPerS: 10000,
			HTTPSP50us: 1000, StreamP99us: 150, InstallS: 1},
		Slirp: {DownloadGbps: 4, UploadGbps: 2, RRP50us: 50},
		Pasta: {DownloadGbps: 8, UploadGbps: 3, ConnectsPerS: 6000, CPUsPerGB: 1},
		Clawnet: {DownloadGbps: 9, UploadGbps: 5, RRP50us: 51, ConnectsPerS: 5500, CPUsPerGB: 0.9,
			RSSPerFlowKiB: 20, RSSPerAgentKiB: 257,
			NoisyConnectRatio: 0.8, NoisyDNSRatio: 1.1, NoisyUDPRatio: 0.3,
			HTTPSP50us: 1200, StreamP99us: 251, InstallS: 1.2},
	}
	want := map[string]Status{
		"download ≥ 1.0× best of slirp4netns and pasta": Pass, // 9/8
		"download ≥ 0.45× veth":                         Pass, // 0.45
		"upload ≥ 3× slirp4netns":                       Fail, // 2.5
		"upload ≥ 0.55× veth":                           Fail, // 0.25
		"request/response p50 ≤ slirp4netns's":          Fail, // 51 > 50
		"connects/s ≥ 1.0× pasta":                       Fail, // 0.92
		"connects/s ≥ 0.5× veth":                        Pass, // 0.55
		"CPU seconds per GB ≤ pasta's":                  Pass, // 0.9
		"≤ 32 KiB per idle TCP flow":                    Pass,
		"≤ 256 KiB per idle attached agent":             Fail, // 257
		"victim, agent's connect flood ≥ 0.8× host's":   Pass,
		"victim, agent's DNS flood ≥ 0.8× host's":       Pass,
		"victim, agent's UDP flood ≥ 0.8× host's":       Fail,
		"HTTPS by name p50 ≤ 1.2× veth":                 Pass, // 1.2
		"streamed chunk p99 ≤ veth + 100 µs":            Fail, // +101
		"package install time ≤ 1.1× veth":              Fail, // 1.2
	}
	for _, tg := range Targets {
		st, got := tg.Check(r)
		if st != want[tg.Name] {
			t.Errorf("target %q = %s (%s), want %s", tg.Name, st, got, want[tg.Name])
		}
	}
	delete(r, Clawnet)
	for _, tg := range Targets {
		if st, _ := tg.Check(r); st != Unknown {
			t.Errorf("target %q without clawnet = %s, want %s", tg.Name, st, Unknown)
		}
	}
}

func TestResultsJSON(t *testing.T) {
	b, err := json.Marshal(Results{Veth: {UploadGbps: 21.123456, RRP50us: 0.000123456}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"veth":{"rr_p50_us":0.0001235,"upload_gbps":21.12}}`; got != want {
		t.Errorf("json.Marshal(results) = %s, want %s", got, want)
	}
}

func TestWriteShowsFailuresAndRatios(t *testing.T) {
	r := full()
	delete(r, Clawnet)
	var buf bytes.Buffer
	if err := Write(&buf, r, Systems, Metrics, map[string]string{Clawnet: "bin/clawnetd not found"}, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"clawnet FAILED: bin/clawnetd not found", "failed", "2.00×", "n/a"} {
		if !strings.Contains(out, want) {
			t.Errorf("Write() output lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := Write(&buf, full(), Systems, Metrics, nil, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "| upload, 1 stream | Gbit/s | 10.0 | 20.0 | 2.00× |") {
		t.Errorf("Write(markdown) has no upload row as expected:\n%s", buf.String())
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	var buf bytes.Buffer
	r := full()
	delete(r[Pasta], UploadGbps)
	if err := Chart(&buf, r, Systems, "test run"); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&buf)
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// background + legend + one bar per figure a system reports, less the
	// one deleted; the outbound and inbound systems differ.
	bars := 0
	for _, p := range panels {
		for _, k := range p.keys {
			m, _ := MetricByKey(k)
			bars += len(m.For)
		}
	}
	if want := 1 + len(Systems) + bars - 1; rects != want {
		t.Errorf("chart has %d rects, want %d", rects, want)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tt := range []struct{ in, want float64 }{{0, 1}, {0.7, 0.8}, {1.2, 1.5}, {2.2, 2.5}, {23, 25}, {41, 50}, {51, 60}, {287, 300}, {801, 1000}, {100, 100}} {
		if got := niceCeil(tt.in); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("niceCeil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMissingAndWriteKeepToTheirMetrics(t *testing.T) {
	// A run that measured only the HTTP upload misses nothing else, and
	// its table has no other row.
	up, _ := MetricByKey(HTTPUploadGbps)
	r := Results{Veth: {HTTPUploadGbps: 20}, Clawnet: {HTTPUploadGbps: 8}}
	if got := r.Missing([]string{Veth, Clawnet}, []Metric{up}); len(got) != 0 {
		t.Errorf("Missing(http upload only) = %v, want none", got)
	}
	if got := (Results{Veth: {HTTPUploadGbps: 20}}).Missing([]string{Veth, Clawnet}, []Metric{up}); !slices.Equal(got, []string{"clawnet http_upload_gbps"}) {
		t.Errorf("Missing(no clawnet figure) = %v, want [clawnet http_upload_gbps]", got)
	}
	var buf bytes.Buffer
	if err := Write(&buf, r, []string{Veth, Clawnet}, []Metric{up}, nil, true); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "| HTTP upload (clawnet: by name) | Gbit/s | 20.0 | 8.00 | 0.40× |") || strings.Contains(out, "upload, 1 stream") {
		t.Errorf("Write(http upload only) = \n%s\nwant the HTTP upload row and no other", out)
	}
}

func TestWriteComparesClawnetWithDocker(t *testing.T) {
	r := Results{Veth: {InboundConnectsPerS: 10000}, Clawnet: {InboundConnectsPerS: 3000}, Docker: {InboundConnectsPerS: 2000}}
	m, _ := MetricByKey(InboundConnectsPerS)
	var buf bytes.Buffer
	if err := Write(&buf, r, []string{Veth, Clawnet, Docker}, []Metric{m}, nil, true); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "clawnet÷docker |") || !strings.Contains(out, "| inbound connects | 1/s | 10000 | 3000 | 0.30× | 2000 | 0.20× |  | 1.50× |") {
		t.Errorf("Write(inbound) = \n%s\nwant a clawnet÷docker column of 1.50×", out)
	}
	// Without docker in the run, no such column.
	buf.Reset()
	if err := Write(&buf, r, []string{Veth, Clawnet}, []Metric{m}, nil, true); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "docker") {
		t.Errorf("Write(no docker) mentions docker:\n%s", buf.String())
	}
}

func TestDockerHasOnlyInboundFigures(t *testing.T) {
	for _, m := range Metrics {
		inbound := strings.HasPrefix(m.Key, "inbound_")
		if m.Required(Docker) != inbound {
			t.Errorf("%s: required of docker = %v, want %v", m.Key, m.Required(Docker), inbound)
		}
		if inbound && m.Required(Slirp) {
			t.Errorf("%s: required of slirp4netns, whose way in the suite does not set up", m.Key)
		}
	}
}
