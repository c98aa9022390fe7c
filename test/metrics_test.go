package integration_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/clawnet/clawnet/test/harness"
)

// families of one /metrics scrape, by name.
type scraped map[string]*dto.MetricFamily

// parseMetrics parses a /metrics body with Prometheus' own text parser.
func parseMetrics(t *testing.T, body []byte) scraped {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v\n%s", err, body)
	}
	return fams
}

// scrapeControl reads GET /metrics on the daemon's control socket.
func scrapeControl(t *testing.T, d *harness.Daemon) scraped {
	t.Helper()
	body, err := d.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return parseMetrics(t, body)
}

// scrapeTCP reads GET /metrics on metrics.listen.
func scrapeTCP(t *testing.T, addr string) scraped {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %s, %v", addr, resp.Status, err)
	}
	return parseMetrics(t, body)
}

// get is the value of the series of family name whose labels include
// labels (alternating names and values), summed over the others; ok says
// whether there was any.
func (s scraped) get(name string, labels ...string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

func (s scraped) val(name string, labels ...string) float64 {
	v, _ := s.get(name, labels...)
	return v
}

// agentSeries lists the series of s that carry agent="name".
func (s scraped) agentSeries(name string) []string {
	var out []string
	for fam, f := range s {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "agent" && l.GetValue() == name {
					out = append(out, fam)
				}
			}
		}
	}
	return out
}

// TestMetrics scrapes /metrics through the control socket and
// metrics.listen with Prometheus' parser, and checks that the series move
// with the traffic an agent sends: an allowed flow, its bytes both ways, a
// policy deny and a default deny, a DNS query; that they agree with the
// audit log line for line; and that an agent's series go at detach.
func TestMetrics(t *testing.T) {
	harness.RequireRoot(t)
	in := harness.NewInternet(t)
	name, body := echoOnly(in)
	listen := netip.AddrPortFrom(loopback4, harness.FreePort(t)).String()
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in, Policies: map[string]string{name: body},
		ExtraConfig: "metrics:\n  listen: " + listen + "\n"})
	e := &env{t: t, in: in, d: d}

	before := scrapeControl(t, d)
	for _, fam := range []string{"clawnet_agents_attached", "clawnet_audit_lines_total", "clawnet_audit_write_errors_total",
		"clawnet_policy_reloads_total", "clawnet_dial_seconds", "clawnet_listener_connections", "go_goroutines", "process_open_fds"} {
		if _, ok := before.get(fam); !ok {
			t.Errorf("/metrics has no %s", fam)
		}
	}
	if v := before.val("clawnet_agents_attached"); v != 0 {
		t.Errorf("clawnet_agents_attached before any attach = %v", v)
	}

	a := e.attach("m-alice", "echo-only")
	const agentL = "agent"
	payload := harness.RandomBytes(256 << 10)
	c := a.dial(t, "tcp", ap(in.Server4, 7))
	if got, err := harness.EchoHalfClose(c, payload, 20*time.Second); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo through the gateway: %d bytes, %v", len(got), err)
	}
	c.Close()
	a.expectRefused(t, ap(in.Addr4(3), 7))   // the policy's deny rule
	a.expectRefused(t, ap(in.Server4, 8081)) // no rule: default deny
	dc := a.dial(t, "udp", ap(gatewayV4, 53))
	if _, err := harness.DNSExchange(dc, "echo.test.", dns.TypeA, 5*time.Second); err != nil {
		t.Fatalf("dns through the gateway: %v", err)
	}

	// The close line is written after the splice ends; wait for it so
	// that every count below is final.
	d.WaitAudit(t, 10*time.Second, "the echo's close line", func(ae harness.AuditEntry) bool {
		return ae.Agent == a.name && ae.Event == "close" && ae.DstAddr() == ap(in.Server4, 7)
	})
	m := scrapeControl(t, d)
	al := []string{agentL, a.name}
	with := func(kv ...string) []string { return append(append([]string(nil), al...), kv...) }
	checks := []struct {
		what string
		ok   bool
	}{
		{"clawnet_agents_attached is 1", m.val("clawnet_agents_attached") == 1},
		{"clawnet_agent_info names the policy", m.val("clawnet_agent_info", with("policy", "echo-only")...) == 1},
		{"an allowed tcp flow counted", m.val("clawnet_flows_total", with("verdict", "allow", "proto", "tcp", "direction", "out")...) >= 1},
		{"the denied flows counted", m.val("clawnet_flows_total", with("verdict", "deny", "proto", "tcp")...) >= 2},
		{"the deny rule's denial by class", m.val("clawnet_denies_total", with("kind", "flow", "reason", "policy:deny")...) >= 1},
		{"the default denial by class", m.val("clawnet_denies_total", with("kind", "flow", "reason", "default")...) >= 1},
		{"bytes up grew by the payload", m.val("clawnet_bytes_up_total", al...) >= float64(len(payload))},
		{"bytes down grew by the payload", m.val("clawnet_bytes_down_total", al...) >= float64(len(payload))},
		{"a dns query counted", m.val("clawnet_dns_queries_total", al...) >= 1},
		{"the agent's revoke counter is there", func() bool { _, ok := m.get("clawnet_flows_revoked_total", al...); return ok }()},
		{"a dial observed", m.val("clawnet_dial_seconds", "proto", "tcp", "result", "ok") >= 1},
		{"audit lines written", m.val("clawnet_audit_lines_total") > before.val("clawnet_audit_lines_total")},
		{"no audit write errors", m.val("clawnet_audit_write_errors_total") == 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("/metrics: want %s", c.what)
		}
	}

	// Nothing was rate limited: the counters and the audit log agree line
	// for line.
	var opens, denies, dnsLines float64
	for _, ae := range d.Audit(t) {
		if ae.Agent != a.name {
			continue
		}
		switch {
		case ae.Kind == "dns":
			dnsLines++
		case ae.Event == "open" || ae.Event == "fail":
			opens++
		case ae.Event == "deny":
			denies++
		}
	}
	if got := m.val("clawnet_flows_total", with("verdict", "allow")...); got != opens {
		t.Errorf("clawnet_flows_total{verdict=allow} = %v, the audit log has %v open and fail lines", got, opens)
	}
	if got := m.val("clawnet_flows_total", with("verdict", "deny")...); got != denies {
		t.Errorf("clawnet_flows_total{verdict=deny} = %v, the audit log has %v deny lines", got, denies)
	}
	if got := m.val("clawnet_dns_queries_total", al...); got != dnsLines {
		t.Errorf("clawnet_dns_queries_total = %v, the audit log has %v dns lines", got, dnsLines)
	}

	// metrics.listen serves the same registry.
	tcp := scrapeTCP(t, listen)
	for _, s := range []struct{ name, label, value string }{
		{"clawnet_bytes_up_total", agentL, a.name},
		{"clawnet_flows_total", agentL, a.name},
		{"clawnet_listener_connections", "listener", "metrics"},
	} {
		if _, ok := tcp.get(s.name, s.label, s.value); !ok {
			t.Errorf("metrics.listen has no %s{%s=%q}", s.name, s.label, s.value)
		}
	}
	if got, want := tcp.val("clawnet_flows_total", al...), m.val("clawnet_flows_total", al...); got != want {
		t.Errorf("metrics.listen: clawnet_flows_total = %v, the control socket said %v", got, want)
	}

	// Detached: no series names the agent any more.
	d.MustCLI(t, "detach", a.name)
	after := scrapeControl(t, d)
	if left := after.agentSeries(a.name); len(left) > 0 {
		t.Errorf("series of a detached agent are still served: %v", left)
	}
	if v := after.val("clawnet_agents_attached"); v != 0 {
		t.Errorf("clawnet_agents_attached after detach = %v", v)
	}
}

// closedPort is a port the canary does not listen on: a connection there
// is refused at once by the far side.
const closedPort = 5999

// TestAuditFailStorm: an agent dialling an allowed port where nothing
// listens, thousands of times, writes a bounded number of lines, and the
// fail lines with their suppressed counts add up to every failure; its
// opens meanwhile are all written, and the metrics count every attempt.
func TestAuditFailStorm(t *testing.T) {
	e := newEnv(t, func(in *harness.Internet) (string, string) {
		return "storm", fmt.Sprintf("version: v1\nname: storm\negress:\n  - cidrs: [%q]\n    ports: [7, %d]\n",
			netip.PrefixFrom(in.Server4, 32), closedPort)
	})
	a := e.attach("storm", "storm")
	const storm, workers = 3000, 16
	dst := ap(e.in.Server4, closedPort)
	var refused, other atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range storm / workers {
				c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), "tcp", dst.String())
				switch {
				case err == nil:
					c.Close()
					other.Add(1)
				case harness.IsRefused(err):
					refused.Add(1)
				default:
					other.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if other.Load() > 0 {
		t.Fatalf("%d of %d dials to %s were not refused (first: %v)", other.Load(), storm, dst, firstErr.Load())
	}
	attempts := refused.Load()
	// Once the buckets have refilled: an open, whose line the storm did
	// not take from, and one more fail, whose line carries the count of
	// what the storm's last second left out.
	time.Sleep(1100 * time.Millisecond)
	a.echoSentinel(t, ap(e.in.Server4, 7))
	if c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), "tcp", dst.String()); !harness.IsRefused(err) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("the last dial: %v, want refused", err)
	}
	attempts++

	// Past limits.new_flows_per_second (500/s, bursts of 1,000) the storm
	// is refused before any dial, with builtin:limit deny lines: bounded
	// the same way, in the deny bucket.
	var m scraped
	var fails, limited int64
	harness.Poll(5*time.Second, 20*time.Millisecond, func() bool {
		m = scrapeControl(t, e.d)
		fails = int64(m.val("clawnet_flow_failures_total", "agent", a.name))
		limited = int64(m.val("clawnet_denies_total", "agent", a.name, "kind", "flow", "reason", "builtin:limit"))
		return fails+limited >= attempts
	})
	if fails+limited != attempts {
		t.Errorf("metrics: %d failures and %d limit denies, want every refused dial: %d", fails, limited, attempts)
	}
	var failLines, failRepr, denyLines, denyRepr int64
	harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		failLines, failRepr, denyLines, denyRepr = 0, 0, 0, 0
		for _, ae := range e.d.Audit(t) {
			if ae.Agent != a.name {
				continue
			}
			n, _ := ae.Raw["suppressed"].(float64)
			switch ae.Event {
			case "fail":
				failLines++
				failRepr += 1 + int64(n)
			case "deny":
				denyLines++
				denyRepr += 1 + int64(n)
			}
		}
		return failRepr >= fails
	})
	fi, _ := os.Stat(e.d.AuditPath)
	t.Logf("%d refused dials in %v: %d failed upstream (%d fail lines), %d refused by the new-flow limit (%d deny lines); audit log %d bytes",
		attempts, took.Round(time.Millisecond), fails, failLines, limited, denyLines, fi.Size())
	// Each bucket's defaults: a burst of 50, then 20 a second.
	most := 50 + int64(20*(took+1100*time.Millisecond).Seconds()) + 2
	if failLines > most || denyLines > most {
		t.Errorf("%d fail and %d deny lines in %v, want at most %d each", failLines, denyLines, took, most)
	}
	if failRepr != fails {
		t.Errorf("fail lines and their suppressed counts add up to %d, want every failure: %d", failRepr, fails)
	}
	if denyRepr > limited {
		t.Errorf("deny lines and their suppressed counts add up to %d, more than the %d denies", denyRepr, limited)
	}
	if got := int64(m.val("clawnet_audit_lines_suppressed_total", "event", "fail")); got != fails-failLines {
		t.Errorf("clawnet_audit_lines_suppressed_total{event=fail} = %d, want %d", got, fails-failLines)
	}
	if got := int64(m.val("clawnet_audit_lines_suppressed_total", "event", "deny")); got != limited-denyLines {
		t.Errorf("clawnet_audit_lines_suppressed_total{event=deny} = %d, want %d", got, limited-denyLines)
	}
	var opens int
	for _, ae := range e.d.Audit(t) {
		if ae.Agent == a.name && ae.Event == "open" {
			opens++
			if ae.Raw["suppressed"] != nil {
				t.Errorf("an open line counts suppressed lines during a fail storm: %s", ae.Line)
			}
		}
	}
	if opens != 1 {
		t.Errorf("%d open lines, want the sentinel's", opens)
	}
}

// TestAuditReopen: after logrotate renames the audit log, SIGUSR1 (its
// postrotate) or clawnet reload makes clawnetd write a new file at the
// path; the rotated one gets nothing more.
func TestAuditReopen(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("rotated", "echo-only")
	for i, reopen := range []struct {
		how string
		do  func()
	}{
		{"SIGUSR1", func() {
			if err := syscall.Kill(e.d.PID(), syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
		}},
		{"clawnet reload", func() { e.d.MustCLI(t, "reload") }},
	} {
		rotated := e.d.AuditPath + "." + strconv.Itoa(i+1)
		if err := os.Rename(e.d.AuditPath, rotated); err != nil {
			t.Fatal(err)
		}
		reopen.do()
		if !harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { _, err := os.Stat(e.d.AuditPath); return err == nil }) {
			t.Fatalf("%s: no new audit log at %s", reopen.how, e.d.AuditPath)
		}
		old, err := os.ReadFile(rotated)
		if err != nil {
			t.Fatal(err)
		}
		a.echoSentinel(t, ap(e.in.Server4, 7))
		e.d.WaitAudit(t, 5*time.Second, "the sentinel's close line in the new file", func(ae harness.AuditEntry) bool {
			return ae.Agent == a.name && ae.Event == "close"
		})
		if now, _ := os.ReadFile(rotated); !bytes.Equal(now, old) {
			t.Errorf("%s: the rotated file got lines written after it:\n%s", reopen.how, now[len(old):])
		}
	}
	m := scrapeControl(t, e.d)
	if got := m.val("clawnet_audit_reopens_total", "result", "ok"); got != 2 {
		t.Errorf("clawnet_audit_reopens_total{result=ok} = %v, want 2", got)
	}
}

// daemonFDs counts clawnetd's open file descriptors.
func daemonFDs(t *testing.T, d *harness.Daemon) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID()))
	if err != nil {
		t.Fatalf("clawnetd's descriptors: %v", err)
	}
	return len(ents)
}

// TestControlShedsIdleClients: 3,000 clients that connect to the control
// socket and linger (half after one keep-alive request, half without
// sending a byte) never make clawnetd hold more than control.max_connections
// (256 by default) of them, a CLI call gets through while they are there,
// and every one is closed by the daemon.
func TestControlShedsIdleClients(t *testing.T) {
	d := harness.StartDaemon(t, harness.DaemonConfig{})
	base := daemonFDs(t, d)
	const clients, connectors, maxConns = 3000, 64, 256

	var most atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(daemonFDs(t, d)); n > most.Load() {
				most.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range connectors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < clients; i = int(next.Add(1) - 1) {
				c, err := net.DialTimeout("unix", d.Socket, 30*time.Second)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = c
				if i%2 == 1 {
					continue // silent
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				_, err = io.WriteString(c, "GET /v1/version HTTP/1.1\r\nHost: clawnetd\r\n\r\n")
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(br, nil)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				c.SetDeadline(time.Time{})
				readers[i] = br
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d clients could not connect or make their request (first: %v)", n, clients, firstErr.Load())
	}

	start := time.Now()
	if _, err := d.Status(); err != nil {
		t.Errorf("a status request among %d lingering clients: %v", clients, err)
	}
	t.Logf("status among %d lingering clients answered in %v", clients, time.Since(start).Round(time.Millisecond))

	// Every client is closed by the daemon: evicted to make room, or at the
	// idle (30s) or request header (10s) timeout.
	var open atomic.Int64
	for i, c := range conns {
		if c == nil {
			continue
		}
		r := readers[i]
		if r == nil {
			r = bufio.NewReader(c)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(45 * time.Second))
			if _, err := r.ReadByte(); err != io.EOF {
				open.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	if n := open.Load(); n > 0 {
		t.Errorf("%d clients were not closed by the daemon within 45s", n)
	}
	t.Logf("clawnetd held at most %d descriptors (%d before the clients)", most.Load(), base)
	if limit := int64(base + maxConns + 16); most.Load() > limit {
		t.Errorf("clawnetd held %d descriptors with %d clients, want at most %d (%d before, a cap of %d)", most.Load(), clients, limit, base, maxConns)
	}
	if !harness.Poll(5*time.Second, 50*time.Millisecond, func() bool { return daemonFDs(t, d) <= base+2 }) {
		t.Errorf("clawnetd holds %d descriptors after the clients left, %d before", daemonFDs(t, d), base)
	}
	m := scrapeControl(t, d)
	if got := m.val("clawnet_listener_connections_evicted_total", "listener", "control"); got < clients-maxConns {
		t.Errorf("clawnet_listener_connections_evicted_total = %v, want at least %d", got, clients-maxConns)
	}
}
