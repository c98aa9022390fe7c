package gateway

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/clawnet/clawnet/policy"
)

// scrape reads g's GET /metrics through its control API and parses it as
// Prometheus does.
func scrape(t *testing.T, g *Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	w := httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", w.Code, w.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample finds the series of family name whose labels include want; ok is
// false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsSeries: each audit line moves its agent's series, whether the
// rate limit writes it or not, and the agent's series go when it does.
func TestMetricsSeries(t *testing.T) {
	var buf syncBuffer
	g, _ := apiGateway(t, Options{Audit: NewAudit(&buf)})
	a := listedAgent(t, g, "alice")
	listedAgent(t, g, "bob")
	dst := netip.MustParseAddrPort("198.18.0.2:443")
	allow := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "r"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), dst, 0)
	f.start = time.Now().Add(-30 * time.Millisecond)
	f.audit(EventOpen, allow, nil)
	f.audit(EventFail, allow, errors.New("connection refused"))
	for range 3 {
		f.audit(EventDeny, policy.Decision{Rule: policy.RuleDefault, Reason: "r"}, nil)
	}
	f.audit(EventDeny, policy.Decision{Rule: "coder.yaml:9 deny[0]", Reason: "r"}, nil)
	f.audit(EventDeny, limitDecision(errors.New("flow limit (1) reached")), nil)
	u := newFlow(a, policy.ProtoUDP, netip.MustParseAddrPort("100.96.0.2:40001"), netip.MustParseAddrPort("198.18.0.2:7"), 0)
	u.start = f.start
	u.audit(EventOpen, allow, nil)
	in := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("127.0.0.1:5000"), netip.MustParseAddrPort("100.96.0.2:80"), 0)
	in.in = true
	in.audit(EventOpen, allow, nil)
	a.event(&AuditEvent{Kind: KindFlow, Event: EventRevoke, Proto: "tcp", Verdict: "deny", Rule: "coder.yaml:9 deny[0]"})
	a.event(&AuditEvent{Kind: KindDNS, Proto: "udp", QName: "x.example.", RCode: "NOERROR", Verdict: "allow", Rule: "coder.yaml:4 egress[0]"})
	a.event(&AuditEvent{Kind: KindDNS, Proto: "udp", QName: "y.example.", RCode: "NXDOMAIN", Verdict: "deny", Rule: policy.RuleDefault})
	// A rate-limited query's line standing for 4 the resolver left out.
	a.event(&AuditEvent{Kind: KindDNS, Proto: "udp", RCode: "REFUSED", Verdict: "deny", Rule: ruleDNSRateLimit, Suppressed: 4})
	a.bytesUp.Add(1000)
	a.bytesDown.Add(5000)
	a.nflows.Add(2)

	fams := scrape(t, g)
	al := func(kv ...string) map[string]string {
		m := map[string]string{"agent": "alice"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"clawnet_agents_attached", nil, 2},
		{"clawnet_agent_info", al("policy", "coder"), 1},
		{"clawnet_flows_total", al("verdict", "allow", "proto", "tcp", "direction", "out"), 2}, // open and fail
		{"clawnet_flows_total", al("verdict", "deny", "proto", "tcp", "direction", "out"), 5},
		{"clawnet_flows_total", al("verdict", "allow", "proto", "udp", "direction", "out"), 1},
		{"clawnet_flows_total", al("verdict", "allow", "proto", "tcp", "direction", "in"), 1},
		{"clawnet_flow_failures_total", al("proto", "tcp"), 1},
		{"clawnet_denies_total", al("kind", "flow", "reason", "default"), 3},
		{"clawnet_denies_total", al("kind", "flow", "reason", "policy:deny"), 1},
		{"clawnet_denies_total", al("kind", "flow", "reason", "builtin:limit"), 1},
		{"clawnet_denies_total", al("kind", "dns", "reason", "default"), 1},
		{"clawnet_denies_total", al("kind", "dns", "reason", "builtin:dns-rate-limit"), 5},
		{"clawnet_flows_revoked_total", al(), 1},
		{"clawnet_flows_revoked_total", map[string]string{"agent": "bob"}, 0},
		{"clawnet_dns_queries_total", al("verdict", "allow", "rcode", "NOERROR"), 1},
		{"clawnet_dns_queries_total", al("verdict", "deny", "rcode", "NXDOMAIN"), 1},
		{"clawnet_dns_queries_total", al("verdict", "deny", "rcode", "REFUSED"), 5},
		{"clawnet_bytes_up_total", al(), 1000},
		{"clawnet_bytes_down_total", al(), 5000},
		{"clawnet_flows_live", al(), 2},
		{"clawnet_dial_seconds", map[string]string{"proto": "tcp", "result": "ok"}, 1},
		{"clawnet_dial_seconds", map[string]string{"proto": "tcp", "result": "error"}, 1},
		{"clawnet_dial_seconds", map[string]string{"proto": "udp", "result": "ok"}, 1},
		{"clawnet_audit_lines_suppressed_total", map[string]string{"event": "dns-limited"}, 4},
		{"clawnet_audit_lines_total", nil, 13},
		{"clawnet_audit_write_errors_total", nil, 0},
		{"clawnet_policy_reloads_total", map[string]string{"result": "ok"}, 0},
	}
	for _, tt := range tests {
		got, ok := sample(fams, tt.name, tt.labels)
		switch {
		case tt.want < 0 && ok:
			t.Errorf("%s%v = %v, want no series", tt.name, tt.labels, got)
		case tt.want >= 0 && (!ok || got != tt.want):
			t.Errorf("%s%v = %v (present %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	// The inbound flow's open line is not a dial: three observations only.
	if h := fams["clawnet_dial_seconds"]; h != nil {
		for _, m := range h.GetMetric() {
			if m.GetHistogram().GetSampleSum() > 0 && m.GetHistogram().GetSampleSum() < 0.03*float64(m.GetHistogram().GetSampleCount()) {
				t.Errorf("dial_seconds sum %v over %d, want at least 30ms each (the flows began 30ms ago)", m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount())
			}
		}
	}
	if fams["go_goroutines"] == nil || fams["process_open_fds"] == nil || fams["clawnet_build_info"] == nil {
		t.Errorf("runtime, process or build series missing: %v", names(fams))
	}

	// Detached: alice's series are gone, bob's stay.
	g.mu.Lock()
	delete(g.agents, "alice")
	g.mu.Unlock()
	fams = scrape(t, g)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "agent" && l.GetValue() == "alice" {
					t.Errorf("%s still has a series for the detached agent: %v", name, m)
				}
			}
		}
	}
	if v, ok := sample(fams, "clawnet_agents_attached", nil); v != 1 || !ok {
		t.Errorf("clawnet_agents_attached after detach = %v, want 1", v)
	}
	if _, ok := sample(fams, "clawnet_flows_revoked_total", map[string]string{"agent": "bob"}); !ok {
		t.Error("bob's series went with alice's")
	}
}

func names(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range fams {
		out = append(out, n)
	}
	return out
}

func TestReasonClass(t *testing.T) {
	tests := []struct{ rule, want string }{
		{"default", "default"},
		{"builtin:host", "builtin:host"},
		{"builtin:dns-rate-limit", "builtin:dns-rate-limit"},
		{"builtin:Not A Rule", "builtin:other"},
		{"coder.yaml:12 egress[1]", "policy:egress"},
		{"coder.yaml:7 deny[0]", "policy:deny"},
		{"web.yaml:3 ingress_deny[2]", "policy:ingress_deny"},
		{"default:0 preset anthropic", "policy:preset"},
		{"default mcp_servers[0] mcp.example.com:443", "policy:mcp_servers"},
		{"what ever[3] else", "policy:other"},
		{"", "none"},
	}
	for _, tt := range tests {
		if got := reasonClass(tt.rule); got != tt.want {
			t.Errorf("reasonClass(%q) = %q, want %q", tt.rule, got, tt.want)
		}
	}
}

// TestMetricsReloads: a reload counts by its result.
func TestMetricsReloads(t *testing.T) {
	g, dir := apiGateway(t, Options{})
	if err := g.ReloadPolicies(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("version: v1\nname: bad\negress: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.ReloadPolicies(); err == nil {
		t.Fatal("reload of a bad file succeeded")
	}
	fams := scrape(t, g)
	for r, want := range map[string]float64{"ok": 1, "error": 1} {
		if got, _ := sample(fams, "clawnet_policy_reloads_total", map[string]string{"result": r}); got != want {
			t.Errorf("clawnet_policy_reloads_total{result=%q} = %v, want %v", r, got, want)
		}
	}
}

// TestConfigMetricsAuditControl: the keys this file's series and limits
// read, their defaults and their checks.
func TestConfigMetricsAuditControl(t *testing.T) {
	c := DefaultConfig()
	if c.Metrics.Listen != "" {
		t.Errorf("metrics.listen defaults to %q, want off", c.Metrics.Listen)
	}
	if c.Control.MaxConnections != 256 || c.AuditLimits.Fail != (AuditRate{20, 50}) || c.AuditLimits.Open != (AuditRate{200, 400}) {
		t.Errorf("defaults: control %+v, audit_limits %+v", c.Control, c.AuditLimits)
	}
	c, err := ParseConfig("c.yaml", []byte("version: v1\nmetrics:\n  listen: 127.0.0.1:9310\ncontrol:\n  max_connections: 8\naudit_limits:\n  fail: {per_second: 1, burst: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "127.0.0.1:9310" || c.Control.MaxConnections != 8 || c.AuditLimits.Fail != (AuditRate{1, 2}) || c.AuditLimits.Deny != (AuditRate{20, 50}) {
		t.Errorf("parsed: metrics %+v, control %+v, audit_limits %+v", c.Metrics, c.Control, c.AuditLimits)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"metrics:\n  listen: localhost:9310\n", "metrics.listen"},
		{"metrics:\n  listen: 127.0.0.1\n", "metrics.listen"},
		{"control:\n  max_connections: 0\n", "control.max_connections"},
		{"audit_limits:\n  dns: {per_second: 0, burst: 5}\n", "audit_limits.dns"},
		{"audit_limits:\n  deny: {rate: 5}\n", `unknown key "rate"`},
	} {
		_, err := ParseConfig("c.yaml", []byte("version: v1\n"+bad.yaml))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error naming %s", bad.yaml, err, bad.want)
		}
	}
}
